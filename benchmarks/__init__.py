"""Speed and cost benchmarks: each prints a table; run one as ``python -m benchmarks.<name>``.

Each kept benchmark backs a claim in docs/ and has a smoke test under
tests/benchmarks/ that reads its table by column name.
"""
