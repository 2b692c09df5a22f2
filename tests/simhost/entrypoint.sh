#!/bin/sh
# Entry point of a simulated remote host, behind docker's init: fresh SSH host keys, the
# test's public key for root, sshd, then dockerd in the foreground.
set -eu
ssh-keygen -A >/dev/null
mkdir -p /root/.ssh && chmod 0700 /root/.ssh
printf '%s\n' "${SIMHOST_AUTHORIZED_KEY:?}" > /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
sshd-ctl start
# /var/lib/docker is a volume (overlay2 works on it; vfs is the fallback). The inner
# containers' cgroups go under one parent per host, so that removing the host can remove
# them from the machine's cgroup tree (bind-mounted: cgroup v1 is shared).
exec dockerd --storage-driver "${SIMHOST_STORAGE_DRIVER:-overlay2}" --live-restore \
  --cgroup-parent "${SIMHOST_CGROUP_PARENT:?}" \
  --default-address-pool base=10.250.0.0/16,size=24 >/var/log/dockerd.log 2>&1
