#!/usr/bin/env bash
# bench-config.sh: reading a big host's config, against Apache's own parse of it in the same
# run. scripts/genhost writes a 3,000-account cPanel-shaped EA4 host (two vhosts an account, a
# certificate each); Apache checks it with `apache2 -t`; stapling-agent reads it for `audit
# --no-exec` (the model alone: asking httpd would add httpd's own parses) and for
# `remediate --dry-run` (the plan: the config as it is and as it would be). Best of 3 wall
# times, peak RSS from /usr/bin/time.
#
#   scripts/bench-config.sh                     # 3,000 accounts, checks the targets
#   ACCOUNTS=300 BENCH_CHECK=0 scripts/bench-config.sh
#
# Targets (the config issue): each no slower than `apache2 -t`; peak RSS <= 64 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
[ -x /usr/sbin/apache2 ] || { echo "bench: needs Debian's apache2" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/stapling-agent" ./agent/cmd/stapling-agent
go run ./scripts/genhost -root "$work/host" -accounts "${ACCOUNTS:-3000}"
conf="$work/host/etc/apache2/conf/httpd.conf"
printf 'httpd.conf: %s bytes, %s lines\n' "$(stat -c %s "$conf")" "$(wc -l <"$conf")"

best() { # best NAME CMD...: best of 3 wall seconds and the peak RSS (KB) of that run
  local name=$1 b="" k="" s kb
  shift
  for _ in 1 2 3; do
    /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || {
      [ "$name" = remediate ] || { cat "$work/err" >&2; exit 1; }
    }
    read -r s kb <"$work/t"
    if [ -z "$b" ] || awk "BEGIN{exit !($s < $b)}"; then b=$s k=$kb; fi
  done
  printf '%-10s %8s s %8.1f MiB\n' "$name" "$b" "$(awk "BEGIN{print $k/1024}")"
  eval "t_$name=$b kb_$name=$k"
}
best apache /usr/sbin/apache2 -d "$work/host/etc/apache2" -f conf/httpd.conf -t
best audit "$work/stapling-agent" --root "$work/host" audit --no-exec --format json
best remediate "$work/stapling-agent" --root "$work/host" remediate --dry-run
r_audit=$(awk "BEGIN{printf \"%.2f\", $t_audit/$t_apache}")
r_plan=$(awk "BEGIN{printf \"%.2f\", $t_remediate/$t_apache}")
printf 'ratio audit/apache -t = %s; remediate planning/apache -t = %s (targets <= 1.0); peak RSS %s / %s MiB (target <= 64)\n' \
  "$r_audit" "$r_plan" "$((kb_audit / 1024))" "$((kb_remediate / 1024))"
if [ "${BENCH_CHECK:-1}" = 1 ]; then
  fail=0
  awk "BEGIN{exit !($r_audit <= 1.0)}" || { echo "bench: MISSED audit no slower than apache2 -t" >&2; fail=1; }
  awk "BEGIN{exit !($r_plan <= 1.0)}" || { echo "bench: MISSED remediate planning no slower than apache2 -t" >&2; fail=1; }
  [ "$kb_audit" -le $((64 * 1024)) ] && [ "$kb_remediate" -le $((64 * 1024)) ] || { echo "bench: MISSED peak RSS <= 64 MB" >&2; fail=1; }
  exit $fail
fi
