"""Password hashing and secret-safe digests (pure; no secret is ever logged or returned)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import subprocess
import warnings
from collections.abc import Mapping

from macvtap_provider.errors import SpecError

_SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def check_password(value: object, field: str = "root_password") -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(field, "an empty root password is refused: set one "
                        "(pulumi config set --secret rootPassword ...)")
    if "\n" in value or "\r" in value or "\0" in value:
        raise SpecError(field, "the password cannot contain newlines or NUL characters")
    return value


def sha512_crypt(password: str, salt: str | None = None) -> str:
    """A `$6$` SHA-512 crypt hash, as /etc/shadow wants it.

    Uses the C library through Python's `crypt` module (present in 3.11, gone in
    3.13); without it, `openssl passwd -6 -stdin` with the password on stdin,
    never in argv.
    """
    salt = salt or "".join(secrets.choice(_SALT_CHARS) for _ in range(16))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

        result = crypt.crypt(password, f"$6${salt}$")
        if result and result.startswith("$6$"):
            return result
    except ImportError:
        pass
    proc = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                          input=password.encode(), capture_output=True, check=True)
    return proc.stdout.decode().strip()


def customization_digest(public: Mapping[str, object], password: str, salt: str) -> str:
    """A digest of everything applied to an image, exact enough for `diff`.

    The password enters through PBKDF2 with a per-resource salt, so the digest
    stored in state does not let anyone test password guesses cheaply.
    """
    pw = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 200_000).hex()
    body = json.dumps(dict(public), sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(salt.encode(), (body + "|" + pw).encode(), hashlib.sha256).hexdigest()


def new_salt() -> str:
    return secrets.token_hex(16)
