"""Fuzz the readers of every pnc file kind: the only allowed outcomes are success or a PncError.

Seeds: a model, a delta, a cloned model, a surrogate and a search file (delta, cloned and search
files sealed). Readers: every ``read_*`` of io, ``pnc info``'s ``file_info`` and ``load_cloned`` (the
runnable cloned model built from the deltas). Mutations (hypothesis):

- bytes: flip, overwrite, truncate, insert, a random header length;
- metadata-aware: a metadata value replaced by JSON of the wrong type (int, float, bool, null, list,
  object, string), a deeply nested value, a 5000-digit number, a huge string, a key removed, a
  nested field of a JSON object given a wrong type — then written back with the same tensors and,
  half of the time, the hashes recomputed (``pnc.sha256``, ``pnc.seal``) so the mutation gets past
  the integrity checks to the parsers.

Duration: ``PNC_FUZZ_SECONDS`` (default 20 s in the normal suite; ``make fuzz`` runs 300 s).
Run alone: ``PNC_FUZZ_SECONDS=300 python -m pytest tests/fuzz -s``.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from pnc_cli import api
from pnc_cli.core.errors import PncError
from pnc_cli.io.delta_file import read_cloned, read_delta, write_delta
from pnc_cli.io.model_file import load_model
from pnc_cli.io.safetensors_io import KEY_SEAL, content_sha256, metadata_sha256, serialize
from pnc_cli.io.search_file import CURVE_FIELDS, SearchFile, read_search, write_search
from pnc_cli.io.surrogate_file import SurrogateFile, read_surrogate, write_surrogate
from tests.data.make_golden import SOURCE_CLASSES, TARGET_CLASSES, make_delta, tiny_model_file

SECONDS = float(os.environ.get("PNC_FUZZ_SECONDS", "20"))

READERS: dict[str, Callable[[Path], Any]] = {
    "model": load_model,
    "delta": read_delta,
    "cloned": read_cloned,
    "surrogate": read_surrogate,
    "search": read_search,
    "info": api.file_info,
    "cloned_model": api.load_cloned,  # read_cloned, then the runnable model built from its deltas
}
SEED_OF = {"info": "model", "cloned_model": "cloned"}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz-seeds")
    torch.set_num_threads(1)
    target, source = d / "target.safetensors", d / "source.safetensors"
    _, target_sha = tiny_model_file(target, TARGET_CLASSES, seed=0)
    source_net, source_sha = tiny_model_file(source, SOURCE_CLASSES, seed=1)
    delta = make_delta(target_sha=target_sha, source_net=source_net, source_sha=source_sha)
    write_delta(d / "delta.safetensors", delta)
    api.apply_delta(target=target, deltas=[d / "delta.safetensors"], output=d / "cloned.safetensors")
    g = torch.Generator().manual_seed(0)
    sur = SurrogateFile(
        theta=torch.randn(2, 4, 3, generator=g),
        intercept=torch.randn(2, 3, generator=g),
        masks=torch.ones(3, 4),
        weights=torch.ones(3),
        sample_index=torch.arange(2),
        config={"grid": 2, "seed": 0},
        model_sha256=target_sha,
        model_classes=list(TARGET_CLASSES),
        data={"data": "digits", "samples_sha256": "x"},
    )
    write_surrogate(d / "surrogate.safetensors", sur)
    search = SearchFile(delta, {f: torch.zeros(2) for f in CURVE_FIELDS}, {"source": source_sha})
    write_search(d / "search.safetensors", search)
    out = {"model": target.read_bytes()}
    for kind in ("delta", "cloned", "surrogate", "search"):
        out[kind] = (d / f"{kind}.safetensors").read_bytes()
    for kind, data in out.items():  # every seed reads back cleanly
        p = d / f"check-{kind}.safetensors"
        p.write_bytes(data)
        READERS[kind](p)
    return out


# --- mutations --------------------------------------------------------------------------------------

WRONG_JSON = st.one_of(
    st.integers(-(2**70), 2**70).map(json.dumps),
    st.floats(allow_nan=False).map(json.dumps),
    st.sampled_from(["true", "null", "[]", "{}", '""', '"x"', "NaN", "Infinity", "-1", "0", "1e400"]),
    st.lists(st.integers(), max_size=4).map(json.dumps),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(json.dumps),
    st.integers(30, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(30, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.just("9" * 5000),
    st.integers(1, 2_000_000).map(lambda n: json.dumps("x" * n)),
    st.text(max_size=20),
)


def _split(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        meta = header.pop("__metadata__")
        from safetensors.torch import load

        return load(data), meta
    except Exception:
        return None


def _wrong_nested(value: str, draw: Any) -> str:
    try:
        obj = json.loads(value)
    except ValueError:
        return value
    if isinstance(obj, dict) and obj:
        key = draw(st.sampled_from(sorted(obj)))
        obj[key] = json.loads(draw(WRONG_JSON.filter(lambda s: len(s) < 10_000 and _is_json(s))))
    elif isinstance(obj, list) and obj:
        i = draw(st.integers(0, len(obj) - 1))
        obj[i] = json.loads(draw(WRONG_JSON.filter(lambda s: len(s) < 10_000 and _is_json(s))))
    return json.dumps(obj)


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
        return True
    except (ValueError, RecursionError):
        return False


@st.composite
def mutation(draw: Any, data: bytes) -> tuple[str, bytes]:
    how = draw(
        st.sampled_from(["flip", "truncate", "insert", "length", "meta", "meta", "meta", "nested", "drop"])
    )
    if how == "flip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] = draw(st.integers(0, 255))
        return how, bytes(buf)
    if how == "truncate":
        return how, data[: draw(st.integers(0, len(data) - 1))]
    if how == "insert":
        i = draw(st.integers(0, len(data)))
        return how, data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]
    if how == "length":
        return how, struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + data[8:]
    parts = _split(data)
    assert parts is not None
    tensors, meta = parts
    key = draw(st.sampled_from(sorted(meta)))
    if how == "drop":
        meta.pop(key)
    elif how == "nested":
        meta[key] = _wrong_nested(meta[key], draw)
    else:
        meta[key] = draw(WRONG_JSON)
    if draw(st.booleans()):  # re-sign, so the parsers behind the hash checks are reached
        if "pnc.sha256" in meta and key != "pnc.sha256":
            meta["pnc.sha256"] = content_sha256(tensors)
        if KEY_SEAL in meta and key != KEY_SEAL:
            meta[KEY_SEAL] = metadata_sha256(meta)
    return f"{how}:{key}", serialize(tensors, meta)


# --- the target -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(READERS))
def test_readers_only_succeed_or_raise_pnc_errors(
    kind: str, seeds: dict[str, bytes], tmp_path: Path, record_property: Any
) -> None:
    reader, data = READERS[kind], seeds[SEED_OF.get(kind, kind)]
    path = tmp_path / "fuzzed.safetensors"
    outcomes: Counter[str] = Counter()
    budget = SECONDS / len(READERS)
    crashes: list[str] = []

    @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(d: Any) -> None:
        what, mutated = d.draw(mutation(data))
        path.write_bytes(mutated)
        try:
            reader(path)
            outcomes["ok"] += 1
        except PncError as exc:
            outcomes[type(exc).__name__] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            crashes.append(f"{kind} {what}: {type(exc).__name__}: {str(exc)[:200]}")

    start, i = time.monotonic(), 0
    while time.monotonic() - start < budget and not crashes:
        seed(i)(one)()
        i += 1
    total = sum(outcomes.values()) + len(crashes)
    record_property("fuzz", f"{kind}: {total} examples, {dict(outcomes)}")
    print(f"fuzz {kind}: {total} examples in {time.monotonic() - start:.0f} s, outcomes {dict(outcomes)}")
    assert not crashes, "\n".join(crashes[:10])
    assert total > 0
