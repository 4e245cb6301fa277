-- v0 -> v1: Latest revision

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
