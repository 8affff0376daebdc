"""A bounded, rate-limited record of the connections the job service refused.

Anyone who can reach the port can make the service refuse connections as fast as it can
accept them. Logging every refusal, or keeping every reason, would let such a flood fill
the driver's log and memory; so the record keeps the last ``keep`` reasons and a count of
all of them, and logs at most ``burst`` refusals per ``period_s`` (the rest are counted and
summarised in one line when the next period starts or the service stops).
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Callable, Iterator

KEEP_REASONS = 200
LOG_BURST = 20
LOG_PERIOD_S = 10.0


class RefusalLog:
    """Refusal reasons, newest last; iterating yields the kept ones, ``total`` counts all."""

    def __init__(self, logger: logging.Logger, label: str, *, keep: int = KEEP_REASONS,
                 burst: int = LOG_BURST, period_s: float = LOG_PERIOD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._label = logger, label
        self._kept: collections.deque[str] = collections.deque(maxlen=keep)
        self._burst, self._period, self._clock = burst, period_s, clock
        self._window_start = clock()
        self._logged_in_window = 0
        self.total = 0
        self.unlogged = 0
        """Refusals counted but not logged since the last summary line."""

    def record(self, reason: str, peer: object = None) -> None:
        """Keep and count one refusal; log it unless this period's burst is spent."""
        now = self._clock()
        if now - self._window_start >= self._period:
            self._summarise()
            self._window_start, self._logged_in_window = now, 0
        self.total += 1
        self._kept.append(reason)
        if self._logged_in_window < self._burst:
            self._logged_in_window += 1
            where = f" from {peer}" if peer is not None else ""
            self._log.warning("%s: refused connection%s: %s", self._label, where, reason)
        else:
            self.unlogged += 1

    def flush(self) -> None:
        """Log the summary of refusals not logged yet (the service calls it when it stops)."""
        self._summarise()

    def _summarise(self) -> None:
        if self.unlogged:
            self._log.warning("%s: %d more refused connections not logged (%d refused in all; "
                              "the last %d reasons are kept)", self._label, self.unlogged,
                              self.total, self._kept.maxlen)
            self.unlogged = 0

    def append(self, reason: str) -> None:
        """Record without a peer (list-like, for callers that only have a reason)."""
        self.record(reason)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._kept))

    def __len__(self) -> int:
        return len(self._kept)
