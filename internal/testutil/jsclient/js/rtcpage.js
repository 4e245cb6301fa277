// The page side of the MatrixRTC harness: one matrix-js-sdk 43 client in the
// room's MatrixRTCSession (m.call, compatibility mode: room-state membership,
// as Element Call writes it) plus a livekit-client 2.x Room that publishes the
// fake camera and microphone, the way Element Call uses them: membership with
// the LiveKit focus, OpenID token → /sfu/get → {url, jwt} → connect, publish.
// The driver (driver.mjs --page rtc) bundles this file and calls
// window.harness.* through puppeteer. No media E2EE (unencrypted rooms).

import { createClient } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { Room, RoomEvent } from "livekit-client";

let client = null;
let session = null;
let lkRoom = null;
let opts = null;
let startError = null;
const times = {};

function waitFor(what, cond, timeoutMs) {
	const deadline = Date.now() + timeoutMs;
	return new Promise((resolve, reject) => {
		const tick = () => {
			let v;
			try {
				v = cond();
			} catch (e) {
				reject(e);
				return;
			}
			if (v) resolve(v);
			else if (Date.now() > deadline) reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
			else setTimeout(tick, 50);
		};
		tick();
	});
}

async function start(o) {
	opts = o;
	try {
		await startInner(o);
	} catch (e) {
		startError = e;
		throw e;
	}
}

async function startInner(o) {
	logger.setLevel(o.logLevel || "info", false);
	const t0 = Date.now();
	client = createClient({
		baseUrl: o.homeserverUrl,
		userId: o.userId,
		accessToken: o.accessToken,
		deviceId: o.deviceId,
		timelineSupport: false,
	});
	await client.startClient({ initialSyncLimit: 1, lazyLoadMembers: false });
	await waitFor("the first sync", () => ["PREPARED", "SYNCING"].includes(client.getSyncState()), o.timeoutMs);
	const room = await waitFor(`room ${o.roomId}`, () => client.getRoom(o.roomId), o.timeoutMs);

	// The membership, as Element Call sends it (multi-SFU: our own focus first).
	const transport = { type: "livekit", livekit_service_url: o.serviceUrl, livekit_alias: o.roomId };
	session = client.matrixRTC.getRoomSession(room);
	session.joinRoomSession([transport], transport, { manageMediaKeys: false });
	await waitFor("our membership in room state", () => ownMembership(), o.timeoutMs);
	times.membership = Date.now() - t0;

	// OpenID token → authorization service → SFU.
	const openid = await client.getOpenIdToken();
	const res = await fetch(`${o.serviceUrl}/sfu/get`, {
		method: "POST",
		headers: { "content-type": "application/json" },
		body: JSON.stringify({ room: o.roomId, openid_token: openid, device_id: o.deviceId }),
	});
	if (!res.ok) throw new Error(`sfu/get answered ${res.status}: ${await res.text()}`);
	const { url, jwt } = await res.json();
	lkRoom = new Room({ adaptiveStream: true, dynacast: true });
	lkRoom.on(RoomEvent.Disconnected, (r) => console.warn("LiveKit disconnected", r));
	await lkRoom.connect(url, jwt);
	times.connected = Date.now() - t0;
	// Element Call's defaults: camera with simulcast, microphone.
	await lkRoom.localParticipant.setMicrophoneEnabled(true);
	if (o.video) await lkRoom.localParticipant.setCameraEnabled(true, { resolution: { width: 640, height: 360 } }, { simulcast: true });
	times.published = Date.now() - t0;
}

function ownMembership() {
	const key = `_${client.getUserId()}_${client.getDeviceId()}_m.call`;
	const ev = client.getRoom(opts.roomId)?.currentState.getStateEvents("org.matrix.msc3401.call.member", key);
	const c = ev?.getContent();
	return c && c.application === "m.call" ? c : null;
}

function state() {
	const pubs = [];
	if (lkRoom) {
		for (const p of lkRoom.localParticipant.trackPublications.values()) {
			pubs.push({ source: p.source, kind: p.kind, muted: p.isMuted, sid: p.trackSid, simulcast: !!p.simulcasted });
		}
	}
	return {
		startError: startError ? String(startError?.message || startError) : "",
		joined: !!session?.isJoined(),
		membership: client ? ownMembership() : null,
		livekit: lkRoom ? { state: lkRoom.state, sid: lkRoom.localParticipant.sid, identity: lkRoom.localParticipant.identity, remotes: [...lkRoom.remoteParticipants.keys()] } : null,
		publications: pubs,
		times,
	};
}

async function setMicMuted(muted) {
	await lkRoom.localParticipant.setMicrophoneEnabled(!muted);
}

async function setVideoMuted(muted) {
	await lkRoom.localParticipant.setCameraEnabled(!muted);
}

async function setScreensharing(enabled) {
	await lkRoom.localParticipant.setScreenShareEnabled(enabled, { audio: false });
}

// leave leaves the SFU and the session (a plain {} membership: Dendrite has
// no delayed events) and waits until the membership is gone from room state.
async function leave(timeoutMs) {
	if (lkRoom) await lkRoom.disconnect();
	if (session) await session.leaveRoomSession(timeoutMs);
	await waitFor("our membership to leave room state", () => !ownMembership(), timeoutMs);
}

async function stop() {
	try {
		if (lkRoom) await lkRoom.disconnect();
	} catch {}
	if (client) client.stopClient();
}

window.harness = { start, state, setMicMuted, setVideoMuted, setScreensharing, leave, stop };
