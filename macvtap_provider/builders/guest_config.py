"""Pure builders for the guest's configuration files (sshd, resolver, network, shadow)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from macvtap_provider.errors import SpecError

#: The seed's settings: root may log in with a password.
DEFAULT_SSHD_SETTINGS: Mapping[str, str] = {
    "PermitRootLogin": "yes",
    "PasswordAuthentication": "yes",
}

# sshd_config keywords of OpenSSH 9.x (lower-cased) that may appear outside Match blocks.
SSHD_KEYWORDS = frozenset(k.lower() for k in """
AcceptEnv AddressFamily AllowAgentForwarding AllowGroups AllowStreamLocalForwarding
AllowTcpForwarding AllowUsers AuthenticationMethods AuthorizedKeysCommand
AuthorizedKeysCommandUser AuthorizedKeysFile AuthorizedPrincipalsCommand
AuthorizedPrincipalsCommandUser AuthorizedPrincipalsFile Banner CASignatureAlgorithms
ChallengeResponseAuthentication ChrootDirectory Ciphers ClientAliveCountMax
ClientAliveInterval Compression DenyGroups DenyUsers DisableForwarding ExposeAuthInfo
FingerprintHash ForceCommand GatewayPorts GSSAPIAuthentication GSSAPICleanupCredentials
GSSAPIStrictAcceptorCheck HostbasedAcceptedAlgorithms HostbasedAuthentication
HostbasedUsesNameFromPacketOnly HostCertificate HostKey HostKeyAgent HostKeyAlgorithms
IgnoreRhosts IgnoreUserKnownHosts Include IPQoS KbdInteractiveAuthentication
KerberosAuthentication KerberosGetAFSToken KerberosOrLocalPasswd KerberosTicketCleanup
KexAlgorithms ListenAddress LoginGraceTime LogLevel LogVerbose MACs MaxAuthTries
MaxSessions MaxStartups ModuliFile PasswordAuthentication PermitEmptyPasswords
PermitListen PermitOpen PermitRootLogin PermitTTY PermitTunnel PermitUserEnvironment
PermitUserRC PerSourceMaxStartups PerSourceNetBlockSize PidFile Port PrintLastLog
PrintMotd PubkeyAcceptedAlgorithms PubkeyAuthOptions PubkeyAuthentication RekeyLimit
RequiredRSASize RevokedKeys SecurityKeyProvider SetEnv StreamLocalBindMask
StreamLocalBindUnlink StrictModes Subsystem SyslogFacility TCPKeepAlive TrustedUserCAKeys
UseDNS UsePAM VersionAddendum X11DisplayOffset X11Forwarding X11UseLocalhost XAuthLocation
""".split())  # noqa: SIM905

BEGIN_MARK = "# BEGIN macvtap-lab managed settings"
END_MARK = "# END macvtap-lab managed settings"
_SAFE_VALUE = re.compile(r"^[^\n\r#]+$")


def check_sshd_settings(settings: Mapping[str, object], field: str = "sshd_settings") -> dict[str, str]:
    """Validate keyword/value pairs against sshd's keywords; returns them as strings."""
    out: dict[str, str] = {}
    for key, value in settings.items():
        if key.lower() not in SSHD_KEYWORDS or key.lower() == "include":
            raise SpecError(f"{field}.{key}", f"{key!r} is not an sshd_config keyword this "
                            "provider can set (see `man sshd_config`)")
        text = str(value).strip()
        if not text or not _SAFE_VALUE.match(text):
            raise SpecError(f"{field}.{key}", f"{value!r} is not a single-line value")
        out[key] = text
    return out


def edit_sshd_config(text: str, settings: Mapping[str, str]) -> str:
    """Make `settings` win in an sshd_config.

    sshd keeps the first value it reads for a keyword, and Debian's file starts
    with `Include /etc/ssh/sshd_config.d/*.conf` (where cloud-init writes
    `PasswordAuthentication no`). So the managed block goes at the very top,
    before the Include and any Match block, and other active lines setting the
    same keywords are commented out (Match blocks are left alone: they are
    deliberate per-user overrides). Idempotent: a previous block is replaced.
    """
    lines = text.splitlines()
    # Drop a previous managed block.
    if BEGIN_MARK in lines and END_MARK in lines:
        start, end = lines.index(BEGIN_MARK), lines.index(END_MARK)
        lines = lines[:start] + lines[end + 1:]
    wanted = {k.lower() for k in settings}
    kept = []
    in_match = False
    for line in lines:
        words = line.strip().split(None, 1)
        # Match blocks are deliberate per-user/host overrides: left as they are.
        in_match = in_match or (bool(words) and words[0].lower() == "match")
        if words and not in_match and not words[0].startswith("#") and words[0].lower() in wanted:
            kept.append(f"# {line}  # overridden by macvtap-lab")
        else:
            kept.append(line)
    block = [BEGIN_MARK, *(f"{k} {v}" for k, v in settings.items()), END_MARK]
    return "\n".join(block + kept) + "\n"


def resolv_conf(nameservers: Sequence[str], search: Sequence[str] = ()) -> str:
    """/etc/resolv.conf text; an empty list yields a file with no resolver."""
    lines = ["# written by macvtap-lab"]
    if search:
        lines.append("search " + " ".join(search))
    lines += [f"nameserver {ns}" for ns in nameservers]
    return "\n".join(lines) + "\n"


def interfaces_eth0(address: str, prefix: int, gateway: str, nameservers: Sequence[str] = ()) -> str:
    """An ifupdown stanza for a static eth0 (/etc/network/interfaces.d/eth0)."""
    lines = [
        "# written by macvtap-lab",
        "auto eth0",
        "iface eth0 inet static",
        f"    address {address}/{prefix}",
        f"    gateway {gateway}",
    ]
    if nameservers:
        lines.append("    dns-nameservers " + " ".join(nameservers))
    return "\n".join(lines) + "\n"


def shadow_with_root_hash(shadow: str, crypt_hash: str, day: int) -> str:
    """Set root's password hash and last-change day in /etc/shadow text.

    `day` is days since the epoch (0 would force a password change at login).
    """
    if ":" in crypt_hash or "\n" in crypt_hash:
        raise ValueError("a crypt hash cannot contain ':' or newlines")
    out, found = [], False
    for line in shadow.splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 3:
            fields[1] = crypt_hash
            fields[2] = str(day)
            line, found = ":".join(fields), True
        out.append(line)
    if not found:
        out.insert(0, f"root:{crypt_hash}:{day}:0:99999:7:::")
    return "\n".join(out) + "\n"


def authorized_keys(keys: Sequence[str]) -> str:
    return "".join(k.strip() + "\n" for k in keys)


def hostname_files(hostname: str) -> dict[str, str]:
    """/etc/hostname and the 127.0.1.1 line of /etc/hosts."""
    return {
        "/etc/hostname": hostname + "\n",
        "/etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n",
    }


_HOSTNAME_RE = re.compile(r"^(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")


def check_hostname(value: object, field: str = "hostname") -> str:
    if not isinstance(value, str) or not _HOSTNAME_RE.fullmatch(value):
        raise SpecError(field, f"{value!r} is not a valid host name: 1-63 letters, digits or '-'")
    return value


def check_ssh_keys(values: object, field: str = "authorized_keys") -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise SpecError(field, "must be a list of public keys (one 'ssh-ed25519 AAAA... comment' each)")
    keys = []
    for key in values:
        line = str(key).strip()  # as read from id_ed25519.pub, with its newline
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")) \
                or "\n" in line or "\r" in line:
            raise SpecError(field, f"{line[:30]!r}... is not an OpenSSH public key line")
        keys.append(line)
    return tuple(keys)
