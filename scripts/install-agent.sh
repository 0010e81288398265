#!/usr/bin/env bash
# Installs cardbind-agent on a gateway over SSH: the binary, the service
# (systemd unit, or procd script when the gateway runs OpenWrt), the
# configuration and the cardbind user (in group dialout).
#
#   scripts/install-agent.sh HOST [--arch ARCH] [--os systemd|openwrt]
#       [--config FILE] [--verifier URL --token TOKEN] [--dry-run]
#
# HOST is anything ssh accepts (root@gw1, an ~/.ssh/config alias); set
# SSH="ssh -p 2222 -i key" for other options. Without --arch and --os the
# gateway is asked (uname -m, the ELF byte order of /bin/sh for MIPS, and
# /etc/openwrt_release). The binary comes from dist/ (scripts/build-agent.sh
# builds it when missing). Without --config the example
# agent/packaging/agent.toml is installed unless the gateway already has
# /etc/cardbind/agent.toml, which is then kept. With --verifier and --token
# the gateway is enrolled (as the cardbind user) and the service started;
# otherwise the last line says how to enrol. --dry-run prints what would
# run, contacting nothing (the token is not printed).
#
# Everything is sent in one tar stream over one SSH connection (no scp:
# OpenWrt's dropbear often has no SFTP server) and run by a POSIX sh
# script on the gateway, with sudo when the SSH user is not root.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
	sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

host="" arch="" os="" config="" verifier="" token="" dry=0
while [ $# -gt 0 ]; do
	case $1 in
	--arch) arch=${2:?--arch needs a value} && shift ;;
	--os) os=${2:?--os needs a value} && shift ;;
	--config) config=${2:?--config needs a file} && shift ;;
	--verifier) verifier=${2:?--verifier needs a URL} && shift ;;
	--token) token=${2:?--token needs a value} && shift ;;
	--dry-run) dry=1 ;;
	-h | --help) usage ;;
	-*)
		echo "install-agent: unknown option $1" >&2
		usage
		;;
	*)
		[ -n "$host" ] && { echo "install-agent: one HOST only" >&2; usage; }
		host=$1
		;;
	esac
	shift
done
[ -n "$host" ] || usage
case $arch in "" | amd64 | arm64 | armv6 | armv7 | mipsle | mips) ;; *)
	echo "install-agent: --arch $arch: want amd64, arm64, armv6, armv7, mipsle or mips" >&2
	exit 2
	;;
esac
case $os in "" | systemd | openwrt) ;; *)
	echo "install-agent: --os $os: want systemd or openwrt" >&2
	exit 2
	;;
esac
if { [ -n "$verifier" ] && [ -z "$token" ]; } || { [ -z "$verifier" ] && [ -n "$token" ]; }; then
	echo "install-agent: --verifier and --token go together" >&2
	exit 2
fi
if [ -n "$config" ] && [ ! -r "$config" ]; then
	echo "install-agent: --config $config: not readable" >&2
	exit 1
fi
read -r -a ssh <<<"${SSH:-ssh}"

# show prints a command as it would be typed.
show() {
	local out="" w
	for w in "$@"; do out+=" $(printf '%q' "$w")"; done
	echo "+${out}"
}

# detect asks the gateway for its architecture and system.
detect() {
	local probe='uname -m
if [ -f /etc/openwrt_release ]; then echo openwrt; else echo systemd; fi
dd if=/bin/sh bs=1 skip=5 count=1 2>/dev/null | od -An -tu1'
	if [ -n "$arch" ] && [ -n "$os" ]; then
		return
	fi
	if [ $dry -eq 1 ]; then
		show "${ssh[@]}" "$host" "$probe"
		echo "# dry run: assuming --arch ${arch:-amd64} --os ${os:-systemd} (give them to see another plan)"
		arch=${arch:-amd64} os=${os:-systemd}
		return
	fi
	local answer machine system endian
	answer=$("${ssh[@]}" "$host" "$probe") || {
		echo "install-agent: cannot reach $host over ssh" >&2
		exit 1
	}
	{ read -r machine; read -r system; read -r endian; } <<<"$answer"
	endian=${endian//[[:space:]]/}
	if [ -z "$arch" ]; then
		case $machine in
		x86_64 | amd64) arch=amd64 ;;
		aarch64 | arm64) arch=arm64 ;;
		armv7* | armv8l) arch=armv7 ;;
		armv6*) arch=armv6 ;;
		mips*) if [ "$endian" = 1 ]; then arch=mipsle; else arch=mips; fi ;;
		*)
			echo "install-agent: $host is $machine: no cardbind-agent build for it (see --arch)" >&2
			exit 1
			;;
		esac
	fi
	os=${os:-$system}
	echo "install-agent: $host: $machine, $os: installing linux-$arch" >&2
}

detect

bin=dist/cardbind-agent-linux-$arch
if [ ! -x "$bin" ]; then
	if [ $dry -eq 1 ]; then
		show scripts/build-agent.sh "$arch"
	else
		scripts/build-agent.sh "$arch"
	fi
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# The configuration: the one given, or the example (adapted to OpenWrt,
# where /var is RAM and the state must live on flash).
cfg_src=${config:-agent/packaging/agent.toml}
install_cfg=keep
[ -n "$config" ] && install_cfg=replace
if [ "$os" = openwrt ] && [ -z "$config" ]; then
	sed 's#^state_dir = .*#state_dir = "/etc/cardbind/state"#' "$cfg_src" >"$stage/agent.toml"
else
	cp "$cfg_src" "$stage/agent.toml"
fi
if [ "$os" = openwrt ] && grep -Eq '^state_dir *= *"/(var|tmp)/' "$stage/agent.toml"; then
	echo "install-agent: warning: $cfg_src keeps state_dir in RAM on OpenWrt; the device key would be lost at reboot" >&2
fi
[ $dry -eq 1 ] || cp "$bin" "$stage/cardbind-agent"
if [ "$os" = openwrt ]; then
	cp agent/packaging/cardbind-agent.init "$stage/"
else
	cp agent/packaging/cardbind-agent.service agent/packaging/cardbind-agent.sysusers "$stage/"
fi
if [ -n "$token" ]; then
	umask 077
	printf '%s\n' "$token" >"$stage/token"
	printf '%s\n' "$verifier" >"$stage/verifier"
fi

# The script the gateway runs, in its staging directory, as: sh install.sh OS CFG
cat >"$stage/install.sh" <<'REMOTE'
set -eu
d=$(cd "$(dirname "$0")" && pwd)
os=$1 cfg=$2
S=""
[ "$(id -u)" -eq 0 ] || S=sudo
say() { echo "gateway: $*"; }

# put SRC DST MODE: replace DST atomically (the old binary may be running).
put() {
	$S cp "$1" "$2.new"
	$S chmod "$3" "$2.new"
	$S mv -f "$2.new" "$2"
}

if [ "$os" = openwrt ]; then
	binpath=/usr/bin/cardbind-agent
	statedir=/etc/cardbind/state
	if ! grep -q '^cardbind:' /etc/passwd; then
		id=$(awk -F: 'BEGIN { u = 200 } $3 >= u && $3 < 60000 { u = $3 + 1 } END { print u }' /etc/passwd /etc/group)
		echo "cardbind:x:$id:" | $S tee -a /etc/group >/dev/null
		echo "cardbind:x:$id:$id:cardbind agent:$statedir:/bin/false" | $S tee -a /etc/passwd >/dev/null
		# Last change today: 0 would mean "change the password now" to PAM's su.
		[ -f /etc/shadow ] && echo "cardbind:*:$(($(date +%s) / 86400)):0:99999:7:::" | $S tee -a /etc/shadow >/dev/null
		say "user cardbind ($id) created"
	fi
	grep -q '^dialout:' /etc/group || echo "dialout:x:20:" | $S tee -a /etc/group >/dev/null
	awk -F: -v OFS=: '$1 == "dialout" { n = split($4, m, ","); f = 0
		for (i = 1; i <= n; i++) if (m[i] == "cardbind") f = 1
		if (!f) $4 = ($4 == "" ? "cardbind" : $4 ",cardbind") } { print }' /etc/group >"$d/group"
	$S cp "$d/group" /etc/group
else
	binpath=/usr/local/bin/cardbind-agent
	statedir=/var/lib/cardbind
	put "$d/cardbind-agent.sysusers" /usr/lib/sysusers.d/cardbind-agent.conf 0644
	if command -v systemd-sysusers >/dev/null 2>&1; then
		$S systemd-sysusers /usr/lib/sysusers.d/cardbind-agent.conf
	elif ! id cardbind >/dev/null 2>&1; then
		$S useradd --system --user-group --home-dir "$statedir" --shell /usr/sbin/nologin cardbind
	fi
	$S usermod -a -G dialout cardbind 2>/dev/null || true
fi

put "$d/cardbind-agent" "$binpath" 0755
if ! "$binpath" --help >/dev/null 2>&1; then
	say "$binpath does not run here (wrong --arch?)"
	exit 1
fi
$S mkdir -p /etc/cardbind "$statedir"
$S chown root:cardbind /etc/cardbind
$S chmod 0750 /etc/cardbind
$S chown cardbind:cardbind "$statedir"
$S chmod 0700 "$statedir"
if [ "$cfg" = replace ] || [ ! -e /etc/cardbind/agent.toml ]; then
	put "$d/agent.toml" /etc/cardbind/agent.toml 0640
	$S chown root:cardbind /etc/cardbind/agent.toml
	say "/etc/cardbind/agent.toml installed"
else
	say "/etc/cardbind/agent.toml kept (give --config to replace it)"
fi

if [ "$os" = openwrt ]; then
	put "$d/cardbind-agent.init" /etc/init.d/cardbind-agent 0755
	$S /etc/init.d/cardbind-agent enable
	start() { $S /etc/init.d/cardbind-agent restart; }
else
	put "$d/cardbind-agent.service" /etc/systemd/system/cardbind-agent.service 0644
	$S systemctl daemon-reload
	$S systemctl enable cardbind-agent.service
	start() { $S systemctl restart cardbind-agent.service; }
fi

if [ -f "$d/token" ]; then
	# The token travels in the environment, never on a command line.
	CARDBIND_ENROLL_TOKEN=$(cat "$d/token")
	export CARDBIND_ENROLL_TOKEN
	verifier=$(cat "$d/verifier")
	P=""
	[ -n "$S" ] && P="sudo --preserve-env=CARDBIND_ENROLL_TOKEN"
	if [ "$os" = openwrt ]; then
		$P su -s /bin/sh cardbind -c "$binpath enroll --config /etc/cardbind/agent.toml --verifier '$verifier'"
	else
		$P runuser -u cardbind -- "$binpath" enroll --config /etc/cardbind/agent.toml --verifier "$verifier"
	fi
	say "enrolled with $verifier"
fi
if $S test -f "$statedir/credentials.json"; then
	start
	say "cardbind-agent started"
else
	say "not enrolled yet: run on the gateway, as root:"
	if [ "$os" = openwrt ]; then
		say "  su -s /bin/sh cardbind -c '$binpath enroll --config /etc/cardbind/agent.toml --verifier URL --token TOKEN' && /etc/init.d/cardbind-agent start"
	else
		say "  runuser -u cardbind -- $binpath enroll --config /etc/cardbind/agent.toml --verifier URL --token TOKEN && systemctl start cardbind-agent"
	fi
fi
REMOTE

remote="d=\$(mktemp -d) && tar -xzf - -C \"\$d\" && sh \"\$d/install.sh\" $os $install_cfg; rc=\$?; rm -rf \"\$d\"; exit \$rc"
if [ $dry -eq 1 ]; then
	files="$bin as cardbind-agent"
	for f in "$stage"/*; do files+=", ${f##*/}"; done
	echo "# files sent in one tar stream: $files"
	echo "+ tar -C STAGE -czf - . | ${ssh[*]} $(printf '%q' "$host") '$remote'"
	echo "# install.sh, run on $host:"
	sed "s/^/#   /" "$stage/install.sh"
	exit 0
fi
tar -C "$stage" -czf - . | "${ssh[@]}" "$host" "$remote"
