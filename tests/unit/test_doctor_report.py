"""The doctor's report, JSON output, exit code and --skip handling, with fake results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from macvtap_provider import cli, doctor
from macvtap_provider.doctor import CHECKS, CheckResult, Status
from macvtap_provider.errors import SpecError

pytestmark = pytest.mark.unit

OK = CheckResult("docker", Status.PASS, "dockerd 20.10 answers", "never shown")
WARN = CheckResult("kvm", Status.WARN, "KVM unusable → TCG", "fix nesting")
FAIL = CheckResult("pulumi", Status.FAIL, "no pulumi CLI", "make setup")
SKIP = CheckResult("guestfs", Status.SKIP, "skipped (--skip)")


@pytest.mark.parametrize(
    ("results", "code"),
    [
        pytest.param([], 0, id="nothing-run"),
        pytest.param([OK], 0, id="pass"),
        pytest.param([OK, WARN], 0, id="warn-is-not-fatal"),
        pytest.param([OK, SKIP], 0, id="skip-is-not-fatal"),
        pytest.param([OK, WARN, FAIL], 1, id="one-fail"),
        pytest.param([FAIL, FAIL], 1, id="all-fail"),
    ],
)
def test_exit_code(results: list[CheckResult], code: int) -> None:
    assert doctor.exit_code(results) == code
    assert json.loads(doctor.format_json(results))["ok"] is (code == 0)


def test_report_lines_and_fixes() -> None:
    report = doctor.format_report([OK, WARN, FAIL, SKIP])
    assert report == (
        "PASS  docker   dockerd 20.10 answers\n"
        "WARN  kvm      KVM unusable → TCG\n"
        "               fix: fix nesting\n"
        "FAIL  pulumi   no pulumi CLI\n"
        "               fix: make setup\n"
        "SKIP  guestfs  skipped (--skip)\n"
        "4 checks: 1 PASS, 1 WARN, 1 FAIL, 1 SKIP -> not ready\n"
    )


def test_report_ready() -> None:
    assert doctor.format_report([OK, WARN]).endswith("2 checks: 1 PASS, 1 WARN -> ready\n")
    assert doctor.format_report([]) == "0 checks: none run -> ready\n"


def test_json() -> None:
    data = json.loads(doctor.format_json([OK, FAIL]))
    assert data["checks"] == [
        {"name": "docker", "status": "PASS", "detail": "dockerd 20.10 answers",
         "fix": "never shown"},
        {"name": "pulumi", "status": "FAIL", "detail": "no pulumi CLI", "fix": "make setup"},
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], set()),
        (["kvm,guestfs"], {"kvm", "guestfs"}),
        (["kvm", "guestfs, pulumi", ""], {"kvm", "guestfs", "pulumi"}),
        ([",".join(CHECKS)], set(CHECKS)),
    ],
)
def test_parse_skip(values: list[str], expected: set[str]) -> None:
    assert doctor.parse_skip(values) == expected


def test_parse_skip_rejects_unknown_names() -> None:
    with pytest.raises(SpecError, match=r"unknown check\(s\) kvmm"):
        doctor.parse_skip(["kvmm,guestfs"])


def test_everything_skipped_touches_nothing() -> None:
    seen: list[str] = []
    results = doctor.run_checks([",".join(CHECKS)], on_result=lambda r: seen.append(r.name))
    assert [r.name for r in results] == list(CHECKS) == seen
    assert {r.status for r in results} == {Status.SKIP}


def test_cli_doctor_exit_code_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["doctor", "--json", "--skip", ",".join(CHECKS)])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert len(data["checks"]) == len(CHECKS)


def test_cli_unknown_skip_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--skip", "nope"]) == 2
    assert "unknown check(s) nope" in capsys.readouterr().err


def test_unreachable_dockerd_fails_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    skip = [name for name in CHECKS if name not in ("docker", "privileged", "dev")]
    results = {r.name: r for r in doctor.run_checks(skip)}
    assert results["docker"].status is Status.FAIL
    assert "make setup" in results["docker"].fix
    assert results["privileged"].status is Status.SKIP
    assert results["dev"].status is Status.SKIP
    assert doctor.exit_code(list(results.values())) == 1


def _fake_tool(directory: Path, name: str, body: str = "exit 0") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _pulumi_check(monkeypatch: pytest.MonkeyPatch, root: Path) -> CheckResult:
    monkeypatch.setattr(doctor, "checkout_tools", lambda: root / ".tools" / "bin")
    monkeypatch.setenv("PATH", str(root / "empty-path"))
    skip = [name for name in CHECKS if name != "pulumi"]
    (result,) = [r for r in doctor.run_checks(skip) if r.name == "pulumi"]
    return result


def test_pulumi_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result = _pulumi_check(monkeypatch, tmp_path)
    assert result.status is Status.FAIL
    assert "no pulumi CLI" in result.detail
    assert "`make setup`" in result.fix


def test_pulumi_without_language_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_tool(tmp_path / ".tools" / "bin", "pulumi", "echo v3.274.1")
    _fake_tool(tmp_path / ".tools" / "bin", "pulumi-language-python")
    result = _pulumi_check(monkeypatch, tmp_path)
    assert result.status is Status.FAIL
    assert "pulumi-language-python-exec, pulumi-resource-pulumi-python not found" in result.detail


def test_pulumi_complete(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tools = tmp_path / ".tools" / "bin"
    _fake_tool(tools, "pulumi", "echo v3.274.1")
    for name in doctor.PULUMI_COMPANIONS:
        _fake_tool(tools, name)
    result = _pulumi_check(monkeypatch, tmp_path)
    assert result.status is Status.PASS
    assert result.detail.startswith(f"pulumi v3.274.1 at {tools / 'pulumi'}")


def test_pulumi_version_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_tool(tmp_path / ".tools" / "bin", "pulumi", "echo broken >&2; exit 3")
    result = _pulumi_check(monkeypatch, tmp_path)
    assert result.status is Status.FAIL
    assert "exited 3: broken" in result.detail
