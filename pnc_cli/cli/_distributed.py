"""A command's run under ``torchrun``: the process group, the runtime settings, failing together.

Layer L5. ``process_group(run)`` wraps every command body: it applies ``--workers``/``--precision``
(core/device.py ``configure``), joins the process group torchrun describes (gloo on the CPU, nccl on
CUDA; nothing happens outside torchrun) and leaves it at the end. When a rank fails, the first error is
recorded in the group's store; the rank that recorded it reports it (one line, as usual) and every
other rank leaves silently with the same exit code (docs/scale.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer

from ..core.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, PncError


@contextlib.contextmanager
def process_group(run: Any) -> Iterator[None]:
    # torch is imported here, not at module level: `pnc --version` and `--help` stay fast
    from ..core.device import configure, is_main_process, resolve_device
    from ..core.distributed import env_world_size, init_from_env, is_distributed, record_failure, shutdown

    configure(workers=run.workers, precision=run.precision)
    try:
        if env_world_size() > 1:
            init_from_env(resolve_device(run.device))
        yield
    except (typer.Exit, typer.Abort):
        raise
    except BaseException as exc:
        code = (
            exc.exit_code
            if isinstance(exc, PncError)
            else EXIT_INTERRUPTED
            if isinstance(exc, KeyboardInterrupt)
            else EXIT_RUNTIME
        )
        if is_distributed():
            first, code = record_failure(str(exc), code)
            if not first:  # another rank failed first and reports it
                raise typer.Exit(code) from None
        elif env_world_size() > 1 and not is_main_process():
            raise typer.Exit(code) from None  # before the group exists every rank fails alike: rank 0 says it
        raise
    finally:
        shutdown()
