"""Progress bars for long work: training epochs, scoring passes, and a whole run (models and trials, with ETA).

They are drawn only when the user watches a terminal: `bench.cli` sets `BENCH_PROGRESS=1` when its stderr is
one (set `BENCH_PROGRESS=0` to turn them off), so CI logs and redirected output stay free of them. Bars use
tqdm; inside a Ray worker they use Ray's tqdm integration, which draws them on the driver's terminal
(`BENCH_PROGRESS` reaches the workers with the rest of `bench.runner.FORWARDED_ENV`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator


def enabled() -> bool:
    return os.environ.get("BENCH_PROGRESS", "0").strip() == "1"


def _in_ray_worker() -> bool:
    """Whether this process is one of Ray's workers (the driver never trains or scores while Ray is up)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def _tqdm(**kwargs):
    if _in_ray_worker():
        from ray.experimental.tqdm_ray import tqdm

        return tqdm(**{key: value for key, value in kwargs.items() if key in ("iterable", "desc", "total", "unit")})
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


def steps(iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it") -> Iterable:
    """`iterable`, with a bar that closes when it is exhausted (the iterable itself when bars are off)."""
    if not enabled():
        return iterable
    return _closing(_tqdm(iterable=iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True))


def _closing(bar) -> Iterator:
    try:
        yield from bar
    finally:
        bar.close()


class _Silent:
    def update(self, count: int = 1) -> None:
        pass


@contextlib.contextmanager
def counter(total: int, desc: str, unit: str = "job"):
    """A bar the caller advances with `update()`, for the driver's whole run; log lines print above it."""
    if not enabled() or total <= 0:
        yield _Silent()
        return
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True) as bar:
        yield bar
