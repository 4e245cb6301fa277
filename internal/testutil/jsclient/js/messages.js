// Room messages for the pages (page.js and rtcpage.js): send a text, list
// what the client sees on the room's live timeline.

export async function sendText(client, roomId, body) {
	const res = await client.sendTextMessage(roomId, body);
	return res.event_id;
}

// messages lists the room's m.room.message events on the live timeline as the
// client sees them: decrypted when it could, with the reason when it could not.
export function messages(client, roomId) {
	const room = client?.getRoom(roomId);
	if (!room) return [];
	return room
		.getLiveTimeline()
		.getEvents()
		.filter((ev) => ev.getType() === "m.room.message" || ev.isEncrypted())
		.map((ev) => {
			const c = ev.getContent() || {};
			return {
				eventId: ev.getId(),
				sender: ev.getSender(),
				type: ev.getType(),
				wireType: ev.getWireType(),
				encrypted: ev.isEncrypted(),
				decryptionFailure: ev.isDecryptionFailure(),
				msgtype: c.msgtype ?? "",
				body: c.body ?? "",
				replyTo: c["m.relates_to"]?.["m.in_reply_to"]?.event_id ?? "",
			};
		});
}
