#!/usr/bin/env bash
# make demo: a local Dendrite plus the recorder on embedded defaults; three
# simulated participants hold a call (one audio only, one muting for a few
# seconds, one adding a screen share); the bot records it for DEMO_SECONDS
# (default 20), then the files are listed with their ffprobe durations.
# DEMO_KEEP=1 keeps everything running afterwards (web page, API) until Ctrl-C.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${DEMO_DIR:-$ROOT/.demo}"
DEMO_SECONDS="${DEMO_SECONDS:-20}"
DEMO_KEEP="${DEMO_KEEP:-0}"
API_TOKEN="demo-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
REC="$ROOT/bin/recorder"

free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
	done
	echo "no free port" >&2; exit 1
}

rm -rf "$DIR"
mkdir -p "$DIR"
AS_PORT="$(free_port)"
API_PORT="$(free_port)"

# Configuration: the embedded example, with the demo's values as environment
# overrides (the same mechanism a container deployment uses).
export RECORDER_HOMESERVER__DOMAIN=localhost
export RECORDER_HOMESERVER__ADDRESS=http://127.0.0.1:1 # set once Dendrite runs
export RECORDER_APPSERVICE__ADDRESS="http://127.0.0.1:$AS_PORT"
export RECORDER_APPSERVICE__PORT="$AS_PORT"
export RECORDER_DATABASE__URI="file:$DIR/recorder.db?_txlock=immediate"
export RECORDER_RECORDINGS__PATH="$DIR/recordings"
export RECORDER_API__LISTEN="127.0.0.1:$API_PORT"
export RECORDER_API__TOKENS="$API_TOKEN"
export RECORDER_PERMISSIONS='*=user'
export RECORDER_WEBRTC__LOOPBACK_ONLY=true
"$REC" -e -c "$DIR/config.yaml" >/dev/null
"$REC" -g -c "$DIR/config.yaml" -r "$DIR/registration.yaml"

REC_PID=""
cleanup() {
	if [[ -n "$REC_PID" ]] && kill -0 "$REC_PID" 2>/dev/null; then
		kill -TERM "$REC_PID" 2>/dev/null || true
		wait "$REC_PID" 2>/dev/null || true
	fi
	"$ROOT/scripts/homeserver.sh" stop "$DIR/hs" >/dev/null 2>&1 || true
	"$ROOT/scripts/livekit.sh" stop "$DIR/livekit" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Federation API on (loopback only): the MatrixRTC authorization service
# checks OpenID tokens at /_matrix/federation/v1/openid/userinfo.
HS_URL="$(HOMESERVER_FEDERATION=1 "$ROOT/scripts/homeserver.sh" start "$DIR/hs" "$DIR/registration.yaml" | tail -n1)"
LK_URL="$("$ROOT/scripts/livekit.sh" start "$DIR/livekit" | tail -n1)"
LK_HTTP="$(cat "$DIR/livekit/http_url")"
echo "LiveKit SFU is running at $LK_URL (log: $DIR/livekit/livekit.log)"
echo "Dendrite is running at $HS_URL (log: $DIR/hs/dendrite.log)"
export RECORDER_HOMESERVER__ADDRESS="$HS_URL"
"$REC" -c "$DIR/config.yaml" >"$DIR/recorder.log" 2>&1 &
REC_PID=$!
for _ in $(seq 100); do
	curl -fsS -o /dev/null "http://127.0.0.1:$AS_PORT/_matrix/mau/live" 2>/dev/null && break
	kill -0 "$REC_PID" 2>/dev/null || { cat "$DIR/recorder.log"; echo "recorder exited" >&2; exit 1; }
	sleep 0.1
done
echo "Recorder is running (log: $DIR/recorder.log); API and web page on http://127.0.0.1:$API_PORT/"
echo
(cd "$ROOT" && go run -tags goolm ./cmd/demo -hs "$HS_URL" -bot "@recorder:localhost" \
	-api "http://127.0.0.1:$API_PORT" -token "$API_TOKEN" -seconds "$DEMO_SECONDS" \
	-media "$ROOT/testdata/media" -recordings "$DIR/recordings" -livekit "$LK_URL" -livekit-http "$LK_HTTP")
echo
echo "Files are in $DIR/recordings; the recorder log is $DIR/recorder.log."
if [[ "$DEMO_KEEP" == 1 ]]; then
	echo "Running until Ctrl-C: open http://127.0.0.1:$API_PORT/ with token $API_TOKEN,"
	echo "or log in to $HS_URL as alice / alice-demo-password with a Matrix client."
	wait "$REC_PID"
fi
