"""The base-model commands through Typer's CliRunner: --json output, and every bad input of issue #2.

A bad input gives exactly one line on stderr (``error: ...``), the exit code of docs/errors.md, and
writes nothing (the working directory's listing and contents are unchanged).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from safetensors.torch import load_file, save_file

from pnc_cli import api
from pnc_cli.core.errors import RuntimeFailure

COMMON = {"--json", "--quiet", "--log-file", "--debug"}
# commands that compute with torch take --device; those that draw random numbers take --seed
USES_DEVICE = {"train", "eval", "predict", "surrogate", "clone", "search", "rank-sources"}
USES_SEED = {"train", "surrogate", "clone", "search", "rank-sources", "export"}


def _one_error_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# --- every command has the common options ------------------------------------------------------------


def test_every_command_has_the_common_options_and_only_the_ones_it_uses() -> None:
    from pnc_cli.cli import app

    group = typer.main.get_command(app)
    problems = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        opts = {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        want = (
            COMMON
            | ({"--device"} if name in USES_DEVICE else set())
            | ({"--seed"} if name in USES_SEED else set())
        )
        missing, extra = want - opts, {"--seed", "--device"} & opts - want
        if missing or extra:
            problems[name] = {"missing": sorted(missing), "not used but offered": sorted(extra)}
    assert not problems, problems


def test_every_help_takes_dash_h_and_ends_with_runnable_examples(run_cli) -> None:
    from pnc_cli.cli import app

    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        code, stdout, _ = run_cli(name, "-h")
        assert code == 0, name
        tail = stdout[stdout.index("Examples:") :]
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip().startswith("$ pnc ")]
        assert 1 <= len(lines) <= 3, (name, tail)
        assert all(ln.split()[2] == name or ln.split()[1] == "pnc" for ln in lines), lines


def test_info_and_list_archs_refuse_seed_and_device(run_cli) -> None:
    for args in (("info", "x.safetensors", "--device", "cuda"), ("list-archs", "--seed", "1")):
        code, stdout, stderr = run_cli(*args)
        assert code == 2 and stdout == ""
        _one_error_line(stderr, "No such option")


def test_help_and_version(run_cli) -> None:
    code, stdout, _ = run_cli("--help")
    assert code == 0
    for cmd in ("list-archs", "info", "train", "eval", "predict", "import"):
        assert cmd in stdout
    code, stdout, _ = run_cli("--version")
    assert code == 0 and stdout.strip() == f"pnc {__import__('pnc_cli').__version__}"


# --- each command with --json ------------------------------------------------------------------------


def test_list_archs(run_cli) -> None:
    code, stdout, stderr = run_cli("list-archs", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    archs = {a["name"]: a for a in doc["architectures"]}
    assert archs["lenet5"]["blocks"] == 3 and archs["resnet18"]["blocks"] == 5
    assert set(archs["tiny_cnn"]) >= {"name", "blocks", "default_input_size", "tiny", "description"}
    code, stdout, _ = run_cli("list-archs")
    assert code == 0 and "shufflenet_v2_x1_0" in stdout


def test_info(run_cli, tiny_target: Path) -> None:
    code, stdout, stderr = run_cli("info", tiny_target, "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert {"kind", "arch", "classes", "sha256", "num_params"} <= set(doc)
    assert doc["kind"] == "model" and doc["arch"] == "tiny_cnn" and doc["classes"] == list("01234")
    assert doc["sha256"] == api.file_info(tiny_target)["sha256"]
    assert doc["training"]["data"] == "digits"
    code, stdout, _ = run_cli("info", tiny_target)
    assert code == 0 and "tiny_cnn" in stdout and doc["sha256"][:16] in stdout


def test_train(run_cli, in_tmp: Path) -> None:
    args = [
        "train",
        "--arch",
        "tiny_cnn",
        "--data",
        "digits",
        "--classes",
        "0-2",
        "--epochs",
        "3",
        "--lr",
        "0.01",
    ]
    code, stdout, stderr = run_cli(
        *args, "-o", "m.safetensors", "--json", "--quiet", "--seed", "1", "--device", "cpu"
    )
    assert code == 0, stderr
    assert stderr == ""  # --quiet: nothing on stderr
    doc = json.loads(stdout)
    assert {"output", "test_accuracy"} <= set(doc)
    assert doc["output"] == "m.safetensors" and doc["classes"] == ["0", "1", "2"] and doc["seed"] == 1
    assert 0.5 < doc["test_accuracy"] <= 1.0
    assert doc["num_train"] + doc["num_test"] == 537  # digits 0-2: 178 + 182 + 177 images
    info = api.file_info(in_tmp / "m.safetensors")
    assert info["training"]["config"]["seed"] == 1 and info["input"] == {"channels": 1, "size": 16}
    assert info["num_params"] == doc["num_params"]
    code, stdout, _ = run_cli(*args, "-o", "m.safetensors", "--force", "--quiet")
    assert code == 0 and "test accuracy" in stdout


def test_eval(run_cli, tiny_target: Path) -> None:
    code, stdout, stderr = run_cli("eval", "--model", tiny_target, "--data", "digits", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert {"accuracy", "per_class"} <= set(doc)
    assert set(doc["per_class"]) == set("01234") and doc["split"] == "test"
    assert doc["accuracy"] > 0.8
    code, stdout, stderr = run_cli(
        "eval", "--model", tiny_target, "--data", "digits", "--classes", "1,3", "--json"
    )
    assert code == 0, stderr
    assert set(json.loads(stdout)["per_class"]) == {"1", "3"}
    code, stdout, _ = run_cli("eval", "--model", tiny_target, "--data", "digits")
    assert code == 0 and "accuracy" in stdout


def test_eval_on_a_data_file(run_cli, tiny_target: Path, digits_npz: Path) -> None:
    """The .npz holds the same rows as built-in digits, so the same split and accuracy."""
    by_name = json.loads(run_cli("eval", "--model", tiny_target, "--data", "digits", "--json").stdout)
    by_file = json.loads(run_cli("eval", "--model", tiny_target, "--data", digits_npz, "--json").stdout)
    assert by_file["accuracy"] == by_name["accuracy"] and by_file["num_samples"] == by_name["num_samples"]


def test_predict(run_cli, tiny_target: Path, digit_png: Path) -> None:
    code, stdout, stderr = run_cli(
        "predict", "--model", tiny_target, digit_png, digit_png, "--top", "2", "--json"
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert len(doc["predictions"]) == 2
    p = doc["predictions"][0]
    assert p["image"] == str(digit_png) and p["prediction"] == "3"
    assert len(p["top"]) == 2 and p["top"][0]["class"] == "3"
    assert sum(t["probability"] for t in p["top"]) <= 1.0 + 1e-6
    code, stdout, _ = run_cli("predict", "--model", tiny_target, digit_png)
    assert code == 0 and "three.png" in stdout


def test_import(run_cli, tiny_target: Path, in_tmp: Path) -> None:
    """A plain state dict plus --arch, --classes, input size and normalisation is the same model again."""
    save_file(load_file(tiny_target), "plain.safetensors")
    norm = api.file_info(tiny_target)["normalization"]
    code, stdout, stderr = run_cli(
        "import", "plain.safetensors", "--arch", "tiny_cnn", "--classes", "0-4", "--input-size", "16",
        "--mean", str(norm["mean"][0]), "--std", str(norm["std"][0]), "-o", "m.safetensors", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["output"] == "m.safetensors" and doc["sha256"] == api.file_info(tiny_target)["sha256"]
    original = json.loads(run_cli("eval", "--model", tiny_target, "--data", "digits", "--json").stdout)
    code, stdout, _ = run_cli("eval", "--model", "m.safetensors", "--data", "digits", "--json")
    assert code == 0 and json.loads(stdout)["per_class"] == original["per_class"]


# --- bad inputs: one line on stderr, documented exit code, nothing written ---------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, tiny_target: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    data = tiny_target.read_bytes()
    (root / "random.safetensors").write_bytes(np.random.default_rng(0).bytes(2048))
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (root / "empty.safetensors").write_bytes(b"")
    save_file(load_file(tiny_target), root / "plain.safetensors")
    tampered = bytearray(data)
    tampered[-3] ^= 0xFF
    (root / "tampered.safetensors").write_bytes(bytes(tampered))
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8)).astype(np.float32)
    x[7, 3, 3] = np.nan
    np.savez(root / "nan.npz", x=x, y=np.arange(40) % 4)
    np.savez(root / "tiny.npz", x=rng.random((3, 8, 8)).astype(np.float32), y=np.array(["a", "b", "b"]))
    (root / "a_file").write_text("not a directory")
    return {p.name: p for p in root.iterdir()}


TRAIN = ["train", "--arch", "tiny_cnn", "--epochs", "1", "--quiet"]

# (case name, argv with {placeholders} for fixture files, exit code, words the error line must contain)
BAD_INPUTS = [
    ("missing model: info", ["info", "missing.safetensors"], 2, ["missing.safetensors", "file not found"]),
    (
        "missing model: eval",
        ["eval", "--model", "missing.safetensors", "--data", "digits"],
        2,
        ["file not found"],
    ),
    (
        "missing data",
        [*TRAIN, "--data", "missing.npz", "-o", "out.safetensors"],
        2,
        ["'missing.npz' not found"],
    ),
    ("missing image", ["predict", "--model", "{target}", "missing.png"], 2, ["image missing.png not found"]),
    ("random bytes", ["info", "{random.safetensors}"], 2, ["not a safetensors file"]),
    ("truncated", ["eval", "--model", "{truncated.safetensors}", "--data", "digits"], 2, ["truncated file"]),
    ("empty", ["info", "{empty.safetensors}"], 2, ["not a safetensors file (only 0 bytes)"]),
    ("empty: eval", ["eval", "--model", "{empty.safetensors}", "--data", "digits"], 2, ["only 0 bytes"]),
    (
        "no metadata, no --arch",
        ["eval", "--model", "{plain.safetensors}", "--data", "digits"],
        2,
        ["no pnc metadata", "--arch"],
    ),
    (
        "unknown arch: train",
        ["train", "--arch", "nope", "--data", "digits", "-o", "out.safetensors"],
        2,
        ["unknown architecture 'nope'"],
    ),
    (
        "unknown arch: import",
        ["import", "{plain.safetensors}", "--arch", "nope", "--classes", "0-4", "-o", "out.safetensors"],
        2,
        ["unknown architecture 'nope'"],
    ),
    (
        "state dict not matching",
        [
            "import",
            "{plain.safetensors}",
            "--arch",
            "tiny_resnet",
            "--classes",
            "0-4",
            "-o",
            "out.safetensors",
        ],
        4,
        ["does not match architecture 'tiny_resnet'", "missing blocks.1.bn1.bias"],
    ),
    (
        "wrong number of classes",
        ["import", "{plain.safetensors}", "--arch", "tiny_cnn", "--classes", "0-6", "-o", "out.safetensors"],
        4,
        ["classifier.bias is [5] not [7]"],
    ),
    ("tampered tensors", ["eval", "--model", "{tampered.safetensors}", "--data", "digits"], 3, ["sha256"]),
    (
        "unknown class: train",
        [*TRAIN, "--data", "digits", "--classes", "0,42", "-o", "out.safetensors"],
        2,
        ["unknown class '42'"],
    ),
    (
        "unknown class: eval",
        ["eval", "--model", "{target}", "--data", "digits", "--classes", "cat"],
        2,
        ["unknown class 'cat'"],
    ),
    (
        "class not in the model",
        ["eval", "--model", "{target}", "--data", "digits", "--classes", "7"],
        2,
        ["'7' is not one of"],
    ),
    (
        "range of names",
        [*TRAIN, "--data", "digits", "--classes", "a-c", "-o", "out.safetensors"],
        2,
        ["needs integer class names"],
    ),
    (
        "no samples left",
        [*TRAIN, "--data", "{tiny.npz}", "--classes", "a", "-o", "out.safetensors"],
        2,
        ["no samples left"],
    ),
    ("NaN images: train", [*TRAIN, "--data", "{nan.npz}", "-o", "out.safetensors"], 2, ["NaN"]),
    (
        "NaN images: eval",
        ["eval", "--model", "{target}", "--data", "{nan.npz}", "--split", "all"],
        2,
        ["NaN"],
    ),
    (
        "bad --mean",
        ["import", "{plain.safetensors}", "--arch", "tiny_cnn", "--classes", "0-4", "--mean", "x", "-o", "o"],
        2,
        ["--mean"],
    ),
    (
        "output dir missing",
        [*TRAIN, "--data", "digits", "-o", "no/such/dir/out.safetensors"],
        2,
        ["does not exist"],
    ),
    (
        "output parent is a file",
        [*TRAIN, "--data", "digits", "-o", "{a_file}/out.safetensors"],
        2,
        ["is not a directory"],
    ),
    ("output is a directory", [*TRAIN, "--data", "digits", "-o", "."], 2, ["is a directory"]),
    (
        "bad --epochs",
        [*TRAIN, "--data", "digits", "--epochs", "0", "-o", "out.safetensors"],
        2,
        ["--epochs must be at least 1"],
    ),
    (
        "bad --fraction",
        [*TRAIN, "--data", "digits", "--fraction", "2", "-o", "out.safetensors"],
        2,
        ["--fraction"],
    ),
    (
        "bad --arch-arg",
        [*TRAIN, "--data", "digits", "--arch-arg", "width", "-o", "out.safetensors"],
        2,
        ["KEY=VALUE"],
    ),
    (
        "bad --device",
        ["eval", "--model", "{target}", "--data", "digits", "--device", "tpu"],
        2,
        ["unknown device 'tpu'"],
    ),
]


def _fill(args: list[str], files: dict[str, Path], target: Path) -> list[str]:
    out = []
    for a in args:
        if a.startswith("{") and "}" in a:
            key, rest = a[1:].split("}", 1)
            a = str(target if key == "target" else files[key]) + rest
        out.append(a)
    return out


@pytest.mark.parametrize(("case", "args", "exit_code", "needles"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(
    run_cli, snapshot, in_tmp: Path, bad_files, tiny_target: Path, case, args, exit_code, needles
) -> None:
    before, inputs_before = snapshot(in_tmp), snapshot(tiny_target.parent)
    bad_before = snapshot(next(iter(bad_files.values())).parent)
    code, stdout, stderr = run_cli(*_fill(args, bad_files, tiny_target), "--json")
    assert code == exit_code, stderr
    _one_error_line(stderr, *needles)
    assert stdout == ""
    assert snapshot(in_tmp) == before  # nothing written
    assert snapshot(tiny_target.parent) == inputs_before  # inputs untouched
    assert snapshot(next(iter(bad_files.values())).parent) == bad_before


def test_existing_output_without_force(run_cli, in_tmp: Path) -> None:
    (in_tmp / "out.safetensors").write_bytes(b"precious")
    code, stdout, stderr = run_cli(*TRAIN, "--data", "digits", "-o", "out.safetensors")
    assert code == 2
    _one_error_line(stderr, "out.safetensors exists", "--force")
    assert (in_tmp / "out.safetensors").read_bytes() == b"precious"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["out.safetensors"]


def test_output_that_is_the_input(run_cli, in_tmp: Path, tiny_target: Path) -> None:
    save_file(load_file(tiny_target), "plain.safetensors")
    before = (in_tmp / "plain.safetensors").read_bytes()
    code, _, stderr = run_cli(
        "import",
        "plain.safetensors",
        "--arch",
        "tiny_cnn",
        "--classes",
        "0-4",
        "-o",
        "plain.safetensors",
        "--force",
    )
    assert code == 2
    _one_error_line(stderr, "also an input")
    assert (in_tmp / "plain.safetensors").read_bytes() == before


def test_output_directory_not_writable(run_cli, in_tmp: Path) -> None:
    """chmod does not stop root, so this checks write permission only when not running as root;
    the missing-directory and parent-is-a-file cases in BAD_INPUTS cover every user."""
    if os.geteuid() == 0:
        pytest.skip("root can write into a read-only directory")
    locked = in_tmp / "locked"
    locked.mkdir(mode=0o555)
    code, _, stderr = run_cli(*TRAIN, "--data", "digits", "-o", locked / "out.safetensors")
    assert code == 2
    _one_error_line(stderr, "not writable")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_cuda_without_cuda(run_cli, in_tmp: Path, tiny_target: Path, digit_png: Path, command: str) -> None:
    args = {
        "train": [*TRAIN, "--data", "digits", "-o", "out.safetensors"],
        "eval": ["eval", "--model", tiny_target, "--data", "digits"],
        "predict": ["predict", "--model", tiny_target, digit_png],
    }[command]
    code, stdout, stderr = run_cli(*args, "--device", "cuda")
    assert code == 2
    _one_error_line(stderr, "no CUDA device")
    assert stdout == "" and list(in_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--data", "digits", "-o", "x.safetensors"], "Missing option '--arch'"),
        (
            ["train", "--arch", "tiny_cnn", "--data", "digits", "-o", "x", "--epochs", "many"],
            "Invalid value for '--epochs'",
        ),
        (["info", "x.safetensors", "--jsn"], "No such option: --jsn"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(run_cli, in_tmp: Path, args: list[str], needle: str) -> None:
    code, stdout, stderr = run_cli(*args)
    assert code == 2 and stdout == ""
    _one_error_line(stderr, needle, "--help")
    assert list(in_tmp.iterdir()) == []


# --- the error edge: tracebacks, interrupts, unexpected failures ------------------------------------------


def test_traceback_only_with_debug(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, stderr = run_cli("info", "missing.safetensors")
    assert code == 2 and "Traceback" not in stderr
    code, _, stderr = run_cli("--debug", "info", "missing.safetensors")
    assert code == 2 and "Traceback" in stderr and stderr.strip().splitlines()[-1].startswith("error: ")
    code, _, stderr = run_cli("info", "missing.safetensors")  # --debug does not stick to later runs
    assert "Traceback" not in stderr
    monkeypatch.setenv("PNC_DEBUG", "1")
    code, _, stderr = run_cli("info", "missing.safetensors")
    assert code == 2 and "Traceback" in stderr


@pytest.mark.parametrize(
    ("exc", "exit_code", "needle"),
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (
            RuntimeFailure("training diverged (non-finite loss); lower lr", options=("lr",)),
            1,
            "training diverged (non-finite loss); lower --lr",  # the CLI names the flag
        ),
        (ZeroDivisionError("boom"), 1, "ZeroDivisionError: boom (rerun with --debug"),
    ],
)
def test_error_edge(
    run_cli, monkeypatch: pytest.MonkeyPatch, in_tmp: Path, exc, exit_code: int, needle: str
) -> None:
    def fail(**kwargs):
        raise exc

    monkeypatch.setattr(api, "train_model", fail)
    code, stdout, stderr = run_cli(*TRAIN, "--data", "digits", "-o", "out.safetensors", "--json")
    assert code == exit_code
    _one_error_line(stderr, needle)
    assert stdout == "" and list(in_tmp.iterdir()) == []


def test_error_messages_are_not_rich_markup(run_cli, in_tmp: Path) -> None:
    code, _, stderr = run_cli("info", "[bold]x[/bold].safetensors")
    assert code == 2
    _one_error_line(stderr, "[bold]x[/bold].safetensors")
