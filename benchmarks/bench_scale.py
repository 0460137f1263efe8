"""Scale benchmark (issue 13): streamed data, peak memory, processes, GPU (docs/benchmarks.md "Scale").

Every measured run is a separate ``pnc`` process (``python -m pnc_cli`` or ``torchrun … -m pnc_cli``);
its wall time is measured around it and its peak RSS is the ``ru_maxrss`` that ``os.wait4`` returns
for it (under torchrun: the largest of the launcher and its workers). Parts:

1. ``clone``: resnet18 → resnet18 on 32×32 RGB (mnist5k resized, grey → RGB), clone one class with the
   full search (the default joint head over every candidate span): wall time and peak RSS.
2. ``sweep``: the same kind of clone on a generated ImageFolder of 1k, 2k, 5k, 20k 32×32 PNGs (mnist5k
   images, shifted copies beyond 5,000) given as ``--data`` and ``--target-data``: time against the
   number of images (linear) and peak RSS (flat).
3. ``procs``: the clone of part 1 in 1 and in 2 processes (``torchrun``, gloo on the CPU): speed-up and
   whether the two delta files are identical.
4. ``surrogate``: ``pnc surrogate`` throughput (b) against (a), the model's peak batched forward
   throughput on one batch already in memory (best of several timed passes): b/a ≤ 1 says how much of
   the limit the fit reaches.

Usage::

    python benchmarks/bench_scale.py                       # CPU, all parts
    python benchmarks/bench_scale.py --device cuda --sweep-arch resnet18 --sizes 1000 2000 5000 20000
    python benchmarks/bench_scale.py --parts clone surrogate --quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def cores() -> int:
    """The cores this process may run on (``taskset`` / cgroup affinity), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: list[str], *, procs: int = 1) -> dict[str, Any]:
    """One pnc command in its own process(es): JSON output, wall seconds, peak RSS (MiB)."""
    if procs > 1:
        cmd = [
            PY,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={procs}",
            f"--master_port={_free_port()}",
        ]
        cmd += ["--master_addr=127.0.0.1", "-m", "pnc_cli", *args]
    else:
        cmd = [PY, "-m", "pnc_cli", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if procs > 1:  # the same cores shared between the processes, not oversubscribed
        env["OMP_NUM_THREADS"] = str(max(1, cores() // procs))
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    chunks: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda k=k, f=f: chunks.__setitem__(k, f.read()))
        for k, f in (("out", p.stdout), ("err", p.stderr))
    ]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(p.pid, 0)  # this child's own rusage: its peak RSS
    seconds = time.perf_counter() - start
    for t in readers:
        t.join()
    p.returncode = rc = os.waitstatus_to_exitcode(status)
    out, err = chunks.get("out", ""), chunks.get("err", "")
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}\n{err[-3000:]}")
    rss = usage.ru_maxrss / 1024.0  # KiB on Linux
    doc = json.loads(out) if out.strip() else {}
    return {"doc": doc, "seconds": seconds, "rss_mb": rss, "command": " ".join(cmd[1:])}


# ------------------------------------------------------------------------------------------- data


def rgb32(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """mnist5k resized to 32×32 and converted to RGB: uint8 ``[N, 32, 32, 3]`` and int labels."""
    from pnc_cli.io.data import load_data

    ds = load_data("mnist5k", split="all")
    x = F.interpolate(ds.images, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).permute(0, 2, 3, 1)
    y = np.asarray([int(c) for c in ds.label_names])
    return x.numpy()[:n], y[:n]


def make_npz(path: Path) -> Path:
    if not path.exists():
        x, y = rgb32()
        np.savez(path, x=x, y=y)
    return path


def make_folder(root: Path, n: int) -> Path:
    """An ImageFolder of ``n`` 32×32 RGB PNGs: mnist5k images, then copies shifted by 1-3 pixels."""
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    x, y = rgb32()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))  # mnist5k is sorted by label: every size gets all ten classes
    for i in range(n):
        j = int(order[i % len(x)])
        img = x[j]
        if i >= len(x):
            dx, dy = rng.integers(-3, 4, size=2)
            img = np.roll(img, (int(dy), int(dx)), axis=(0, 1))
        d = root / str(int(y[j]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.png")
    done.write_text("ok")
    return root


def train(arch: str, data: Path, classes: str, out: Path, device: str, epochs: int, fraction: float) -> Path:
    if not out.exists():
        run(
            ["train", "--arch", arch, "--data", str(data), "--classes", classes, "--output", str(out)]
            + ["--epochs", str(epochs), "--fraction", str(fraction), "--device", device, "--json", "--quiet"]
        )
    return out


def sha(path: Path) -> str:
    """sha256 of a pnc file's tensors and metadata, less its provenance (the command line, which names
    the launcher and the output) and the seal over it: equal when the same delta was computed."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k not in ("pnc.provenance", "pnc.seal")}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return hashlib.sha256(save(tensors) + json.dumps(meta, sort_keys=True).encode()).hexdigest()


def clone_args(src: Path, tgt: Path, data: Path, out: Path, device: str, extra: list[str]) -> list[str]:
    return [
        "clone",
        "--source",
        str(src),
        "--target",
        str(tgt),
        "--classes",
        "5",
        "--data",
        str(data),
        "--target-data",
        str(data),
        "--output",
        str(out),
        "--device",
        device,
        "--force",
        "--json",
        "--quiet",
        "--max-ori-drop",
        "100",  # a benchmark of time and memory: never refused by the Ori-accuracy gate
        *extra,
    ]


# ------------------------------------------------------------------------------------------- parts


_ONE_PROCESS: dict[str, Any] = {}  # part 1's run, reused as part 3's single-process run on the CPU


def part_clone(a: argparse.Namespace, models: dict[str, Path], npz: Path) -> list[str]:
    out = a.out / "procs-1.delta"
    r = run(clone_args(models["source"], models["target"], npz, out, a.device, a.clone_flags))
    if a.device == "cpu":
        _ONE_PROCESS.update(r)
    d = r["doc"]
    return [
        "| data | device | wall s | peak RSS MiB | Ori / Tar / Avg acc | source end, pool | extra params |",
        "|---|---|---|---|---|---|---|",
        f"| {npz.name} (5,000 × 32×32 RGB) | {a.device} | {r['seconds']:.1f} | {r['rss_mb']:.0f} "
        f"| {d.get('ori_acc', float('nan')):.3f} / {d.get('tar_acc', float('nan')):.3f} / "
        f"{d.get('avg_acc', float('nan')):.3f} | {d.get('source_end')}, {d.get('pool')} "
        f"| {d.get('extra_params')} |",
        "",
        f"command: `{r['command']}`",
    ]


def part_sweep(a: argparse.Namespace, device: str) -> list[str]:
    arch = a.sweep_arch
    npz = make_npz(a.out / "mnist5k-rgb32.npz")
    tgt = train(arch, npz, "0-4", a.out / f"{arch}-0-4.safetensors", device, a.epochs, a.fraction)
    src = train(arch, npz, "5-9", a.out / f"{arch}-5-9.safetensors", device, a.epochs, a.fraction)
    rows = [
        "| images in the folder | clone wall s | clone s per 1k images | clone peak RSS MiB "
        "| eval wall s | eval peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    cmd = ecmd = ""
    for n in a.sizes:
        folder = make_folder(a.out / f"folder-{n}", n)
        r = run(clone_args(src, tgt, folder, a.out / f"sweep-{n}.delta", device, a.clone_flags))
        e = run(
            [
                "eval",
                "--model",
                str(tgt),
                "--data",
                str(folder),
                "--split",
                "all",
                "--device",
                device,
                "--json",
            ]
        )
        rows.append(
            f"| {n} | {r['seconds']:.1f} | {1000 * r['seconds'] / n:.2f} | {r['rss_mb']:.0f} "
            f"| {e['seconds']:.1f} | {e['rss_mb']:.0f} |"
        )
        cmd, ecmd = r["command"], e["command"]
        print(rows[-1], file=sys.stderr, flush=True)
    return [
        f"{arch} → {arch}, one class cloned, ImageFolder given as --data and --target-data; `pnc eval` of "
        "the target over the folder's images of its classes (split all)",
        "",
        *rows,
        "",
        f"commands (last size): `{cmd}`; `{ecmd}`",
    ]


def max_rel_diff(a: Path, b: Path) -> float:
    """Largest difference between two deltas' float tensors, relative to each tensor's largest value
    (inf when their tensor names, shapes or integer tensors differ)."""
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    if ta.keys() != tb.keys():
        return float("inf")
    worst = 0.0
    for name, t in ta.items():
        u = tb[name]
        if t.shape != u.shape:
            return float("inf")
        if not t.is_floating_point():
            if not torch.equal(t, u):
                return float("inf")
            continue
        if t.numel():
            scale = float(t.abs().max()) or 1.0
            worst = max(worst, float((t.double() - u.double()).abs().max()) / scale)
    return worst


def part_procs(a: argparse.Namespace, models: dict[str, Path], npz: Path) -> list[str]:
    rows = [
        "| processes | wall s | peak RSS MiB (largest process) | source end, pool | Ori / Tar / Avg acc "
        "| delta sha256 (provenance aside) |",
        "|---|---|---|---|---|---|",
    ]
    shas, times, docs, outs = [], [], [], []
    cmd = ""
    for p in (1, a.procs):
        out = a.out / f"procs-{p}.delta"
        if p == 1 and _ONE_PROCESS:
            r = _ONE_PROCESS
        else:
            r = run(clone_args(models["source"], models["target"], npz, out, "cpu", a.clone_flags), procs=p)
        shas.append(sha(out))
        times.append(r["seconds"])
        docs.append(r["doc"])
        outs.append(out)
        d = r["doc"]
        rows.append(
            f"| {p} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | {d.get('source_end')}, {d.get('pool')} "
            f"| {d.get('ori_acc', float('nan')):.4f} / {d.get('tar_acc', float('nan')):.4f} / "
            f"{d.get('avg_acc', float('nan')):.4f} | {shas[-1][:16]} |"
        )
        cmd = r["command"]
    keys = ("source_end", "pool", "ori_acc", "tar_acc", "avg_acc", "extra_params")
    same = all(docs[0].get(k) == docs[1].get(k) for k in keys)
    rows += [
        "",
        f"speed-up {times[0] / times[1]:.2f}×; byte-identical deltas (provenance aside): "
        f"{shas[0] == shas[1]}; "
        f"same candidate, size and test accuracies: {same}; largest tensor difference (relative to the "
        f"tensor's largest value): {max_rel_diff(outs[0], outs[1]):.1e} (float64 sums added in another "
        "order; the tolerance of tests/e2e/test_distributed.py is 1e-4)",
        "",
        f"command ({a.procs} processes): `{cmd}`",
    ]
    return rows


def _peak_forward(model_path: Path, device: str, batch: int, repeats: int) -> float:
    """Images/s of the model's batched forward on one batch already in memory (best of ``repeats``)."""
    from pnc_cli.core.device import autocast, resolve_device
    from pnc_cli.io.model_file import load_model

    dev = resolve_device(device)
    net = load_model(model_path).network.to(dev).eval()
    spec = load_model(model_path).spec
    x = torch.rand(batch, spec.in_channels, spec.input_size, spec.input_size, device=dev)
    best = float("inf")
    with torch.inference_mode(), autocast(dev):
        net(x)  # warm-up
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            net(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            best = min(best, time.perf_counter() - t)
    return batch / best


def part_surrogate(a: argparse.Namespace, models: dict[str, Path], npz: Path) -> list[str]:
    tgt = models["target"]
    r = run(
        ["surrogate", "--model", str(tgt), "--data", str(npz), "--samples", str(a.samples), "--masks"]
        + [str(a.masks), "--output", str(a.out / "g.surrogate"), "--device", a.device, "--force", "--json"]
        + ["--quiet"]
    )
    b = float(r["doc"]["images_per_second"])
    peak = _peak_forward(tgt, a.device, 512, a.repeats)
    return [
        "| model | device | N × \\|B\\| | (a) peak forward img/s | (b) pnc surrogate img/s | b/a | wall s "
        "| peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
        f"| {tgt.name} | {a.device} | {a.samples} × {a.masks} | {peak:.0f} | {b:.0f} | {b / peak:.2f} "
        f"| {r['seconds']:.1f} | {r['rss_mb']:.0f} |",
        "",
        f"(a): one batch of 512 images in memory, best of {a.repeats} timed forward passes; "
        f"(b) command: `{r['command']}`",
    ]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("bench-out/scale"))
    p.add_argument("--parts", nargs="+", default=["clone", "sweep", "procs", "surrogate"])
    p.add_argument("--sizes", nargs="+", type=int, default=[1000, 2000, 5000, 20000])
    p.add_argument("--sweep-arch", default="lenet5", help="architecture of the sweep (resnet18 on a GPU)")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1, help="training epochs of the benchmark's base models")
    p.add_argument("--fraction", type=float, default=0.5, help="train-split fraction the base models see")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--masks", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--clone-flags",
        type=shlex.split,
        default=[],
        help='extra pnc clone flags as one quoted string, e.g. --clone-flags "--workers 2"',
    )
    p.add_argument("--quick", action="store_true", help="sizes 1000 2000; 20 samples for the surrogate")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.samples = [1000, 2000], 20
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    npz = make_npz(a.out / "mnist5k-rgb32.npz")
    models: dict[str, Path] = {}
    if {"clone", "procs", "surrogate"} & set(a.parts):
        models["target"] = train(
            "resnet18", npz, "0-4", a.out / "resnet18-0-4.safetensors", a.device, a.epochs, a.fraction
        )
        models["source"] = train(
            "resnet18", npz, "5-9", a.out / "resnet18-5-9.safetensors", a.device, a.epochs, a.fraction
        )
    print(f"## Scale benchmark ({a.device}, {cores()} cores, torch {torch.__version__})\n")
    sections = {
        "clone": ("resnet18 → resnet18, one class, full search", lambda: part_clone(a, models, npz)),
        "sweep": ("Time and peak memory against the number of images", lambda: part_sweep(a, a.device)),
        "procs": (f"1 vs {a.procs} processes (torchrun, gloo)", lambda: part_procs(a, models, npz)),
        "surrogate": (
            "pnc surrogate against the peak forward throughput",
            lambda: part_surrogate(a, models, npz),
        ),
    }
    for name in a.parts:
        title, fn = sections[name]
        lines = fn()
        print(f"### {title}\n")
        print("\n".join(lines) + "\n", flush=True)


if __name__ == "__main__":
    main()
