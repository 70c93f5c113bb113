"""Named, guarded background tasks and their cancel-then-await shutdown.

Exists so every long-lived task of both services (tunnel loops, Kubernetes watchers and
writers) is named (visible in task dumps), has its crash logged instead of lost, and is
stopped the same way. Must not hold any logic of what the tasks do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)


def _report(task: asyncio.Task[None]) -> None:
    """Log a task's crash; reading the exception also keeps asyncio from warning about it."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s crashed", task.get_name(), exc_info=exc)


def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Start a named task whose crash is logged, never silently lost."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_report)
    return task


async def stop(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` (except the current one) and wait for them to finish."""
    current = asyncio.current_task()
    pending = [t for t in tasks if t is not current and not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        # asyncio.wait never raises the tasks' CancelledError, yet still lets ours through.
        await asyncio.wait(pending)
