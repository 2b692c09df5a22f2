#!/bin/sh
# Entry point of the macvtap-lab libvirt container: virtlogd first (qemu.conf sends the
# guests' stdio through it), then libvirtd in the foreground as the init's only child, so
# `docker stop` signals reach it. Expects docker's init (--init) as PID 1.
set -eu

mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt/qemu

virtlogd --daemon
exec libvirtd
