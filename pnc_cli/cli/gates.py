"""Quality gates for CI: ``pnc eval --fail-under METRIC=VALUE`` / ``--fail-over METRIC=VALUE``.

Layer cli. A gate compares one number of the eval document with a threshold; any failed gate makes the
command exit 3 (EXIT_VERIFY) with one line naming what fell short, after the result was printed.
``ori_drop`` (target alone minus cloned, on the target's classes) is a cost: ``--fail-under
ori_drop=X`` means the same as ``--fail-over ori_drop=X`` (fail when the drop is above X).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import UsageError

# gate name -> key in the eval document
METRICS = {
    "accuracy": "accuracy",
    "ori": "ori_acc",
    "tar": "tar_acc",
    "avg": "avg_acc",
    "mean": "mean_acc",
    "locality": "locality",
    "ori_drop": "ori_drop",
}
COSTS = {"ori_drop"}  # lower is better: a minimum makes no sense, so --fail-under means a maximum
CLONED_ONLY = set(METRICS) - {"accuracy"}


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str  # "min" (fail when below) or "max" (fail when above)
    threshold: float
    flag: str

    def describe(self) -> str:
        return f"{self.flag} {self.metric}={self.threshold:g}"


def _value(text: str, flag: str, item: str) -> float:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"{flag} {item!r}: VALUE must be a number, e.g. 0.9 or 90%") from None


def parse(under: list[str] | None, over: list[str] | None) -> list[Gate]:
    gates = []
    for flag, items, op in (("--fail-under", under, "min"), ("--fail-over", over, "max")):
        for item in items or []:
            name, sep, text = item.partition("=")
            name = name.strip().lower()
            if not sep or name not in METRICS:
                raise UsageError(
                    f"{flag} {item!r} must be METRIC=VALUE with METRIC one of {', '.join(METRICS)}, "
                    f"e.g. {flag} tar=0.9"
                )
            gates.append(Gate(name, "max" if name in COSTS else op, _value(text, flag, item), flag))
    return gates


def check(gates: list[Gate], doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per gate: metric, op, threshold, value, passed. A metric the model lacks is exit 2."""
    out = []
    for g in gates:
        if g.metric in CLONED_ONLY and doc.get("kind") != "cloned":
            raise UsageError(
                f"{g.describe()}: '{g.metric}' exists only for a cloned model; "
                "gate a plain model with accuracy"
            )
        value = doc.get(METRICS[g.metric])
        passed = value is not None and (value >= g.threshold if g.op == "min" else value <= g.threshold)
        out.append(
            {"metric": g.metric, "op": g.op, "threshold": g.threshold, "value": value, "passed": passed}
        )
    return out


def failure_line(results: list[dict[str, Any]]) -> str | None:
    """``gate failed: tar 0.812 < 0.9; ori_drop 0.07 > 0.05`` or None when all passed."""
    bad = [r for r in results if not r["passed"]]
    if not bad:
        return None
    parts = []
    for r in bad:
        value = "n/a (no samples)" if r["value"] is None else f"{r['value']:.6g}"
        parts.append(f"{r['metric']} {value} {'<' if r['op'] == 'min' else '>'} {r['threshold']:g}")
    return "gate failed: " + "; ".join(parts)
