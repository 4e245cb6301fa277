-- v3 -> v4: Mixdowns, webhook outbox, names at recording time

-- The room's name and each participant's profile as they were when recorded.
ALTER TABLE recording ADD COLUMN room_name TEXT NOT NULL DEFAULT '';
ALTER TABLE recording_file ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
ALTER TABLE recording_file ADD COLUMN avatar_url TEXT NOT NULL DEFAULT '';

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
