// The page side of the MatrixRTC harness: one matrix-js-sdk 43 client in the
// room's MatrixRTCSession (m.call, compatibility mode: room-state membership,
// as Element Call writes it) plus a livekit-client 2.x Room that publishes the
// fake camera and microphone, the way Element Call uses them: membership with
// the LiveKit focus, OpenID token → /sfu/get → {url, jwt} → connect, publish.
// The driver (driver.mjs --page rtc) bundles this file and calls
// window.harness.* through puppeteer.
//
// With o.e2ee the page does what Element Call does in an encrypted (Megolm)
// room: the js-sdk's Rust crypto (its wasm served by the driver) uploads the
// device keys before the membership is published; the session manages the
// media keys (manageMediaKeys: true; js-sdk 43 always sends them Olm-encrypted
// as io.element.call.encryption_keys to-device events to every member's
// device); a key provider fed by the session's EncryptionKeyChanged events
// (HKDF key material per LiveKit identity, as Element Call's
// MatrixKeyProvider) drives livekit-client's E2EE worker (served by the
// driver), and every remote track is attached to a media element so it is
// decoded. state() then reports the keys, the remote tracks' decode counters
// and encryption errors.

import { createClient, ClientEvent } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { MatrixRTCSessionEvent } from "matrix-js-sdk/lib/matrixrtc/index.js";
import { BaseKeyProvider, Room, RoomEvent } from "livekit-client";
import { messages as roomMessages, sendText as sendRoomText } from "./messages.js";

let client = null;
let session = null;
let lkRoom = null;
let opts = null;
let startError = null;
let memberId = "";
const times = {};

// E2EE mode: what the page saw of the media keys and the encrypted media.
const e2ee = {
	// Keys the session handed to the key provider, by LiveKit identity
	// (own one included): {count, indexes: [distinct, in order of arrival],
	// lastIndex, firstAt, lastAt (page Date.now()), raw: {index: base64 key}}.
	keys: {},
	// io.element.call.encryption_keys to-device events as they arrived
	// (decrypted): {sender, deviceId, memberId, index, at}.
	keysReceived: [],
	// Key sends (encryptAndSendToDevice): {index, to: ["@user:server:DEVICE"], at}.
	keysSent: [],
	// RoomEvent.EncryptionError: {identity, message, at}.
	errors: [],
	// RoomEvent.ParticipantEncryptionStatusChanged, by identity.
	status: {},
	// The session's memberships by LiveKit identity: {joinedAt, leftAt,
	// createdTs} (when the page first saw it, when it went, its created_ts
	// or origin_server_ts).
	members: {},
};
const attached = new Map(); // track sid → media element
const MAX_EVENTS = 200;

function pushBounded(list, item) {
	list.push(item);
	if (list.length > MAX_EVENTS) list.splice(0, list.length - MAX_EVENTS);
}

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
	if (o.e2ee) {
		// The Rust crypto; its wasm comes from the driver (/pkg/…, next to
		// the bundle, where the package looks for it). Keys in memory.
		await client.initRustCrypto({ useIndexedDB: false });
		watchKeyTraffic();
	}
	await client.startClient({ initialSyncLimit: 1, lazyLoadMembers: false });
	await waitFor("the first sync", () => ["PREPARED", "SYNCING"].includes(client.getSyncState()), o.timeoutMs);
	const room = await waitFor(`room ${o.roomId}`, () => client.getRoom(o.roomId), o.timeoutMs);
	if (o.e2ee) {
		// Others can only send us their keys once our device keys are on the
		// server: wait for them before the membership goes out.
		await waitForAsync("our device keys on the homeserver", ownDeviceKeysUploaded, o.timeoutMs);
		times.deviceKeys = Date.now() - t0;
	}

	// The membership, as Element Call sends it (multi-SFU: our own focus first).
	const transport = { type: "livekit", livekit_service_url: o.serviceUrl, livekit_alias: o.roomId };
	session = client.matrixRTC.getRoomSession(room);
	const manageKeys = !!o.e2ee;
	let keyProvider = null;
	if (o.e2ee) {
		watchMembers(session);
		if (manageKeys) keyProvider = matrixKeyProvider(session);
	}
	// As Element Call: the member id in the keys is a random UUID (the
	// membership's membershipID stays @user:server:DEVICE in this mode).
	memberId = crypto.randomUUID();
	session.joinRTCSession({ userId: o.userId, deviceId: o.deviceId, memberId }, [transport], transport, { manageMediaKeys: manageKeys });
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
	const roomOpts = { adaptiveStream: true, dynacast: true };
	if (manageKeys) {
		// One worker per room, as Element Call does.
		roomOpts.e2ee = { keyProvider, worker: new Worker("/e2ee-worker.mjs", { type: "module" }) };
	}
	lkRoom = new Room(roomOpts);
	lkRoom.on(RoomEvent.Disconnected, (r) => console.warn("LiveKit disconnected", r));
	if (manageKeys) {
		lkRoom.on(RoomEvent.EncryptionError, (err, participant) => {
			console.warn("LiveKit encryption error", participant?.identity, err);
			pushBounded(e2ee.errors, { identity: participant?.identity ?? "", message: String(err?.message || err), at: Date.now() });
		});
		lkRoom.on(RoomEvent.ParticipantEncryptionStatusChanged, (enabled, participant) => {
			e2ee.status[participant?.identity ?? ""] = enabled;
		});
		// Decoding needs a consumer: attach every remote track to an element
		// (in view, so adaptive stream keeps the video on).
		lkRoom.on(RoomEvent.TrackSubscribed, (track) => attach(track));
		lkRoom.on(RoomEvent.TrackUnsubscribed, (track) => detach(track));
		await lkRoom.setE2EEEnabled(true);
	}
	await lkRoom.connect(url, jwt);
	times.connected = Date.now() - t0;
	// Element Call's defaults: camera with simulcast, microphone.
	await lkRoom.localParticipant.setMicrophoneEnabled(true);
	if (o.video) await lkRoom.localParticipant.setCameraEnabled(true, { resolution: { width: 640, height: 360 } }, { simulcast: true });
	times.published = Date.now() - t0;
}

function waitForAsync(what, cond, timeoutMs) {
	const deadline = Date.now() + timeoutMs;
	return (async () => {
		for (;;) {
			if (await cond()) return;
			if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
			await new Promise((r) => setTimeout(r, 100));
		}
	})();
}

// ownDeviceKeysUploaded asks the homeserver (/keys/query) for our device.
async function ownDeviceKeysUploaded() {
	const res = await client.downloadKeysForUsers([client.getUserId()]);
	return !!res?.device_keys?.[client.getUserId()]?.[client.getDeviceId()];
}

// matrixKeyProvider does what Element Call's MatrixKeyProvider does: a
// livekit-client key provider (per participant, 256 indexes) that gets every
// key the session emits, imported as HKDF key material, under the member's
// LiveKit identity (@user:server:DEVICE in compatibility mode).
function matrixKeyProvider(rtcSession) {
	const provider = new BaseKeyProvider({ ratchetWindowSize: 10, keyringSize: 256 });
	const onKey = (keyBin, index, membership, identity) => {
		const at = Date.now();
		const ring = (e2ee.keys[identity] ??= { count: 0, indexes: [], lastIndex: -1, firstAt: at, lastAt: at, raw: {} });
		ring.count++;
		ring.raw[index] = btoa(String.fromCharCode(...keyBin));
		if (!ring.indexes.includes(index)) ring.indexes.push(index);
		ring.lastIndex = index;
		ring.lastAt = at;
		console.info(`media key for ${identity} (${membership.userId}/${membership.deviceId}) index ${index}`);
		crypto.subtle.importKey("raw", keyBin, "HKDF", false, ["deriveBits", "deriveKey"]).then(
			(material) => provider.onSetEncryptionKey(material, identity, index),
			(e) => console.error(`failed to import the media key of ${identity} index ${index}`, e),
		);
	};
	rtcSession.on(MatrixRTCSessionEvent.EncryptionKeyChanged, onKey);
	rtcSession.reemitEncryptionKeys();
	return provider;
}

// watchMembers records when the session's memberships come and go.
function watchMembers(rtcSession) {
	const seen = (memberships) => {
		const at = Date.now();
		const now = new Set();
		for (const m of memberships) {
			const identity = m.rtcBackendIdentity;
			now.add(identity);
			const rec = e2ee.members[identity];
			if (!rec || rec.leftAt) e2ee.members[identity] = { joinedAt: at, leftAt: 0, createdTs: m.createdTs() };
		}
		for (const [identity, rec] of Object.entries(e2ee.members)) {
			if (!now.has(identity) && !rec.leftAt) rec.leftAt = at;
		}
	};
	rtcSession.on(MatrixRTCSessionEvent.MembershipsChanged, (_old, memberships) => seen(memberships));
	seen(rtcSession.memberships);
}

// watchKeyTraffic records the key to-device events going out and coming in.
function watchKeyTraffic() {
	const send = client.encryptAndSendToDevice.bind(client);
	client.encryptAndSendToDevice = (eventType, devices, payload) => {
		if (eventType === "io.element.call.encryption_keys") {
			pushBounded(e2ee.keysSent, { index: payload?.keys?.index, to: devices.map((d) => `${d.userId}:${d.deviceId}`), at: Date.now() });
		}
		return send(eventType, devices, payload);
	};
	client.on(ClientEvent.ToDeviceEvent, (ev) => {
		if (ev.getType() !== "io.element.call.encryption_keys") return;
		const c = ev.getContent();
		pushBounded(e2ee.keysReceived, {
			sender: ev.getSender(),
			deviceId: c?.member?.claimed_device_id ?? "",
			memberId: c?.member?.id ?? "",
			index: c?.keys?.index,
			at: Date.now(),
		});
	});
}

function attach(track) {
	if (attached.has(track.sid)) return;
	const el = track.attach();
	el.muted = track.kind !== "audio"; // played, so the audio is pulled and decoded
	if (track.kind === "video") {
		el.width = 320;
		el.height = 180;
	}
	document.body.appendChild(el);
	attached.set(track.sid, el);
}

function detach(track) {
	const el = attached.get(track.sid);
	if (!el) return;
	track.detach(el);
	el.remove();
	attached.delete(track.sid);
}

// remoteStats reads each remote participant's subscribed tracks' inbound-rtp
// counters.
async function remoteStats() {
	const out = [];
	for (const p of lkRoom.remoteParticipants.values()) {
		const tracks = [];
		for (const pub of p.trackPublications.values()) {
			const t = { sid: pub.trackSid, source: pub.source, kind: pub.kind, subscribed: pub.isSubscribed, muted: pub.isMuted, encrypted: pub.isEncrypted };
			const report = pub.track ? await pub.track.getRTCStatsReport() : undefined;
			report?.forEach((v) => {
				if (v.type !== "inbound-rtp") return;
				t.packetsReceived = (t.packetsReceived ?? 0) + (v.packetsReceived ?? 0);
				t.bytesReceived = (t.bytesReceived ?? 0) + (v.bytesReceived ?? 0);
				if (pub.kind === "video") {
					t.framesReceived = (t.framesReceived ?? 0) + (v.framesReceived ?? 0);
					t.framesDecoded = (t.framesDecoded ?? 0) + (v.framesDecoded ?? 0);
					t.framesDropped = (t.framesDropped ?? 0) + (v.framesDropped ?? 0);
					t.keyFramesDecoded = (t.keyFramesDecoded ?? 0) + (v.keyFramesDecoded ?? 0);
					t.frameWidth = v.frameWidth ?? 0;
					t.frameHeight = v.frameHeight ?? 0;
				} else {
					t.totalSamplesReceived = (t.totalSamplesReceived ?? 0) + (v.totalSamplesReceived ?? 0);
					t.concealedSamples = (t.concealedSamples ?? 0) + (v.concealedSamples ?? 0);
					t.totalAudioEnergy = (t.totalAudioEnergy ?? 0) + (v.totalAudioEnergy ?? 0);
					t.audioLevel = v.audioLevel ?? 0;
				}
			});
			tracks.push(t);
		}
		out.push({ identity: p.identity, encrypted: !!p.isEncrypted, tracks });
	}
	return out;
}

function ownMembership() {
	const key = `_${client.getUserId()}_${client.getDeviceId()}_m.call`;
	const ev = client.getRoom(opts.roomId)?.currentState.getStateEvents("org.matrix.msc3401.call.member", key);
	const c = ev?.getContent();
	return c && c.application === "m.call" ? c : null;
}

async function state() {
	const pubs = [];
	if (lkRoom) {
		for (const p of lkRoom.localParticipant.trackPublications.values()) {
			pubs.push({ source: p.source, kind: p.kind, muted: p.isMuted, sid: p.trackSid, simulcast: !!p.simulcasted });
		}
	}
	const st = {
		startError: startError ? String(startError?.message || startError) : "",
		joined: !!session?.isJoined(),
		membership: client ? ownMembership() : null,
		livekit: lkRoom ? { state: lkRoom.state, sid: lkRoom.localParticipant.sid, identity: lkRoom.localParticipant.identity, remotes: [...lkRoom.remoteParticipants.keys()] } : null,
		publications: pubs,
		times,
	};
	if (opts?.e2ee) {
		st.e2ee = { ...e2ee, identity: `${client.getUserId()}:${client.getDeviceId()}`, memberId, enabled: !!lkRoom?.isE2EEEnabled };
		st.remoteParticipants = lkRoom ? await remoteStats() : [];
	}
	return st;
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

// sendText and messages: the room's messages (encrypted and decrypted with
// the Rust crypto in E2EE mode), e.g. to send !rec commands as a member.
function sendText(body) {
	return sendRoomText(client, opts.roomId, body);
}

function messages() {
	return roomMessages(client, opts.roomId);
}

window.harness = { start, state, setMicMuted, setVideoMuted, setScreensharing, leave, stop, sendText, messages };
