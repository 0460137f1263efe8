"""Which custom architectures (user code) pnc may import.

Layer core: stdlib only. A custom architecture ``package.module:function`` is Python code and
importing it runs it, so pnc imports one only when the user trusts it: by naming it for the command
(``pnc train --arch m:f``, ``pnc import --arch m:f``), with ``--trust-arch m:f`` (repeatable), with the
environment variable ``PNC_TRUST_ARCH`` (comma-separated names) or, from Python, inside
``trusted_archs("m:f")``. A file's metadata alone never makes pnc import anything, and header-only
readers (``pnc info``) run under ``no_user_code()`` where nothing is trusted (docs/security.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ENV_TRUST = "PNC_TRUST_ARCH"

_trusted: ContextVar[frozenset[str]] = ContextVar("pnc_trusted_archs", default=frozenset())
_blocked: ContextVar[bool] = ContextVar("pnc_no_user_code", default=False)


def env_trusted() -> frozenset[str]:
    """Names listed in ``PNC_TRUST_ARCH`` (comma-separated, blanks ignored)."""
    raw = os.environ.get(ENV_TRUST, "")
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


def is_trusted(name: str) -> bool:
    """Whether the custom architecture ``name`` may be imported here and now."""
    if _blocked.get():
        return False
    return name in _trusted.get() or name in env_trusted()


def user_code_blocked() -> bool:
    return _blocked.get()


@contextmanager
def trusted_archs(*names: str | Iterable[str] | None) -> Iterator[None]:
    """Trust these custom architectures inside the block (names may be given as strings or lists)."""
    add: set[str] = set()
    for n in names:
        if n is None:
            continue
        add.update([n] if isinstance(n, str) else n)
    token = _trusted.set(_trusted.get() | frozenset(add))
    try:
        yield
    finally:
        _trusted.reset(token)


@contextmanager
def no_user_code() -> Iterator[None]:
    """Inside the block no custom architecture is imported, whatever is trusted (header-only readers)."""
    token = _blocked.set(True)
    try:
        yield
    finally:
        _blocked.reset(token)
