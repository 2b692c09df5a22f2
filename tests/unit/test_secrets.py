"""Root password hashing and the secret-safe customisation digest."""

from __future__ import annotations

import functools

import pytest

from macvtap_provider.builders.secrets import (
    check_password,
    customization_digest,
    new_salt,
    sha512_crypt,
)
from macvtap_provider.errors import SpecError

pytestmark = pytest.mark.unit

KNOWN_HASH = ("$6$abcdefgh$KQeXafAQAaOoKTevphVU215RvJdgzyfASRasIOuh12hO8u0r1bGW92ZnTmC9Ijsi"
              "Q8VPiTXBiZF49dFL1U4wX/")
PUBLIC = {"hostname": "lab-guest", "nameservers": ["10.213.0.1"], "mode": "overlay",
          "sshd_settings": {"PermitRootLogin": "yes"}, "network": None}


# -- sha512_crypt ----------------------------------------------------------------------------
def test_sha512_crypt_known_vector() -> None:
    assert sha512_crypt("pw", "abcdefgh") == KNOWN_HASH


def test_sha512_crypt_verifies_with_its_own_salt() -> None:
    hashed = sha512_crypt("correct horse")
    salt = hashed.split("$")[2]
    assert sha512_crypt("correct horse", salt) == hashed
    assert sha512_crypt("wrong horse", salt) != hashed


def test_sha512_crypt_random_salt() -> None:
    first, second = sha512_crypt("pw"), sha512_crypt("pw")
    assert first.startswith("$6$") and second.startswith("$6$")
    assert first != second
    salt = first.split("$")[2]
    assert len(salt) == 16
    assert set(salt) <= set("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@pytest.mark.parametrize("password", ["pw", "p ä s s", "x" * 200, "colon:in:it", "$6$"])
def test_sha512_crypt_is_shadow_safe(password: str) -> None:
    hashed = sha512_crypt(password, "saltsalt")
    assert hashed.startswith("$6$saltsalt$")
    assert ":" not in hashed and "\n" not in hashed
    assert password not in hashed.split("$", 3)[3]


# -- check_password --------------------------------------------------------------------------
@pytest.mark.parametrize("password", ["pw", " spaces ", "ünïcode", "x" * 1000])
def test_password_accepted(password: str) -> None:
    assert check_password(password) == password


@pytest.mark.parametrize("password", ["", None, 1234])
def test_password_empty_refused(password: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_password(password)
    assert exc.value.field == "root_password"
    assert "empty root password" in exc.value.reason
    assert "--secret" in exc.value.reason  # says how to set it


@pytest.mark.parametrize("password", ["pw\n", "p\nw", "pw\r", "p\0w"])
def test_password_control_characters_refused(password: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_password(password, field="pw")
    assert exc.value.field == "pw"
    assert "newlines or NUL" in exc.value.reason
    assert password not in str(exc.value)  # never echo the secret


@functools.cache
def base_digest() -> str:
    """The reference digest (PBKDF2 with 200k rounds: computed once per run)."""
    return customization_digest(PUBLIC, "pw", "salt1")


# -- customization_digest --------------------------------------------------------------------
def test_digest_is_stable_and_key_order_free() -> None:
    reordered = dict(reversed(list(PUBLIC.items())))
    digest = base_digest()
    assert digest == customization_digest(reordered, "pw", "salt1")
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_digest_changes_with_password_and_salt() -> None:
    assert customization_digest(PUBLIC, "pw2", "salt1") != base_digest()
    assert customization_digest(PUBLIC, "pw", "salt2") != base_digest()


@pytest.mark.parametrize(("key", "value"), [
    ("hostname", "other"), ("nameservers", ["10.213.0.2"]), ("mode", "copy"),
    ("sshd_settings", {"PermitRootLogin": "no"}),
    ("network", {"address": "10.213.0.10", "prefix": 24, "gateway": "10.213.0.1"}),
    ("base_sha256", "ab" * 32),
])
def test_digest_changes_with_any_public_field(key: str, value: object) -> None:
    assert customization_digest({**PUBLIC, key: value}, "pw", "salt1") != base_digest()


def test_digest_does_not_contain_the_password() -> None:
    password = "S3cretPassw0rd"
    digest = customization_digest(PUBLIC, password, "salt1")
    assert password not in digest
    assert password.encode().hex() not in digest


def test_new_salt() -> None:
    salts = {new_salt() for _ in range(20)}
    assert len(salts) == 20
    assert all(len(s) == 32 and int(s, 16) >= 0 for s in salts)


# -- specs never show the password -----------------------------------------------------------
def test_specs_holding_the_password_keep_it_out_of_repr() -> None:
    from macvtap_provider.resources.customized_image import CustomizedImageSpec
    from macvtap_provider.resources.guest_network import GuestNetworkSpec

    secret = "Pw-not-in-any-repr-42"
    image = CustomizedImageSpec.from_props({"output_path": "/tmp/x.qcow2",
                                            "base_image": "/tmp/base.qcow2",
                                            "root_password": secret})
    net = GuestNetworkSpec(domain="d", libvirt_uri="u", container="c", network="n",
                           address="10.213.0.10", prefix=24, gateway="10.213.0.1",
                           root_password=secret)

    for spec in (image, net):
        assert spec.root_password == secret
        assert secret not in repr(spec) and secret not in str(spec)
