#!/bin/sh
# Entry point of the macvtap-lab libvirt container, behind docker's init (--init, PID 1).
# Starts virtlogd (qemu.conf sends the guests' stdio through it) and libvirtd, both as
# daemons, and then watches libvirtd like a service manager would:
#   - libvirtd dying on its own is started again within a second;
#   - `libvirtd-ctl stop` stops it on purpose (it stays stopped until `libvirtd-ctl start`);
#     the guests keep running meanwhile and libvirtd takes them back when it starts;
#   - `docker stop` (SIGTERM) stops libvirtd and ends the container.
set -eu

mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt/qemu
rm -f /run/libvirtd.held

virtlogd --daemon
libvirtd-ctl start

trap 'libvirtd-ctl stop; exit 0' TERM INT
while :; do
  if [ ! -e /run/libvirtd.held ] && ! libvirtd-ctl status >/dev/null; then
    echo "macvtap-lab: libvirtd is not running: starting it again" >&2
    libvirtd-ctl start || true
  fi
  sleep 1 &
  wait $! || true
done
