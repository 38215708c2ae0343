"""User-facing errors: tools print them as one line and exit non-zero, without a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class GrapeInputError(Exception):
    """A problem with what the user gave us (a file, a flag, a dataset name), not a bug.

    The message must name the file or value and the problem, in one line.
    """


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate a tool's ``main`` so user mistakes print one line and exit with status 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except GrapeInputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    return wrapper
