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
from macvtap_provider.builders.secrets import check_password
from macvtap_provider.builders.validation import check_ipv4, check_name
from macvtap_provider.errors import ConsoleError, SpecError
from macvtap_provider.resources._base import LabProvider, known, resource_props

log = logging.getLogger(__name__)


def _check_command(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError("command", "must be a non-empty shell command")
    return value


class GuestCommandProvider(LabProvider):
    INPUTS = ("network", "address", "command", "probe_image", "docker_host", "triggers")
    REPLACE_ON = frozenset(INPUTS)
    KIND = "GuestCommand"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        known(props, "network", lambda v: check_name(v, "network"))
        known(props, "address", lambda v: check_ipv4(v, "address"))
        known(props, "command", _check_command)
        known(props, "root_password", check_password)
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        image = props.get("probe_image")
        if not image:
            from macvtap_provider.images.libvirt_image import ensure_libvirt_image

            image = ensure_libvirt_image()
        name = f"guest-command-{secrets.token_hex(4)}"
        argv = ["-e", "ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR",
                f"root@{props['address']}", props["command"]]
        log.info("running %r in %s over ssh", props["command"], props["address"])
        with docker_api.docker_client(props.get("docker_host")) as client:
            with docker_api.translate_errors(f"running probe container {name!r}"):
                probe = client.containers.run(
                    image, argv, entrypoint=["sshpass"], name=name, detach=True,
                    network=props["network"], environment={"SSHPASS": props["root_password"]},
                    labels={"org.macvtap-lab.probe": "guest-command"})
            try:
                status = probe.wait(timeout=300)
                stdout = probe.logs(stdout=True, stderr=False).decode(errors="replace")
                stderr = probe.logs(stdout=False, stderr=True).decode(errors="replace")
            finally:
                docker_api.remove_container(client, name)
        code = int(status.get("StatusCode", -1))
        if code != 0:
            raise ConsoleError(f"`{props['command']}` on {props['address']} exited {code}: "
                               f"{stderr.strip()[-300:]} (sshpass 5 = wrong password)")
        outs = {k: v for k, v in props.items() if k != "root_password"}
        outs.update(stdout=stdout.rstrip("\n"), exit_code=code)
        return CreateResult(name, outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        return ReadResult(id_, props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({k: v for k, v in news.items() if k != "root_password"})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to undo: the command ran once."""


@dataclass
class GuestCommandArgs:
    network: pulumi.Input[str]
    address: pulumi.Input[str]
    root_password: pulumi.Input[str]
    command: pulumi.Input[str]
    probe_image: pulumi.Input[str] | None = None
    docker_host: pulumi.Input[str] | None = None
    triggers: pulumi.Input[list[Any]] | None = None


class GuestCommand(Resource, module="macvtap", name="GuestCommand"):
    """Runs `command` in the guest once (again when an input or a trigger changes)."""

    stdout: pulumi.Output[str]
    exit_code: pulumi.Output[int]

    def __init__(self, resource_name: str, args: GuestCommandArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, ("stdout", "exit_code"), secrets=("root_password",),
                                     opts=opts)
        super().__init__(GuestCommandProvider(), resource_name, props, opts)
