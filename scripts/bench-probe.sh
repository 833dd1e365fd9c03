#!/usr/bin/env bash
# bench-probe.sh: time `stapling-agent probe` on a real Apache with many SSL vhosts, against a
# reference in the same run, and its deadline against black-holed vhost addresses.
#
#   scripts/bench-probe.sh                     # 500 vhosts; checks the targets, exit 1 if missed
#   QUICK=1 scripts/bench-probe.sh             # 50 vhosts, 10 black holes, figures only (CI smoke)
#   VHOSTS=1000 CONCURRENCY=16 scripts/bench-probe.sh
#
# Brings up the lab (scripts/lab.sh VHOSTS=N: Debian's apache2 with mod_ssl, one certificate
# per vhost, an `openssl ocsp` responder; STAPLING_CACHE large enough that every staple stays
# cached: a healthy host), primes the staples with one probe, then measures (best of RUNS):
#   probe     stapling-agent probe --root LAB (every vhost: the default offer with the staple,
#             TLS 1.0-1.1, TLS 1.2 alone; JSON)
#   s_client  the reference: for each vhost one `openssl s_client -status` handshake (the
#             default offer only, a quarter of the probe's handshakes at most), xargs -P CONCURRENCY
# and, against BLACKHOLES addresses that drop every SYN (local listeners with a full accept
# queue: a connect times out as towards a firewalled address), probe --timeout 1s with a
# deadline long enough for all (each reported unreachable once, within it) and with --deadline
# 2s (it stops there: each target reported once, unreachable or not_probed).
# Targets (issue 16): probe of 500 vhosts <= 1 s; the black-hole runs within their deadlines.
# Wall times are ns clocks around each run. Everything it starts is stopped on exit and every
# file it writes is under its temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${QUICK:-0}
check=${BENCH_CHECK:-1}
vhosts=${VHOSTS:-500} holes=${BLACKHOLES:-50} runs=${RUNS:-3}
if [ "$quick" = 1 ]; then
  vhosts=${VHOSTS:-50} holes=${BLACKHOLES:-10} runs=${RUNS:-1} check=${BENCH_CHECK:-0}
fi
conc=${CONCURRENCY:-}
work=$(mktemp -d)
holes_pid=""
cleanup() {
  [ -z "$holes_pid" ] || kill "$holes_pid" 2>/dev/null || true
  [ -z "$holes_pid" ] || wait "$holes_pid" 2>/dev/null || true
  [ ! -f "$work/lab/lab.env" ] || scripts/lab.sh down "$work/lab" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 0755 "$work" # Apache's children (www-data) read the lab tree

for bin in /usr/sbin/apache2 openssl xargs; do
  command -v "$bin" >/dev/null || { echo "bench: needs $bin (apt-get install apache2 openssl)" >&2; exit 2; }
done
go build -o "$work/stapling-agent" ./agent/cmd/stapling-agent
agent="$work/stapling-agent"
[ -n "$conc" ] || conc=$("$agent" probe --help | sed -n 's/.*--concurrency int.*(default \([0-9]*\)).*/\1/p')

# The black holes: a tiny Go program (standard library only, built outside any module) that
# listens with a backlog of 0 on HOLES ports, fills each queue with one connection and prints
# the addresses, then waits to be killed.
cat >"$work/holes.go" <<'EOF'
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	var keep []net.Conn
	for i := 0; i < n; i++ {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			panic(err)
		}
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			panic(err)
		}
		if err := syscall.Listen(fd, 0); err != nil {
			panic(err)
		}
		sa, _ := syscall.Getsockname(fd)
		addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			panic(err)
		}
		keep = append(keep, c)
		fmt.Println(addr)
	}
	os.Stdout.Close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
}
EOF
(cd "$work" && GO111MODULE=off go build -o holes holes.go)

echo "bench: lab with $vhosts SSL vhosts (certificates take a while)..." >&2
VHOSTS=$vhosts STAPLING_CACHE=$((vhosts * 4096 + 256000)) scripts/lab.sh up "$work/lab" >/dev/null
# shellcheck disable=SC1091
. "$work/lab/lab.env"
"$agent" --root "$work/lab" probe --format json >"$work/prime.json" || true # mod_ssl fetches each staple once

now() { date +%s%N; }
# best NAME CMD...: the best wall time of RUNS runs, in seconds, into ${NAME}_s.
best() {
  local name=$1 b="" t0 t1 s
  shift
  for _ in $(seq "$runs"); do
    t0=$(now)
    "$@" >"$work/out.$name" 2>"$work/err.$name" || true
    t1=$(now)
    s=$(awk "BEGIN{printf \"%.3f\", ($t1 - $t0) / 1e9}")
    if [ -z "$b" ] || awk "BEGIN{exit !($s < $b)}"; then b=$s; fi
  done
  printf -v "${name}_s" '%s' "$b"
}
sclient() {
  seq "$vhosts" | xargs -P "$conc" -I{} sh -c \
    "openssl s_client -connect 127.0.0.1:$HTTPS_PORT -servername site{}.test -status </dev/null 2>/dev/null | grep -c 'OCSP Response Status: successful'"
}
best probe "$agent" --root "$work/lab" probe --format json --concurrency "$conc"
best sclient sclient
targets=$(grep -c '"status": "probed"' "$work/out.probe" || true)
stapled=$(grep -c '"present": true' "$work/out.probe" || true)
ref_stapled=$(grep -c '^1$' "$work/out.sclient" || true)

: >"$work/holes.txt"
"$work/holes" "$holes" >"$work/holes.txt" &
holes_pid=$!
for _ in $(seq 100); do [ "$(wc -l <"$work/holes.txt")" -ge "$holes" ] && break; sleep 0.05; done
mapfile -t hole_args < <(sed 's/^/--target\n/' "$work/holes.txt")
# Enough time for every hole (a 1 s connect timeout each, CONCURRENCY at once): each is
# reported unreachable, once, within the deadline.
hole_deadline=$(((holes + conc - 1) / conc + 3))
t0=$(now)
"$agent" probe --format json --timeout 1s --deadline "${hole_deadline}s" --concurrency "$conc" "${hole_args[@]}" >"$work/out.holes" || true
holes_s=$(awk "BEGIN{printf \"%.3f\", ($(now) - $t0) / 1e9}")
unreach=$(grep -c '"status": "unreachable"' "$work/out.holes" || true)
# A deadline shorter than that: it stops at the deadline and the rest are not_probed.
t0=$(now)
"$agent" probe --format json --timeout 1s --deadline 2s --concurrency "$conc" "${hole_args[@]}" >"$work/out.holes2" || true
holes2_s=$(awk "BEGIN{printf \"%.3f\", ($(now) - $t0) / 1e9}")
unreach2=$(grep -c '"status": "unreachable"' "$work/out.holes2" || true)
notprobed=$(grep -c '"status": "not_probed"' "$work/out.holes2" || true)

ratio=$(awk "BEGIN{ if ($probe_s == 0) print \"inf\"; else printf \"%.1f\", $sclient_s / $probe_s }")
printf 'machine: %s cores, load %s; concurrency %s; best of %s\n' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$conc" "$runs"
printf '%-58s %9s\n' work "wall (s)"
printf '%-58s %9s\n' "stapling-agent probe, $vhosts vhosts + shop.test ($targets probed, $stapled stapled)" "$probe_s"
printf '%-58s %9s\n' "openssl s_client -status x $vhosts, xargs -P $conc ($ref_stapled stapled)" "$sclient_s"
printf 'ratio s_client/probe = %s (the probe does 3 handshakes a vhost, s_client 1)\n' "$ratio"
printf '%-58s %9s\n' "probe of $holes black-holed targets, --timeout 1s --deadline ${hole_deadline}s" "$holes_s"
printf '  %s unreachable (each once)\n' "$unreach"
printf '%-58s %9s\n' "probe of $holes black-holed targets, --timeout 1s --deadline 2s" "$holes2_s"
printf '  %s unreachable, %s not_probed, %s reported\n' "$unreach2" "$notprobed" "$((unreach2 + notprobed))"

fail=0
[ "$unreach" = "$holes" ] || { echo "bench: black holes: $unreach reported unreachable, want $holes, each once" >&2; fail=1; }
[ "$((unreach2 + notprobed))" = "$holes" ] || { echo "bench: black holes at the 2 s deadline: $((unreach2 + notprobed)) reported, want $holes, each once" >&2; fail=1; }
[ "$targets" = "$((vhosts + 1))" ] || { echo "bench: $targets of $((vhosts + 1)) vhosts probed" >&2; fail=1; }
if [ "$check" = 1 ]; then
  awk "BEGIN{exit !($probe_s <= 1.0)}" || { echo "bench: MISSED probe of $vhosts vhosts <= 1 s ($probe_s s)" >&2; fail=1; }
  awk "BEGIN{exit !($holes_s <= $hole_deadline)}" || { echo "bench: MISSED black holes within the ${hole_deadline} s deadline ($holes_s s)" >&2; fail=1; }
  awk "BEGIN{exit !($holes2_s <= 3.0)}" || { echo "bench: MISSED stopping at the 2 s deadline (+1 s: $holes2_s s)" >&2; fail=1; }
fi
exit $fail
