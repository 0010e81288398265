#!/usr/bin/env bash
# The cardbind story, end to end, on one machine and embedded defaults:
# a verifier, a simulated operator network, two gateways (simulated modems
# on pseudo-terminals, each with a real cardbind-agent), a customer using
# the CAMARA API (and an HTTPS CloudEvents sink for its subscriptions),
# and a thief. Needs Go and curl; leaves nothing running.
#
#   scripts/demo.sh            the story, narrated
#   DEMO_KEEP=1 scripts/demo.sh   keep the work directory (logs) afterwards
set -euo pipefail

cd "$(dirname "$0")/.."
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cardbind-demo.XXXXXX")
BIN=$WORK/bin
LOGS=$WORK/logs
mkdir -p "$BIN" "$LOGS"

# Ports on loopback; the demo refuses to start if one is taken.
HTTP=127.0.0.1:18080
MQTT=127.0.0.1:11883
NET=127.0.0.1:17000
RADIUS=127.0.0.1:11813
SINK=127.0.0.1:18443
CTL1=127.0.0.1:17001
CTL2=127.0.0.1:17002

# The cast.
CARD_A=89860318640220133897 IMSI_A=460031234567890 MSISDN_A=+8613912345678
CARD_B=89860318640220133905 IMSI_B=460031234567891 MSISDN_B=+8613912345679
CARD_C=89860318640220133913 IMSI_C=460031234567892 MSISDN_C=+8613912345680
GW1_IMEI=356938035643809    # gateway 1: a smart meter's Quectel module
GW2_IMEI=861234567890127    # gateway 2: a payment terminal's SIMCom module
METER_IMEI=352099001761481  # a water meter with no agent: the network sees it
PHONE_IMEI=490154203237518  # the thief's phone: no agent anywhere
HOME_ECI=27440068           # the radio cell where the gateways stand (Shanghai)
FAR_ECI=27446300            # a cell 30 km north
SINK_TOKEN=acme-sink-token  # the bearer token acme's sink wants on every event

PIDS=()
cleanup() {
	local code=$?
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [[ -n ${DEMO_KEEP:-} ]]; then
		echo "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	if [[ $code -ne 0 ]]; then
		echo "demo failed (exit $code); rerun with DEMO_KEEP=1 to keep the logs" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step=0
say() { step=$((step + 1)); printf '\n\033[1m%2d. %s\033[0m\n' "$step" "$*"; }
note() { printf '    %s\n' "$*"; }
show() { sed 's/^/    | /'; }
fail() { echo "demo: $*" >&2; exit 1; }

# bg NAME CMD...: start a background process with its log in $LOGS.
bg() {
	local name=$1; shift
	"$@" >"$LOGS/$name.log" 2>&1 &
	PIDS+=($!)
}

# wait_until SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_until() {
	local limit=$1 what=$2; shift 2
	local deadline=$((SECONDS + limit))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || fail "timed out waiting for $what (logs in $LOGS; DEMO_KEEP=1 keeps them)"
		sleep 0.1
	done
}

port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
now_ms() { date +%s%3N; }
# tod_ms HH:MM:SS.mmm: milliseconds since midnight (the sink logs such times).
tod_ms() { local IFS=:.; read -r h m s ms <<<"$1"; echo $(((10#$h * 3600 + 10#$m * 60 + 10#$s) * 1000 + 10#$ms)); }
# ms_between T1 T2: milliseconds from time of day T1 to T2.
ms_between() { echo $((($(tod_ms "$2") - $(tod_ms "$1") + 86400000) % 86400000)); }
# cloudevent: a sink log line, one attribute a line.
cloudevent() { sed 's/ id=/\n      id=/; s/ data=/\n      data=/' | show; }

command -v go >/dev/null || fail "Go is needed (https://go.dev/dl/)"
command -v curl >/dev/null || fail "curl is needed (apt-get install curl)"
for p in $HTTP $MQTT $NET $SINK $CTL1 $CTL2; do
	port_free "$p" || fail "port $p is in use; stop what listens there"
done

say "Build the three programs (cardbind-verifier, cardbind-agent, firmware-sim)"
go build -o "$BIN/" ./verifier/cmd/cardbind-verifier ./agent/cmd/cardbind-agent ./firmware-sim/cmd/firmware-sim
for f in "$BIN"/*; do
	printf '    %-20s %5.1f MB\n' "${f##*/}" "$(awk -v b="$(stat -c %s "$f")" 'BEGIN { print b / 1048576 }')"
done
export PATH=$BIN:$PATH

say "Start the simulated operator network (a test double of the operator's core and OSS)"
note "It blocks and resumes cards when told to, and its PGW sends RADIUS accounting to the verifier."
bg network firmware-sim network --listen "$NET" --radius "$RADIUS" --radius-secret demo-radius-secret --interim 30s
wait_until 10 "the network" curl -sf "http://$NET/healthz"
provision() { curl -sf -X POST "http://$NET/v1/cards" -d "{\"iccid\":\"$1\",\"imsi\":\"$2\",\"msisdn\":\"$3\"}" >/dev/null; }
provision "$CARD_A" "$IMSI_A" "$MSISDN_A"
provision "$CARD_B" "$IMSI_B" "$MSISDN_B"
provision "$CARD_C" "$IMSI_C" "$MSISDN_C"
note "cards A $CARD_A, B $CARD_B and C $CARD_C provisioned"

say "The customer starts its own HTTPS CloudEvents endpoint, the sink for its CAMARA subscriptions"
note "a self-signed certificate made at start; it wants bearer token $SINK_TOKEN and logs every event"
bg sink firmware-sim sink --listen "$SINK" --cert "$WORK/sink-cert.pem" --token "$SINK_TOKEN"
wait_until 10 "the sink" test -s "$WORK/sink-cert.pem"
grep listening "$LOGS/sink.log" | show

say "Start the verifier on embedded defaults (MQTT broker, Pebble store, HTTP API in one process)"
note "its config lets subscription sinks be on loopback and trusts the sink's certificate"
cat >"$WORK/verifier.toml" <<EOF
data_dir = "$WORK/data"
[http]
listen = "$HTTP"
[mqtt]
listen = "$MQTT"
[enforce]
adapter = "simnet"
simnet_url = "http://$NET"
[radius]
listen = "$RADIUS"
clients = [{ address = "127.0.0.1", secret = "demo-radius-secret" }]
[camara.webhook]
allow_private_sinks = true
ca_file = "$WORK/sink-cert.pem"
EOF
bg verifier cardbind-verifier serve --config "$WORK/verifier.toml"
wait_until 30 "the verifier" curl -sf "http://$HTTP/readyz"
grep -A1 "operator credential created" "$LOGS/verifier.log" | show
export CARDBIND_URL=http://$HTTP
ADMIN=(cardbind-verifier admin --token-file "$WORK/data/operator-token")

say "The operator creates tenant \"acme\" and imports its cards"
"${ADMIN[@]}" tenant create acme --name "ACME Metering" >/dev/null
printf 'iccid,tenant,imsi,msisdn\n%s,acme,%s,%s\n%s,acme,%s,%s\n%s,acme,%s,%s\n' \
	"$CARD_A" "$IMSI_A" "$MSISDN_A" "$CARD_B" "$IMSI_B" "$MSISDN_B" "$CARD_C" "$IMSI_C" "$MSISDN_C" >"$WORK/cards.csv"
"${ADMIN[@]}" import --file "$WORK/cards.csv" 2>/dev/null | show
note "and the cell table (OpenCelliD layout), which places the radio cells that modems and the network name:"
cat >"$WORK/cells.csv" <<CELLS
radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal
LTE,460,3,6699,$HOME_ECI,0,121.4740,31.2310,300,41,1,1700000000,1710000000,0
LTE,460,3,6699,$FAR_ECI,0,121.4740,31.5000,500,12,1,1700000000,1710000000,0
CELLS
"${ADMIN[@]}" cells import --file "$WORK/cells.csv" | show

say "Two gateways boot: simulated modems on pseudo-terminals, card A in gateway 1, card B in gateway 2"
bg modem1 firmware-sim modem --personality quectel --imei "$GW1_IMEI" --iccid "$CARD_A" --imsi "$IMSI_A" \
	--msisdn "$MSISDN_A" --link "$WORK/ttyGW1" --control "$CTL1" --network "http://$NET"
bg modem2 firmware-sim modem --personality simcom --imei "$GW2_IMEI" --iccid "$CARD_B" --imsi "$IMSI_B" \
	--msisdn "$MSISDN_B" --link "$WORK/ttyGW2" --control "$CTL2" --network "http://$NET"
wait_until 10 "modem 1" test -e "$WORK/ttyGW1"
wait_until 10 "modem 2" test -e "$WORK/ttyGW2"
note "an installer checks what gateway 1's modem says:"
cardbind-agent identify --port "$WORK/ttyGW1" | show

say "Each gateway's agent enrols once (its own key; one-time token) and starts reporting over MQTT"
for gw in 1 2; do
	token=$("${ADMIN[@]}" enroll-token create --tenant acme --ttl 10m | sed -n 's/.*"token": "\(.*\)".*/\1/p')
	cardbind-agent enroll --verifier "http://$HTTP" --token "$token" --state-dir "$WORK/agent$gw" \
		--port "$WORK/ttyGW$gw" >"$LOGS/enroll$gw.log" 2>&1
	note "gateway $gw enrolled as $(grep -o 'gw-[0-9a-f]*' "$LOGS/enroll$gw.log" | head -1)"
	printf '[report]\ncell_change_interval = "1s"\n[gnss]\nenabled = true\n' >"$WORK/agent$gw.toml"
	bg "agent$gw" cardbind-agent run --config "$WORK/agent$gw.toml" --port "$WORK/ttyGW$gw" --state-dir "$WORK/agent$gw" \
		--heartbeat 1m --poll 5s
done
card_field() { "${ADMIN[@]}" card "$1" | sed -n "s/.*\"$2\": \"\(.*\)\".*/\1/p" | head -1; }
# seen_in CARD IMEI: the verifier's last sighting of CARD was in IMEI.
seen_in() { [[ $(card_field "$1" last_imei) == "$2" ]]; }
wait_until 20 "gateway 1's first report" seen_in "$CARD_A" "$GW1_IMEI"
wait_until 20 "gateway 2's first report" seen_in "$CARD_B" "$GW2_IMEI"
note "the verifier has seen card A in $GW1_IMEI and card B in $GW2_IMEI"
note "card C sits in a water meter that runs no agent; the network attaches it and its PGW reports the meter's IMEI"
curl -sf -X POST "http://$NET/v1/cards/$CARD_C/attach" -d "{\"imei\":\"$METER_IMEI\"}" >/dev/null
wait_until 20 "card C seen through RADIUS" seen_in "$CARD_C" "$METER_IMEI"
note "the verifier has seen card C in $METER_IMEI (source: RADIUS accounting)"

say "The customer gets a CAMARA API client and binds the cards to the devices they are in"
"${ADMIN[@]}" client create --tenant acme --name "acme-backend" --json >"$WORK/client.json"
CLIENT_ID=$(sed -n 's/.*"client_id": "\(.*\)".*/\1/p' "$WORK/client.json")
CLIENT_SECRET=$(sed -n 's/.*"client_secret": "\(.*\)".*/\1/p' "$WORK/client.json")
TOKEN=$(curl -sf -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials "http://$HTTP/oauth2/token" |
	sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
note "POST /oauth2/token → an ES256 access token for client $CLIENT_ID"
camara() {
	curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
		-H "x-correlator: demo-$step" -d "$2" "http://$HTTP/iot-sim-fraud-prevention/v0.1/$1"
}
for m in "$MSISDN_A" "$MSISDN_B" "$MSISDN_C"; do
	note "curl POST /iot-sim-fraud-prevention/v0.1/bind {\"device\":{\"phoneNumber\":\"$m\"},\"bindType\":\"IMEIBIND\"}"
	camara bind "{\"device\":{\"phoneNumber\":\"$m\"},\"bindType\":\"IMEIBIND\"}" | show
	echo
done
note "and asks what card A is bound to:"
camara query "{\"device\":{\"phoneNumber\":\"$MSISDN_A\"},\"queryType\":\"IMEIBIND\"}" | show
echo

say "The customer's operations team watches acme's alerts over MQTT"
bg alerts "${ADMIN[@]}" alerts --tenant acme
wait_until 10 "the alert watcher" grep -q watching "$LOGS/alerts.log"
sed -n 1p "$LOGS/alerts.log" | show

say "The customer's backend subscribes to card A's imei-change events, delivered to its sink"
SUB_URL=http://$HTTP/iot-sim-fraud-prevention-subscriptions/v0.1/subscriptions
SUB='{"protocol":"HTTP","sink":"https://'$SINK'/cardbind",
 "sinkCredential":{"credentialType":"ACCESSTOKEN","accessToken":"'$SINK_TOKEN'",
   "accessTokenExpiresUtc":"'$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)'","accessTokenType":"bearer"},
 "types":["org.camaraproject.iot-sim-fraud-prevention.v0.imei-change"],
 "config":{"subscriptionDetail":{"device":{"phoneNumber":"'$MSISDN_A'"}},"initialEvent":true}}'
note "curl POST /iot-sim-fraud-prevention-subscriptions/v0.1/subscriptions"
printf '%s\n' "$SUB" | show
answer=$(curl -sS -w '\n%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
	-H "x-correlator: demo-$step" -d "$SUB" "$SUB_URL")
code=${answer##*$'\n'}
note "HTTP $code:"
printf '%s\n' "${answer%$'\n'*}" | sed 's/,"\(id\|sink\|status\)":/,\n "\1":/g' | show
[[ $code == 201 ]] || fail "the subscription was refused"
wait_until 10 "subscription-started at the sink" grep -q subscription-started "$LOGS/sink.log"
note "the sink receives (its receipt time, the CloudEvent's type, id and data):"
grep -m1 subscription-started "$LOGS/sink.log" | cloudevent
note "no initial imei-change event: card A is in the device it is bound to"

blocked() { curl -sf "http://$NET/v1/cards/$1" | grep -q '"blocked":true'; }
not_blocked() { curl -sf "http://$NET/v1/cards/$1" | grep -q '"blocked":false'; }

say "A thief takes card A out of gateway 1 and puts it into gateway 2"
note "gateway 1's agent reports the card gone at once (separated); gateway 2's reports it in the wrong device"
read -r t0 swapped < <(date '+%s%3N %H:%M:%S.%3N')
curl -sf -X POST "http://$CTL1/sim/remove" >/dev/null
curl -sf -X POST "http://$CTL2/sim/swap" -d "{\"iccid\":\"$CARD_A\",\"imsi\":\"$IMSI_A\",\"msisdn\":\"$MSISDN_A\"}" >/dev/null
wait_until 10 "card A blocked at the network" blocked "$CARD_A"
note "card A is blocked at the network $(($(now_ms) - t0)) ms after the swap"
wait_until 10 "the blocked alert" grep -q "blocked .*card=$CARD_A" "$LOGS/alerts.log"
wait_until 10 "the mismatch alert" grep -q "mismatch .*card=$CARD_A" "$LOGS/alerts.log"
note "alerts received over MQTT:"
grep "card=$CARD_A" "$LOGS/alerts.log" | show
wait_until 10 "the imei-change CloudEvent" grep -q imei-change "$LOGS/sink.log"
event=$(grep -m1 imei-change "$LOGS/sink.log")
note "and the CloudEvent at the sink, received $(ms_between "$swapped" "${event%% *}") ms after the swap:"
printf '%s\n' "$event" | cloudevent

say "The card goes back where it belongs: service resumes by itself"
t0=$(now_ms)
curl -sf -X POST "http://$CTL2/sim/swap" -d "{\"iccid\":\"$CARD_B\",\"imsi\":\"$IMSI_B\",\"msisdn\":\"$MSISDN_B\"}" >/dev/null
curl -sf -X POST "http://$CTL1/sim/insert" -d "{\"iccid\":\"$CARD_A\",\"imsi\":\"$IMSI_A\",\"msisdn\":\"$MSISDN_A\"}" >/dev/null
wait_until 10 "card A resumed" not_blocked "$CARD_A"
note "card A resumed at the network $(($(now_ms) - t0)) ms after it was put back"
wait_until 10 "the resumed alert" grep -q "resumed .*card=$CARD_A" "$LOGS/alerts.log"
grep "resumed .*card=$CARD_A" "$LOGS/alerts.log" | show

say "A thief moves card C from the water meter into a phone: no agent anywhere, the network gives it away"
note "the phone attaches; the operator's PGW sends RADIUS accounting carrying the phone's IMEISV"
t0=$(now_ms)
curl -sf -X POST "http://$NET/v1/cards/$CARD_C/attach" -d "{\"imei\":\"$PHONE_IMEI\"}" >/dev/null
wait_until 10 "card C blocked through RADIUS" blocked "$CARD_C"
note "card C blocked at the network $(($(now_ms) - t0)) ms after it attached in the phone"
wait_until 10 "the RADIUS alert" grep -q "blocked .*card=$CARD_C" "$LOGS/alerts.log"
grep "card=$CARD_C" "$LOGS/alerts.log" | show

say "Card B may only be used where its payment terminal stands: an area limit"
note "curl POST /iot-sim-fraud-prevention/v0.1/bind {\"device\":{\"phoneNumber\":\"$MSISDN_B\"},\"bindType\":\"AREALIMIT\"}"
camara bind "{\"device\":{\"phoneNumber\":\"$MSISDN_B\"},\"bindType\":\"AREALIMIT\"}" | show
echo
note "with no limitArea, the card may stay within 5 km of where it was last seen (its cell, from the table):"
camara query "{\"device\":{\"phoneNumber\":\"$MSISDN_B\"},\"queryType\":\"AREALIMIT\"}" | show
echo
note "the terminal is carried off, card and all: its modem registers in a cell 30 km north"
t0=$(now_ms)
curl -sf -X POST "http://$CTL2/cell" -d "{\"mcc\":\"460\",\"mnc\":\"03\",\"tac\":6699,\"eci\":$FAR_ECI}" >/dev/null
wait_until 10 "card B blocked outside its area" blocked "$CARD_B"
note "card B blocked at the network $(($(now_ms) - t0)) ms after the move (the network's accounting and the agent both name the cell)"
wait_until 10 "the area_exit alert" grep -q "area_exit .*card=$CARD_B" "$LOGS/alerts.log"
grep "decision=outside_area .*card=$CARD_B\|card=$CARD_B .*decision=outside_area" "$LOGS/alerts.log" | show
note "it is brought back. Blocked, the card cannot register, so neither the network nor the modem names a cell;"
note "the terminal's GNSS gets a fix at home, and its agent (on the terminal's wired uplink) reports it at its next poll"
t0=$(now_ms)
curl -sf -X POST "http://$CTL2/cell" -d "{\"mcc\":\"460\",\"mnc\":\"03\",\"tac\":6699,\"eci\":$HOME_ECI}" >/dev/null
curl -sf -X POST "http://$CTL2/gnss" -d '{"lat":31.2312,"lon":121.4741}' >/dev/null
wait_until 15 "card B resumed" not_blocked "$CARD_B"
note "card B resumed at the network $(($(now_ms) - t0)) ms after it was back"
wait_until 10 "card B's resumed alert" grep -q "resumed .*card=$CARD_B" "$LOGS/alerts.log"
grep "resumed .*card=$CARD_B" "$LOGS/alerts.log" | tail -1 | show

say "Card A's history, as the operator sees it"
"${ADMIN[@]}" history "$CARD_A" | cut -c 7- | show
note "metrics: $(curl -sf "http://$HTTP/metrics" | grep -c '^cardbind_') cardbind series at http://$HTTP/metrics"

say "Done: everything started here is stopped now"
