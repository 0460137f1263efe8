"""pnc in shell pipelines and CI (issue 11): ``-`` for stdin/stdout, quality gates, remove --verify,
--dry-run, plain full-width tables and progress lines off a terminal, --log-file, --tsv, JSON rounding,
and ``pnc --version`` without torch. CliRunner for the options, subprocesses for real pipes."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pnc_cli import api
from pnc_cli.core.config import CloneConfig

PY = shlex.quote(sys.executable)
ROOT = Path(__file__).resolve().parents[2]


def sh(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a bash script with ``pnc`` bound to this interpreter's ``python -m pnc_cli``."""
    full = f'set -euo pipefail\npnc() {{ {PY} -m pnc_cli "$@"; }}\n{script}'
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        ["bash", "-c", full], cwd=cwd, capture_output=True, text=True, timeout=600, env=environ
    )


@pytest.fixture(scope="module")
def cloned(tmp_path_factory: pytest.TempPathFactory, make_tiny_model: Callable[..., Path]) -> SimpleNamespace:
    """A tiny target (digits 0-4), a source (5-9), a delta for class 5 and the cloned model."""
    d = tmp_path_factory.mktemp("pipes")
    target, source = make_tiny_model("0-4"), make_tiny_model("5-9")
    delta, merged = d / "delta.safetensors", d / "cloned.safetensors"
    api.clone(
        source=source,
        target=target,
        classes="5",
        output=delta,
        config=CloneConfig(epochs=1),
        merged=merged,
        device="cpu",
    )
    return SimpleNamespace(dir=d, target=target, source=source, delta=delta, cloned=merged)


def floats(doc: Any) -> list[float]:
    if isinstance(doc, float):
        return [doc]
    if isinstance(doc, dict):
        return [f for v in doc.values() for f in floats(v)]
    if isinstance(doc, list):
        return [f for v in doc for f in floats(v)]
    return []


# --- version, JSON rounding ------------------------------------------------------------------------


def test_version_and_help_import_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys; sys.argv = ['pnc', '--version']\n"
        "import pnc_cli.cli as c\n"
        "try:\n    c.main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'pnc --version imported torch'\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.endswith("ok\n"), proc.stderr
    assert proc.stdout.startswith("pnc ")


def test_completion_is_offered(run_cli) -> None:
    code, stdout, _ = run_cli("--help")
    assert code == 0 and "--install-completion" in stdout and "--show-completion" in stdout


def test_json_numbers_have_six_significant_digits(run_cli, cloned: SimpleNamespace) -> None:
    code, stdout, stderr = run_cli("eval", "--model", cloned.cloned, "--data", "digits", "--json", "-q")
    assert code == 0, stderr
    values = floats(json.loads(stdout))
    assert values and all(float(f"{v:.6g}") == v for v in values)
    assert not re.search(r"[1-9]\d{7,}", stdout.replace(".", ""))  # no float32 noise: 0.9660000205039978


# --- gates ------------------------------------------------------------------------------------------


def test_eval_reports_the_target_alone_beside_the_cloned_model(run_cli, cloned: SimpleNamespace) -> None:
    code, stdout, _ = run_cli("eval", "--model", cloned.cloned, "--data", "digits", "--json", "-q")
    doc = json.loads(stdout)
    assert code == 0 and doc["kind"] == "cloned"
    assert 0 <= doc["target_ori_acc"] <= 1
    assert doc["ori_drop"] == pytest.approx(doc["target_ori_acc"] - doc["ori_acc"], abs=1e-5)
    target = json.loads(run_cli("eval", "--model", cloned.target, "--data", "digits", "--json")[1])
    assert doc["target_ori_acc"] == pytest.approx(
        target["accuracy"], abs=1e-5
    )  # same samples, the target alone


def test_gates_pass_fail_and_name_what_fell_short(run_cli, cloned: SimpleNamespace) -> None:
    base = ("eval", "--model", cloned.cloned, "--data", "digits", "-q")
    code, stdout, stderr = run_cli(*base, "--fail-under", "ori=0", "--fail-under", "tar=0%", "--json")
    assert code == 0, stderr
    assert [g["passed"] for g in json.loads(stdout)["gates"]] == [True, True]
    code, stdout, stderr = run_cli(*base, "--fail-under", "tar=1.01", "--fail-under", "avg=0", "--json")
    assert code == 3
    assert json.loads(stdout)["gates"][0] == {
        "metric": "tar",
        "op": "min",
        "threshold": 1.01,
        "value": json.loads(stdout)["tar_acc"],
        "passed": False,
    }
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: gate failed: tar ") and "< 1.01" in lines[0]
    assert "avg" not in lines[0]  # only what fell short
    # ori_drop is a cost: --fail-under and --fail-over both mean "fail when above"
    for flag in ("--fail-under", "--fail-over"):
        code, _, stderr = run_cli(*base, flag, "ori_drop=-1")
        assert code == 3 and "ori_drop" in stderr and "> -1" in stderr
        code, _, _ = run_cli(*base, flag, "ori_drop=1")
        assert code == 0


def test_gates_bad_input_is_exit_2(run_cli, cloned: SimpleNamespace) -> None:
    for args in (
        ("--model", cloned.target, "--fail-under", "ori=0.5"),  # a plain model has no Ori Acc
        ("--model", cloned.cloned, "--fail-under", "speed=1"),
        ("--model", cloned.cloned, "--fail-under", "tar"),
        ("--model", cloned.cloned, "--fail-under", "tar=high"),
    ):
        code, stdout, stderr = run_cli("eval", "--data", "digits", *args)
        assert code == 2 and stdout == "", args
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: ")
    code, _, _ = run_cli("eval", "--model", cloned.target, "--data", "digits", "--fail-under", "accuracy=0.5")
    assert code == 0


def test_remove_verify(run_cli, cloned: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "restored.safetensors"
    code, stdout, stderr = run_cli("remove", cloned.cloned, "-o", out, "--verify", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["identical_to_original"] and out.read_bytes() == cloned.target.read_bytes()
    # two deltas, one removed: the result is not the original target -> 3, nothing written
    stacked = tmp_path / "stacked.safetensors"
    delta6 = tmp_path / "d6.safetensors"
    api.clone(
        source=cloned.source,
        target=cloned.cloned,  # stacked onto the cloned model
        classes="6",
        output=delta6,
        config=CloneConfig(epochs=1),
        device="cpu",
    )
    code, _, stderr = run_cli("apply", "-t", cloned.cloned, "-d", delta6, "-o", stacked)
    assert code == 0, stderr
    partial = tmp_path / "partial.safetensors"
    code, stdout, stderr = run_cli("remove", stacked, "--delta", "clone-6", "-o", partial, "--verify")
    assert code == 3 and stdout == "" and not partial.exists()
    assert "would remain" in stderr and len(stderr.strip().splitlines()) == 1


# --- '-' as stdin / stdout ---------------------------------------------------------------------------


def test_dash_reads_stdin_and_writes_stdout(cloned: SimpleNamespace, tmp_path: Path) -> None:
    proc = sh(
        f"cat {cloned.target} | pnc info - --json > info.json\n"
        f"pnc apply -t {cloned.target} -d {cloned.delta} -o - --json 2> apply.json "
        "| pnc info - --json > cloned.json\n"
        f"pnc apply -t {cloned.target} -d {cloned.delta} -o - -q > cloned.safetensors\n"
        f"pnc remove - -o - --verify -q < cloned.safetensors > restored.safetensors\n"
        f"cat cloned.safetensors | pnc eval --model - --data digits --json -q > eval.json\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "info.json").read_text())["kind"] == "model"
    apply_doc = json.loads((tmp_path / "apply.json").read_text())  # the JSON goes to stderr with -o -
    assert apply_doc["output"] == "-" and apply_doc["deltas"] == ["clone-5"]
    info = json.loads((tmp_path / "cloned.json").read_text())
    assert info["kind"] == "cloned" and info["sha256"] == apply_doc["sha256"]
    assert (tmp_path / "restored.safetensors").read_bytes() == cloned.target.read_bytes()
    assert json.loads((tmp_path / "eval.json").read_text())["model"] == "-"
    assert not (tmp_path / "-").exists()


def test_dash_with_a_terminal_or_empty_stdin_is_refused(cloned: SimpleNamespace, tmp_path: Path) -> None:
    proc = sh("pnc info - < /dev/null", tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: input '-': stdin is empty")


def test_failing_command_puts_nothing_on_stdout(cloned: SimpleNamespace, tmp_path: Path) -> None:
    proc = sh(f"pnc apply -t {cloned.target} -d {cloned.target} -o - > out.bin", tmp_path)
    assert proc.returncode != 0 and (tmp_path / "out.bin").read_bytes() == b""


# --- --dry-run -------------------------------------------------------------------------------------


def test_dry_runs_write_nothing(run_cli, cloned: SimpleNamespace, in_tmp: Path, snapshot) -> None:
    before = snapshot(in_tmp)
    st, tg = cloned.source, cloned.target
    code, stdout, stderr = run_cli(
        "clone", "-s", st, "-t", tg, "-c", "5-6", "-o", "d.safetensors", "--dry-run", "--json"
    )
    assert code == 0, stderr
    plan = json.loads(stdout)
    assert (
        plan["dry_run"]
        and plan["classes"] == ["5", "6"]
        and plan["positions"] == ([0] if plan.get("head") == "joint" else [2, 1, 0])
    )
    assert plan["outputs"] == [{"path": "d.safetensors", "exists": False, "overwrite": False}]
    assert plan["train_samples"] > 0 and plan["test_samples"] > 0 and plan["data"] == "digits"
    assert 0 < plan["max_delta_params"] <= plan["source_params"]
    code, stdout, _ = run_cli(
        "apply", "-t", tg, "-d", cloned.delta, "-o", "c.safetensors", "--dry-run", "--json"
    )
    assert code == 0 and json.loads(stdout)["classes"] == ["0", "1", "2", "3", "4", "5"]
    code, stdout, _ = run_cli(
        "remove", cloned.cloned, "-o", "r.safetensors", "--dry-run", "--verify", "--json"
    )
    assert (
        code == 0 and json.loads(stdout)["restores_target"] and json.loads(stdout)["byte_identity_checkable"]
    )
    code, stdout, stderr = run_cli(
        "rank-sources",
        st,
        tg,
        "-t",
        tg,
        "-c",
        "5",
        "-d",
        "digits",
        "--clone-best",
        "-o",
        "b.safetensors",
        "--dry-run",
        "--json",
    )
    assert code == 0, stderr
    plan = json.loads(stdout)
    assert [c["source"] for c in plan["candidates"]] == [str(st), str(tg)] and plan["samples"] > 0
    code, stdout, _ = run_cli("clone", "-s", st, "-t", tg, "-c", "5", "-o", "d.safetensors", "--dry-run")
    assert code == 0 and "dry run: clone" in stdout
    assert snapshot(in_tmp) == before
    # a dry run fails where the real run would
    code, _, stderr = run_cli(
        "clone", "-s", st, "-t", tg, "-c", "5", "-o", "d.safetensors", "--position", "9", "--dry-run"
    )
    assert code == 2 and "--position 9" in stderr


# --- tables, progress and logs off a terminal --------------------------------------------------------


def test_tables_are_full_width_off_a_terminal(run_cli, cloned: SimpleNamespace, tmp_path: Path) -> None:
    long = tmp_path / ("candidate-" + "x" * 120 + ".safetensors")
    long.write_bytes(cloned.target.read_bytes())
    code, stdout, _ = run_cli("info", long)
    sha = json.loads(run_cli("info", long, "--json")[1])["sha256"]
    assert code == 0 and str(long) in stdout  # the name is not cut
    assert any(sha in line for line in stdout.splitlines())  # the sha256 on one line
    assert all(line == line.rstrip() for line in stdout.splitlines())  # no trailing spaces
    assert not any(ch in stdout for ch in "┃│━─")  # plain text, no box drawing
    code, stdout, _ = run_cli("info", long, "--tsv")
    assert code == 0 and f"sha256\t{sha}" in stdout.splitlines()
    code, stdout, _ = run_cli("list-archs", "--tsv")
    assert stdout.splitlines()[0] == "name\tblocks\tinput\tdescription"


def test_progress_lines_heartbeat_and_log_file(tmp_path: Path) -> None:
    proc = sh(
        "pnc train --arch tiny_cnn --data digits --classes 0-4 --epochs 2 --input-size 16 "
        "-o t.safetensors --log-file run.log",
        tmp_path,
        PNC_HEARTBEAT_S="0.05",
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[")]
    assert any(re.match(r"\[\s*[\d.]+s\] train: start \(\d+ steps\)", ln) for ln in lines), proc.stderr
    done = [ln for ln in lines if "train:" in ln and ln.endswith("done")]
    assert len(done) == 1 and "steps/s" in done[0] and "loss=" in done[0]
    assert all(len(ln) < 200 for ln in lines)
    log = (tmp_path / "run.log").read_text()
    assert done[0].split("] ", 1)[1] in log  # the same lines in the log file


def test_heartbeat_when_a_stage_is_silent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from pnc_cli.cli import _console as console

    monkeypatch.setattr(console, "HEARTBEAT_S", 0.05)
    console.configure(quiet=False)
    progress = console.make_progress(quiet=False)
    progress.start("surrogate", total=10)
    time.sleep(0.4)
    progress.finish()
    console.close_log()
    err = capsys.readouterr().err
    assert "still working (surrogate)" in err and err.index("surrogate: start") < err.index("still working")


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    proc = sh(
        "pnc train --arch tiny_cnn --data digits --classes 0-4 --epochs 1 --input-size 16 "
        "-o t.safetensors -q",
        tmp_path,
        PNC_HEARTBEAT_S="0.05",
    )
    assert proc.returncode == 0 and proc.stderr == ""
