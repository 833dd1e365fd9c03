#!/usr/bin/env bash
# bench-audit.sh: time the audit against reference tools on the same error_log, in one run.
#
#   scripts/bench-audit.sh            # 500 MB log, checks the targets, exit 1 if one is missed
#   BENCH_SIZE=20MB BENCH_CHECK=0 scripts/bench-audit.sh   # smoke run, figures only
#
# Measures, on one generated cPanel error_log (scripts/genlog: PHP-FPM, ModSecurity, authz,
# autoindex noise, stapling outage bursts, forged lines) with a warm page cache:
#   full    stapling-agent audit over the whole file (--since longer than the log)
#   hour    stapling-agent audit over the last hour (binary search to the window)
#   grep    grep -c AH01941 (the speed reference: a fixed-string count)
#   f2b     fail2ban-regex with the equivalent line-anchored filter (apt package fail2ban)
# Wall times (ns clock around each run) are the best of 3 (fail2ban: 1 run); memory is peak
# RSS from /usr/bin/time.
# Targets (issue 3): full <= 1.5 x grep; hour <= 5% of full; audit RSS < 30 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${BENCH_SIZE:-500MB}
check=${BENCH_CHECK:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
command -v fail2ban-regex >/dev/null || { echo "bench: needs fail2ban-regex (apt-get install fail2ban)" >&2; exit 2; }

go build -o "$work/stapling-agent" ./agent/cmd/stapling-agent
go build -o "$work/genlog" ./scripts/genlog
scripts/sample-host.sh "$work/host" >/dev/null
log="$work/host/var/log/apache2/error_log"
"$work/genlog" -size "$size" -span 72h >"$log"
cat "$log" >/dev/null # warm the page cache so every tool reads from memory

cat >"$work/stapling.conf" <<'EOF'
[Definition]
failregex = ^\s*\[ssl:error\] \[pid <F-ID>\d+(?::tid \d+)?</F-ID>\] AH01941: stapling_renew_response: responder error$
datepattern = ^\[%%a %%b %%d %%H:%%M:%%S(?:\.%%f)? %%Y\]
EOF

# measure NAME RUNS CMD...: best wall seconds and its peak RSS (KiB) into $NAME_s, $NAME_kb.
measure() {
  local name=$1 runs=$2 best="" kb=""
  shift 2
  for _ in $(seq "$runs"); do
    local t0 t1 s k
    t0=$(date +%s%N)
    /usr/bin/time -f "%M" -o "$work/t" "$@" >"$work/out.$name" 2>/dev/null || true
    t1=$(date +%s%N)
    s=$(awk "BEGIN{printf \"%.4f\", ($t1 - $t0) / 1e9}")
    k=$(tail -n 1 "$work/t") # time prepends a line when the command exits non-zero
    if [ -z "$best" ] || awk "BEGIN{exit !($s < $best)}"; then best=$s kb=$k; fi
  done
  printf -v "${name}_s" '%s' "$best"
  printf -v "${name}_kb" '%s' "$kb"
}

agent=("$work/stapling-agent" --root "$work/host" audit --format json)
measure full 3 "${agent[@]}" --since 100000h
measure hour 3 "${agent[@]}" --since 1h
measure grep 3 grep -c AH01941 "$log"
measure f2b 1 fail2ban-regex "$log" "$work/stapling.conf"

bytes=$(stat -c %s "$log")
lines=$(grep -o '"lines_scanned": [0-9]*' "$work/out.full" | grep -o '[0-9]*$')
ours=$(grep -A1 '"failures"' "$work/out.full" | grep -o '"total": [0-9]*' | grep -o '[0-9]*$')
theirs=$(grep -o '[0-9]* matched' "$work/out.f2b" | grep -o '^[0-9]*')
hour_bytes=$(grep -o '"bytes_scanned": [0-9]*' "$work/out.hour" | grep -o '[0-9]*$')

ratio() { awk "BEGIN{ if ($2 == 0) print \"inf\"; else printf \"%.3f\", $1 / $2 }"; }
r_full=$(ratio "$full_s" "$grep_s")
r_hour=$(ratio "$hour_s" "$full_s")
r_f2b=$(ratio "$f2b_s" "$full_s")

printf 'log: %s bytes, %s lines; AH01941 failures: stapling-agent %s, fail2ban-regex %s, grep -c (forged included) %s\n' \
  "$bytes" "$lines" "$ours" "$theirs" "$(cat "$work/out.grep")"
printf '%-28s %10s %10s\n' tool "wall (s)" "RSS (MiB)"
for n in full hour grep f2b; do
  s=${n}_s kb=${n}_kb
  printf '%-28s %10s %10.1f\n' "$n" "${!s}" "$(awk "BEGIN{print ${!kb}/1024}")"
done
printf 'ratio full/grep = %s (target <= 1.5)\n' "$r_full"
printf 'ratio hour/full = %s (target <= 0.05; hour read %s bytes)\n' "$r_hour" "$hour_bytes"
printf 'ratio fail2ban/full = %s\n' "$r_f2b"

[ "$ours" = "$theirs" ] || { echo "bench: stapling-agent and fail2ban-regex disagree on the count" >&2; exit 1; }
if [ "$check" = 1 ]; then
  fail=0
  awk "BEGIN{exit !($r_full <= 1.5)}" || { echo "bench: MISSED full scan <= 1.5 x grep" >&2; fail=1; }
  awk "BEGIN{exit !($r_hour <= 0.05)}" || { echo "bench: MISSED 1h window <= 5% of full scan" >&2; fail=1; }
  [ "$full_kb" -lt $((30 * 1024)) ] || { echo "bench: MISSED audit RSS < 30 MB" >&2; fail=1; }
  exit $fail
fi
