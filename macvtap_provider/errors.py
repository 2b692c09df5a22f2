"""The one error hierarchy of macvtap-lab.

    LabError                      base of every error this library raises
    ├── SpecError(ValueError)     an input is invalid; raised by `check`, before any side effect
    │   └── ConfigError           a stack config key (or the Lab argument for it) is invalid;
    │                             raised by the program before any resource is registered
    ├── NotFoundError(LookupError)  the object is gone (read/delete treat it as "absent")
    ├── DaemonUnreachableError(ConnectionError)  dockerd or libvirtd does not answer
    ├── DockerError               the docker engine refused an operation
    ├── LibvirtError              libvirtd refused an operation
    ├── GuestfsError              libguestfs could not launch or edit an image
    │   └── SharedApplianceError  an image (LVM, btrfs) must be edited in its own appliance
    ├── NetlinkError              a netlink operation inside a container's netns failed
    ├── ConsoleError              the serial-console session did not do what was asked
    ├── ImageBuildError           building the libvirt or guest image failed
    ├── LabTimeoutError(TimeoutError)  something did not become ready in time
    ├── UnsupportedError          the operation is not offered (e.g. `pulumi import`)
    └── StackError                a Pulumi stack could not be found, opened or read

Every message names the object, what failed, and what to do about it.
"""

from __future__ import annotations


class LabError(Exception):
    """Base class of every error raised by macvtap-lab."""


class SpecError(LabError, ValueError):
    """An input value is invalid. `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class ConfigError(SpecError):
    """A lab setting is invalid, named as the user wrote it: a stack config key
    (`containerIp`) or a Lab argument (`container_ip`). `field` is that name."""

    def __init__(self, field: str, message: str, where: str = "stack config") -> None:
        super().__init__(field, message)
        self.where = where
        self.args = (f"{where} `{field}`: {message}",)

    def __str__(self) -> str:
        return str(self.args[0])


class NotFoundError(LabError, LookupError):
    """The object does not exist (any more)."""


class DaemonUnreachableError(LabError, ConnectionError):
    """A daemon (dockerd, libvirtd) does not answer."""


class DockerError(LabError):
    """The docker engine refused an operation."""


class LibvirtError(LabError):
    """libvirtd refused an operation."""


class GuestfsError(LabError):
    """libguestfs failed to launch or to edit an image."""


class SharedApplianceError(GuestfsError):
    """An image cannot be edited in an appliance shared with other images: clones of one
    LVM or btrfs base carry the same PV or filesystem UUIDs, and LVM or the kernel would
    pick either disk. The caller edits it in an appliance of its own."""


class NetlinkError(LabError):
    """A netlink operation failed."""


class ConsoleError(LabError):
    """The serial console session failed."""


class ImageBuildError(LabError):
    """Building an image failed."""


class LabTimeoutError(LabError, TimeoutError):
    """Something did not become ready before its deadline."""


class UnsupportedError(LabError):
    """The operation is not supported by this provider."""


class StackError(LabError):
    """A Pulumi stack (project, backend, passphrase) could not be found, opened or read."""
