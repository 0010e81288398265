#!/usr/bin/env bash
# Runs cardbind's benchmarks and regenerates the generated parts of
# docs/benchmarks.md (between <!-- bench:NAME begin --> and
# <!-- bench:NAME end --> markers; the hand-written text around them stays)
# and the plots in docs/bench/.
#
#   scripts/bench.sh [--full] [--only verifier|suite]
#
# Quick mode (the default) takes a few minutes on a 2-core machine; --full
# runs larger and longer. Every figure is measured next to a baseline in the
# same run:
#   1. cardbind-bench (verifier/cmd/cardbind-bench): verified reports/s of
#      the real cardbind-verifier vs a bare nats-server MQTT QoS 1 ingest,
#      and SIM swap -> block at the simulated network -> MQTT alert latency
#      under background load: half the verifier's measured throughput in
#      quick mode, 10,000 reports/s offered with --full, whether the
#      machine keeps up or not (section "verifier", plots in docs/bench/);
#   2. the package benchmarks (go test -bench) of verifier/broker,
#      verifier/radius, verifier/camara, verifier/webhook and verifier/app,
#      storebench on a small store, importbench (admin import of 100k cards
#      with bindings, 1M with --full, vs parsing and raw Pebble), and
#      scripts/bench-agent.sh when present
#      (section "suite": their raw output, each under its command).
# A benchmark that fails is reported in the section and the script exits 1
# at the end; the others still run. Needs Go; uses loopback ports only and
# leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=quick only=""
while [ $# -gt 0 ]; do
	case $1 in
	--full) mode=full ;;
	--quick) mode=quick ;;
	--only) only=${2:?--only needs verifier or suite} && shift ;;
	*)
		sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
	shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cardbind-benchsh.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
failed=0
doc=docs/benchmarks.md
log() { printf '%s bench.sh: %s\n' "$(date -u +%T)" "$*" >&2; }

log "building cardbind-bench, cardbind-verifier and storebench"
go build -o "$WORK/cardbind-bench" ./verifier/cmd/cardbind-bench
go build -o "$WORK/cardbind-verifier" ./verifier/cmd/cardbind-verifier
go build -o "$WORK/storebench" ./verifier/store/pebble/cmd/storebench

machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), $(go version | cut -d' ' -f3)"

# 1. The verifier end to end.
if [ -z "$only" ] || [ "$only" = verifier ]; then
	if [ "$mode" = full ]; then
		args=(-devices 256 -window 16 -reports 256000 -rounds 3 -swaps 500 -rate 10000 -rate-cap 0)
	else
		args=(-devices 64 -window 16 -reports 64000 -rounds 2 -swaps 200 -rate 10000)
	fi
	log "cardbind-bench ${args[*]}"
	mkdir -p docs/bench
	if "$WORK/cardbind-bench" "${args[@]}" -verifier-bin "$WORK/cardbind-verifier" \
		-md "$WORK/verifier.md" -json "$WORK/verifier.json" -plots docs/bench -plot-ref bench \
		-label "$mode" -command "scripts/bench.sh$([ "$mode" = full ] && echo ' --full') # cardbind-bench ${args[*]}"; then
		"$WORK/cardbind-bench" splice -doc "$doc" -section verifier -from "$WORK/verifier.md"
		cp "$WORK/verifier.json" docs/bench/verifier.json
	else
		log "cardbind-bench failed"
		failed=1
	fi
fi

# 2. The other benchmarks, each with its command and raw output.
if [ -z "$only" ] || [ "$only" = suite ]; then
	out="$WORK/suite.md"
	{
		echo "### Suite run of $(date -u '+%F %H:%M UTC') ($mode mode)"
		echo
		echo "Machine: $machine. Raw output of each command as \`scripts/bench.sh\` ran it; the tables"
		echo "above interpret earlier, longer runs of the same commands."
		echo
	} >"$out"

	# run TITLE FILTER CMD...: runs CMD, appends its command line and its
	# output (only benchmark result lines when FILTER is "bench") to the
	# section.
	run() {
		local title=$1 filter=$2
		shift 2
		log "$*"
		local res=0
		"$@" >"$WORK/cmd.out" 2>"$WORK/cmd.err" || res=$?
		{
			echo "**$title**"
			echo
			echo '```'
			echo "\$ $*" | sed "s#$WORK/#./#g"
			if [ "$filter" = bench ]; then
				grep -E '^(Benchmark|cpu:)' "$WORK/cmd.out" || true
			else
				cat "$WORK/cmd.out"
			fi
			if [ $res -ne 0 ]; then
				echo "FAILED (exit $res):"
				tail -n 15 "$WORK/cmd.err"
			fi
			echo '```'
			echo
		} >>"$out"
		if [ $res -ne 0 ]; then
			log "failed (exit $res): $*"
			failed=1
		fi
	}

	if [ "$mode" = full ]; then
		bt=50000x rt=3s rc=5 cards=1000000 dur=10s agent=(--seconds 60 --warmup 15) icards=1000000
	else
		bt=20000x rt=1s rc=3 cards=100000 dur=3s agent=(--seconds 20 --warmup 5) icards=100000
	fi
	run "Broker ingest, MQTT QoS 1: verifier/broker vs a bare nats-server" bench \
		go test -run '^$' -bench IngestQoS1 -benchtime "$bt" ./verifier/broker/
	run "RADIUS accounting server vs a raw UDP read loop" bench \
		go test -run '^$' -bench Accounting -benchtime "$rt" -count "$rc" ./verifier/radius/
	run "CAMARA query through the handler (in-memory store)" bench \
		go test -run '^$' -bench Query -benchtime 20000x ./verifier/camara/
	run "CAMARA over real HTTP against the whole verifier, vs /healthz" bench \
		go test -run '^$' -bench 'CAMARAQueryPaced|CAMARABind' -benchtime 1x ./verifier/app/
	if grep -qs '^func BenchmarkDelivery' verifier/webhook/*_test.go; then
		run "CloudEvents delivery through the outbox vs a bare http.Client loop" bench \
			go test -run '^$' -bench Delivery -benchtime 1x ./verifier/webhook/
	fi
	run "Store (Pebble): load, reopen, verifications vs raw Get" text \
		"$WORK/storebench" -cards "$cards" -duration "$dur" -dir "$WORK/store"
	rm -rf "$WORK/store"
	go build -o "$WORK/importbench" ./verifier/cmd/importbench
	run "Bulk import: admin import of cards with bindings into a running verifier vs parsing and raw Pebble" text \
		"$WORK/importbench" -cards "$icards" -verifier-bin "$WORK/cardbind-verifier" -dir "$WORK/import"
	rm -rf "$WORK/import"
	if [ -x scripts/bench-agent.sh ]; then
		run "cardbind-agent: binary size and RSS vs a hello-world" text \
			scripts/bench-agent.sh "${agent[@]}"
	fi
	"$WORK/cardbind-bench" splice -doc "$doc" -section suite -from "$out"
fi

log "done: $doc$([ $failed -ne 0 ] && echo ' (some benchmarks FAILED)')"
exit $failed
