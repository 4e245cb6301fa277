// The page side of the harness: one matrix-js-sdk client in one legacy MSC3401
// GroupCall. The driver (driver.mjs) bundles this file with esbuild, serves it from
// 127.0.0.1 and calls window.harness.* through puppeteer.
//
// Everything the Go side observes comes from harness.state(), a plain JSON
// snapshot; commands are the other harness.* methods. Nothing here sleeps: waits
// are event- or poll-driven with deadlines.

import {
	CallEvent,
	ClientEvent,
	GroupCallEvent,
	GroupCallIntent,
	GroupCallState,
	GroupCallType,
	createClient,
} from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { messages as roomMessages, sendText as sendRoomText } from "./messages.js";

const MAX_LOG_EVENTS = 200;

// --- Loopback-only ICE --------------------------------------------------------
//
// Chromium (with --allow-loopback-in-peer-connection) gathers loopback and
// non-loopback host candidates. Dropping every non-loopback *remote* candidate, in
// trickled candidates and in candidates embedded in remote SDP, keeps every pair
// on 127.0.0.1 / ::1 on both ends.

const dropped = { candidates: 0, sdpLines: 0 };

function isLoopbackAddress(addr) {
	return addr.startsWith("127.");
}

// candidateAddress returns the connection address of an ICE candidate line
// ("candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...").
function candidateAddress(line) {
	const fields = line.replace(/^a=/, "").split(/\s+/);
	return fields.length > 4 ? fields[4] : "";
}

function isLoopbackCandidate(line) {
	return isLoopbackAddress(candidateAddress(line));
}

function filterSDP(sdp) {
	if (typeof sdp !== "string") return sdp;
	const lines = sdp.split("\r\n");
	const kept = lines.filter((l) => {
		if (!l.startsWith("a=candidate:")) return true;
		if (isLoopbackCandidate(l)) return true;
		dropped.sdpLines++;
		return false;
	});
	return kept.join("\r\n");
}

const origAddIceCandidate = RTCPeerConnection.prototype.addIceCandidate;
RTCPeerConnection.prototype.addIceCandidate = function (candidate, ...rest) {
	const line = candidate && typeof candidate === "object" ? candidate.candidate : undefined;
	// An empty candidate is the end-of-candidates marker: always pass it on.
	if (line && !isLoopbackCandidate(line)) {
		dropped.candidates++;
		return Promise.resolve();
	}
	return origAddIceCandidate.call(this, candidate, ...rest);
};

const origSetRemoteDescription = RTCPeerConnection.prototype.setRemoteDescription;
RTCPeerConnection.prototype.setRemoteDescription = function (desc, ...rest) {
	if (desc && typeof desc === "object" && typeof desc.sdp === "string") {
		desc = { type: desc.type, sdp: filterSDP(desc.sdp) };
	}
	return origSetRemoteDescription.call(this, desc, ...rest);
};

// --- State ------------------------------------------------------------------------

let client = null;
let groupCall = null;
let opts = null;
let startError = null;
let enterStartedAt = 0;
let enteredAt = 0;
const firstConnectedAt = new Map(); // callId -> ms since enter() started
const toDeviceSent = [];
const toDeviceReceived = [];
let turnServerResult = "unknown";

function pushBounded(list, item) {
	list.push(item);
	if (list.length > MAX_LOG_EVENTS) list.shift();
}

// summarizeVoip keeps the protocol fields of an m.call.* content and drops the
// bulky parts (SDP, candidate strings), so the Go side can assert on them.
function summarizeVoip(type, content, extra) {
	const c = content || {};
	const out = { type, ...extra };
	for (const k of [
		"call_id",
		"party_id",
		"version",
		"conf_id",
		"device_id",
		"sender_session_id",
		"dest_session_id",
		"seq",
		"invitee",
		"lifetime",
		"reason",
		"selected_party_id",
	]) {
		if (k in c) out[k] = c[k];
	}
	out.keys = Object.keys(c).sort();
	if (Array.isArray(c.candidates)) out.candidates = c.candidates.length;
	return out;
}

function feedState(feed) {
	return {
		userId: feed.userId,
		deviceId: feed.deviceId ?? "",
		purpose: feed.purpose,
		local: feed.isLocal(),
		audioMuted: feed.isAudioMuted(),
		videoMuted: feed.isVideoMuted(),
		streamId: feed.stream?.id ?? "",
		audioTracks: feed.stream?.getAudioTracks().length ?? 0,
		videoTracks: feed.stream?.getVideoTracks().length ?? 0,
		videoTrackIds: feed.stream?.getVideoTracks().map((t) => t.id) ?? [],
	};
}

async function rtpStats(pc) {
	const out = { inbound: {}, outbound: {}, outboundStreams: [], candidatePair: null };
	if (!pc) return out;
	let report;
	try {
		report = await pc.getStats();
	} catch (e) {
		return out;
	}
	let selectedPairId = null;
	report.forEach((s) => {
		if (s.type === "transport" && s.selectedCandidatePairId) selectedPairId = s.selectedCandidatePairId;
	});
	report.forEach((s) => {
		if (s.type === "inbound-rtp") {
			const k = s.kind || s.mediaType;
			const cur = out.inbound[k] || { packets: 0, bytes: 0, framesDecoded: 0 };
			cur.packets += s.packetsReceived || 0;
			cur.bytes += s.bytesReceived || 0;
			cur.framesDecoded += s.framesDecoded || 0;
			out.inbound[k] = cur;
		} else if (s.type === "outbound-rtp") {
			const k = s.kind || s.mediaType;
			const cur = out.outbound[k] || { packets: 0, bytes: 0, framesSent: 0 };
			cur.packets += s.packetsSent || 0;
			cur.bytes += s.bytesSent || 0;
			cur.framesSent += s.framesSent || 0;
			out.outbound[k] = cur;
			const src = s.mediaSourceId ? report.get(s.mediaSourceId) : undefined;
			out.outboundStreams.push({
				kind: k,
				ssrc: s.ssrc,
				mid: s.mid ?? "",
				trackId: src?.trackIdentifier ?? "",
				packetsSent: s.packetsSent || 0,
				bytesSent: s.bytesSent || 0,
				retransmittedPackets: s.retransmittedPacketsSent || 0,
				framesSent: s.framesSent || 0,
				framesEncoded: s.framesEncoded || 0,
				keyFramesEncoded: s.keyFramesEncoded || 0,
				frameWidth: s.frameWidth || 0,
				frameHeight: s.frameHeight || 0,
				resolutionChanges: s.qualityLimitationResolutionChanges || 0,
				nackCount: s.nackCount || 0,
				pliCount: s.pliCount || 0,
			});
		} else if (s.type === "candidate-pair" && (s.id === selectedPairId || (!selectedPairId && s.nominated && s.state === "succeeded"))) {
			const local = report.get(s.localCandidateId);
			const remote = report.get(s.remoteCandidateId);
			out.candidatePair = {
				state: s.state,
				local: local ? `${local.address ?? local.ip}:${local.port}` : "",
				remote: remote ? `${remote.address ?? remote.ip}:${remote.port}` : "",
			};
		}
	});
	return out;
}

async function callState(call, userId, deviceId) {
	const pc = call.peerConn;
	return {
		userId,
		deviceId,
		callId: call.callId,
		direction: call.direction,
		state: call.state,
		hangupReason: call.hangupReason ?? "",
		opponentSessionId: call.getOpponentSessionId() ?? "",
		connectionState: pc?.connectionState ?? "",
		iceConnectionState: pc?.iceConnectionState ?? "",
		signalingState: pc?.signalingState ?? "",
		connectedAfterMs: firstConnectedAt.get(call.callId) ?? -1,
		remoteFeeds: call.getRemoteFeeds().map(feedState),
		...(await rtpStats(pc)),
	};
}

async function state() {
	const st = {
		started: !!groupCall,
		startError: startError ? String(startError.stack || startError) : "",
		syncState: client?.getSyncState() ?? "",
		userId: opts?.userId ?? "",
		deviceId: opts?.deviceId ?? "",
		sessionId: client?.getSessionId() ?? "",
		groupCallId: groupCall?.groupCallId ?? "",
		groupCallState: groupCall?.state ?? "",
		groupCallType: groupCall?.type ?? "",
		enteredAfterMs: enteredAt ? enteredAt - enterStartedAt : -1,
		micMuted: groupCall ? groupCall.isMicrophoneMuted() : true,
		videoMuted: groupCall ? groupCall.isLocalVideoMuted() : true,
		screensharing: groupCall ? groupCall.isScreensharing() : false,
		turnServer: turnServerResult,
		participants: [],
		feeds: [],
		calls: [],
		droppedRemoteCandidates: dropped.candidates,
		droppedRemoteSdpCandidates: dropped.sdpLines,
		toDeviceSent,
		toDeviceReceived,
	};
	if (!groupCall) return st;
	for (const [member, devices] of groupCall.participants) {
		for (const [deviceId, p] of devices) {
			st.participants.push({ userId: member.userId, deviceId, sessionId: p.sessionId, screensharing: p.screensharing });
		}
	}
	st.feeds = [...groupCall.userMediaFeeds, ...groupCall.screenshareFeeds].map(feedState);
	// groupCall.calls is Map<userId, Map<deviceId, MatrixCall>> (private in the
	// typings, stable since the GroupCall API appeared).
	for (const [userId, byDevice] of groupCall.calls) {
		for (const [deviceId, call] of byDevice) {
			st.calls.push(await callState(call, userId, deviceId));
		}
	}
	return st;
}

// --- Commands ---------------------------------------------------------------------

function waitFor(what, check, timeoutMs) {
	return new Promise((resolve, reject) => {
		const deadline = Date.now() + timeoutMs;
		const tick = () => {
			let v;
			try {
				v = check();
			} catch (e) {
				reject(e);
				return;
			}
			if (v) {
				resolve(v);
			} else if (Date.now() > deadline) {
				reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
			} else {
				setTimeout(tick, 50);
			}
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
	client = createClient({
		baseUrl: o.homeserverUrl,
		userId: o.userId,
		accessToken: o.accessToken,
		deviceId: o.deviceId,
		useE2eForGroupCall: !!o.e2eGroupCall,
		fallbackICEServerAllowed: false,
		timelineSupport: false,
	});
	if (!o.video) {
		// Audio only: never ask for a camera, whatever the group call's type.
		const mh = client.getMediaHandler();
		const getUserMediaStream = mh.getUserMediaStream.bind(mh);
		mh.getUserMediaStream = (audio, _video, ...rest) => getUserMediaStream(audio, false, ...rest);
	}
	const sendToDevice = client.sendToDevice.bind(client);
	client.sendToDevice = (eventType, contentMap, ...rest) => {
		for (const [userId, byDevice] of contentMap) {
			for (const [deviceId, content] of byDevice) {
				pushBounded(toDeviceSent, summarizeVoip(eventType, content, { to: userId, toDevice: deviceId, at: Date.now() }));
			}
		}
		return sendToDevice(eventType, contentMap, ...rest);
	};
	client.on(ClientEvent.ToDeviceEvent, async (ev) => {
		const at = Date.now();
		// js-sdk 36 emits an Olm event while it is being decrypted: wait
		// for the clear type and content.
		if (ev.isBeingDecrypted()) await ev.getDecryptionPromise().catch(() => {});
		// encrypted: it came Olm-encrypted (decrypted or not; without crypto
		// the type stays m.room.encrypted).
		pushBounded(
			toDeviceReceived,
			summarizeVoip(ev.getType(), ev.getContent(), { sender: ev.getSender(), at, encrypted: ev.isEncrypted() }),
		);
	});
	// Record what GET /voip/turnServer answers (js-sdk asks at start and before
	// every peer call; without "uris" it proceeds without TURN).
	const turnServer = client.turnServer.bind(client);
	client.turnServer = async (...args) => {
		try {
			const res = await turnServer(...args);
			turnServerResult = `200 ${JSON.stringify(res)}`;
			return res;
		} catch (e) {
			turnServerResult = `error ${e?.httpStatus ?? ""} ${e?.errcode ?? ""} ${e?.message ?? e}`;
			throw e;
		}
	};

	if (o.crypto === "legacy") {
		// matrix-js-sdk 36: libolm (the global Olm from /olm.js) and the
		// legacy Olm/Megolm implementation, keys in memory.
		await globalThis.Olm.init({ locateFile: () => "/olm.wasm" });
		await client.initLegacyCrypto();
		// Send to devices nobody verified (the recorder's bot), as Element did.
		client.setGlobalErrorOnUnknownDevices(false);
	} else if (o.crypto === "rust") {
		await client.initRustCrypto({ useIndexedDB: false });
	}
	await client.startClient({ initialSyncLimit: 1, lazyLoadMembers: false });
	await waitFor("the first sync", () => ["PREPARED", "SYNCING"].includes(client.getSyncState()), o.timeoutMs);
	if (!client.supportsVoip()) throw new Error("matrix-js-sdk reports no VoIP support in this browser");
	await waitFor(`room ${o.roomId}`, () => client.getRoom(o.roomId), o.timeoutMs);
	await client.waitUntilRoomReadyForGroupCalls(o.roomId);

	let gc = client.getGroupCallForRoom(o.roomId);
	if (!gc) {
		const type = o.video ? GroupCallType.Video : GroupCallType.Voice;
		gc = await client.createGroupCall(o.roomId, type, false, GroupCallIntent.Room);
	}
	groupCall = gc;
	gc.on(GroupCallEvent.Error, (err) => console.error("GroupCall error", err));
	gc.on(GroupCallEvent.CallsChanged, (calls) => watchCalls(calls));
	watchCalls(gc.calls);
	enterStartedAt = Date.now();
	await gc.enter();
	enteredAt = Date.now();
	// enter() sends the member event asynchronously; the call is only joined for
	// others once our device is in room state.
	await waitFor("our device in the member state", () => ownDeviceInMemberState(), o.timeoutMs);
}

const watched = new WeakSet();

function watchCalls(calls) {
	for (const byDevice of calls.values()) {
		for (const call of byDevice.values()) {
			if (watched.has(call)) continue;
			watched.add(call);
			const mark = () => {
				if (call.state === "connected" && !firstConnectedAt.has(call.callId)) {
					firstConnectedAt.set(call.callId, Date.now() - enterStartedAt);
				}
			};
			call.on(CallEvent.State, mark);
			mark();
		}
	}
}

function ownDeviceInMemberState() {
	const ev = groupCall.room.currentState.getStateEvents("org.matrix.msc3401.call.member", client.getUserId());
	const calls = ev?.getContent()?.["m.calls"];
	if (!Array.isArray(calls)) return false;
	return calls.some(
		(c) =>
			c["m.call_id"] === groupCall.groupCallId &&
			Array.isArray(c["m.devices"]) &&
			c["m.devices"].some((d) => d.device_id === client.getDeviceId()),
	);
}

async function setMicMuted(muted) {
	const ok = await groupCall.setMicrophoneMuted(muted);
	if (!ok) throw new Error(`setMicrophoneMuted(${muted}) refused`);
}

async function setVideoMuted(muted) {
	const ok = await groupCall.setLocalVideoMuted(muted);
	if (!ok) throw new Error(`setLocalVideoMuted(${muted}) refused`);
}

async function setScreensharing(enabled) {
	// Resolves to the resulting screen-share state.
	const now = await groupCall.setScreensharingEnabled(enabled);
	if (now !== enabled) throw new Error(`setScreensharingEnabled(${enabled}) failed (see console log)`);
}

// leave hangs up all peer calls and waits until our device is gone from room state.
async function leave(timeoutMs) {
	if (!groupCall) return;
	if (groupCall.state === GroupCallState.Entered) groupCall.leave();
	await waitFor("our device to leave the member state", () => !ownDeviceInMemberState(), timeoutMs);
}

async function stop() {
	if (client) client.stopClient();
}

// sendText sends an m.text message to the room (encrypted in an encrypted room)
// and returns its event ID.
function sendText(body) {
	return sendRoomText(client, opts.roomId, body);
}

function messages() {
	return roomMessages(client, opts.roomId);
}

window.harness = { start, state, setMicMuted, setVideoMuted, setScreensharing, leave, stop, sendText, messages };
