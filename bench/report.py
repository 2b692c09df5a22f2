"""The figures' table (value, ratio, target, PASS/MISS) and the JSON record of a run."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS


@dataclass(frozen=True)
class Row:
    figure: str  # "1", "2", ...
    title: str
    detail: str  # the two measured values behind the ratio
    ratio: float | None
    target: float | None  # the ratio must be <= target; None: reported, no target
    note: str = ""

    @property
    def status(self) -> str:
        if self.target is None:
            return "INFO"
        if self.ratio is None:
            return "n/a"
        return "PASS" if self.ratio <= self.target else "MISS"


def table(rows: list[Row]) -> str:
    head = f"{'#':<2} {'figure':<44} {'measured':<28} {'ratio':>7} {'target':>9}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        target = "-" if r.target is None else f"<= {r.target:.2f}x"
        lines.append(f"{r.figure:<2} {r.title:<44} {r.detail:<28} {ratio:>7} {target:>9}  "
                     f"{r.status}")
        if r.note:
            lines.append(f"{'':<3}{r.note}")
    return "\n".join(lines)


def write(record: dict[str, Any], rows: list[Row], stamp: str) -> Path:
    """bench/results/<stamp>.json and a copy as latest.json; returns the first."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {**record, "table": [{**asdict(r), "status": r.status} for r in rows]}
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    shutil.copyfile(path, RESULTS / "latest.json")
    return path
