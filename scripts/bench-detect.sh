#!/usr/bin/env bash
# bench-detect.sh: is the daemon's detection-to-write time flat in the vhost count? On
# genhost's cPanel-shaped hosts of several sizes (two vhosts an account, a certificate each),
# `stapling-agent run` in enforce mode, stand-ins for apachectl and restartsrv_httpd, the
# responder a closed local port (the corroborating check is refused at once, at every size).
# Measures, from the append of the threshold-reaching AH01941 lines to the journal's "written"
# step, the median and max over several runs a size; the reference is the smallest host in the
# same run. See scripts/benchdetect/main.go for how each figure is taken.
#
#   scripts/bench-detect.sh                  # 10, 500, 3,000 accounts, 7 runs; checks the ratio
#   QUICK=1 scripts/bench-detect.sh          # smoke: 10 and 200 accounts, one run, no check
#   ACCOUNTS=10,3000 RUNS=9 BENCH_CHECK=0 scripts/bench-detect.sh
#
# Target (the detection issue): median at the largest host / median at the smallest <= BOUND
# (3.0; scripts/benchdetect/main.go says why not 2.0). Exit 1 when missed, unless BENCH_CHECK=0.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${QUICK:-${BENCH_QUICK:-0}}
if [ "$quick" = 1 ]; then
  accounts=${ACCOUNTS:-10,200} runs=${RUNS:-1} checkdefault=0
else
  accounts=${ACCOUNTS:-10,500,3000} runs=${RUNS:-7} checkdefault=1
fi
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
export GOTMPDIR=$work # the go command's own temporary files, gone with the rest
go build -o "$work/stapling-agent" ./agent/cmd/stapling-agent
go build -o "$work/genhost" ./scripts/genhost
go build -o "$work/benchdetect" ./scripts/benchdetect
# In the background and waited for, so a signal reaches the traps at once; on SIGTERM the
# harness stops genhost or the daemon it is running before it exits.
"$work/benchdetect" -bin "$work/stapling-agent" -genhost "$work/genhost" -dir "$work" \
  -accounts "$accounts" -runs "$runs" -bound "${BOUND:-3.0}" \
  -check="$([ "${BENCH_CHECK:-$checkdefault}" = 1 ] && echo true || echo false)" &
pid=$!
wait "$pid"
