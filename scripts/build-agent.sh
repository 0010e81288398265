#!/usr/bin/env bash
# Cross-compiles cardbind-agent for the gateways it runs on: static
# (CGO_ENABLED=0), stripped (-ldflags "-s -w"), reproducible paths
# (-trimpath). Writes dist/cardbind-agent-linux-ARCH and dist/SHA256SUMS and
# prints each binary's size.
#
#   scripts/build-agent.sh            every architecture
#   scripts/build-agent.sh arm64 mips only those
#
# Architectures: amd64, arm64, armv6 (GOARM=6), armv7 (GOARM=7),
# mipsle and mips (both GOMIPS=softfloat: most MIPS routers have no FPU).
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=./agent/cmd/cardbind-agent
all=(amd64 arm64 armv6 armv7 mipsle mips)

usage() {
	echo "usage: scripts/build-agent.sh [ARCH...]   (ARCH: ${all[*]})" >&2
	exit 2
}

if ! compgen -G "$pkg/*.go" >/dev/null; then
	echo "build-agent: $pkg does not exist yet: nothing to build (the agent command is not in this tree)" >&2
	exit 1
fi

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for a in "${targets[@]}"; do
	[ "$a" = -h ] || [ "$a" = --help ] && usage
	case " ${all[*]} " in
	*" $a "*) ;;
	*)
		echo "build-agent: unknown architecture \"$a\"" >&2
		usage
		;;
	esac
done

mkdir -p dist
printf '%-8s %12s %9s  %s\n' arch bytes MiB file
for a in "${targets[@]}"; do
	goarch=$a goarm="" gomips=""
	case $a in
	armv6) goarch=arm goarm=6 ;;
	armv7) goarch=arm goarm=7 ;;
	mips | mipsle) gomips=softfloat ;;
	esac
	out=dist/cardbind-agent-linux-$a
	env CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" GOARM="$goarm" GOMIPS="$gomips" \
		go build -trimpath -ldflags "-s -w" -o "$out" "$pkg"
	bytes=$(wc -c <"$out")
	awk -v a="$a" -v b="$bytes" -v f="$out" 'BEGIN { printf "%-8s %12d %9.2f  %s\n", a, b, b / 1048576, f }'
done

(cd dist && sha256sum cardbind-agent-linux-* >SHA256SUMS)
