"""Figures of a study: utility against forgetting, and unlearning time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

REFERENCES = {"original": "#888888", "retrain": "#2a9d8f"}


def plot_results(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Write ``utility_vs_forgetting.png`` and ``unlearn_time.png``; return their paths.

    ``frame`` holds one summary row per method (``<key>_mean`` and ``<key>_std``
    over seeds); the error bars are one standard deviation.
    """
    return [_utility_vs_forgetting(frame, out / "utility_vs_forgetting.png"),
            _unlearn_time(frame, out / "unlearn_time.png")]


def _utility_vs_forgetting(frame: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    # Where a method lands close to Retrain (0.7-1.3 of the gap on every metric, on average).
    ax.axvspan(0.7, 1.3, color=REFERENCES["retrain"], alpha=0.08, zorder=0)
    for _, row in frame.iterrows():
        color = REFERENCES.get(row["method"], "#e76f51")
        x, y = row["gap_closed_mean_mean"], row["test_auc_mean"]
        ax.errorbar(x, y, xerr=row["gap_closed_mean_std"], yerr=row["test_auc_std"], fmt="o",
                    markersize=8, color=color, capsize=3, zorder=3)
        ax.annotate(row["method"], (x, y), textcoords="offset points", xytext=(6, 4),
                    fontsize=9)
    ax.set_xlabel("share of the Original-to-Retrain gap closed (mean of forget AUC, MIA, "
                  "canary lift; 1: Retrain)", fontsize=8)
    ax.set_ylabel("test AUC (higher: better recommendations)")
    ax.set_title("Utility against forgetting")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _unlearn_time(frame: pd.DataFrame, path: Path) -> Path:
    timed = frame[frame["method"] != "original"].sort_values("unlearn_seconds_mean")
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(timed) + 1.5))
    colors = [REFERENCES.get(m, "#e76f51") for m in timed["method"]]
    bars = ax.barh(timed["method"], timed["unlearn_seconds_mean"],
                   xerr=timed["unlearn_seconds_std"], color=colors, capsize=3)
    ax.bar_label(bars, labels=[f"{s:.1f}s" for s in timed["unlearn_seconds_mean"]],
                 padding=3, fontsize=9)
    ax.set_xlabel("unlearning seconds (Original loaded to result saved)")
    ax.set_title("Unlearning time per method")
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_against_requests(frame: pd.DataFrame, panels: list[tuple[str, str]], path: Path,
                          title: str) -> Path:
    """A panel per ``(column, label)`` against the request number, a line per method."""
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        for method, group in frame.groupby("method", sort=False):
            group = group.sort_values("request")
            ax.plot(group["request"], group[key], marker="o", markersize=3, label=method,
                    color=REFERENCES.get(method))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("request")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Sequential deletion requests: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
