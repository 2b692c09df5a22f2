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


# -- the guest's own network stack ------------------------------------------------------------

#: Network stacks a static network can be written for (`detect_network_stack`).
NETWORK_STACKS = ("ifupdown", "netplan", "networkmanager", "networkd")

_WANTS = "/etc/systemd/system/multi-user.target.wants"
#: Paths whose presence tells which stack a guest uses (checked in the image; pure data).
NETWORK_PROBES = (
    "/usr/sbin/netplan", "/usr/bin/netplan",
    f"{_WANTS}/NetworkManager.service", "/usr/sbin/NetworkManager",
    f"{_WANTS}/systemd-networkd.service",
    "/sbin/ifup", "/usr/sbin/ifup", "/etc/network/interfaces",
)
NETPLAN_GLOB = "/etc/netplan/*.yaml"

#: The files the lab writes per stack (removed again when no static network is wanted).
IFUPDOWN_FILE = "/etc/network/interfaces.d/eth0"
NETPLAN_FILE = "/etc/netplan/60-macvtap-lab.yaml"
NETWORKD_FILE = "/etc/systemd/network/10-macvtap-lab.network"
NM_KEYFILE = "/etc/NetworkManager/system-connections/macvtap-lab.nmconnection"
NM_CONF = "/etc/NetworkManager/conf.d/90-macvtap-lab.conf"
#: Suffix of the image's own netplan files, set aside so that they cannot claim the NIC first.
NETPLAN_OFF_SUFFIX = ".off-by-macvtap-lab"
#: NIC names the guest may give its one NIC: `eth0` (net.ifnames=0) or a predictable
#: name (enp1s0, ens3...). Matched by pattern: which one depends on the machine type.
NIC_PATTERNS = ("en*", "eth*")


def detect_network_stack(found: set[str] | frozenset[str]) -> str:
    """Which stack configures the guest's network, from the `NETWORK_PROBES` and netplan
    files present in the image.

    netplan first (it renders for networkd or NetworkManager, which are then enabled too),
    then an enabled NetworkManager, then ifupdown, then an enabled systemd-networkd, then
    an installed NetworkManager (enabled by a preset at first boot).

    Args:
        found: the paths present in the image.

    Returns:
        One of `NETWORK_STACKS`.

    Raises:
        SpecError: No stack the lab can configure is in the image.
    """
    has_netplan_files = any(p.startswith("/etc/netplan/") for p in found)
    if has_netplan_files and found & {"/usr/sbin/netplan", "/usr/bin/netplan"}:
        return "netplan"
    if f"{_WANTS}/NetworkManager.service" in found:
        return "networkmanager"
    if "/etc/network/interfaces" in found and found & {"/sbin/ifup", "/usr/sbin/ifup"}:
        return "ifupdown"
    if f"{_WANTS}/systemd-networkd.service" in found:
        return "networkd"
    if "/usr/sbin/NetworkManager" in found:
        return "networkmanager"
    seen = ", ".join(sorted(found)) or "none of " + ", ".join(NETWORK_PROBES)
    raise SpecError("network", "the image has no network stack the lab can configure "
                    f"(ifupdown, netplan, NetworkManager, systemd-networkd); found: {seen}. "
                    "Leave `network` unset and use networkMethod console instead")


def netplan_static(address: str, prefix: int, gateway: str, nameservers: Sequence[str] = (),
                   renderer: str = "networkd") -> str:
    """A netplan file for a static NIC, whatever its name (one entry per `NIC_PATTERNS`)."""
    lines = ["# written by macvtap-lab", "network:", "  version: 2",
             f"  renderer: {renderer}", "  ethernets:"]
    for pattern in NIC_PATTERNS:
        lines += [f"    lab-{pattern.rstrip('*')}:",
                  "      match:",
                  f'        name: "{pattern}"',
                  # Only one pattern names the NIC: the other must not hold boot up.
                  "      optional: true",
                  f"      addresses: [{address}/{prefix}]",
                  "      routes:",
                  f"        - to: default\n          via: {gateway}"]
        if nameservers:
            lines += ["      nameservers:",
                      f"        addresses: [{', '.join(nameservers)}]"]
    return "\n".join(lines) + "\n"


def netplan_renderer(texts: Sequence[str]) -> str:
    """The renderer the image's own netplan files ask for (networkd, netplan's default)."""
    for text in texts:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(":", 1)
            if len(words) == 2 and words[0].strip() == "renderer" \
                    and words[1].strip().strip("'\"") == "NetworkManager":
                return "NetworkManager"
    return "networkd"


def networkd_static(address: str, prefix: int, gateway: str,
                    nameservers: Sequence[str] = ()) -> str:
    """A systemd-networkd .network file; its name sorts before the image's own."""
    lines = ["# written by macvtap-lab", "[Match]", "Name=" + " ".join(NIC_PATTERNS), "",
             "[Network]", f"Address={address}/{prefix}", f"Gateway={gateway}"]
    lines += [f"DNS={ns}" for ns in nameservers]
    return "\n".join(lines) + "\n"


def nm_keyfile(address: str, prefix: int, gateway: str, nameservers: Sequence[str] = ()) -> str:
    """A NetworkManager keyfile (mode 0600) for the NIC, matched by name pattern."""
    import uuid

    ident = uuid.uuid5(uuid.NAMESPACE_URL, f"macvtap-lab:{address}/{prefix}:{gateway}")
    lines = ["# written by macvtap-lab", "[connection]", "id=macvtap-lab", f"uuid={ident}",
             "type=ethernet", "autoconnect=true", "autoconnect-priority=100", "",
             "[match]", "interface-name=" + "".join(p + ";" for p in NIC_PATTERNS), "",
             "[ethernet]", "", "[ipv4]", "method=manual",
             f"address1={address}/{prefix},{gateway}"]
    if nameservers:
        lines.append("dns=" + "".join(ns + ";" for ns in nameservers))
    lines += ["", "[ipv6]", "method=ignore"]
    return "\n".join(lines) + "\n"


#: NetworkManager must not make its own DHCP profile ("Wired connection 1") for the NIC.
NM_NO_AUTO_DEFAULT = "# written by macvtap-lab\n[main]\nno-auto-default=*\n"


def selinux_type(config: str) -> str | None:
    """The policy an /etc/selinux/config loads, or None when SELinux is disabled."""
    values = {}
    for line in config.splitlines():
        key, sep, value = line.split("#", 1)[0].partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    if values.get("SELINUX", "disabled").lower() == "disabled":
        return None
    policy = values.get("SELINUXTYPE", "")
    return policy if re.fullmatch(r"[A-Za-z0-9_.-]+", policy) else None


def file_contexts_path(policy: str) -> str:
    return f"/etc/selinux/{policy}/contexts/files/file_contexts"
