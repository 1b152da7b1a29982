"""What a study prints: the verdict table per seed and the summary's cells."""

from __future__ import annotations

import pandas as pd

from e2urec.bench.report import markdown_table, short_verdict, verdict_table
from e2urec.bench.tables import aggregate


def cells(header: str, line: str) -> dict[str, str]:
    """A markdown row keyed by its column names (a name may hold "|": |Δ|)."""
    def split(text: str) -> list[str]:
        return text.strip().removeprefix("| ").removesuffix(" |").split(" | ")
    return dict(zip(split(header), split(line), strict=True))


def test_a_short_verdict_names_each_failed_measure_and_its_way():
    assert short_verdict("pass") == "pass"
    assert short_verdict(None) == "-"
    assert short_verdict("fail: ranking (remembered), canary (forgotten past never-trained "
                         "users)") == "fail ranking+ canary-"


def test_the_verdict_table_orders_references_first_and_shows_intervals():
    per_seed = [
        {"method": "npo", "seed": 42, "verdict": "pass", "stopped_by": "rule",
         "ranking_gap": 0.05, "ranking_gap_low": -0.04, "ranking_gap_high": 0.15,
         "canary_gap": 0.03, "canary_gap_p": 0.33},
        {"method": "original", "seed": 42, "verdict": "fail: ranking (remembered)",
         "ranking_gap": 0.21, "ranking_gap_low": 0.12, "ranking_gap_high": 0.30},
        {"method": "popularity", "seed": 42},
    ]
    lines = verdict_table(per_seed).splitlines()
    assert lines[0].startswith("| method | seed | verdict | stopped by | ranking |")
    original, npo = (cells(lines[0], line) for line in lines[2:4])
    assert original["method"] == "original" and npo["method"] == "npo"
    assert original["verdict"] == "fail ranking+"
    assert npo["ranking"] == "+0.050 [-0.040, +0.150]"
    assert npo["canary"] == "+0.030 p=0.330" and npo["stopped by"] == "rule"
    assert len(lines) == 4  # the most-rated list is no model: no verdict row


def test_the_summary_marks_a_closure_outside_the_band_and_lists_each_seeds_verdict():
    per_seed = [{"method": "npo", "seed": s, "test_auc": 0.7, "gap_closed_forget_auc": c,
                 "verdict": v, "stopped_by": "rule"}
                for s, c, v in ((42, 1.5, "pass"), (43, 1.7, "fail: canary (remembered)"))]
    table = markdown_table(pd.DataFrame(aggregate(per_seed)))
    header, _, row = table.splitlines()
    summary = cells(header, row)
    assert summary["verdict"] == "pass, fail canary+"
    assert summary["stopped by"] == "rule, rule"
    assert [c for c in summary.values() if c.endswith(" !")] == ["1.6000 ± 0.1414 !"]
