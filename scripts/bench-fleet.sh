#!/usr/bin/env bash
# Benchmarks concurrent device sessions for docs/benchmarks.md: a real
# "cardbind-verifier serve" (embedded broker, Pebble store, enforcement into
# the fleet's simulated network) and "firmware-sim fleet" with N gateways
# (firmware-sim modems driven by the real agent code), both on loopback.
# Prints the fleet's summary and, sampled every second from /proc and
# /metrics, the verifier's MQTT sessions and VmRSS: idle before the fleet,
# the most while the fleet holds its sessions, and VmHWM.
#
#   scripts/bench-fleet.sh [--devices N] [--ramp R] [--seconds S] [--no-build] [-- FLEET FLAGS...]
#
# Defaults: 10000 gateways, ramp 1000/s, 60 s of scenario (heartbeat 60 s).
# Both processes get the largest open-file limit the shell may give; the
# fleet's state goes to /dev/shm. Uses loopback ports 38080, 31883 and
# 37000; leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

devices=10000 ramp=1000 seconds=60 build=1
while [ $# -gt 0 ]; do
	case $1 in
	--devices) devices=${2:?} && shift ;;
	--ramp) ramp=${2:?} && shift ;;
	--seconds) seconds=${2:?} && shift ;;
	--no-build) build=0 ;;
	--) shift && break ;;
	*)
		sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
	shift
done

HTTP=127.0.0.1:38080 MQTT=127.0.0.1:31883 NET=127.0.0.1:37000
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cardbind-fleet.XXXXXX")
STATE=$(mktemp -d /dev/shm/cardbind-fleet.XXXXXX)
BIN=${BIN:-$WORK/bin}
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$WORK" "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $build = 1 ] || [ ! -x "$BIN/firmware-sim" ]; then
	mkdir -p "$BIN"
	go build -o "$BIN/cardbind-verifier" ./verifier/cmd/cardbind-verifier
	go build -o "$BIN/firmware-sim" ./firmware-sim/cmd/firmware-sim
fi
ulimit -n "$(ulimit -Hn)"
echo "open-file limit of this shell: $(ulimit -n) (hard $(ulimit -Hn))"

"$BIN/cardbind-verifier" serve --data-dir "$WORK/data" --http $HTTP --mqtt $MQTT \
	--enforce simnet --simnet-url "http://$NET" --log-level warn >"$WORK/verifier.log" 2>&1 &
VPID=$!
PIDS+=($VPID)
until curl -sf "http://$HTTP/readyz" >/dev/null; do sleep 0.2; done
sleep 2
rss() { awk '/^VmRSS/ {print $2}' /proc/$VPID/status; }
hwm() { awk '/^VmHWM/ {print $2}' /proc/$VPID/status; }
sessions() { curl -sf "http://$HTTP/metrics" | awk '/^cardbind_mqtt_connections / {print $2}'; }
idle=$(rss)

(
	while kill -0 $VPID 2>/dev/null; do
		echo "$(date +%s) $(sessions) $(rss)"
		sleep 1
	done
) >"$WORK/samples" 2>/dev/null &
PIDS+=($!)

start=$(date +%s.%N)
"$BIN/firmware-sim" fleet --devices "$devices" --ramp "$ramp" --duration "${seconds}s" \
	--verifier "http://$HTTP" --token-file "$WORK/data/operator-token" --state-dir "$STATE" \
	--network-listen $NET --heartbeat 60s --progress 5s "$@" >"$WORK/summary.txt"
end=$(date +%s.%N)


cat "$WORK/summary.txt"
awk -v idle="$idle" -v hwm="$(hwm)" -v took="$(echo "$end - $start" | bc)" '
	$2 > max_s { max_s = $2 }
	$3 > max_r { max_r = $3 }
	$2 == max_s && $3 > rss_at_max { rss_at_max = $3 }
	END {
		printf "verifier: idle VmRSS %.0f MiB; most MQTT sessions %d; most VmRSS %.0f MiB (VmHWM %.0f MiB); ", idle/1024, max_s, max_r/1024, hwm/1024
		if (max_s > 0) printf "%.1f KiB per session above idle", (rss_at_max-idle)/max_s
		printf "; wall time %.0f s\n", took
	}' "$WORK/samples"
grep -v "level=INFO" "$WORK/verifier.log" | grep -i "warn\|error" | sort | uniq -c | sort -rn | head -5 || true
