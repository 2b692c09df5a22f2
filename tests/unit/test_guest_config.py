"""Guest config builders: sshd_config editing, resolver, ifupdown, shadow, host name, keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from macvtap_provider.builders.guest_config import (
    BEGIN_MARK,
    DEFAULT_SSHD_SETTINGS,
    END_MARK,
    authorized_keys,
    check_hostname,
    check_ssh_keys,
    check_sshd_settings,
    edit_sshd_config,
    hostname_files,
    interfaces_eth0,
    resolv_conf,
    shadow_with_root_hash,
)
from macvtap_provider.errors import SpecError

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parent / "golden"
BOOKWORM = (GOLDEN / "sshd_config.bookworm").read_text()
MATCH_BLOCK = BOOKWORM[BOOKWORM.index("Match User anoncvs"):]
OVERRIDDEN = "  # overridden by macvtap-lab"


def _active(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


# -- edit_sshd_config ------------------------------------------------------------------------
def test_input_is_the_realistic_bookworm_file() -> None:
    # Guards the fixture itself: the cases below rely on these lines being there.
    lines = BOOKWORM.splitlines()
    assert "Include /etc/ssh/sshd_config.d/*.conf" in lines
    assert "#PermitRootLogin prohibit-password" in lines
    assert "PasswordAuthentication no" in lines
    assert "KbdInteractiveAuthentication no" in lines
    assert "UsePAM yes" in lines
    assert lines[-5] == "Match User anoncvs"


def test_bookworm_golden(golden: Callable[[str, str], None]) -> None:
    golden("sshd_config.bookworm.managed", edit_sshd_config(BOOKWORM, DEFAULT_SSHD_SETTINGS))


def test_block_is_at_the_very_top_before_include() -> None:
    out = edit_sshd_config(BOOKWORM, DEFAULT_SSHD_SETTINGS).splitlines()
    assert out[:4] == [BEGIN_MARK, "PermitRootLogin yes", "PasswordAuthentication yes", END_MARK]
    assert out.index(END_MARK) < out.index("Include /etc/ssh/sshd_config.d/*.conf")
    assert out.index(END_MARK) < out.index("Match User anoncvs")


def test_block_goes_before_a_leading_include() -> None:
    text = "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n"
    out = edit_sshd_config(text, {"PermitRootLogin": "yes"})
    assert out == (f"{BEGIN_MARK}\nPermitRootLogin yes\n{END_MARK}\n"
                   "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n")


def test_first_active_value_is_ours() -> None:
    """sshd keeps the first value it reads: for every managed keyword it must be ours."""
    settings = {"PermitRootLogin": "yes", "PasswordAuthentication": "yes",
                "KbdInteractiveAuthentication": "yes", "UsePAM": "no"}
    out = edit_sshd_config(BOOKWORM, settings)
    for key, value in settings.items():
        first = next(ln for ln in _active(out) if ln.split()[0].lower() == key.lower())
        assert first == f"{key} {value}"


def test_other_active_lines_for_the_same_keyword_are_commented_out() -> None:
    out = edit_sshd_config(BOOKWORM, DEFAULT_SSHD_SETTINGS).splitlines()
    assert f"# PasswordAuthentication no{OVERRIDDEN}" in out
    assert "PasswordAuthentication no" not in out
    assert [ln for ln in _active("\n".join(out)) if ln.startswith("PasswordAuthentication")] == [
        "PasswordAuthentication yes"]


def test_commented_lines_are_untouched() -> None:
    out = edit_sshd_config(BOOKWORM, DEFAULT_SSHD_SETTINGS).splitlines()
    assert "#PermitRootLogin prohibit-password" in out
    assert "#PasswordAuthentication yes" in out
    assert sum(OVERRIDDEN in ln for ln in out) == 1  # only the one active line


def test_unrelated_active_lines_are_untouched() -> None:
    out = edit_sshd_config(BOOKWORM, DEFAULT_SSHD_SETTINGS)
    body = out.split(END_MARK + "\n", 1)[1]
    assert body.replace(f"# PasswordAuthentication no{OVERRIDDEN}", "PasswordAuthentication no") \
        == BOOKWORM


def test_match_block_is_untouched() -> None:
    out = edit_sshd_config(BOOKWORM, DEFAULT_SSHD_SETTINGS)
    assert out.endswith(MATCH_BLOCK)


def test_match_block_is_untouched_when_it_sets_a_managed_keyword() -> None:
    out = edit_sshd_config(BOOKWORM, {"X11Forwarding": "no"})
    assert out.endswith(MATCH_BLOCK)


def test_keyword_match_is_case_insensitive() -> None:
    out = edit_sshd_config(BOOKWORM, {"passwordauthentication": "yes"}).splitlines()
    assert out[1] == "passwordauthentication yes"
    assert f"# PasswordAuthentication no{OVERRIDDEN}" in out


def test_idempotent() -> None:
    once = edit_sshd_config(BOOKWORM, DEFAULT_SSHD_SETTINGS)
    twice = edit_sshd_config(once, DEFAULT_SSHD_SETTINGS)
    assert twice == once
    assert twice.count(BEGIN_MARK) == 1 and twice.count(END_MARK) == 1


def test_changing_settings_replaces_the_block() -> None:
    first = edit_sshd_config(BOOKWORM, DEFAULT_SSHD_SETTINGS)
    second = edit_sshd_config(first, {"PermitRootLogin": "prohibit-password", "Port": "2222"})
    lines = second.splitlines()
    assert lines[:4] == [BEGIN_MARK, "PermitRootLogin prohibit-password", "Port 2222", END_MARK]
    assert second.count(BEGIN_MARK) == 1
    assert "PermitRootLogin yes" not in lines
    assert "PasswordAuthentication yes" not in lines


def test_empty_file_gets_only_the_block() -> None:
    assert edit_sshd_config("", {"Port": "22"}) == f"{BEGIN_MARK}\nPort 22\n{END_MARK}\n"


def test_output_ends_with_one_newline() -> None:
    out = edit_sshd_config("UsePAM yes", {"Port": "22"})
    assert out.endswith("UsePAM yes\n") and not out.endswith("\n\n")


# -- check_sshd_settings ---------------------------------------------------------------------
def test_sshd_settings_accepted_and_stringified() -> None:
    assert check_sshd_settings({"PermitRootLogin": " yes ", "Port": 2222, "maxauthtries": 3}) == {
        "PermitRootLogin": "yes", "Port": "2222", "maxauthtries": "3"}


@pytest.mark.parametrize("key", ["PermitRootlogin", "PERMITROOTLOGIN", "permitrootlogin"])
def test_sshd_keyword_is_case_insensitive(key: str) -> None:
    assert check_sshd_settings({key: "yes"}) == {key: "yes"}


@pytest.mark.parametrize("key", ["Include", "include", "Match", "PermitRootLogin yes",
                                 "NoSuchKeyword", "", "Port\nPermitRootLogin"])
def test_sshd_unknown_or_forbidden_keyword(key: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_sshd_settings({key: "yes"})
    assert exc.value.field == f"sshd_settings.{key}"
    assert "not an sshd_config keyword" in exc.value.reason
    assert "man sshd_config" in exc.value.reason


@pytest.mark.parametrize("value", ["yes\nPermitEmptyPasswords yes", "yes\rno", "yes # comment",
                                   "", "   ", "a\rb"])
def test_sshd_value_must_be_single_line(value: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_sshd_settings({"PermitRootLogin": value}, field="sshd")
    assert exc.value.field == "sshd.PermitRootLogin"
    assert "single-line" in exc.value.reason


# -- resolv.conf and ifupdown ----------------------------------------------------------------
def test_resolv_conf_golden(golden: Callable[[str, str], None]) -> None:
    golden("resolv.conf", resolv_conf(["10.213.0.1", "10.213.0.2"], search=["lab.internal"]))


def test_resolv_conf_without_resolvers() -> None:
    assert resolv_conf([]) == "# written by macvtap-lab\n"


def test_interfaces_eth0_golden(golden: Callable[[str, str], None]) -> None:
    golden("interfaces_eth0", interfaces_eth0("10.213.0.10", 24, "10.213.0.1", ["10.213.0.1"]))


def test_interfaces_eth0_without_nameservers() -> None:
    text = interfaces_eth0("10.213.0.10", 24, "10.213.0.1")
    assert "dns-nameservers" not in text
    assert text.splitlines()[1:] == ["auto eth0", "iface eth0 inet static",
                                     "    address 10.213.0.10/24", "    gateway 10.213.0.1"]


# -- /etc/shadow -----------------------------------------------------------------------------
SHADOW = (
    "root:*:19500:0:99999:7:::\n"
    "daemon:*:19500:0:99999:7:::\n"
    "debian:!:19500:0:99999:7:::\n"
)
HASH = "$6$abcdefgh$KQeXafAQAaOoKTevphVU215RvJdgzyfASRasIOuh12hO8u0r1bGW92ZnTmC9IjsiQ8VPiTXBiZF49dFL1U4wX/"


def test_shadow_replaces_roots_hash_and_day() -> None:
    out = shadow_with_root_hash(SHADOW, HASH, 20000)
    lines = out.splitlines()
    assert lines[0] == f"root:{HASH}:20000:0:99999:7:::"
    assert lines[1:] == SHADOW.splitlines()[1:]
    assert out.endswith(":::\n")


def test_shadow_only_touches_root() -> None:
    shadow = "daemon:*:1:0:99999:7:::\nroot:x:1:0:99999:7:::\nrootless:*:1:0:99999:7:::\n"
    lines = shadow_with_root_hash(shadow, HASH, 5).splitlines()
    assert lines == ["daemon:*:1:0:99999:7:::", f"root:{HASH}:5:0:99999:7:::",
                     "rootless:*:1:0:99999:7:::"]


def test_shadow_adds_root_when_absent() -> None:
    lines = shadow_with_root_hash("daemon:*:19500:0:99999:7:::\n", HASH, 20000).splitlines()
    assert lines == [f"root:{HASH}:20000:0:99999:7:::", "daemon:*:19500:0:99999:7:::"]


def test_shadow_is_idempotent() -> None:
    once = shadow_with_root_hash(SHADOW, HASH, 20000)
    assert shadow_with_root_hash(once, HASH, 20000) == once


@pytest.mark.parametrize("bad", ["$6$salt$ha:sh", "$6$salt$hash\nevil::0:0:::", "a\nb"])
def test_shadow_refuses_separators_in_the_hash(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot contain"):
        shadow_with_root_hash(SHADOW, bad, 20000)


# -- host name, keys -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lab-guest", "g", "a1", "A" * 63, "1lab"])
def test_hostname_accepted(name: str) -> None:
    assert check_hostname(name) == name


@pytest.mark.parametrize("name", ["", "-lab", "lab-", "lab_guest", "lab.example", "a" * 64,
                                  "lab guest", None, 1])
def test_hostname_refused(name: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_hostname(name)
    assert exc.value.field == "hostname"
    assert "not a valid host name" in exc.value.reason


def test_hostname_with_trailing_newline_refused() -> None:
    with pytest.raises(SpecError):
        check_hostname("lab\n")


def test_hostname_files() -> None:
    files = hostname_files("lab-guest")
    assert set(files) == {"/etc/hostname", "/etc/hosts"}
    assert files["/etc/hostname"] == "lab-guest\n"
    hosts = files["/etc/hosts"].splitlines()
    assert "127.0.0.1\tlocalhost" in hosts
    assert "127.0.1.1\tlab-guest" in hosts
    assert files["/etc/hosts"].endswith("\n")


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx7XbZ4wP0Hc8eO4Jm2m3Lr5pYpQ0VjS9wQm3nE5kTq lab@host"
ECDSA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= a@b"
SK = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t"


@pytest.mark.parametrize(("values", "expected"), [
    (None, ()),
    ([], ()),
    ([ED25519], (ED25519,)),
    ((ED25519, ECDSA, SK), (ED25519, ECDSA, SK)),
    ([f"  {ED25519}  "], (ED25519,)),
])
def test_ssh_keys_accepted(values: object, expected: tuple[str, ...]) -> None:
    assert check_ssh_keys(values) == expected


@pytest.mark.parametrize("values", [ED25519, {"k": ED25519}, 42])
def test_ssh_keys_not_a_list(values: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_ssh_keys(values)
    assert exc.value.field == "authorized_keys"
    assert "list of public keys" in exc.value.reason


@pytest.mark.parametrize("key", ["AAAAC3NzaC1lZDI1NTE5", "ssh-ed25519", "",
                                 "-----BEGIN OPENSSH PRIVATE KEY-----",
                                 f"{ED25519}\nssh-rsa AAAAB3 evil"])
def test_ssh_keys_bad_line(key: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_ssh_keys([key], field="keys")
    assert exc.value.field == "keys"
    assert "not an OpenSSH public key line" in exc.value.reason


def test_ssh_key_read_from_a_file_accepted() -> None:
    assert check_ssh_keys([ED25519 + "\n"]) == (ED25519,)


def test_authorized_keys_text() -> None:
    assert authorized_keys([ED25519, f" {ECDSA} "]) == f"{ED25519}\n{ECDSA}\n"
    assert authorized_keys([]) == ""
