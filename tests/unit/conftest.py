"""Unit-test plumbing: golden files compared with a readable diff, `--regen-golden` to rewrite.

Run `pytest tests/unit --regen-golden` after an intended change to a builder's output,
then review the rewritten files with `git diff tests/unit/golden`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden", action="store_true", default=False,
        help="rewrite tests/unit/golden/* from the builders' current output instead of "
             "comparing (review the result with `git diff`)")


def compare_golden(name: str, actual: str, regen: bool) -> None:
    """Fail with a unified diff unless `actual` equals golden file `name`."""
    path = GOLDEN_DIR / name
    if regen:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing: run `pytest tests/unit --regen-golden` "
                    "and review it", pytrace=False)
    expected = path.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"golden/{name}", tofile="actual"))
        pytest.fail(f"output differs from golden/{name} (rerun with --regen-golden if the "
                    f"change is intended):\n{diff}", pytrace=False)


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """`golden(name, actual)`: compare with tests/unit/golden/<name>, or rewrite it."""
    regen = bool(request.config.getoption("--regen-golden", default=False))

    def check(name: str, actual: str) -> None:
        compare_golden(name, actual, regen)

    return check
