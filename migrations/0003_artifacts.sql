-- Results of succeeded jobs. Each artifact has files (the quantized safetensors, config.json,
-- companion files carried over from the model), each a blob in the content-addressed store.
CREATE TABLE artifacts (
    id          TEXT PRIMARY KEY,            -- UUIDv7
    job_id      TEXT NOT NULL,
    model_id    TEXT NOT NULL,
    scheme      TEXT NOT NULL,
    options     TEXT NOT NULL,
    format      TEXT NOT NULL,
    sha256      TEXT NOT NULL,               -- the primary file's digest (the download's ETag)
    size_bytes  INTEGER NOT NULL,
    report      TEXT NOT NULL,               -- JSON: per-tensor error report and totals
    created_at  TEXT NOT NULL
);
CREATE INDEX artifacts_model ON artifacts (model_id);

CREATE TABLE artifact_files (
    artifact_id TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    filename    TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    PRIMARY KEY (artifact_id, filename)
);
CREATE INDEX artifact_files_sha256 ON artifact_files (sha256);
