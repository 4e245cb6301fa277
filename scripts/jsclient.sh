#!/usr/bin/env bash
# Install what the real-client test harness (internal/testutil/jsclient) needs.
#
# Usage: scripts/jsclient.sh
#
# Idempotent and offline once done:
#   - Debian chromium (through scripts/deps.sh, which waits for apt locks), plus
#     nodejs/npm only if `node`/`npm` are missing from PATH;
#   - `npm ci` in internal/testutil/jsclient/js when node_modules is missing or was
#     installed from another package-lock.json (a sha256 stamp in node_modules):
#     matrix-js-sdk 43, matrix-js-sdk 36 as the npm alias matrix-js-sdk-36 (the
#     last release with the legacy Olm/Megolm crypto) and libolm
#     (@matrix-org/olm) for it, esbuild and puppeteer-core.
# No browser is ever downloaded: the harness drives /usr/bin/chromium through
# puppeteer-core.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JS_DIR="$ROOT/internal/testutil/jsclient/js"
STAMP="$JS_DIR/node_modules/.package-lock.sha256"

die() {
	echo "jsclient.sh: $*" >&2
	exit 1
}

extra=()
command -v node >/dev/null || extra+=(nodejs)
command -v npm >/dev/null || extra+=(npm)
"$ROOT/scripts/deps.sh" "${extra[@]}" # chromium is in its PACKAGES list

[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing after installing chromium"

node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "node $(node --version) is too old: puppeteer-core 24 needs node >= 18, tested on 20"

want="$(sha256sum "$JS_DIR/package-lock.json" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" == "$have" ]]; then
	echo "jsclient.sh: node_modules up to date" >&2
	exit 0
fi

echo "jsclient.sh: npm ci in $JS_DIR" >&2
# puppeteer-core never downloads a browser; the variable guards against a
# future switch to the full puppeteer package. matrix-js-sdk 43 declares
# node >= 22 but is only bundled for the browser here, so the engine warning is
# expected on node 20.
(cd "$JS_DIR" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
echo "$want" >"$STAMP"
echo "jsclient.sh: installed node_modules" >&2
