#!/usr/bin/env bash
# Benchmarks cardbind-agent for docs/benchmarks.md:
#   1. size of the stripped static binary per architecture (scripts/build-agent.sh),
#      next to a minimal Go hello-world built with the same flags (the baseline);
#   2. steady-state memory of "cardbind-agent run" (the amd64 build of step 1)
#      while it reports: against a firmware-sim modem whose SIM is swapped every
#      2 s (a change report each time) and a real verifier, heartbeat 5 s, poll
#      1 s; VmRSS is sampled from /proc/PID/status every second, and VmHWM read
#      at the end, next to the same hello-world left running (the baseline).
# Targets (issue 4): at most 8 MB for linux/arm, at most 15 MB RSS.
#
#   scripts/bench-agent.sh [--seconds N] [--warmup N] [--no-build]
#
# --no-build reuses dist/ when it is there. Needs Go and curl; uses loopback
# ports 28080, 21883 and 27011; leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

measure=60 warmup=15 build=1
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) measure=${2:?} && shift ;;
	--warmup) warmup=${2:?} && shift ;;
	--no-build) build=0 ;;
	*)
		sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
	shift
done

HTTP=127.0.0.1:28080 MQTT=127.0.0.1:21883 CTL=127.0.0.1:27011
IMEI=356938035643809
CARD_A=89860318640220133897 IMSI_A=460031234567890
CARD_B=89860318640220133905 IMSI_B=460031234567891
archs=(amd64 arm64 armv6 armv7 mipsle mips)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cardbind-bench.XXXXXX")
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "bench-agent: $*" >&2; exit 1; }
bg() {
	local name=$1; shift
	"$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
}
wait_until() {
	local limit=$1 what=$2; shift 2
	local deadline=$((SECONDS + limit))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || { tail -n 20 "$WORK"/*.log >&2; fail "timed out waiting for $what"; }
		sleep 0.1
	done
}
port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; } # kB
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }'; }

command -v curl >/dev/null || fail "curl is needed"
for p in $HTTP $MQTT $CTL; do port_free "$p" || fail "port $p is in use"; done

echo "== machine"
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, Linux $(uname -r), $(go version | cut -d' ' -f3), $(date -u +%F)"

echo "== binary size (stripped, static: CGO_ENABLED=0 -trimpath -ldflags \"-s -w\")"
if [ $build -eq 1 ] || [ ! -x dist/cardbind-agent-linux-amd64 ]; then
	scripts/build-agent.sh >/dev/null
fi
mkdir -p "$WORK/hello"
cat >"$WORK/hello/go.mod" <<'EOF'
module hello

go 1.26
EOF
# The baseline: hello world that then waits for SIGTERM, so its memory can
# be read next to the agent's.
cat >"$WORK/hello/main.go" <<'EOF'
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fmt.Println("hello, world")
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, os.Interrupt)
	<-c
}
EOF
printf '| %-7s | %14s | %18s | %5s |\n' arch "agent bytes (MB)" "hello-world bytes" ratio
for a in "${archs[@]}"; do
	goarch=$a goarm="" gomips=""
	case $a in
	armv6) goarch=arm goarm=6 ;;
	armv7) goarch=arm goarm=7 ;;
	mips | mipsle) gomips=softfloat ;;
	esac
	(cd "$WORK/hello" && env CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" GOARM="$goarm" GOMIPS="$gomips" \
		go build -trimpath -ldflags "-s -w" -o "$WORK/hello-$a" .)
	agent=$(wc -c <"dist/cardbind-agent-linux-$a")
	hello=$(wc -c <"$WORK/hello-$a")
	awk -v a="$a" -v g="$agent" -v h="$hello" \
		'BEGIN { printf "| %-7s | %9d (%.2f) | %18d | %5.2f |\n", a, g, g / 1e6, h, g / h }'
done
for a in armv6 armv7; do
	agent=$(wc -c <"dist/cardbind-agent-linux-$a")
	[ "$agent" -le 8000000 ] && echo "linux/$a: $agent bytes, within the 8 MB target" ||
		echo "linux/$a: $agent bytes, OVER the 8 MB target"
done

echo "== memory while reporting"
case $(uname -m) in
x86_64) host=amd64 ;;
aarch64) host=arm64 ;;
*) fail "RSS is measured on amd64 or arm64 hosts only" ;;
esac
go build -o "$WORK/bin/" ./verifier/cmd/cardbind-verifier ./firmware-sim/cmd/firmware-sim
AGENT=dist/cardbind-agent-linux-$host
V=$WORK/bin/cardbind-verifier
cat >"$WORK/verifier.toml" <<EOF
data_dir = "$WORK/data"
[http]
listen = "$HTTP"
[mqtt]
listen = "$MQTT"
[log]
level = "warn"
EOF
bg verifier "$V" serve --config "$WORK/verifier.toml"
wait_until 30 "the verifier" curl -sf "http://$HTTP/readyz"
ADMIN=("$V" admin --url "http://$HTTP" --token-file "$WORK/data/operator-token")
"${ADMIN[@]}" tenant create bench >/dev/null
printf 'iccid,tenant,imsi\n%s,bench,%s\n%s,bench,%s\n' "$CARD_A" "$IMSI_A" "$CARD_B" "$IMSI_B" >"$WORK/cards.csv"
"${ADMIN[@]}" import --file "$WORK/cards.csv" >"$WORK/import.log" 2>&1

bg modem "$WORK/bin/firmware-sim" modem --personality quectel --imei "$IMEI" --iccid "$CARD_A" --imsi "$IMSI_A" \
	--link "$WORK/tty" --control "$CTL" --log-level warn
wait_until 10 "the modem" test -e "$WORK/tty"
token=$("${ADMIN[@]}" enroll-token create --tenant bench --ttl 10m | sed -n 's/.*"token": "\(.*\)".*/\1/p')
"$AGENT" enroll --verifier "http://$HTTP" --token "$token" --state-dir "$WORK/agent" --port "$WORK/tty" \
	>"$WORK/enroll.log" 2>&1 || { cat "$WORK/enroll.log" >&2; fail "enrolment failed"; }
bg agent "$AGENT" run --port "$WORK/tty" --state-dir "$WORK/agent" --heartbeat 5s --poll 1s
agent_pid=${PIDS[-1]}
bg hello "$WORK/hello-$host"
hello_pid=${PIDS[-1]}
last_imei() { "${ADMIN[@]}" card "$1" | sed -n 's/.*"last_imei": "\(.*\)".*/\1/p' | head -1; }
reported() { [ "$(last_imei "$CARD_A")" = "$IMEI" ]; }
wait_until 20 "the agent's first report at the verifier" reported

# A SIM swap every 2 s for the whole run: a change report each time.
swapper() {
	local n=0
	while :; do
		if ((n % 2)); then c=$CARD_A i=$IMSI_A; else c=$CARD_B i=$IMSI_B; fi
		curl -sf -X POST "http://$CTL/sim/swap" -d "{\"iccid\":\"$c\",\"imsi\":\"$i\"}" >/dev/null || true
		n=$((n + 1))
		sleep 2
	done
}
swapper &
PIDS+=($!)

echo "warm-up ${warmup}s, then ${measure}s of samples"
sleep "$warmup"
queued0=$(grep -c 'report queued' "$WORK/agent.log" || true)
agent_rss=() hello_rss=()
for ((s = 0; s < measure; s++)); do
	[ -d "/proc/$agent_pid" ] || { tail -n 20 "$WORK/agent.log" >&2; fail "the agent exited"; }
	agent_rss+=("$(status "$agent_pid" VmRSS)")
	hello_rss+=("$(status "$hello_pid" VmRSS)")
	sleep 1
done
queued=$(($(grep -c 'report queued' "$WORK/agent.log" || true) - queued0))
changes=$(grep 'report queued' "$WORK/agent.log" | tail -n "$queued" | grep -c 'reason=change' || true)
agent_hwm=$(status "$agent_pid" VmHWM)
hello_hwm=$(status "$hello_pid" VmHWM)
errors=$(grep -c 'level=ERROR' "$WORK/agent.log" || true)

stats() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "%d %d %d", v[1], v[int((NR + 1) / 2)], v[NR] }'; }
read -r a_min a_med a_max <<<"$(stats "${agent_rss[@]}")"
read -r h_min h_med h_max <<<"$(stats "${hello_rss[@]}")"
echo "reports queued in the ${measure}s window: $queued ($changes change reports, the rest heartbeats); agent errors logged: $errors"
printf '| %-28s | %12s | %12s | %12s | %12s |\n' process "VmRSS min MB" "median MB" "max MB" "VmHWM MB"
printf '| %-28s | %12s | %12s | %12s | %12s |\n' "hello-world (baseline)" "$(mb "$h_min")" "$(mb "$h_med")" "$(mb "$h_max")" "$(mb "$hello_hwm")"
printf '| %-28s | %12s | %12s | %12s | %12s |\n' "cardbind-agent run" "$(mb "$a_min")" "$(mb "$a_med")" "$(mb "$a_max")" "$(mb "$agent_hwm")"
awk -v a="$a_med" -v h="$h_med" 'BEGIN { printf "ratio agent / baseline (median VmRSS): %.1f\n", a / h }'
awk -v k="$agent_hwm" 'BEGIN { m = k * 1024 / 1e6; printf "agent peak %.1f MB: %s the 15 MB target\n", m, (m <= 15 ? "within" : "OVER") }'
