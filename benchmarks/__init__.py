"""Benchmarks: each prints a table; run one as ``python -m benchmarks.<name>``.

Speed and cost: ``unlearn_speed``, ``unlearn_vs_retrain``, ``ranking_speed``,
``recommend_latency``. What a method could reach: ``teacher_verdict`` (the
verdict of E2URec's teachers themselves, the best case of a student that matched
them). Each kept benchmark backs a claim in docs/ and has a smoke test under
tests/benchmarks/ that reads its table by column name.
"""
