#!/usr/bin/env bash
# bench-remediate.sh: how fast the daemon fixes a real incident on a real Apache (scripts/lab.sh):
# a black-holed OCSP responder, clients asking for staples, `stapling-agent run` in enforce mode.
# Measures, from the threshold-reaching AH01941 line, the include written (target <= 5 s) and
# Apache restarted (target <= 10 s), with the corroborating check of the responder included,
# against the manual fix (append, apachectl -t, restartsrv_httpd) on the same Apache in the same
# run. Needs Debian's apache2 and openssl.
#
#   scripts/bench-remediate.sh              # checks the targets (exit 1 if missed)
#   BENCH_CHECK=0 scripts/bench-remediate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/stapling-agent" ./agent/cmd/stapling-agent
go build -o "$work/benchremediate" ./scripts/benchremediate
"$work/benchremediate" -bin "$work/stapling-agent" -lab scripts/lab.sh -check="$([ "${BENCH_CHECK:-1}" = 1 ] && echo true || echo false)"
