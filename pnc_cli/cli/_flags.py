"""Parameter names in error messages, written as the command line's flags.

Code below the CLI names parameters ("epochs must be at least 1, got 0") and lists them in the error's
``options``; ``cli_message`` rewrites them as flags ("--epochs must be at least 1, got 0").
"""

from __future__ import annotations

import re

from ..core.errors import PncError

# Parameter names (config fields, API arguments) whose flag is not ``--`` + the name in kebab case.
FLAG_OF: dict[str, str] = {"max_extra_ratio": "--max-extra", "output": "-o"}


def flag_of(name: str) -> str:
    """The command-line flag of a parameter name: ``batch_size`` -> ``--batch-size``."""
    return FLAG_OF.get(name, "--" + name.replace("_", "-"))


def cli_message(exc: PncError) -> str:
    """The error's message with the parameter names it declares (``exc.options``) written as flags.

    Code below the CLI names parameters ("epochs must be at least 1, got 0"); users of the command line
    see "--epochs must be at least 1, got 0". Messages read "what is wrong; what to do": a name that
    occurs in the what-to-do part (after the last "; ") is replaced there, everywhere in that part;
    otherwise its first occurrence in the message is. Only whole words, never parts of paths.
    """
    message = str(exc)
    head, sep, tail = message.rpartition("; ")
    if not sep:
        head, tail = "", message
    for name in sorted(getattr(exc, "options", ()), key=len, reverse=True):
        word = re.compile(r"(?<![\w./-])" + re.escape(name) + r"(?![\w/-]|\.\w)")
        if word.search(tail):
            tail = word.sub(flag_of(name), tail)
        else:
            head = word.sub(flag_of(name), head, count=1)
    return head + sep + tail
