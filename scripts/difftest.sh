#!/usr/bin/env bash
# difftest.sh: run the differential test of apacheconf's walker against Debian's apache2 by hand.
#
#   scripts/difftest.sh                # seeds 1..300 and the hand-written cases
#   scripts/difftest.sh 2000           # seeds 1..2000
#   SEED=17 scripts/difftest.sh        # only seed 17, with its files and Apache's dump in the log
#
# Needs apache2 with mod_info (apt-get install apache2). The log of a failing seed lists both
# sides' directives, files read and per-vhost stapling, the generated files with line numbers
# and Apache's DUMP_CONFIG; the last lines list the failing seeds, smallest config first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export STAPLING_DIFF_SEEDS="${1:-300}"
run='TestDifferentialAgainstApache'
if [ -n "${SEED:-}" ]; then
  export STAPLING_DIFF_SEED="$SEED"
  run='TestDifferentialAgainstApache/seeds'
fi
exec go test -count=1 -v -run "$run" ./apacheconf
