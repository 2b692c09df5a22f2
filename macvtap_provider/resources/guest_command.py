"""GuestCommand: run a command in a guest over ssh (from a probe on the lab network)
and keep its output, like pulumi-command's remote.Command (whose plugin cannot be
fetched here)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource, UpdateResult

from macvtap_provider.adapters import docker_api
from macvtap_provider.adapters.lab_host import for_endpoint
from macvtap_provider.builders.secrets import check_password
from macvtap_provider.builders.validation import check_ipv4, check_name
from macvtap_provider.errors import ConsoleError, SpecError
from macvtap_provider.resources._base import (
    LabProvider,
    check_endpoint,
    input_names,
    known,
    output_names,
    resource_props,
)

log = logging.getLogger(__name__)

#: How long the command may run (ssh connect included).
COMMAND_TIMEOUT_S = 300


def _check_command(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError("command", "must be a non-empty shell command")
    return value


def ssh_argv(address: str, command: str) -> list[str]:
    """sshpass + ssh, the password read by sshpass from its stdin (never argv or env);
    `ssh -n` keeps the remote command away from that stdin."""
    return ["sshpass", "ssh", "-n", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
            "-o", "LogLevel=ERROR", f"root@{address}", command]


@dataclass
class GuestCommandArgs:
    """Inputs of a GuestCommand."""

    #: The docker network the guest is reachable on (a LabNetwork's name).
    network: pulumi.Input[str]
    #: The guest's address.
    address: pulumi.Input[str]
    #: The guest's root password (secret).
    root_password: pulumi.Input[str]
    #: A shell command run as root in the guest.
    command: pulumi.Input[str]
    #: Image of the ssh client container (default: the project's libvirt image).
    probe_image: pulumi.Input[str] | None = None
    #: Docker endpoint of the lab's host (default: the local socket).
    docker_host: pulumi.Input[str] | None = None
    #: Any values: when they change, the command runs again.
    triggers: pulumi.Input[list[Any]] | None = None


class GuestCommandProvider(LabProvider):
    INPUTS = input_names(GuestCommandArgs, exclude=("root_password",))
    REPLACE_ON = frozenset(INPUTS)
    KIND = "GuestCommand"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        known(props, "network", lambda v: check_name(v, "network"))
        known(props, "address", lambda v: check_ipv4(v, "address"))
        known(props, "command", _check_command)
        known(props, "root_password", check_password)
        check_endpoint(props)
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        image = props.get("probe_image")
        if not image:
            from macvtap_provider.images.libvirt_image import ensure_libvirt_image

            image = ensure_libvirt_image()
        address, command = props["address"], props["command"]
        log.info("running %r in %s over ssh", command, address)
        password = f"{props['root_password']}\n".encode()
        with for_endpoint(props.get("docker_host")).docker() as client, \
                docker_api.probe_container(client, image, owner="guest-command",
                                           network=props["network"],
                                           name_prefix="guest-command-") as probe:
            code, stdout, stderr = docker_api.exec_with_input(
                client, probe.name, ssh_argv(address, command), password,
                timeout_s=COMMAND_TIMEOUT_S)
        if code != 0:
            raise ConsoleError(f"`{command}` on {address} exited {code}: "
                               f"{stderr.strip()[-300:]} (sshpass 5 = wrong password)")
        outs = {k: v for k, v in props.items() if k != "root_password"}
        outs.update(stdout=stdout.rstrip("\n"), exit_code=code)
        return CreateResult(f"guest-command-{secrets.token_hex(4)}", outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        return ReadResult(id_, props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({k: v for k, v in news.items() if k != "root_password"})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to undo: the command ran once."""


class GuestCommand(Resource, module="macvtap", name="GuestCommand"):
    """Runs `command` in the guest once (again when an input or a trigger changes)."""

    network: pulumi.Output[str]
    address: pulumi.Output[str]
    command: pulumi.Output[str]
    probe_image: pulumi.Output[str | None]
    docker_host: pulumi.Output[str | None]
    triggers: pulumi.Output[list[Any] | None]
    #: What the command printed on stdout (one trailing newline removed).
    stdout: pulumi.Output[str]
    #: Its exit status (always 0: a failing command fails the create).
    exit_code: pulumi.Output[int]

    def __init__(self, resource_name: str, args: GuestCommandArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, OUTPUTS, secrets=("root_password",), opts=opts)
        super().__init__(GuestCommandProvider(), resource_name, props, opts)


OUTPUTS = output_names(GuestCommand, GuestCommandArgs)
