#!/usr/bin/env bash
# The cardbind demo. The whole story (verifier, simulated network, modems and
# agents, a SIM swap blocked within a second) arrives with the end-to-end
# issue; until then this shows, honestly, what runs today.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Building every package (Go is all this needs)"
go build ./...

say "The contract between agent and verifier: parse identifiers, sign a report, reject a forgery and a replay"
go test -count=1 -run '^Example$' -v ./protocol | grep -v '^=== RUN'

say "Not built yet: verifier, agent reporting, the full swap story. See README.md, 'What runs today'."
