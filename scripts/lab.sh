#!/usr/bin/env bash
# Drive a stack with the project's Pulumi (local file backend, passphrase file).
# Usage: scripts/lab.sh up|down|preview|outputs [stack] [project-dir]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
action=${1:?usage: lab.sh up|down|preview|outputs [stack] [project-dir]}
stack=${2:-lab}
dir=${3:-$ROOT}
PULUMI="$ROOT/.tools/bin/pulumi"
[ -x "$PULUMI" ] || { echo "Pulumi is not set up: run make setup" >&2; exit 1; }
cd "$dir"
"$PULUMI" stack select --create "$stack" --non-interactive >/dev/null
ensure_password() {
  # The lab's root password is a secret config value. On the first `up` one is generated
  # and stored encrypted in the stack config (passed on stdin: never in argv or logs).
  # (An unset key reads as a plain empty string; a set one is marked secret.)
  if ! "$PULUMI" config --json 2>/dev/null | "$ROOT/.venv/bin/python" -c \
      'import json, sys; v = json.load(sys.stdin).get("macvtap-lab:rootPassword", {}); sys.exit(0 if v.get("secret") else 1)'; then
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20 \
      | "$PULUMI" config set --secret rootPassword
    echo "generated a root password for the guest; read it with:" \
         "$PULUMI config get rootPassword" >&2
  fi
}
recover_interrupted_run() {
  # A killed `pulumi up` (SIGKILL, power loss) leaves its lock on the stack and records the
  # creates it was waiting for as pending. When the process named in the lock is gone from
  # this host: release the lock (`pulumi cancel`) and refresh, clearing those pending
  # creates; whatever they had made is taken over or replaced by the next `up`.
  local backend=${PULUMI_BACKEND_URL:-file://$ROOT/.state/pulumi}
  case "$backend" in file://*) ;; *) return 0 ;; esac
  local locks="${backend#file://}"; locks="${locks%%\?*}/.pulumi/locks"
  [ -d "$locks" ] || return 0
  local files=()
  mapfile -d '' files < <(find "$locks" -path "*/$stack/*.json" -print0)
  [ "${#files[@]}" -gt 0 ] || return 0
  if "$ROOT/.venv/bin/python" - "${files[@]}" <<'PY'; then
import json, os, socket, sys
for path in sys.argv[1:]:
    lock = json.load(open(path))
    if lock.get("hostname") != socket.gethostname():
        continue
    try:
        os.kill(int(lock["pid"]), 0)
    except ProcessLookupError:
        sys.exit(0)  # stale: its process is gone
sys.exit(1)
PY
    echo "the stack $stack is locked by a run that no longer exists (killed?): releasing the" \
         "lock and refreshing" >&2
    "$PULUMI" cancel --yes --non-interactive
    "$PULUMI" refresh --yes --non-interactive --skip-preview --clear-pending-creates
  fi
}
case "$action" in
  up)
    ensure_password
    recover_interrupted_run
    "$PULUMI" up --yes --non-interactive --skip-preview
    echo
    "$PULUMI" stack output
    ;;
  preview) ensure_password; "$PULUMI" preview --non-interactive --diff ;;
  down)
    "$PULUMI" destroy --yes --non-interactive --skip-preview
    ;;
  outputs) "$PULUMI" stack output ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
