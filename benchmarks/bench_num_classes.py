"""Seed Table 4 (issue 6): cloning quality against the number of cloned classes.

Per seed: lenet5 target (0-4) and lenet5 source (5-9) on mnist5k (5 epochs, cached in
bench-out/seed-bases/); clone "5", "5,6", "5-7", "5-8", "5-9" (the last is the whole source) with
30 % of their data; position auto, 10 epochs per position. Ori = target classes 0-4, Tar = the cloned
classes, Avg = pooled. Plot: docs/img/seed-num-classes.png.

    python benchmarks/bench_num_classes.py --seeds 0 1 2
    python benchmarks/bench_num_classes.py --quick        # seed 0, 1/3/5 classes, 4 clone epochs
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seed_common import sweep_main  # noqa: E402

SEED = dict(
    zip(
        [1, 2, 3, 4, 5],
        [(94.4, 95.8, 94.6), (94.2, 95.3, 94.5), (93.7, 94.5, 94.0), (93.1, 94.6, 93.8), (93.3, 94.2, 94.1)],
        strict=True,
    )
)

if __name__ == "__main__":
    sweep_main(
        name="seed-num-classes",
        doc=__doc__,
        points=[1, 2, 3, 4, 5],
        quick_points=[1, 3, 5],
        labels=lambda n: f"{n} ({'5' if n == 1 else f'5-{4 + n}'})",
        clone_kwargs=lambda n: ("5" if n == 1 else f"5-{4 + n}", {"fraction": 0.3}),
        xlabel="number of cloned classes",
        title="Table 4: number of cloned classes",
        seed_ref=SEED,
        xvalues=lambda n: n,
    )
