//! The runner's state transitions against a real database, blob store and worker pool: claim →
//! running → succeeded, failed, cancelled, handed back on shutdown; an expired lease reclaimed;
//! a vanished last attempt failed. And the problem objects job failures are stored as.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::*;
use crate::catalog::tests::fixture::{safetensors, settings, small_model, Fixture};
use crate::catalog::{Cancellation, JobRequest};
use crate::quant::kernels::KernelChoice;
use crate::store::blobs::BlobError;
use crate::store::JobState;

/// A running runner over a fixture; stopped (and its pool joined) by [`Running::stop`].
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    pool: Arc<WorkerPool>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the runner stops")
            .expect("the runner does not panic");
        let pool = self.pool;
        tokio::task::spawn_blocking(move || pool.shutdown())
            .await
            .unwrap();
    }
}

fn runner_settings(lease: Duration, tensor_delay: Duration) -> RunnerSettings {
    RunnerSettings {
        lease,
        limits: Limits {
            max_header_bytes: 1 << 20,
            max_file_bytes: 1 << 30,
        },
        shutdown_grace: Duration::ZERO,
        tensor_delay,
        poll_interval: Duration::from_millis(20),
    }
}

fn start(fixture: &Fixture, settings: RunnerSettings) -> Running {
    let pool = WorkerPool::new(1);
    let runner = JobRunner::new(
        RunnerParts {
            store: fixture.store.clone(),
            blobs: fixture.blobs.clone(),
            catalog: fixture.catalog.clone(),
            pool: pool.clone(),
            dispatch: crate::dispatch::Dispatch::select(KernelChoice::Auto).unwrap(),
            wake: fixture.job_wake.clone(),
        },
        settings,
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    Running {
        shutdown,
        task,
        pool,
    }
}

async fn queue_int8(fixture: &Fixture, model: &[u8]) -> JobRecord {
    let model = fixture.ingest("m", model.to_vec()).await;
    let request = JobRequest {
        model_id: model.id,
        spec: JobSpec::parse("int8", None, None).unwrap(),
    };
    fixture.catalog.create_job(&request).await.unwrap()
}

/// Polls the job until `done` holds (or fails the test after 20 s).
async fn wait_for(fixture: &Fixture, id: Uuid, done: impl Fn(&JobRecord) -> bool) -> JobRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = fixture.catalog.job(id).await.unwrap().expect("job exists");
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job stuck: {:?} attempt {} error {:?}",
            job.state,
            job.attempt,
            job.error
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_queued_job_is_claimed_run_and_succeeds_with_its_artifact() {
    let fixture = Fixture::new().await;
    let job = queue_int8(&fixture, &small_model()).await;
    let running = start(&fixture, runner_settings(LEASE, Duration::ZERO));
    let done = wait_for(&fixture, job.id, |j| j.state.is_terminal()).await;
    running.stop().await;

    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.error);
    assert_eq!(done.attempt, 1);
    assert_eq!(done.progress.tensors_done, 3);
    assert!(done.error.is_none());
    let artifact = fixture
        .catalog
        .artifact(done.artifact_id.expect("artifact"))
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(artifact.scheme, "int8");
    assert!(fixture.blobs.local_path(&artifact.sha256).exists());
    assert!(fixture.staging_files().is_empty());
}

#[tokio::test]
async fn a_model_that_cannot_be_quantized_fails_once_with_its_problem() {
    let fixture = Fixture::new().await;
    let mut weights = vec![0.5_f32; 64];
    weights[7] = f32::NAN;
    let model = safetensors(&[("w", vec![4, 16], weights)], &[]);
    let job = queue_int8(&fixture, &model).await;
    let running = start(&fixture, runner_settings(LEASE, Duration::ZERO));
    let done = wait_for(&fixture, job.id, |j| j.state.is_terminal()).await;
    running.stop().await;

    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.attempt, 1, "not retried: the input is at fault");
    let error = done.error.expect("a problem object");
    assert_eq!(error["type"], "/problems/non-finite-weights");
    assert_eq!(error["title"], "The model cannot be quantized as requested");
    assert_eq!(error["status"], 422);
    assert!(error["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(done.artifact_id.is_none());
    assert_eq!(fixture.committed_blobs().len(), 1, "only the model");
    assert!(fixture.staging_files().is_empty());
}

#[tokio::test]
async fn a_running_job_stops_at_the_next_tensor_when_cancelled() {
    let fixture = Fixture::new().await;
    let job = queue_int8(&fixture, &small_model()).await;
    // Heartbeats every 200 ms; each tensor takes 400 ms.
    let running = start(
        &fixture,
        runner_settings(Duration::from_millis(600), Duration::from_millis(400)),
    );
    wait_for(&fixture, job.id, |j| j.state == JobState::Running).await;
    assert!(matches!(
        fixture.catalog.cancel_job(job.id).await.unwrap(),
        Cancellation::Requested(_)
    ));
    let done = wait_for(&fixture, job.id, |j| j.state.is_terminal()).await;
    running.stop().await;

    assert_eq!(done.state, JobState::Cancelled);
    assert!(done.artifact_id.is_none());
    assert!(done.progress.tensors_done < 3);
    assert!(fixture.staging_files().is_empty());
}

#[tokio::test]
async fn shutdown_hands_a_running_job_back_without_counting_the_attempt() {
    let fixture = Fixture::new().await;
    let job = queue_int8(&fixture, &small_model()).await;
    let running = start(
        &fixture,
        runner_settings(Duration::from_millis(600), Duration::from_millis(500)),
    );
    wait_for(&fixture, job.id, |j| j.state == JobState::Running).await;
    running.stop().await;

    let released = fixture.catalog.job(job.id).await.unwrap().unwrap();
    assert_eq!(released.state, JobState::Queued);
    assert_eq!(released.attempt, 0);
    assert!(fixture.staging_files().is_empty());

    // The next runner takes it up and finishes it.
    let running = start(&fixture, runner_settings(LEASE, Duration::ZERO));
    let done = wait_for(&fixture, job.id, |j| j.state.is_terminal()).await;
    running.stop().await;
    assert_eq!((done.state, done.attempt), (JobState::Succeeded, 1));
}

#[tokio::test]
async fn a_job_whose_worker_vanished_is_reclaimed_once_its_lease_expires() {
    let fixture = Fixture::new().await;
    let job = queue_int8(&fixture, &small_model()).await;
    // A worker claims it and dies: its lease runs out almost at once.
    let ghost = fixture
        .store
        .claim_job("ghost", Duration::from_millis(1))
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(ghost.attempt, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;

    let running = start(&fixture, runner_settings(LEASE, Duration::ZERO));
    let done = wait_for(&fixture, job.id, |j| j.state.is_terminal()).await;
    running.stop().await;
    assert_eq!((done.state, done.attempt), (JobState::Succeeded, 2));
    // The ghost's late outcome cannot overwrite it.
    let stale = Lease {
        job_id: job.id,
        owner: "ghost".into(),
        attempt: 1,
    };
    assert!(!fixture
        .store
        .fail_job(&stale, &serde_json::json!({}), false)
        .await
        .unwrap());
}

#[tokio::test]
async fn a_last_attempt_whose_worker_vanished_is_failed_as_exhausted() {
    let mut one_attempt = settings();
    one_attempt.job_max_attempts = 1;
    let fixture = Fixture::with(one_attempt, 0, 1 << 20).await;
    let job = queue_int8(&fixture, &small_model()).await;
    fixture
        .store
        .claim_job("ghost", Duration::from_millis(1))
        .await
        .unwrap()
        .expect("claimed");

    // The runner looks for exhausted jobs once per lease period.
    let running = start(
        &fixture,
        runner_settings(Duration::from_millis(100), Duration::ZERO),
    );
    let done = wait_for(&fixture, job.id, |j| j.state.is_terminal()).await;
    running.stop().await;
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.attempt, 1);
    assert_eq!(
        done.error,
        Some(serde_json::json!({
            "type": "/problems/job-attempts-exhausted",
            "title": "Job attempts exhausted",
            "status": 500,
            "detail": "the worker running this job stopped responding on its last allowed attempt",
        }))
    );
}

/// Each failure's stored problem object, exactly as the job API has always shown it.
#[test]
fn job_failures_render_the_problem_objects_the_api_shows() {
    let problem = |slug: &str, title: &str, status: u16, detail: &str| {
        serde_json::json!({
            "type": format!("/problems/{slug}"),
            "title": title,
            "status": status,
            "detail": detail,
        })
    };
    let disk_full = || std::io::Error::from(std::io::ErrorKind::StorageFull);
    let cases = [
        (
            JobFailure::ModelDeleted,
            problem(
                "model-not-found",
                "Model not found",
                404,
                "the model was deleted before the job ran",
            ),
            false,
        ),
        (
            JobFailure::InvalidInput {
                slug: "non-finite-weights",
                detail: "w holds NaN".into(),
            },
            problem(
                "non-finite-weights",
                "The model cannot be quantized as requested",
                422,
                "w holds NaN",
            ),
            false,
        ),
        (
            JobFailure::Panicked {
                message: "index out of bounds".into(),
            },
            problem(
                "job-internal-error",
                "Internal error while quantizing",
                500,
                "the worker hit an internal error",
            ),
            true,
        ),
        (
            JobFailure::Internal("layout mismatch: undeclared tensor 'w_zero_point'".into()),
            problem(
                "job-internal-error",
                "Internal error while quantizing",
                500,
                "the job hit an internal error; it has been logged and is not retried",
            ),
            false,
        ),
        (
            JobFailure::Quantizing(std::io::Error::other("bad sector")),
            problem(
                "job-io-error",
                "Storage error while quantizing",
                500,
                "bad sector",
            ),
            true,
        ),
        (
            JobFailure::Quantizing(disk_full()),
            problem(
                "job-storage-full",
                "No room left for the artifact",
                507,
                &disk_full().to_string(),
            ),
            true,
        ),
        (
            JobFailure::SavingArtifact(BlobError::Io(disk_full())),
            problem(
                "job-storage-full",
                "No room left for the artifact",
                507,
                &BlobError::Io(disk_full()).to_string(),
            ),
            true,
        ),
        (
            JobFailure::SavingArtifact(BlobError::NotFound("ab".into())),
            problem(
                "job-io-error",
                "Storage error while saving the artifact",
                500,
                "blob ab not found",
            ),
            true,
        ),
        (
            JobFailure::ReadConfig(BlobError::NotFound("cd".into())),
            problem(
                "job-io-error",
                "Storage error while reading the model's config.json",
                500,
                "blob cd not found",
            ),
            false,
        ),
        (
            JobFailure::InputChanged {
                filename: "tokenizer.json".into(),
            },
            problem(
                "job-input-changed",
                "The model's files changed while the job ran",
                503,
                "tokenizer.json was replaced; the job runs again",
            ),
            true,
        ),
        (
            JobFailure::InvalidModelConfig("the model's config.json is not a JSON object".into()),
            problem(
                "invalid-model-config",
                "The model's config.json is unusable",
                422,
                "the model's config.json is not a JSON object",
            ),
            true,
        ),
        (
            JobFailure::Store(crate::store::StoreError::Corrupt("state".into())),
            problem(
                "job-store-error",
                "Metadata store error",
                500,
                "corrupt row: state",
            ),
            false,
        ),
    ];
    for (failure, expected, retryable) in cases {
        assert_eq!(failure.problem(), expected, "{failure:?}");
        assert_eq!(failure.is_retryable(), retryable, "{failure:?}");
    }
    let options = JobSpec::parse("no-such-scheme", None, None).unwrap_err();
    let failure = JobFailure::InvalidOptions(options.clone());
    assert_eq!(
        failure.problem(),
        problem(
            "invalid-options",
            "Invalid job options",
            422,
            &options.to_string()
        )
    );
    assert!(
        std::error::Error::source(&failure).is_some(),
        "the cause is kept"
    );
}
