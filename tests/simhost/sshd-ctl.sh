#!/bin/sh
# sshd-ctl start|stop|status: the simulated host's sshd (tests stop it to cut the wire).
set -eu
PIDFILE=/run/sshd.pid
running() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
case "${1:-}" in
  start) running && exit 0; mkdir -p /run/sshd; /usr/sbin/sshd ;;
  stop)
    running || exit 0
    # Ends the listener and every open session: the wire is cut, not just new logins.
    pkill -TERM -x sshd || true
    i=0; while pgrep -x sshd >/dev/null; do i=$((i + 1)); [ "$i" -lt 50 ] || break; sleep 0.1; done
    rm -f "$PIDFILE" ;;
  status) if running; then echo "sshd running"; else echo "sshd stopped"; exit 3; fi ;;
  *) echo "usage: sshd-ctl start|stop|status" >&2; exit 2 ;;
esac
