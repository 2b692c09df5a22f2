"""The boot log: each guest's start paired with its next reachable event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from macvtap_provider import boot_log

pytestmark = pytest.mark.unit


def _event(event: str, owner: str, at: float) -> dict[str, object]:
    return {"event": event, "owner": owner, "at": at}


def test_pairs_starts_with_the_next_reachable_of_the_same_guest() -> None:
    summary = boot_log.boots([
        _event(boot_log.STARTED, "c/a", 10.0), _event(boot_log.STARTED, "c/b", 11.0),
        _event(boot_log.REACHABLE, "c/b", 30.0), _event(boot_log.REACHABLE, "c/a", 25.5),
        _event(boot_log.STARTED, "c/a", 40.0), _event(boot_log.REACHABLE, "c/a", 52.0),
    ])
    assert [(b.owner, b.seconds) for b in summary.boots] == [
        ("c/a", 15.5), ("c/b", 19.0), ("c/a", 12.0)]
    assert summary.total_s == pytest.approx(46.5)
    assert summary.unanswered == 0
    assert "3, total 46.5 s" in summary.describe()


def test_starts_without_an_answer_are_counted_not_summed() -> None:
    summary = boot_log.boots([
        _event(boot_log.STARTED, "c/a", 1.0), _event(boot_log.STARTED, "c/a", 5.0),
        _event(boot_log.REACHABLE, "c/a", 9.0), _event(boot_log.STARTED, "c/blank", 2.0),
        _event(boot_log.REACHABLE, "c/never-started", 3.0),
    ])
    assert [(b.owner, b.seconds) for b in summary.boots] == [("c/a", 4.0)]
    assert summary.unanswered == 2
    assert boot_log.boots([]).describe().startswith("guest boots: none measured")


def test_record_appends_only_when_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "boots.jsonl"
    monkeypatch.delenv(boot_log.ENV, raising=False)
    boot_log.record(boot_log.STARTED, "c/a")
    assert not log.exists()
    monkeypatch.setenv(boot_log.ENV, str(log))
    boot_log.record(boot_log.STARTED, "c/a")
    boot_log.record(boot_log.REACHABLE, "c/a")
    log.write_text(log.read_text() + "not json\n")
    lines = log.read_text().splitlines()
    assert json.loads(lines[0])["event"] == boot_log.STARTED
    assert len(boot_log.read(log).boots) == 1
    monkeypatch.setenv(boot_log.ENV, str(tmp_path / "missing-dir" / "boots.jsonl"))
    boot_log.record(boot_log.STARTED, "c/a")  # an unwritable log never fails the caller
