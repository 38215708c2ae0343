"""Run one function in a fresh spawned process: a benchmark row then has its own imports,
thread pools and peak memory (``ru_maxrss``), untouched by what the caller has loaded."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def in_fresh_process(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a spawned child; its exception is raised here. ``function`` and
    ``args`` must be picklable (a module-level function)."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(function, *args).result()
