"""Whether the broker answered recently, from the evidence a client leaves behind."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds without a sign of life after which the broker counts as unreachable.
DEFAULT_STALE_AFTER_S = 15.0


class Reachability:
    """Latest sign of life against latest sign of trouble.

    Reachable when the last sign of life (a delivered batch, a joined group, a broker seen
    up) is newer than the last sign of trouble and at most ``stale_after_s`` old.

    Examples
    --------
    >>> now = [0.0]
    >>> r = Reachability(stale_after_s=10.0, clock=lambda: now[0])
    >>> r.reachable
    False
    >>> r.alive(); r.reachable
    True
    >>> now[0] = 1.0; r.trouble()
    True
    >>> r.reachable
    False
    >>> now[0] = 2.0; r.alive(); now[0] = 13.0; r.reachable
    False
    """

    def __init__(
        self,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._last_alive = -float("inf")
        self._last_trouble = -float("inf")

    def alive(self) -> None:
        """Record a sign of life."""
        self._last_alive = self.clock()

    def trouble(self) -> bool:
        """Record a sign of trouble; True when it turns a reachable broker unreachable."""
        was_reachable = self.reachable
        self._last_trouble = self.clock()
        return was_reachable

    @property
    def reachable(self) -> bool:
        now = self.clock()
        return (
            self._last_alive >= self._last_trouble and now - self._last_alive <= self.stale_after_s
        )
