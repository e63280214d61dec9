//! Typed settings: every field is a documented CLI flag with a `QUANTD_*` environment variable.
//!
//! Tests build a `Settings` value directly (port 0, a temporary data dir) instead of touching the
//! process environment, so tests never race each other through env vars.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::quant::kernels::KernelChoice;

/// Command line of the `quantd` binary. A bare `quantd` is `quantd serve`.
#[derive(Debug, Parser)]
#[command(
    name = "quantd",
    version,
    about = "Quantize neural-network weights as a service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the quantization workers in one process (the default).
    Serve(Settings),
    /// Apply the database migrations and exit.
    Migrate(Settings),
    /// Print the OpenAPI document generated from the code and exit.
    Openapi,
    /// Quantize a local safetensors file offline (no server, no database).
    Quantize(QuantizeArgs),
}

/// Arguments of `quantd quantize`.
#[derive(Debug, Clone, Args)]
pub struct QuantizeArgs {
    /// Input safetensors file.
    pub input: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Quantization scheme, e.g. int8.
    #[arg(long, default_value = "int8")]
    pub scheme: String,
    /// Scheme options as JSON (may include "skip" and "overrides"), e.g. '{"granularity":"tensor"}'.
    #[arg(long)]
    pub options: Option<String>,
    /// Output format: safetensors (compressed-tensors), dequantized, dequantized-f16.
    #[arg(long, default_value = "safetensors")]
    pub format: String,
    /// The model's name, written as GGUF `general.name` (a job writes the uploaded model's
    /// name there). Default: the input file's name without its extension.
    #[arg(long)]
    pub name: Option<String>,
    /// The model's config.json, into which quantization_config is merged.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to write the resulting config.json (default: config.json beside the output).
    #[arg(long)]
    pub config_out: Option<PathBuf>,
    /// Where to write the per-tensor report as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Kernel instruction set: auto, scalar, avx2, avx512, neon.
    #[arg(long, env = "QUANTD_KERNELS", default_value = "auto")]
    pub kernels: KernelChoice,
    /// Largest accepted safetensors JSON header in bytes.
    #[arg(long, default_value = "100MiB", value_parser = parse_byte_size)]
    pub max_header_bytes: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Every setting of a running service.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on. Port 0 picks a free port (tests use it).
    #[arg(long, env = "QUANTD_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Folder for blobs (uploads and artifacts), staging files and the default SQLite database.
    #[arg(long, env = "QUANTD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Metadata database URL. Default: `sqlite://<data dir>/quantd.db`.
    #[arg(long, env = "QUANTD_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Blocking worker threads for quantization. Default: the number of cores.
    #[arg(long, env = "QUANTD_WORKERS")]
    pub workers: Option<usize>,

    /// Largest accepted upload in bytes (suffixes KiB, MiB, GiB, KB, MB, GB allowed).
    #[arg(long, env = "QUANTD_MAX_UPLOAD_BYTES", default_value = "64GiB", value_parser = parse_byte_size)]
    pub max_upload_bytes: u64,

    /// Largest accepted safetensors JSON header in bytes.
    #[arg(long, env = "QUANTD_MAX_HEADER_BYTES", default_value = "100MiB", value_parser = parse_byte_size)]
    pub max_header_bytes: u64,

    /// Bytes of safetensors JSON headers buffered at once across all concurrent uploads. An
    /// upload reserves its declared header length before buffering it and releases it once the
    /// header is parsed; one that does not fit answers 503 with Retry-After. Must be at least
    /// `--max-header-bytes`, or one largest header could never be accepted.
    #[arg(long, env = "QUANTD_HEADER_BUFFER_BUDGET_BYTES", default_value = "256MiB", value_parser = parse_byte_size)]
    pub header_buffer_budget_bytes: u64,

    /// Seconds a client has to send a request's complete head (request line and headers), also
    /// how long an idle keep-alive connection stays open; then the connection is closed. 0 turns
    /// it off.
    #[arg(long, env = "QUANTD_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 30)]
    pub header_read_timeout_seconds: u64,

    /// Seconds a request body may go without a byte arriving while the server waits for it;
    /// then the request fails (an upload answers 408 and its staging file is removed). 0 turns
    /// it off.
    #[arg(long, env = "QUANTD_BODY_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub body_idle_timeout_seconds: u64,

    /// Free space kept in reserve on the data dir's file system. Below it, uploads and job
    /// creation answer 507 before writing anything (so the database always has room to record
    /// deletes and job outcomes) and `/readyz` reports not ready. An upload that declares its
    /// length needs that much more. 0 turns the reserve off.
    #[arg(long, env = "QUANTD_MIN_FREE_BYTES", default_value = "256MiB", value_parser = parse_byte_size)]
    pub min_free_bytes: u64,

    /// Seconds a staging file (an upload in progress, a job's output being written) may go
    /// without a write before the reaper removes it; committed blobs that no record refers to
    /// are removed after the same time. At start-up both are reaped at once.
    #[arg(long, env = "QUANTD_STAGING_IDLE_SECONDS", default_value_t = 900)]
    pub staging_idle_seconds: u64,

    /// Largest `__metadata__` map a model may carry (its keys and values in bytes); larger ones
    /// are refused with 422, since the map is stored and shown with the model.
    #[arg(long, env = "QUANTD_MAX_METADATA_BYTES", default_value = "1MiB", value_parser = parse_byte_size)]
    pub max_metadata_bytes: u64,

    /// Jobs that may wait in the queue; beyond it job creation answers 503 with Retry-After.
    #[arg(long, env = "QUANTD_MAX_QUEUED_JOBS", default_value_t = 1000)]
    pub max_queued_jobs: u64,

    /// Kernel instruction set: auto (detect at run time), scalar, avx2, avx512 or neon.
    #[arg(long, env = "QUANTD_KERNELS", default_value = "auto")]
    pub kernels: KernelChoice,

    /// Attempts a job gets before it is marked failed (crashes and transient errors count).
    #[arg(long, env = "QUANTD_JOB_MAX_ATTEMPTS", default_value_t = 3)]
    pub job_max_attempts: u32,

    /// Seconds a worker's claim on a job lasts without a heartbeat before another worker may take it.
    #[arg(long, env = "QUANTD_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,

    /// Seconds SIGTERM waits for running jobs before handing them back to the queue.
    #[arg(long, env = "QUANTD_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,

    /// Memory the loaded (served) models may use together; least recently used ones are
    /// unloaded beyond it.
    #[arg(long, env = "QUANTD_SERVING_MEMORY_BYTES", default_value = "4GiB", value_parser = parse_byte_size)]
    pub serving_memory_bytes: u64,

    /// Inference requests admitted at once; more are answered 429 with Retry-After.
    #[arg(long, env = "QUANTD_MAX_INFLIGHT_INFERENCES", default_value_t = 64)]
    pub max_inflight_inferences: usize,

    /// Serve int8 per-channel weights against int8 activations with one scale per row (the
    /// per-row int8 × int8 GEMM) instead of one scale per 32-element block: less accurate, and
    /// not faster where the block kernels have VNNI (see BENCHMARKS.md).
    #[arg(long, env = "QUANTD_INT8_ACTIVATIONS", default_value_t = false)]
    pub int8_activations: bool,

    /// Dynamic batching: concurrent inference requests for one model are merged into batches
    /// of up to this many items (sequences or rows).
    #[arg(long, env = "QUANTD_BATCH_MAX_SIZE", default_value_t = 32)]
    pub batch_max_size: usize,

    /// Dynamic batching: how long (milliseconds) the first request of a batch waits for others
    /// to join it. 0 batches only the requests that are already waiting.
    #[arg(long, env = "QUANTD_BATCH_MAX_DELAY_MS", default_value_t = 2)]
    pub batch_max_delay_ms: u64,

    /// Log line format.
    #[arg(long, env = "QUANTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Testing aid: sleep this many milliseconds before each tensor of a job, so that crash,
    /// cancellation and shutdown behaviour can be exercised on small models. Keep 0 in production.
    #[arg(
        long,
        env = "QUANTD_DEBUG_TENSOR_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub debug_tensor_delay_ms: u64,

    /// Testing aid: every inference batch sleeps this many milliseconds before it runs, so that
    /// admission (429) and batching can be exercised. Keep 0 in production.
    #[arg(
        long,
        env = "QUANTD_DEBUG_INFERENCE_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub debug_inference_delay_ms: u64,
}

impl Settings {
    /// Settings as a bare `quantd` would use them: defaults overridden by `QUANTD_*` env vars.
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            settings: Settings,
        }
        Wrapper::try_parse_from(["quantd"]).map(|w| w.settings)
    }

    /// Defaults for tests and embedding: loopback port 0 and the given data folder.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut settings = Self::from_env_free_defaults();
        settings.data_dir = data_dir.into();
        settings.bind = "127.0.0.1:0".parse().expect("literal address");
        // A small reserve: test machines may have little disk, and tests that exercise the
        // reserve set their own.
        settings.min_free_bytes = 16 << 20;
        settings
    }

    fn from_env_free_defaults() -> Self {
        Settings {
            bind: "127.0.0.1:8080".parse().expect("literal address"),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            workers: None,
            max_upload_bytes: 64 << 30,
            max_header_bytes: 100 << 20,
            header_buffer_budget_bytes: 256 << 20,
            header_read_timeout_seconds: 30,
            body_idle_timeout_seconds: 60,
            max_queued_jobs: 1000,
            max_metadata_bytes: 1 << 20,
            min_free_bytes: 256 << 20,
            staging_idle_seconds: 900,
            kernels: KernelChoice::Auto,
            job_max_attempts: 3,
            lease_seconds: 30,
            shutdown_grace_seconds: 20,
            serving_memory_bytes: 4 << 30,
            max_inflight_inferences: 64,
            int8_activations: false,
            batch_max_size: 32,
            batch_max_delay_ms: 2,
            log_format: LogFormat::Text,
            debug_tensor_delay_ms: 0,
            debug_inference_delay_ms: 0,
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("quantd.db").display()
            ),
        }
    }

    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.max(1))
    }

    /// How long a client may take to send a request head; `None` when turned off.
    pub fn header_read_timeout(&self) -> Option<Duration> {
        (self.header_read_timeout_seconds > 0)
            .then(|| Duration::from_secs(self.header_read_timeout_seconds))
    }

    /// How long a request body may stall; `None` when turned off.
    pub fn body_idle_timeout(&self) -> Option<Duration> {
        (self.body_idle_timeout_seconds > 0)
            .then(|| Duration::from_secs(self.body_idle_timeout_seconds))
    }

    /// Refuses combinations of settings that cannot work, naming the flags to change.
    pub fn check(&self) -> Result<(), String> {
        if self.header_buffer_budget_bytes < self.max_header_bytes {
            return Err(format!(
                "the header buffer budget (QUANTD_HEADER_BUFFER_BUDGET_BYTES = {}) is smaller than \
                 the largest accepted header (QUANTD_MAX_HEADER_BYTES = {}): an upload with the \
                 largest header could never be accepted; raise the budget or lower the limit",
                self.header_buffer_budget_bytes, self.max_header_bytes
            ));
        }
        if self.staging_idle_seconds == 0 {
            return Err(
                "QUANTD_STAGING_IDLE_SECONDS must be at least 1: it is how long leftovers \
                 of interrupted writes stay before the reaper removes them"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// Parses `1024`, `64KiB`, `100MiB`, `2GiB`, `5MB`, … into bytes.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a byte size like 1048576 or 100MiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown byte-size unit '{other}' in '{text}'")),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("byte size '{text}' overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        assert_eq!(parse_byte_size("1024"), Ok(1024));
        assert_eq!(parse_byte_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_byte_size("2 GB"), Ok(2_000_000_000));
        assert!(parse_byte_size("12 parsecs").is_err());
        assert!(parse_byte_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let settings = Settings::from_env_free_defaults();
        assert_eq!(settings.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.max_header_bytes, 100 << 20);
        assert!(settings.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn hand_written_defaults_match_the_flag_defaults() {
        // `from_env` reads QUANTD_* variables: the comparison holds only without them.
        if std::env::vars().any(|(name, _)| name.starts_with("QUANTD_")) {
            return;
        }
        let from_flags = Settings::from_env().expect("defaults parse");
        let by_hand = Settings::from_env_free_defaults();
        assert_eq!(format!("{from_flags:?}"), format!("{by_hand:?}"));
        assert!(by_hand.check().is_ok());
    }

    #[test]
    fn a_header_budget_below_the_header_limit_is_refused() {
        let mut settings = Settings::from_env_free_defaults();
        settings.max_header_bytes = 100 << 20;
        settings.header_buffer_budget_bytes = 10 << 20;
        let message = settings.check().unwrap_err();
        assert!(
            message.contains("QUANTD_HEADER_BUFFER_BUDGET_BYTES"),
            "{message}"
        );
        settings.header_buffer_budget_bytes = 100 << 20;
        assert!(settings.check().is_ok());
    }
}
