#!/usr/bin/env bash
# Install the Debian packages the tests need, if any are missing.
#
# Usage: scripts/deps.sh [EXTRA_PACKAGE...]
#
# Idempotent: when everything is installed it only runs dpkg-query. Otherwise it runs
# apt-get update + install (noninteractive), as root or through sudo, and waits for
# the dpkg/apt locks held by another apt process instead of failing.
set -euo pipefail

# Packages the test suite needs. Add new ones here (e.g. chromium nodejs).
PACKAGES=(
	postgresql # internal/testutil/pgtest: initdb, pg_ctl, postgres
	ffmpeg     # ffprobe checks on recorded media
	mkvtoolnix # mkvmerge / mkvinfo on WebM output
	opus-tools # opusinfo / opusdec on Ogg/Opus output
	chromium   # internal/testutil/jsclient: headless browser running matrix-js-sdk
)
PACKAGES+=("$@")

LOCK_TIMEOUT="${DEPS_LOCK_TIMEOUT:-600}"

die() {
	echo "deps.sh: $*" >&2
	exit 1
}

is_installed() {
	[[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == "installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
	is_installed "$pkg" || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
	echo "deps.sh: all packages installed: ${PACKAGES[*]}" >&2
	exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
	command -v sudo >/dev/null || die "not root and sudo is missing; install as root: ${missing[*]}"
	SUDO=(sudo --non-interactive)
fi

APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get
	-o "DPkg::Lock::Timeout=$LOCK_TIMEOUT" -o "Acquire::Retries=3" -q -y)

# apt-get update takes the lists lock, which DPkg::Lock::Timeout does not cover in
# every apt version: retry it until the deadline while another apt process holds it.
apt_update() {
	local deadline=$((SECONDS + LOCK_TIMEOUT))
	until "${APT[@]}" update; do
		((SECONDS < deadline)) || die "apt-get update kept failing for ${LOCK_TIMEOUT}s"
		echo "deps.sh: apt-get update failed (lock held by another apt?), retrying" >&2
		sleep 5
	done
}

echo "deps.sh: installing ${missing[*]}" >&2
apt_update
"${APT[@]}" install --no-install-recommends "${missing[@]}"

for pkg in "${missing[@]}"; do
	is_installed "$pkg" || die "$pkg is still not installed"
done
echo "deps.sh: installed ${missing[*]}" >&2
