"""Progress reporting for long loops: a rich bar on a terminal, log lines otherwise.

It also carries cancellation: a UI sets the ``cancel`` event and the running
stage stops at its next progress step with :class:`Cancelled`. (Defined here,
not in the runner, so that imports go one way: runner -> progress.)
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, Iterable, Iterator


class Cancelled(Exception):
    """Raised inside a stage's progress loop when the caller asked to stop."""


def make_progress(stage_id: str, log: logging.Logger,
                  on_progress: Callable[[str, int, int | None], None] | None,
                  cancel: threading.Event | None, quiet: bool = False):
    """A factory ``(iterable, total, desc) -> iterator`` for :meth:`StageContext.progress`."""
    interactive = sys.stderr.isatty() and not quiet

    def factory(iterable: Iterable, total: int | None = None, desc: str = "") -> Iterator:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        label = f"[{stage_id}] {desc}" if desc and desc != stage_id else f"[{stage_id}]"

        def steps() -> Iterator:
            last_log = time.monotonic()
            for i, item in enumerate(iterable):
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"stage {stage_id} cancelled")
                yield item
                if on_progress is not None:
                    on_progress(stage_id, i + 1, total)
                if not interactive and time.monotonic() - last_log > 10:
                    last_log = time.monotonic()
                    log.info(f"{label} {i + 1}/{total if total else '?'}")

        if not interactive:
            yield from steps()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(label, total=total)
            for item in steps():
                yield item
                bar.advance(task)

    return factory
