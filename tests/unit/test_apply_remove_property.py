"""Property: applying deltas in any order (in one call or stacked one call at a time) and removing
them in any order returns the target file byte-identical (hypothesis; tiny nets, few examples)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnc_cli import api
from pnc_cli.io.delta_file import write_delta
from tests.data.make_golden import SOURCE_CLASSES, TARGET_CLASSES, make_delta, tiny_model_file

NAMES = ("clone-4", "clone-5", "clone-6")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("prop")
    target, source = d / "target.safetensors", d / "source.safetensors"
    _, target_sha = tiny_model_file(target, TARGET_CLASSES, seed=0)
    source_net, source_sha = tiny_model_file(source, SOURCE_CLASSES, seed=1)
    out = {"target": target}
    for i, name in enumerate(NAMES):
        p = d / f"{name}.safetensors"
        cls = name.split("-")[1]
        kw = {"target_sha": target_sha, "source_net": source_net, "source_sha": source_sha}
        write_delta(p, make_delta(**kw, name=name, classes=(cls,), seed=i))
        out[name] = p
    return out


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    order=st.permutations(NAMES),
    stacked=st.booleans(),
    removal=st.permutations(NAMES),
    data=st.data(),
)
def test_any_apply_and_remove_order_restores_the_target(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, order, stacked, removal, data
) -> None:
    k = data.draw(st.integers(1, len(NAMES)), label="number of deltas")
    chosen = list(order[:k])
    d = tmp_path_factory.mktemp("run")
    current = files["target"]
    if stacked:  # one apply per delta, each onto the previous cloned model
        for i, name in enumerate(chosen):
            nxt = d / f"c{i}.safetensors"
            api.apply_delta(target=current, deltas=[files[name]], output=nxt)
            current = nxt
    else:
        current = d / "c.safetensors"
        api.apply_delta(target=files["target"], deltas=[files[n] for n in chosen], output=current)
    left = [n for n in removal if n in chosen]
    for i, name in enumerate(left):  # remove one at a time, in the drawn order
        nxt = d / f"r{i}.safetensors"
        doc = api.remove_delta(cloned=current, output=nxt, names=[name])
        current = nxt
        assert doc["restored"] == (i == len(left) - 1)
    assert current.read_bytes() == files["target"].read_bytes()
