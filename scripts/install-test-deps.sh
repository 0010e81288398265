#!/usr/bin/env bash
# Installs the Debian packages cardbind's tests talk to, when they are
# missing and this machine can install them. Safe to run again.
set -euo pipefail

# command -> Debian package
declare -A need=(
	[mosquitto_sub]=mosquitto-clients
	[radclient]=freeradius-utils
	[dbus-daemon]=dbus-daemon
)

missing=()
for cmd in "${!need[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "install-test-deps: missing ${missing[*]}; tests that need them will skip" >&2
	exit 0
fi
echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
