-- Uploaded models. The weights live in the blob store under their sha256; this row is the
-- metadata the API shows. Several models may share one blob (the same bytes uploaded twice).
CREATE TABLE models (
    id            TEXT PRIMARY KEY,          -- UUIDv7, so ids sort by creation time
    name          TEXT NOT NULL,
    sha256        TEXT NOT NULL,             -- hex digest of the safetensors file = blob key
    size_bytes    INTEGER NOT NULL,
    n_tensors     INTEGER NOT NULL,
    n_parameters  INTEGER NOT NULL,
    dtypes        TEXT NOT NULL,             -- JSON object: dtype name -> tensor count
    metadata      TEXT NOT NULL,             -- JSON object: the safetensors __metadata__
    created_at    TEXT NOT NULL              -- RFC 3339
);
CREATE INDEX models_sha256 ON models (sha256);

-- Companion files of a model (config.json, tokenizer.json, ...), also content-addressed.
CREATE TABLE model_files (
    model_id    TEXT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    filename    TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (model_id, filename)
);
CREATE INDEX model_files_sha256 ON model_files (sha256);
