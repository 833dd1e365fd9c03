#!/usr/bin/env bash
# demo.sh: build stapling-agent from this tree and run its main job on a freshly made sample
# cPanel EA4 host (scripts/sample-host.sh) in a temporary directory. Nothing outside that
# directory is touched; the host is left in place so you can try other commands on it.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
go build -o "$work/stapling-agent" ./agent/cmd/stapling-agent
scripts/sample-host.sh "$work/host" >/dev/null
echo "+ stapling-agent --root $work/host remediate --dry-run" >&2
"$work/stapling-agent" --root "$work/host" remediate --dry-run
echo "(sample host kept in $work/host; binary in $work/stapling-agent)" >&2
