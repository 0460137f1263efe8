"""Progress reporting protocol used by long-running library code.

Layer core: stdlib only. Algorithm and orchestration modules receive a ``Progress`` and call
``start``/``advance``/``finish``; the CLI implements it with rich on stderr. Library code never prints.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1, **metrics: Any) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress that reports nothing (the default for library calls)."""

    def start(self, stage: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int = 1, **metrics: Any) -> None:
        pass

    def finish(self) -> None:
        pass


class RecordingProgress:
    """Progress that records calls; used by tests to check stage names and counts."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, int | None]] = []
        self.advanced: dict[str, int] = {}
        self.metrics: list[dict[str, Any]] = []
        self._current = ""

    def start(self, stage: str, total: int | None = None) -> None:
        self._current = stage
        self.stages.append((stage, total))
        self.advanced.setdefault(stage, 0)

    def advance(self, n: int = 1, **metrics: Any) -> None:
        self.advanced[self._current] = self.advanced.get(self._current, 0) + n
        if metrics:
            self.metrics.append(dict(metrics))

    def finish(self) -> None:
        pass
