"""Byte budgets: a counter of buffered bytes with a hard ceiling.

Exists so one slow reader, one session, or all sessions together cannot buffer without bound.
A budget only counts; it must not block or decide what to do on overrun (the caller resets).
"""

from __future__ import annotations


class ByteBudget:
    """Count bytes held against a limit, optionally inside a parent budget."""

    def __init__(self, limit: int, parent: ByteBudget | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.used = 0  # owned by the event loop thread; mutated only by acquire/release

    def try_acquire(self, size: int) -> bool:
        """Take ``size`` bytes if this budget and every parent can hold them."""
        if self.used + size > self.limit:
            return False
        if self.parent is not None and not self.parent.try_acquire(size):
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        """Give ``size`` bytes back to this budget and its parents."""
        self.used -= size
        if self.parent is not None:
            self.parent.release(size)


# Shared by every session of the process unless a caller passes its own: the last line of
# defence when thousands of sessions each stay inside their own budget.
PROCESS_BUDGET = ByteBudget(256 * 1024 * 1024)
