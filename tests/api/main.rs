//! One integration-test binary: the real service over real HTTP, a fresh data dir and SQLite
//! database per test.

mod helpers;

mod container;
mod downloads;
mod embeddings;
mod envelopes;
mod faults;
mod forced_isa;
mod ggml_oracle;
mod gguf;
mod inference;
mod interop;
mod jobs;
mod limits;
mod minilm;
mod openapi;
mod pinned;
mod process;
mod quantize;
mod readers;
mod readme;
mod tidy;
mod uploads;
