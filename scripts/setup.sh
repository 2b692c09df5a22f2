#!/usr/bin/env bash
# Idempotent setup for macvtap-lab on a Debian 12 host:
#   system packages -> dockerd -> venv -> Pulumi engine -> local images -> test hosts' image.
# Each step skips itself when already done. Usage: scripts/setup.sh [system|docker|venv|pulumi|images|simhost]...
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MACVTAP_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/macvtap-lab}
VENV="$ROOT/.venv"
log() { echo "[setup] $*" >&2; }

APT_PACKAGES=(
  docker.io iptables                               # the docker engine (started by us, not systemd)
  qemu-system-x86 qemu-utils                       # KVM probe, guest boots in tests, qemu-img
  libvirt-clients libvirt-dev python3-libvirt      # virsh console; libvirt-python (Debian build)
  libguestfs-tools python3-guestfs linux-image-amd64  # offline image edits; kernel for the appliance
  libguestfs-xfs                                   # XFS in the appliance (Debian splits it out)
  debootstrap extlinux syslinux-common             # building the base rootfs and the guest image
  python3-venv python3-dev gcc pkg-config          # the project venv (and libvirt-python if rebuilt)
  iproute2 openssh-client                          # netlink tools, ssh for examples
)

step_system() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "system packages present"; return; fi
  if [ "$(id -u)" != 0 ]; then
    log "missing packages: ${missing[*]}; run as root: apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

step_docker() {
  if docker info >/dev/null 2>&1; then log "dockerd is running"; return; fi
  command -v dockerd >/dev/null || { log "dockerd not installed: run scripts/setup.sh system"; exit 1; }
  mkdir -p "$CACHE"
  log "starting dockerd (log: $CACHE/dockerd.log)"
  # No init system runs it for us here; detach it so it outlives this script.
  # --live-restore: containers (and the guests in them) keep running while dockerd is
  # stopped or restarted, and refresh says "dockerd is unreachable" meanwhile.
  setsid nohup dockerd --live-restore >"$CACHE/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && { log "dockerd is up"; return; }; sleep 1; done
  log "dockerd did not come up in 60 s; last log lines:"; tail -n 20 "$CACHE/dockerd.log" >&2; exit 1
}

step_venv() {
  # guestfs is only packaged for Debian's /usr/bin/python3 (not on PyPI), so the
  # venv is built on that interpreter and sees its site packages.
  local stamp="$VENV/.macvtap-lab-stamp" want
  want=$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then log "venv up to date"; return; fi
  log "creating $VENV on /usr/bin/python3 with system site packages"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[dev]"
  "$VENV/bin/python" -c "import guestfs, libvirt, docker, lxml, pyroute2, pexpect, pulumi" \
    || { log "the venv cannot import the system bindings (python3-guestfs, python3-libvirt)"; exit 1; }
  echo "$want" > "$stamp"
}

step_pulumi() { bash "$ROOT/scripts/build-pulumi.sh"; }

step_images() { "$VENV/bin/macvtap-lab" images build; }

# The image of the simulated remote hosts the multi-host tests start (tests/simhost).
step_simhost() { (cd "$ROOT" && "$VENV/bin/python" -m tests.simhost build); }

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(system docker venv pulumi images simhost)
for s in "${steps[@]}"; do "step_$s"; done
