-- v2 -> v3: Why a recording stopped
ALTER TABLE recording ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';
