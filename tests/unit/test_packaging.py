"""What the wheel needs from the source tree: every data file ships, nothing reaches into
the checkout, and nothing imports a module that newer Pythons removed (requires-python
has no upper cap; see pyproject.toml)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "macvtap_provider"
#: Modules removed from the standard library in 3.12 (distutils, imp, asynchat, asyncore,
#: smtpd) and 3.13 (PEP 594).
REMOVED = {"distutils", "imp", "asynchat", "asyncore", "smtpd", "aifc", "audioop", "cgi",
           "cgitb", "chunk", "crypt", "imghdr", "mailcap", "msilib", "nis", "nntplib",
           "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib",
           "lib2to3"}


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_data_file_is_package_data() -> None:
    """pyproject ships py.typed and everything under images/ (`images/**/*`)."""
    data = {p.relative_to(PACKAGE) for p in PACKAGE.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    stray = {p for p in data if p != Path("py.typed") and p.parts[0] != "images"}
    assert not stray, f"data files outside images/ would not ship in the wheel: {stray}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'macvtap_provider = ["py.typed", "images/**/*"]' in pyproject


def test_nothing_reaches_into_the_checkout() -> None:
    """Only paths.checkout_tools looks above the package's own files (and copes with their
    absence); no path into the repository's scripts/ or tools/ is written anywhere."""
    above = re.compile(r"__file__.*parent\.parent|PROJECT_ROOT|[\"']scripts/|[\"']tools/pulumi")
    offenders = []
    for path in sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if above.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [
        "macvtap_provider/paths.py:"
        + str(next(n for n, line in enumerate((PACKAGE / "paths.py").read_text().splitlines(), 1)
                   if "parent.parent" in line))
        + ": root = Path(__file__).resolve().parent.parent"]


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside `try: ... except ImportError` (with a fallback)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt)
                      if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def test_no_module_removed_from_newer_pythons() -> None:
    """Such a module may be used only with a fallback (crypt: openssl passwd)."""
    used: dict[str, str] = {}
    for path in sources():
        tree = ast.parse(path.read_text())
        guarded = _guarded(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in guarded:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if node.module and node.level == 0 else []
            for name in names:
                used.setdefault(name.split(".")[0], f"{path.relative_to(ROOT)}:{node.lineno}")
    assert {m: where for m, where in used.items() if m in REMOVED} == {}
