"""What the job service knows about one epoch (one attempt) of a job."""
from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any, Callable

from sparkmpi_dl.errors import FailureReport

STDERR_TAIL_LINES = 40


@dataclass
class EpochState:
    """KVS, barrier, hosts and connections of one epoch; a retried Spark stage gets a new one."""

    epoch: int
    kvsname: str
    size: int
    hosts: dict[int, str] = field(default_factory=dict)
    ctl: dict[int, Any] = field(default_factory=dict)        # rank -> CtlChannel
    pmi: dict[int, Any] = field(default_factory=dict)        # rank -> PmiSession
    kvs: dict[str, str] = field(default_factory=dict)
    node_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    barrier: dict[int, Any] = field(default_factory=dict)    # rank -> session waiting
    finalized: set[int] = field(default_factory=set)
    exits: dict[int, int] = field(default_factory=dict)
    processes: dict[int, tuple[str, int]] = field(default_factory=dict)  # rank -> (host, pid)
    stderr_tails: dict[int, collections.deque[str]] = field(default_factory=dict)
    failure: FailureReport | None = None
    env_sent: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def stderr_tail(self, rank: int) -> collections.deque[str]:
        return self.stderr_tails.setdefault(rank, collections.deque(maxlen=STDERR_TAIL_LINES))

    @property
    def all_hosts_known(self) -> bool:
        return len(self.hosts) == self.size

    def host_list(self) -> list[str]:
        return [self.hosts[r] for r in range(self.size)]

    def still_in_mpi(self, rank: int) -> list[int]:
        """The other ranks that have neither finalized MPI nor exited."""
        return [r for r in range(self.size)
                if r != rank and r not in self.exits and r not in self.finalized]

    @property
    def finished(self) -> bool:
        return self.failure is not None or len(self.exits) == self.size

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until predicate() holds (re-checked on every notify); False on timeout."""
        async def waiter() -> None:
            async with self.changed:
                await self.changed.wait_for(predicate)
        try:
            await asyncio.wait_for(waiter(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
