"""The root password never appears in plaintext: not in the state, not in verbose engine
and provider logs nor the engine's event stream, not in any process's argv while `pulumi
up` runs, not in what `docker inspect` shows of the lab's containers and of the probes that
log in to the guest."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path

import docker
import docker.errors
import pytest

from macvtap_provider import paths
from macvtap_provider.adapters.docker_api import PROBE_LABEL
from macvtap_provider.compose import lab_name
from macvtap_provider.resources.guest_command import GuestCommandProvider
from tests.conftest import ROOT
from tests.e2e import lab_probe
from tests.e2e.conftest import make_stack, refused

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker,
              pytest.mark.libvirt, pytest.mark.guestfs]


class ArgvSampler(threading.Thread):
    """Reads every process's command line every few milliseconds, looking for `needle`."""

    def __init__(self, needle: bytes) -> None:
        super().__init__(daemon=True)
        self.needle = needle
        self.samples = 0
        self.processes_seen: set[int] = set()
        self.hits: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                self.processes_seen.add(int(pid))
                if self.needle in cmdline:
                    self.hits.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1
            time.sleep(0.02)


class InspectSampler(threading.Thread):
    """`docker inspect`s every probe container (and the lab's own) every few ms, looking
    for `needle` anywhere in what docker shows (Env, Cmd, Args, Labels...)."""

    def __init__(self, needle: str, name_prefix: str) -> None:
        super().__init__(daemon=True)
        self.needle = needle
        self.name_prefix = name_prefix
        self.inspected: dict[str, str] = {}  # name -> the probe's owner label ("" if none)
        self.hits: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        client = docker.from_env()
        try:
            while not self.stop.is_set():
                for container in client.containers.list(all=True, ignore_removed=True):
                    name = str(container.name)
                    labels = container.labels or {}
                    if PROBE_LABEL not in labels and not name.startswith(self.name_prefix):
                        continue
                    try:
                        attrs = client.api.inspect_container(container.id)
                    except docker.errors.NotFound:
                        continue
                    self.inspected[name] = labels.get(PROBE_LABEL, "")
                    if self.needle in json.dumps(attrs):
                        self.hits.append(name)
                time.sleep(0.05)
        finally:
            client.close()


def test_password_never_in_plaintext(tmp_path: Path) -> None:
    stack = f"s{secrets.token_hex(3)}"
    lab = lab_name("macvtap-lab", stack)
    password = "Pw-" + secrets.token_hex(10)
    st = make_stack(tmp_path, ROOT, stack)
    st.setenv("MACVTAP_LAB_LOG_LEVEL", "DEBUG")  # every system call the providers make
    sampler = ArgvSampler(password.encode())
    inspector = InspectSampler(password, lab)
    try:
        st.set_secret("rootPassword", password)
        st.config("subnet", f"10.213.{100 + secrets.randbelow(40)}.0/24")
        st.config("networkMethod", "console")  # the password goes to a console
        sampler.start()
        inspector.start()
        events: list[object] = []  # the engine's event stream, as the Automation API reads it
        up = st.up("verbose_up", log_to_std_err=True, log_verbosity=9, log_flow=True,
                   on_event=events.append)
        sampler.stop.set()
        sampler.join()
        logs = up.stdout + up.stderr
        assert len(logs) > 100_000  # it really was verbose
        assert "password" in logs.lower()  # the property is there, its value is not
        assert password not in logs
        assert len(events) > 20 and password not in repr(events)
        assert sampler.samples > 100 and len(sampler.processes_seen) > 20
        assert sampler.hits == []
        out = st.outputs()
        assert password not in st.state_at_rest()
        config_file = (ROOT / f"Pulumi.{stack}.yaml").read_text()
        assert password not in config_file and "secure:" in config_file
        # It still is the password: the guest accepts it.
        image = lab_probe.docker.from_env().containers.get(out["container_name"]).attrs[
            "Config"]["Image"]
        rc, text = lab_probe.ssh(str(out["network_name"]), image, str(out["guest_ip"]), password,
                                 "true")
        assert rc == 0, text
        # GuestCommand logs in with the password from a probe container: over the exec's
        # stdin, never in its environment or command line.
        made = GuestCommandProvider().create({
            "network": out["network_name"], "address": out["guest_ip"],
            "root_password": password, "command": "hostname", "probe_image": image})
        assert made.outs["exit_code"] == 0 and made.outs["stdout"]
        inspector.stop.set()
        inspector.join()
        # Seen: the libvirt container, GuestNetwork's probe (owner: that container) and
        # GuestCommand's probe.
        assert f"{lab}-libvirt" in inspector.inspected, inspector.inspected
        assert {f"{lab}-libvirt", "guest-command"} <= set(inspector.inspected.values()), \
            inspector.inspected
        assert inspector.hits == []
    finally:
        inspector.stop.set()
        sampler.stop.set()
        st.destroy()
        st.remove()
    assert not (paths.work_root() / lab).exists()


def test_a_refused_password_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    """Exception texts: a password refused by `check` is named, never quoted."""
    stack = f"s{secrets.token_hex(3)}"
    first, second = "Pw-" + secrets.token_hex(8), "Line2-" + secrets.token_hex(8)
    st = make_stack(tmp_path, ROOT, stack)
    try:
        st.set_secret("rootPassword", f"{first}\n{second}")
        text = refused(st)
    finally:
        st.remove()
    # Refused by the program's config check, before any resource: named as the user set it.
    assert "stack config `rootPassword`" in text and "newlines or NUL" in text, text[-3000:]
    assert "Traceback" not in text
    assert first not in text and second not in text
