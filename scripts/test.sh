#!/usr/bin/env bash
# Runs cardbind's whole test suite: unit, fuzz seed corpora, and the
# end-to-end tests that start real processes. Needs only Go; tools some
# tests talk to (for example mosquitto_sub) are installed when missing and
# the machine allows it (root and apt-get), and otherwise those tests say
# why they skip.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

exec go test -race -count=1 -timeout 20m ./... "$@"
