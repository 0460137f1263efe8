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
    """Converged loss and validation accuracy per insertion position R (the seed's Fig. 1)."""
    check_output(path, force=force)
    plt = _pyplot()
    rows = sorted(scores, key=lambda s: s.position)
    xs = [s.position for s in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(xs, [s.loss for s in rows], "o-", color="tab:red", label="converged loss")
    ax.set_xlabel("insertion position R (target block)")
    ax.set_ylabel("loss", color="tab:red")
    ax.set_xticks(xs)
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
