"""No silent wrong model: clone refuses a target without target-domain data (exit 2, names --target-data)."""

from __future__ import annotations

from pathlib import Path

from pnc_cli.io.model_file import load_model, save_model


def test_clone_onto_an_imported_target_needs_target_data(
    run_cli, tiny_target: Path, tiny_source: Path, tmp_path: Path
) -> None:
    loaded = load_model(tiny_target)
    bare = tmp_path / "imported.safetensors"  # as `pnc import` writes it: no training record
    from dataclasses import replace

    save_model(bare, loaded.network, replace(loaded.spec, training=None))
    out = tmp_path / "delta.safetensors"
    args = ["clone", "-s", tiny_source, "-t", bare, "-c", "5", "-o", out, "--epochs", "1"]
    code, stdout, stderr = run_cli(*args, "--quiet")  # (notes such as the recorded data are not errors)
    assert code == 2 and stdout == "" and not out.exists()
    assert "--target-data" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run_cli(*args, "--target-data", "digits", "--quiet", "--json")
    assert code == 0, stderr
    assert out.exists()
