#!/bin/sh
# libvirtd-ctl start|stop|status: libvirtd inside the macvtap-lab libvirt container.
# `stop` holds it stopped (the entry point does not restart it) until `start`; running
# guests are left alone and are taken back by libvirtd when it starts again.
set -eu
PIDFILE=/run/libvirtd.pid
HOLD=/run/libvirtd.held

running() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
  start)
    rm -f "$HOLD"
    running && exit 0
    libvirtd --daemon --pid-file "$PIDFILE"
    ;;
  stop)
    touch "$HOLD"
    running || exit 0
    pid=$(cat "$PIDFILE")
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null; do
      i=$((i + 1))
      [ "$i" -lt 150 ] || { kill -KILL "$pid" 2>/dev/null || true; break; }
      sleep 0.1
    done
    ;;
  status)
    if running; then echo "libvirtd running (pid $(cat "$PIDFILE"))"; else echo "libvirtd stopped"; exit 3; fi
    ;;
  *)
    echo "usage: libvirtd-ctl start|stop|status" >&2
    exit 2
    ;;
esac
