"""Seed Table 2 (issue 6): cloning quality against the share of the cloned class's data.

Per seed: lenet5 target (0-4) and lenet5 source (5-9) on mnist5k (5 epochs, cached in
bench-out/seed-bases/); clone class "5" with CloneConfig(fraction=f) for f in 1, 10, 30, 60, 100 %
(the same fraction of the target's train split is pseudo-labelled by the target); position auto,
10 epochs per position. Ori/Tar/Avg Acc on the test split of 0-5. Plot: docs/img/seed-data-size.png.

    python benchmarks/bench_data_size.py --seeds 0 1 2
    python benchmarks/bench_data_size.py --quick          # seed 0, 3 sizes, 4 clone epochs
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seed_common import sweep_main  # noqa: E402

SEED = dict(
    zip(
        [0.01, 0.1, 0.3, 0.6, 1.0],
        [(60.0, 69.5, 61.6), (85.9, 85.8, 85.9), (94.4, 95.8, 94.6), (94.5, 96.2, 94.8), (94.3, 94.9, 94.4)],
        strict=True,
    )
)

if __name__ == "__main__":
    sweep_main(
        name="seed-data-size",
        doc=__doc__,
        points=[0.01, 0.1, 0.3, 0.6, 1.0],
        quick_points=[0.01, 0.3, 1.0],
        labels=lambda f: f"{100 * f:g} %",
        clone_kwargs=lambda f: ("5", {"fraction": f}),
        xlabel="share of the cloned class's train data",
        title="Table 2: data size (clone '5')",
        seed_ref=SEED,
        xvalues=lambda f: 100 * f,
        logx=True,
    )
