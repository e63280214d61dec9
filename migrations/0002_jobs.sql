-- The durable job queue. A worker claims a row by setting lease_owner and lease_expires_at in
-- one statement; it renews the lease by heartbeat; a row whose lease expired is claimable again
-- (a crashed worker's job runs again) until attempt reaches max_attempts.
-- jobs.model_id deliberately has no foreign key: finished jobs outlive a deleted model.
CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,    -- UUIDv7
    model_id            TEXT NOT NULL,
    scheme              TEXT NOT NULL,
    options             TEXT NOT NULL,       -- JSON, canonical (defaults filled in)
    format              TEXT NOT NULL,       -- output format: safetensors, dequantized, ...
    state               TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt             INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    lease_owner         TEXT,
    lease_expires_at_ms INTEGER,             -- unix milliseconds
    tensors_done        INTEGER NOT NULL DEFAULT 0,
    tensors_total       INTEGER NOT NULL DEFAULT 0,
    bytes_done          INTEGER NOT NULL DEFAULT 0,
    bytes_total         INTEGER NOT NULL DEFAULT 0,
    artifact_id         TEXT,
    error               TEXT,                -- JSON problem object once failed
    created_at          TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    updated_at          TEXT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_model ON jobs (model_id, state);
