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
case "$action" in
  up)
    "$PULUMI" up --yes --non-interactive --skip-preview
    echo
    "$PULUMI" stack output
    ;;
  preview) "$PULUMI" preview --non-interactive --diff ;;
  down)
    "$PULUMI" destroy --yes --non-interactive --skip-preview
    ;;
  outputs) "$PULUMI" stack output ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
