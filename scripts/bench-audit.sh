#!/usr/bin/env bash
# bench-audit.sh: time the audit against reference tools on the same error_log, in one run.
#
#   scripts/bench-audit.sh            # 2 GB log, checks the targets, exit 1 if one is missed
#   BENCH_SIZE=20MB BENCH_CHECK=0 scripts/bench-audit.sh   # smoke run, figures only
#
# Measures, on one generated cPanel error_log (scripts/genlog: PHP-FPM, ModSecurity, authz,
# autoindex noise, stapling outage bursts, forged lines; 30 days) with a warm page cache:
#   full    stapling-agent audit over the whole file (--since longer than the log)
#   hour    stapling-agent audit over the last hour (binary search to the window)
#   rg      rg -c AH01941 (ripgrep, the speed reference: a fixed-string count)
#   grep    grep -c AH01941
#   f2b     fail2ban-regex with the equivalent line-anchored filter (apt package fail2ban)
# and on a second host with a year of history (error_log, error_log.bkup and 12 archives
# archive/error_log-MM-YYYY.gz, each BENCH_YEAR_PART before gzip, default BENCH_SIZE/16):
#   year    stapling-agent audit over all of it
#   rgz     rg -z -c AH01941 over the same files
# Wall times (ns clock around each run) are the median of BENCH_RUNS (default 5, interleaved
# so that load on a shared machine hits every tool alike; fail2ban: 1 run); memory is peak
# RSS from /usr/bin/time. Ratios compare figures of this one run.
# Targets (issue 16): full <= 1.5 x rg; year <= 0.8 x rgz; hour reads <= 1% of the log;
# audit RSS < 30 MB (issue 3: at most 16 MB above a run over an empty log).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${BENCH_SIZE:-2GB}
check=${BENCH_CHECK:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
command -v fail2ban-regex >/dev/null || { echo "bench: needs fail2ban-regex (apt-get install fail2ban)" >&2; exit 2; }
command -v rg >/dev/null || { echo "bench: needs rg (apt-get install ripgrep)" >&2; exit 2; }
runs=${BENCH_RUNS:-5}

go build -o "$work/stapling-agent" ./agent/cmd/stapling-agent
go build -o "$work/genlog" ./scripts/genlog
scripts/sample-host.sh "$work/host" >/dev/null
log="$work/host/var/log/apache2/error_log"
"$work/genlog" -size "$size" -span 720h >"$log"

# The year: twelve months of archives, last month's .bkup, this month's log.
scripts/sample-host.sh "$work/year" >/dev/null
ylog="$work/year/var/log/apache2/error_log"
mkdir -p "$(dirname "$ylog")/archive"
quarter=${BENCH_YEAR_PART:-"$(( $(stat -c %s "$log") / 16384 ))KB"}
for m in $(seq 12 -1 1); do
  end=$(date -u -d "-$((m + 1)) month" +%Y-%m-%dT%H:%M:%SZ)
  "$work/genlog" -size "$quarter" -span 720h -end "$end" -seed "$m" |
    gzip >"$(dirname "$ylog")/archive/error_log-$(date -u -d "$end" +%m-%Y).gz"
done
"$work/genlog" -size "$quarter" -span 720h -end "$(date -u -d '-1 month' +%Y-%m-%dT%H:%M:%SZ)" -seed 13 >"$ylog.bkup"
"$work/genlog" -size "$quarter" -span 720h -seed 14 >"$ylog"
yfiles=("$ylog" "$ylog.bkup" "$(dirname "$ylog")/archive")
scripts/sample-host.sh "$work/empty" >/dev/null
: >"$work/empty/var/log/apache2/error_log"
cat "$log" "$ylog" "$ylog.bkup" "$(dirname "$ylog")"/archive/* >/dev/null # warm the page cache

cat >"$work/stapling.conf" <<'EOF'
[Definition]
failregex = ^\s*\[ssl:error\] \[pid <F-ID>\d+(?::tid \d+)?</F-ID>\] AH01941: stapling_renew_response: responder error$
datepattern = ^\[%%a %%b %%d %%H:%%M:%%S(?:\.%%f)? %%Y\]
EOF

# once NAME CMD...: one run; its wall seconds are appended to $work/NAME.s, its peak RSS
# (KiB) to $work/NAME.kb, its output kept in $work/out.NAME.
once() {
  local name=$1 t0 t1
  shift
  t0=$(date +%s%N)
  /usr/bin/time -f "%M" -o "$work/t" "$@" >"$work/out.$name" 2>/dev/null || true
  t1=$(date +%s%N)
  awk "BEGIN{printf \"%.4f\\n\", ($t1 - $t0) / 1e9}" >>"$work/$name.s"
  tail -n 1 "$work/t" >>"$work/$name.kb" # time prepends a line when the command exits non-zero
}
# median FILE: the median of the numbers in FILE.
median() { sort -g "$1" | awk '{v[NR]=$1} END{print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

agent=("$work/stapling-agent" --root "$work/host" audit --format json)
for _ in $(seq "$runs"); do # interleaved: each tool sees the same load
  once full "${agent[@]}" --since 100000h
  once rg rg -c AH01941 "$log"
  once hour "${agent[@]}" --since 1h
  once year "$work/stapling-agent" --root "$work/year" audit --format json --since 100000h
  once rgz rg -z -c AH01941 "${yfiles[@]}"
  once empty "$work/stapling-agent" --root "$work/empty" audit --format json --since 100000h
done
once grep grep -c AH01941 "$log"
once f2b fail2ban-regex "$log" "$work/stapling.conf"
for n in full rg hour year rgz empty grep f2b; do
  printf -v "${n}_s" '%s' "$(median "$work/$n.s")"
  printf -v "${n}_kb" '%s' "$(sort -g "$work/$n.kb" | tail -n 1)"
done

bytes=$(stat -c %s "$log")
lines=$(grep -o '"lines_scanned": [0-9]*' "$work/out.full" | grep -o '[0-9]*$')
ours=$(grep -A1 '"failures"' "$work/out.full" | grep -o '"total": [0-9]*' | grep -o '[0-9]*$')
theirs=$(grep -o '[0-9]* matched' "$work/out.f2b" | grep -o '^[0-9]*')
hour_bytes=$(grep -o '"bytes_scanned": [0-9]*' "$work/out.hour" | grep -o '[0-9]*$')
ybytes=$(grep -o '"bytes_scanned": [0-9]*' "$work/out.year" | grep -o '[0-9]*$')
yours=$(grep -A1 '"failures"' "$work/out.year" | grep -o '"total": [0-9]*' | grep -o '[0-9]*$')
# rg counts forged lines too; the exact reference for the year is fail2ban's count per file.
ytheirs=0
for f in "$ylog" "$ylog.bkup" "$(dirname "$ylog")"/archive/*; do
  case $f in
  *.gz) gzip -dc "$f" >"$work/plain" ;;
  *) cp "$f" "$work/plain" ;;
  esac
  ytheirs=$((ytheirs + $(fail2ban-regex "$work/plain" "$work/stapling.conf" | grep -o '[0-9]* matched' | grep -o '^[0-9]*')))
done
rm -f "$work/plain"

ratio() { awk "BEGIN{ if ($2 == 0) print \"inf\"; else printf \"%.3f\", $1 / $2 }"; }
r_full=$(ratio "$full_s" "$rg_s")
r_grep=$(ratio "$full_s" "$grep_s")
r_year=$(ratio "$year_s" "$rgz_s")
r_hour=$(ratio "$hour_s" "$full_s")
r_hbytes=$(awk "BEGIN{printf \"%.5f\", $hour_bytes / $bytes}")
r_f2b=$(ratio "$f2b_s" "$full_s")
rss_growth=$(( (full_kb > year_kb ? full_kb : year_kb) - empty_kb ))

printf 'log: %s bytes, %s lines; AH01941 failures: stapling-agent %s, fail2ban-regex %s, rg -c (forged included) %s\n' \
  "$bytes" "$lines" "$ours" "$theirs" "$(cat "$work/out.rg")"
printf 'year: %s bytes decompressed; AH01941 failures: stapling-agent %s, fail2ban-regex %s\n' "$ybytes" "$yours" "$ytheirs"
printf '%-28s %10s %10s\n' "tool (median of $runs)" "wall (s)" "RSS (MiB)"
for n in full rg grep hour year rgz empty f2b; do
  s=${n}_s kb=${n}_kb
  printf '%-28s %10s %10.1f\n' "$n" "${!s}" "$(awk "BEGIN{print ${!kb}/1024}")"
done
printf 'ratio full/rg = %s (target <= 1.5); full/grep = %s\n' "$r_full" "$r_grep"
printf 'ratio year/rg -z = %s (target <= 0.8)\n' "$r_year"
printf 'hour read %s bytes = %s of the log (target <= 0.01); hour/full = %s\n' "$hour_bytes" "$r_hbytes" "$r_hour"
printf 'RSS growth over an empty log = %s KiB (target <= 16384)\n' "$rss_growth"
printf 'ratio fail2ban/full = %s\n' "$r_f2b"

[ "$ours" = "$theirs" ] || { echo "bench: stapling-agent and fail2ban-regex disagree on the count" >&2; exit 1; }
[ "$yours" = "$ytheirs" ] || { echo "bench: stapling-agent and fail2ban-regex disagree on the year's count" >&2; exit 1; }
if [ "$check" = 1 ]; then
  fail=0
  awk "BEGIN{exit !($r_full <= 1.5)}" || { echo "bench: MISSED full scan <= 1.5 x rg" >&2; fail=1; }
  awk "BEGIN{exit !($r_year <= 0.8)}" || { echo "bench: MISSED year <= 0.8 x rg -z" >&2; fail=1; }
  awk "BEGIN{exit !($r_hbytes <= 0.01)}" || { echo "bench: MISSED 1h window reads <= 1% of the log" >&2; fail=1; }
  [ "$rss_growth" -le 16384 ] || { echo "bench: MISSED RSS growth <= 16 MiB" >&2; fail=1; }
  [ "$full_kb" -lt $((30 * 1024)) ] || { echo "bench: MISSED audit RSS < 30 MB" >&2; fail=1; }
  exit $fail
fi
