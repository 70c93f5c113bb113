"""Named, guarded background tasks and their cancel-then-await shutdown, for the kube layer.

Exists so every long-lived task here is named (visible in task dumps), logs a crash instead
of dying silently, and is stopped the same way. Must not hold any Kubernetes logic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

log = logging.getLogger("kubeprober.exporter.kube")


async def _guarded(coro: Coroutine[Any, Any, None], name: str) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("task %s crashed", name)


def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Start a named task whose crash is logged, never raised."""
    return asyncio.create_task(_guarded(coro, name), name=name)


async def stop(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they have all ended."""
    pending = [t for t in tasks if t is not asyncio.current_task()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
