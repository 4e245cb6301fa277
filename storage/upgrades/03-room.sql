-- v2 -> v3: Why a recording stopped; consent to be recorded, per room

ALTER TABLE recording ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';

-- Who said "!rec consent" in a room (recording.require_consent).
CREATE TABLE recording_consent (
	room_id  TEXT   NOT NULL,
	user_id  TEXT   NOT NULL,
	given_at BIGINT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
