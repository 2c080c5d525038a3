"""`inspect --plot`: a token store's summary drawn as one figure (matplotlib, no display
needed): PNG, SVG or PDF, by the file's suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atlasprep._io import atomic_output
from atlasprep.shard.store import StoreSummary

__all__ = ["PLOT_FORMATS", "plot_summary"]

PLOT_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def plot_summary(summary: StoreSummary, path: Path, *, title: str = "") -> None:
    """Cells and tokens per split and shard, the tokens-per-cell histogram, and one bar chart of
    the most common values per composition column; written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    # SVG: text kept as text (searchable, smaller), ids from a fixed salt (the same bytes each time)
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "atlasprep"})
    import matplotlib.pyplot as plt

    panels = 3 + len(summary.composition)
    cols = 2
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.6 * rows), squeeze=False)
    flat = axes.ravel()

    _splits_panel(flat[0], summary)
    _shards_panel(flat[1], summary)
    _lengths_panel(flat[2], summary)
    for ax, (column, values) in zip(flat[3:], summary.composition.items(), strict=False):
        labels = list(values)[::-1]
        named = [_short(f"{v} {summary.labels[v]}" if v in summary.labels else v) for v in labels]
        ax.barh(named, [values[v] for v in labels], color="#8172B3")
        ax.set_title(f"cells by {column} (top {len(labels)})")
        ax.tick_params(axis="y", labelsize=7)
    for ax in flat[panels:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        fmt = PLOT_FORMATS[Path(path).suffix.lower()]
        with atomic_output(Path(path), hidden=True) as tmp:
            # no creation date or software in the file: the same store draws the same bytes
            metadata = {"Software": None} if fmt == "png" else {"Creator": None, "Date": None}
            fig.savefig(tmp, format=fmt, dpi=100, metadata=metadata)
    finally:
        plt.close(fig)


def _splits_panel(ax: Any, summary: StoreSummary) -> None:
    names = list(summary.splits)
    ax.bar(names, [summary.splits[s]["n_cells"] for s in names], color="#4C72B0")
    ax.set_title("cells per split")
    ax.set_ylabel("cells")
    twin = ax.twinx()
    twin.plot(names, [summary.splits[s]["n_tokens"] for s in names], "o-", color="#C44E52")
    twin.set_ylabel("tokens", color="#C44E52")


def _shards_panel(ax: Any, summary: StoreSummary) -> None:
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    names = list(summary.splits)
    colors = {s: f"C{i}" for i, s in enumerate(names)}
    positions = range(1, len(summary.shards) + 1)
    ax.bar(
        positions, [s["n_cells"] for s in summary.shards], color=[colors[s["split"]] for s in summary.shards]
    )
    ax.set_title(f"cells per shard ({len(summary.shards)} shards)")
    ax.set_xlabel("shard")
    ax.set_ylabel("cells")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no 0.5-shard ticks
    ax.set_xlim(0.4, len(summary.shards) + 0.6)
    ax.legend(handles=[Patch(color=colors[s], label=s) for s in names], title="split", fontsize=8)


def _lengths_panel(ax: Any, summary: StoreSummary) -> None:
    edges = summary.length_histogram["edges"]
    counts = summary.length_histogram["counts"]
    if counts:
        ax.stairs(counts, edges, fill=True, color="#55A868")
    ax.set_title(f"tokens per cell (median {summary.length['median']:.0f})")
    ax.set_xlabel("tokens")
    ax.set_ylabel("cells")


def _short(value: str, width: int = 60) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"
