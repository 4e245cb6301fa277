-- v0 -> v4: Latest revision

-- Virtual recorder users: each has its own device, kept across restarts.
CREATE TABLE virtual_user (
	user_id      TEXT    PRIMARY KEY,
	device_id    TEXT    NOT NULL,
	access_token TEXT    NOT NULL DEFAULT '',
	next_batch   TEXT    NOT NULL DEFAULT '',
	created_at   BIGINT  NOT NULL
);

-- Rooms the bot was invited to or is in, with per-room settings.
CREATE TABLE room (
	room_id         TEXT    PRIMARY KEY,
	inviter         TEXT    NOT NULL DEFAULT '',
	joined_at       BIGINT  NOT NULL DEFAULT 0,
	left_at         BIGINT  NOT NULL DEFAULT 0,
	greeted         BOOLEAN NOT NULL DEFAULT false,
	auto_record     BOOLEAN NOT NULL DEFAULT false,
	require_consent BOOLEAN NOT NULL DEFAULT false
);

-- Appservice transactions already processed, so a retried transaction is a no-op
-- even after a restart.
CREATE TABLE appservice_txn (
	txn_id       TEXT   PRIMARY KEY,
	processed_at BIGINT NOT NULL
);
CREATE INDEX appservice_txn_processed_at_idx ON appservice_txn (processed_at);

-- Small process-wide values (e.g. the crypto pickle key).
CREATE TABLE kv_store (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

-- One recording per joined call.
CREATE TABLE recording (
	id           TEXT   PRIMARY KEY,
	room_id      TEXT   NOT NULL,
	conf_id      TEXT   NOT NULL DEFAULT '',
	virtual_user TEXT   NOT NULL DEFAULT '',
	state        TEXT   NOT NULL, -- recording, finished, failed, repaired
	error        TEXT   NOT NULL DEFAULT '',
	started_at   BIGINT NOT NULL,
	ended_at     BIGINT NOT NULL DEFAULT 0,
	-- folder of the recording's files in the file store
	folder       TEXT   NOT NULL,
	room_name    TEXT   NOT NULL DEFAULT '', -- at recording time
	-- why it stopped: stopped, empty, no_media, max_duration, call_ended, removed,
	-- shutdown, interrupted, size_limit, disk_full, recorder_restarted
	stop_reason  TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX recording_room_idx ON recording (room_id, started_at);
CREATE INDEX recording_started_idx ON recording (started_at);

-- One row per file (one participant stream segment).
CREATE TABLE recording_file (
	recording_id   TEXT    NOT NULL REFERENCES recording (id) ON DELETE CASCADE,
	name           TEXT    NOT NULL, -- file name inside the recording's folder
	user_id        TEXT    NOT NULL,
	device_id      TEXT    NOT NULL DEFAULT '',
	session_id     TEXT    NOT NULL DEFAULT '',
	purpose        TEXT    NOT NULL DEFAULT '',
	kind           TEXT    NOT NULL, -- webm or ogg
	codecs         TEXT    NOT NULL DEFAULT '',
	bytes          BIGINT  NOT NULL DEFAULT 0,
	duration_ms    BIGINT  NOT NULL DEFAULT 0,
	started_at     BIGINT  NOT NULL DEFAULT 0, -- wall clock of the file's time zero, ms
	segment        INTEGER NOT NULL DEFAULT 0,
	width          INTEGER NOT NULL DEFAULT 0,
	height         INTEGER NOT NULL DEFAULT 0,
	mute_intervals TEXT    NOT NULL DEFAULT '[]', -- JSON [{start,end}]
	state          TEXT    NOT NULL, -- finished, failed, repaired
	display_name   TEXT    NOT NULL DEFAULT '', -- at recording time
	avatar_url     TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (recording_id, name)
);

-- Calls the recorder is in right now, so a restart knows what it was doing.
CREATE TABLE active_call (
	room_id      TEXT   PRIMARY KEY,
	recording_id TEXT   NOT NULL DEFAULT '',
	conf_id      TEXT   NOT NULL,
	user_id      TEXT   NOT NULL,
	device_id    TEXT   NOT NULL,
	session_id   TEXT   NOT NULL,
	joined_at    BIGINT NOT NULL
);

-- Who said "!rec consent" in a room (recording.require_consent).
CREATE TABLE recording_consent (
	room_id  TEXT   NOT NULL,
	user_id  TEXT   NOT NULL,
	given_at BIGINT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);

-- One mixdown job per recording: its files are recording_file rows with
-- purpose 'mixdown'.
CREATE TABLE mixdown (
	recording_id TEXT    PRIMARY KEY REFERENCES recording (id) ON DELETE CASCADE,
	state        TEXT    NOT NULL, -- queued, running, finished, failed
	progress     INTEGER NOT NULL DEFAULT 0, -- per mille
	error        TEXT    NOT NULL DEFAULT '',
	queued_at    BIGINT  NOT NULL,
	started_at   BIGINT  NOT NULL DEFAULT 0,
	ended_at     BIGINT  NOT NULL DEFAULT 0
);

-- Webhook deliveries not yet acknowledged (and, for a while, those that were).
CREATE TABLE webhook_outbox (
	id              TEXT    PRIMARY KEY, -- idempotency id, sent with every attempt
	url             TEXT    NOT NULL,
	event           TEXT    NOT NULL,
	body            TEXT    NOT NULL,
	created_at      BIGINT  NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at BIGINT  NOT NULL,
	delivered_at    BIGINT  NOT NULL DEFAULT 0,
	last_error      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (delivered_at, next_attempt_at);
