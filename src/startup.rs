//! Builds the application from [`Settings`] and runs it until a shutdown signal: the seam that
//! `main` and the integration tests share (tests build it on port 0 with a temporary data dir).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::catalog::{Catalog, CatalogSettings, HeaderBudget};
use crate::config::Settings;
use crate::dispatch::Dispatch;
use crate::formats::safetensors::Limits;
use crate::http::limits::body_idle_timeout_layer;
use crate::http::{self, AppInner, AppState};
use crate::jobs::runner::{JobRunner, RunnerParts, RunnerSettings};
use crate::pool::WorkerPool;
use crate::store::reaper;
use crate::store::reserve::StorageReserve;
use crate::store::sqlite::SqliteStore;
use crate::store::{BlobStore, SharedMetadataStore};

pub struct Application {
    /// Held for the process's life: one server per data dir, so that start-up may treat every
    /// staging file as abandoned.
    _data_dir_lock: std::fs::File,
    listener: TcpListener,
    state: AppState,
    runner: Arc<JobRunner>,
    shutdown: CancellationToken,
}

/// Opens the metadata store named by the settings and applies migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<SharedMetadataStore> {
    let url = settings.database_url();
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(&url)
            .await
            .with_context(|| format!("opening the SQLite database {url}"))?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("unsupported database URL '{url}': this build supports sqlite:// URLs")
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating the data dir {}", settings.data_dir.display()))?;
        let data_dir_lock = lock_data_dir(&settings.data_dir)?;
        let dispatch = Dispatch::select(settings.kernels).context("selecting kernels")?;
        info!(
            isa = %dispatch.quant.isa,
            tables = %dispatch,
            requested = ?dispatch.requested,
            available = ?Dispatch::available_isas().iter().map(|i| i.name()).collect::<Vec<_>>(),
            available_inference = ?Dispatch::available_inference_isas().iter().map(|i| i.name()).collect::<Vec<_>>(),
            "kernels selected"
        );
        let store = open_store(&settings).await?;
        let blobs =
            BlobStore::local(settings.data_dir.join("blobs")).context("opening the blob store")?;
        // Nothing else writes to this data dir (we hold its lock): whatever is staged was
        // abandoned by a process that died, and unreferenced blobs by a commit that was cut off.
        reaper::log_pass(
            "start-up",
            &reaper::reap(store.as_ref(), &blobs, Duration::ZERO).await,
        );
        let reserve = StorageReserve::new(
            std::iter::once(settings.data_dir.join("blobs")).chain(store.local_dir()),
            settings.min_free_bytes,
        );
        let pool = WorkerPool::new(settings.worker_count());
        let job_wake = Arc::new(Notify::new());
        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let serving = Arc::new(crate::serving::ServingRegistry::new(
            store.clone(),
            blobs.clone(),
            pool.clone(),
            Limits {
                max_header_bytes: settings.max_header_bytes,
                max_file_bytes: settings.max_upload_bytes,
            },
            crate::serving::ServingOptions {
                memory_budget: usize::try_from(settings.serving_memory_bytes).unwrap_or(usize::MAX),
                max_inflight: settings.max_inflight_inferences,
                int8_activations: settings.int8_activations,
                max_batch: settings.batch_max_size,
                max_batch_delay: Duration::from_millis(settings.batch_max_delay_ms),
                debug_delay: Duration::from_millis(settings.debug_inference_delay_ms),
                dispatch,
            },
        ));
        let catalog = Arc::new(
            Catalog::new(
                store.clone(),
                blobs.clone(),
                reserve.clone(),
                HeaderBudget::new(settings.header_buffer_budget_bytes),
                CatalogSettings::from_settings(&settings),
                job_wake.clone(),
            )
            .with_serving(serving.clone()),
        );
        let runner = JobRunner::new(
            RunnerParts {
                store: store.clone(),
                blobs: blobs.clone(),
                catalog: catalog.clone(),
                pool: pool.clone(),
                dispatch,
                wake: job_wake.clone(),
            },
            RunnerSettings {
                lease: settings.lease(),
                limits: Limits {
                    max_header_bytes: settings.max_header_bytes,
                    max_file_bytes: settings.max_upload_bytes,
                },
                shutdown_grace: Duration::from_secs(settings.shutdown_grace_seconds),
                tensor_delay: Duration::from_millis(settings.debug_tensor_delay_ms),
                poll_interval: Duration::from_millis(500),
            },
        );
        let state = AppState {
            inner: Arc::new(AppInner {
                serving,
                settings,
                store,
                blobs,
                reserve,
                dispatch,
                pool,
                job_wake,
                catalog,
                started_at: Instant::now(),
            }),
        };
        Ok(Application {
            _data_dir_lock: data_dir_lock,
            listener,
            state,
            runner,
            shutdown: CancellationToken::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The serving registry, for in-process inference (benchmarks) next to the HTTP API.
    pub fn serving(&self) -> Arc<crate::serving::ServingRegistry> {
        self.state.inner.serving.clone()
    }

    /// Cancel this token to stop the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled: stops accepting connections, lets running
    /// jobs finish within the grace period (handing the rest back to the queue), joins workers.
    pub async fn run(self) -> anyhow::Result<()> {
        let Application {
            _data_dir_lock,
            listener,
            state,
            runner,
            shutdown,
        } = self;
        info!(address = %listener.local_addr()?, workers = state.pool.size(), "quantd listening");
        let runner_task = tokio::spawn(runner.run(shutdown.clone()));
        let idle = Duration::from_secs(state.settings.staging_idle_seconds);
        let reaper_task = tokio::spawn(reaper::run_periodically(
            state.store.clone(),
            state.blobs.clone(),
            idle,
            (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            shutdown.clone(),
        ));
        let pool = state.pool.clone();
        let header_read_timeout = state.settings.header_read_timeout();
        let body_idle_timeout = state.settings.body_idle_timeout();
        let app = http::router(state);
        let app = match body_idle_timeout {
            Some(timeout) => app.layer(body_idle_timeout_layer(timeout)),
            None => app,
        };
        // Our connection loop rather than `axum::serve`: it sets hyper's limits and the
        // header-read timeout (http::serve).
        http::serve::serve(listener, app, header_read_timeout, shutdown.clone()).await;
        runner_task.await.context("joining the job runner")?;
        reaper_task.await.context("joining the reaper")?;
        tokio::task::spawn_blocking(move || pool.shutdown())
            .await
            .context("joining the worker pool")?;
        info!("quantd stopped");
        Ok(())
    }
}

/// Takes the data dir's lock file, or says which process holds it.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("quantd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another quantd process uses the data dir {} (it holds {}); give each server its own data dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    info!("shutdown signal received");
}
