"""An optional log of guest boots, for the test suite's "time spent booting guests".

`MACVTAP_LAB_BOOT_LOG=<file>` in the providers' environment makes MacvtapDomain append a
line when it starts a domain and GuestNetwork one when that guest answers ping and TCP 22
(JSON: event, owner = "<container>/<domain>", at = seconds since the epoch). `boots()`
pairs them: each start with the next reachable of the same guest. Unset, a log point costs
one dictionary lookup. tests/conftest.py sets it for a pytest session and prints the sum.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "MACVTAP_LAB_BOOT_LOG"
STARTED = "domain-started"
REACHABLE = "guest-reachable"


def record(event: str, owner: str) -> None:
    """Append one event when the log is enabled (never fails the caller)."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"event": event, "owner": owner, "at": round(time.time(), 3)}) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:  # one short append: atomic per line
            f.write(line)
    except OSError as exc:
        log.debug("boot log %s: %s", path, exc)


@dataclass(frozen=True)
class Boot:
    owner: str
    started: float
    seconds: float


@dataclass(frozen=True)
class BootSummary:
    boots: tuple[Boot, ...]
    #: Starts never followed by a reachable guest (domains that were not meant to boot
    #: far, or a test that failed).
    unanswered: int

    @property
    def total_s(self) -> float:
        return sum(b.seconds for b in self.boots)

    def describe(self) -> str:
        if not self.boots:
            return f"guest boots: none measured ({self.unanswered} domain start(s) unanswered)"
        median = statistics.median(b.seconds for b in self.boots)
        longest = max(self.boots, key=lambda b: b.seconds)
        return (f"guest boots (domain start -> ping and TCP 22): {len(self.boots)}, "
                f"total {self.total_s:.1f} s, median {median:.1f} s, longest "
                f"{longest.seconds:.1f} s ({longest.owner}); {self.unanswered} start(s) "
                "without a reachable guest")


def boots(events: Iterable[dict[str, Any]]) -> BootSummary:
    """Pair each guest's starts with the reachable event that follows (pure)."""
    pending: dict[str, float] = {}
    done: list[Boot] = []
    unanswered = 0
    for event in sorted(events, key=lambda e: float(e.get("at", 0))):
        owner, at = str(event.get("owner", "")), float(event.get("at", 0))
        if event.get("event") == STARTED:
            if owner in pending:
                unanswered += 1  # restarted before anyone saw it answer
            pending[owner] = at
        elif event.get("event") == REACHABLE and owner in pending:
            started = pending.pop(owner)
            done.append(Boot(owner, started, round(at - started, 3)))
    return BootSummary(tuple(done), unanswered + len(pending))


def read(path: Path) -> BootSummary:
    """The summary of a log file (bad lines are skipped)."""
    events = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return boots(events)
