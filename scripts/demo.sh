#!/usr/bin/env bash
# demo.sh: build stapling-agent from this tree and run its main job on a freshly made sample
# cPanel EA4 host (scripts/sample-host.sh) in a temporary directory. Nothing outside that
# directory is touched; the host is left in place so you can try other commands on it.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
go build -o "$work/stapling-agent" ./agent/cmd/stapling-agent
scripts/sample-host.sh "$work/host" >/dev/null
echo "+ stapling-agent --root $work/host audit" >&2
status=0
"$work/stapling-agent" --root "$work/host" audit || status=$?
echo >&2
echo "(audit exit code $status: 0 ok, 1 warning, 2 critical, 3 unknown. The sample host has a" >&2
echo " fresh outage, so 2 is expected. Sample host: $work/host; binary: $work/stapling-agent." >&2
echo " Next: $work/stapling-agent --root $work/host remediate --dry-run)" >&2
