"""PNG plots (the ``plot`` extra: matplotlib). Layer api; matplotlib is imported only when a plot is asked
for."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..io.safetensors_io import atomic_write_bytes, check_output


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'pnc-cli[plot]'") from None
    return plt


def save_figure(fig: Any, path: str | Path, *, force: bool) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    return atomic_write_bytes(path, buf.getvalue(), force=force)


def plot_search(scores: Sequence[Any], path: str | Path, *, title: str, force: bool = False) -> Path:
    """Loss and validation accuracy per candidate (the seed's Fig. 1): per insertion position R for the
    appended head, per source span ``[0:E]`` and pooling for the joint head."""
    check_output(path, force=force)
    plt = _pyplot()
    joint = bool(scores) and hasattr(scores[0], "source_end")
    if joint:
        rows = sorted(scores, key=lambda s: (s.source_end, -s.pool))
        labels = [f"E={s.source_end}" + (f"/p{s.pool}" if s.pool else "") for s in rows]
    else:
        rows = sorted(scores, key=lambda s: s.position)
        labels = [str(s.position) for s in rows]
    xs = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(
        xs,
        [s.loss for s in rows],
        "o-",
        color="tab:red",
        label="val squared error" if joint else "converged loss",
    )
    ax.set_xlabel(
        "source span [0:E] / pooling (joint head)" if joint else "insertion position R (target block)"
    )
    ax.set_ylabel("loss", color="tab:red")
    ax.set_xticks(xs, labels, fontsize=7)
    ax2 = ax.twinx()
    ax2.plot(xs, [100 * s.val_avg_acc for s in rows], "s--", color="tab:blue", label="val Avg Acc")
    ax2.plot(xs, [100 * s.val_tar_acc for s in rows], "^:", color="tab:green", label="val Tar Acc")
    ax2.set_ylabel("validation accuracy %")
    fig.legend(loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.14))
    ax.set_title(title, fontsize=9)
    try:
        return save_figure(fig, path, force=force)
    finally:
        plt.close(fig)
