//! The catalog's use cases against a real SQLite database and blob store: what each keeps on
//! success, and that every refusal or failed commit leaves no half-stored row or blob.

pub(crate) mod fixture;

use std::time::Duration;

use uuid::Uuid;

use self::fixture::{body, failing_body, safetensors, settings, small_model, Fixture};
use super::*;
use crate::error::{ErrorKind, Failure};
use crate::jobs::spec::JobSpec;
use crate::store::blobs::sha256_hex;
use crate::store::{JobState, Lease, Progress, StoredFile};

fn name(text: &str) -> ModelName {
    ModelName::try_from(text).unwrap()
}

fn file_name(text: &str) -> FileName {
    FileName::try_from(text).unwrap()
}

fn int8_job(model_id: Uuid) -> JobRequest {
    JobRequest {
        model_id,
        spec: JobSpec::parse("int8", None, None).unwrap(),
    }
}

/// Asserts that nothing of a refused write stayed: no model row, no blob, no staging file.
async fn assert_nothing_kept(fixture: &Fixture) {
    let models = fixture
        .catalog
        .models(crate::store::PageRequest {
            limit: 10,
            before: None,
        })
        .await
        .unwrap();
    assert!(models.items.is_empty(), "a model row stayed");
    assert!(fixture.committed_blobs().is_empty(), "a blob stayed");
    assert!(fixture.staging_files().is_empty(), "a staging file stayed");
}

#[tokio::test]
async fn an_ingested_model_is_committed_then_recorded() {
    let fixture = Fixture::new().await;
    let bytes = small_model();
    let model = fixture.ingest("small", bytes.clone()).await;
    assert_eq!(model.sha256, sha256_hex(&bytes));
    assert_eq!(model.size_bytes, bytes.len() as u64);
    assert_eq!((model.n_tensors, model.n_parameters), (3, 8 * 16 * 2 + 8));
    assert_eq!(model.dtypes.get("F32"), Some(&3));
    assert_eq!(model.metadata.get("format").map(String::as_str), Some("pt"));
    assert_eq!(
        std::fs::read(fixture.blobs.local_path(&model.sha256)).unwrap(),
        bytes
    );
    assert_eq!(fixture.committed_blobs(), vec![model.sha256.clone()]);
    assert!(fixture.staging_files().is_empty());
    let stored = fixture.catalog.model(model.id).await.unwrap().unwrap();
    assert_eq!(stored.sha256, model.sha256);
}

#[tokio::test]
async fn a_declared_digest_is_checked_before_commit() {
    let fixture = Fixture::new().await;
    let bytes = small_model();
    let wrong = sha256_hex(b"something else");
    let refused = fixture
        .catalog
        .ingest_model(name("m"), Some(&wrong), body(bytes.clone(), 64))
        .await
        .unwrap_err();
    assert!(matches!(refused, CatalogError::DigestMismatch { .. }));
    assert_eq!(
        (refused.kind(), refused.slug()),
        (ErrorKind::Unprocessable, "digest-mismatch")
    );
    assert_nothing_kept(&fixture).await;

    let right = sha256_hex(&bytes);
    let model = fixture
        .catalog
        .ingest_model(name("m"), Some(&right), body(bytes, 64))
        .await
        .unwrap();
    assert_eq!(model.sha256, right);
}

#[tokio::test]
async fn refused_uploads_leave_nothing_behind() {
    let fixture = Fixture::new().await;
    let valid = small_model();
    let mut truncated = valid.clone();
    truncated.truncate(valid.len() - 3);
    let large_metadata = "x".repeat(2000);
    let cases: Vec<(&str, Vec<u8>, &str, ErrorKind)> = vec![
        (
            "truncated",
            truncated,
            "safetensors-truncated",
            ErrorKind::Unprocessable,
        ),
        ("empty", Vec::new(), "empty-body", ErrorKind::BadRequest),
        (
            "not safetensors",
            b"hello, world, this is text".to_vec(),
            "safetensors-header-too-large",
            ErrorKind::PayloadTooLarge,
        ),
        (
            "metadata over the limit",
            safetensors(
                &[("w", vec![2], vec![1.0, 2.0])],
                &[("notes", large_metadata.as_str())],
            ),
            "safetensors-metadata-too-large",
            ErrorKind::Unprocessable,
        ),
    ];
    for (what, bytes, slug, kind) in cases {
        let refused = fixture
            .catalog
            .ingest_model(name("m"), None, body(bytes, 5))
            .await
            .unwrap_err();
        assert_eq!(
            (refused.slug(), refused.kind()),
            (slug, kind),
            "{what}: {refused}"
        );
        assert_nothing_kept(&fixture).await;
    }
}

#[tokio::test]
async fn a_broken_or_stalled_body_is_classified_and_leaves_nothing() {
    let fixture = Fixture::new().await;
    let prefix = small_model()[..40].to_vec();
    let stalled = BodyError::Stalled("no body bytes arrived for 1 s".into());
    let refused = fixture
        .catalog
        .ingest_model(name("m"), None, failing_body(prefix.clone(), stalled))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind(), refused.slug()),
        (ErrorKind::RequestTimeout, "body-timeout")
    );
    assert_eq!(
        refused.to_string(),
        "no body bytes arrived for 1 s; nothing of the request was kept"
    );
    assert!(
        std::error::Error::source(&refused).is_some(),
        "the cause is kept"
    );
    assert_nothing_kept(&fixture).await;

    let broken = BodyError::Interrupted("connection reset".into());
    let refused = fixture
        .catalog
        .ingest_model(name("m"), None, failing_body(prefix, broken))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind(), refused.slug()),
        (ErrorKind::BadRequest, "upload-interrupted")
    );
    assert_nothing_kept(&fixture).await;
}

#[tokio::test]
async fn a_header_over_the_shared_budget_is_refused_and_the_budget_given_back() {
    let fixture = Fixture::with(settings(), 0, 16).await;
    let refused = fixture
        .catalog
        .ingest_model(name("m"), None, body(small_model(), 1000))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind(), refused.slug(), refused.retry_after()),
        (ErrorKind::Unavailable, "header-budget-exhausted", Some(2))
    );
    assert_eq!(fixture.catalog.header_budget.reserved(), 0);
    assert_nothing_kept(&fixture).await;
}

#[tokio::test]
async fn uploads_are_admitted_within_the_size_limit_and_the_reserve() {
    let fixture = Fixture::new().await;
    fixture.catalog.admit_upload(1000).await.unwrap();
    let refused = fixture
        .catalog
        .admit_upload((1 << 20) + 1)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind(), refused.slug()),
        (ErrorKind::PayloadTooLarge, "upload-too-large")
    );

    let starved = Fixture::with(settings(), u64::MAX / 2, 1 << 20).await;
    let refused = starved.catalog.admit_upload(0).await.unwrap_err();
    assert_eq!(
        (refused.kind(), refused.retry_after()),
        (ErrorKind::InsufficientStorage, Some(60))
    );
    let refused = starved
        .catalog
        .create_job(&int8_job(Uuid::now_v7()))
        .await
        .unwrap_err();
    assert!(matches!(refused, CatalogError::LowSpace(_)));
}

#[tokio::test]
async fn a_model_row_that_cannot_be_written_leaves_no_blob() {
    let fixture = Fixture::new().await;
    fixture.refuse_inserts_into("models").await;
    let refused = fixture
        .catalog
        .ingest_model(name("m"), None, body(small_model(), 64))
        .await
        .unwrap_err();
    assert!(matches!(refused, CatalogError::Store(_)), "{refused}");
    assert_eq!(refused.kind(), ErrorKind::Internal);
    assert_nothing_kept(&fixture).await;
}

#[tokio::test]
async fn deleting_a_model_removes_only_blobs_nothing_else_refers_to() {
    let fixture = Fixture::new().await;
    let bytes = small_model();
    let first = fixture.ingest("first", bytes.clone()).await;
    let second = fixture.ingest("second", bytes).await;
    assert_eq!(first.sha256, second.sha256);

    fixture.catalog.delete_model(first.id).await.unwrap();
    assert!(fixture.catalog.model(first.id).await.unwrap().is_none());
    assert_eq!(
        fixture.committed_blobs(),
        vec![second.sha256.clone()],
        "still used"
    );
    fixture.catalog.delete_model(second.id).await.unwrap();
    assert!(fixture.committed_blobs().is_empty());

    let refused = fixture.catalog.delete_model(first.id).await.unwrap_err();
    assert!(matches!(refused, CatalogError::ModelNotFound(id) if id == first.id));
}

#[tokio::test]
async fn a_model_with_a_queued_job_is_kept() {
    let fixture = Fixture::new().await;
    let model = fixture.ingest("m", small_model()).await;
    let job = fixture
        .catalog
        .create_job(&int8_job(model.id))
        .await
        .unwrap();
    let refused = fixture.catalog.delete_model(model.id).await.unwrap_err();
    assert!(matches!(refused, CatalogError::ModelInUse { job_id } if job_id == job.id));
    assert_eq!(
        (refused.kind(), refused.slug()),
        (ErrorKind::Conflict, "model-in-use")
    );
    assert_eq!(fixture.committed_blobs(), [model.sha256]);
}

#[tokio::test]
async fn companion_files_are_validated_replaced_and_collected() {
    let fixture = Fixture::new().await;
    let model = fixture.ingest("m", small_model()).await;

    let refused = fixture
        .catalog
        .attach_file(Uuid::now_v7(), file_name("config.json"))
        .await
        .err()
        .expect("unknown model");
    assert!(matches!(refused, CatalogError::ModelNotFound(_)));

    for (bytes, slug) in [
        (&b"{not json"[..], "invalid-json"),
        (&b"[1, 2]"[..], "invalid-json"),
    ] {
        let attachment = fixture
            .catalog
            .attach_file(model.id, file_name("config.json"))
            .await
            .unwrap();
        let refused = attachment
            .upload(None, body(bytes.to_vec(), 3))
            .await
            .unwrap_err();
        assert_eq!(refused.slug(), slug);
        assert_eq!(fixture.committed_blobs(), vec![model.sha256.clone()]);
        assert!(fixture.staging_files().is_empty());
    }

    let attach = |bytes: &'static [u8]| {
        let catalog = fixture.catalog.clone();
        let model_id = model.id;
        async move {
            catalog
                .attach_file(model_id, file_name("config.json"))
                .await
                .unwrap()
                .upload(None, body(bytes.to_vec(), 4))
                .await
                .unwrap()
        }
    };
    let first = attach(br#"{"model_type": "mlp"}"#).await;
    assert_eq!(first.sha256, sha256_hex(br#"{"model_type": "mlp"}"#));
    let second = attach(br#"{"model_type": "bert"}"#).await;
    let files = fixture
        .catalog
        .model(model.id)
        .await
        .unwrap()
        .unwrap()
        .files;
    assert_eq!(files, vec![second.clone()]);
    let mut expected = vec![model.sha256.clone(), second.sha256.clone()];
    expected.sort();
    assert_eq!(
        fixture.committed_blobs(),
        expected,
        "the replaced blob is gone"
    );
}

#[tokio::test]
async fn a_companion_file_over_the_limit_is_cut_off() {
    let mut small = settings();
    small.max_upload_bytes = 20;
    let fixture = Fixture::with(small, 0, 1 << 20).await;
    let model_bytes = safetensors(&[], &[]);
    let model = fixture.ingest("m", model_bytes).await;
    let refused = fixture
        .catalog
        .attach_file(model.id, file_name("vocab.txt"))
        .await
        .unwrap()
        .upload(None, body(vec![b'a'; 64], 8))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, CatalogError::TooLarge { limit: 20 }),
        "{refused}"
    );
    assert_eq!(fixture.committed_blobs(), [model.sha256]);
    assert!(fixture.staging_files().is_empty());
}

#[tokio::test]
async fn a_companion_file_whose_model_vanished_or_row_failed_leaves_no_blob() {
    let fixture = Fixture::new().await;
    let model = fixture.ingest("m", small_model()).await;
    let attachment = fixture
        .catalog
        .attach_file(model.id, file_name("tokenizer.json"))
        .await
        .unwrap();
    // Deleted while the file streams in.
    fixture.catalog.delete_model(model.id).await.unwrap();
    let refused = attachment
        .upload(None, body(b"{}".to_vec(), 1))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, CatalogError::ModelNotFound(_)),
        "{refused}"
    );
    assert_nothing_kept(&fixture).await;

    let model = fixture.ingest("m", small_model()).await;
    fixture.refuse_inserts_into("model_files").await;
    let refused = fixture
        .catalog
        .attach_file(model.id, file_name("tokenizer.json"))
        .await
        .unwrap()
        .upload(None, body(b"{\"a\": 1}".to_vec(), 1))
        .await
        .unwrap_err();
    assert!(matches!(refused, CatalogError::Store(_)), "{refused}");
    assert_eq!(fixture.committed_blobs(), [model.sha256]);
}

#[tokio::test]
async fn jobs_are_queued_with_a_wake_up_and_refused_when_they_cannot_be() {
    let mut two = settings();
    two.max_queued_jobs = 2;
    let fixture = Fixture::with(two, 0, 1 << 20).await;
    let model = fixture.ingest("m", small_model()).await;

    let job = fixture
        .catalog
        .create_job(&int8_job(model.id))
        .await
        .unwrap();
    assert_eq!((job.state, job.max_attempts), (JobState::Queued, 3));
    assert_eq!(job.scheme, "int8");
    tokio::time::timeout(Duration::from_secs(1), fixture.job_wake.notified())
        .await
        .expect("the runner is woken");
    assert_eq!(
        fixture.catalog.queue_position(job.id).await.unwrap(),
        Some(0)
    );

    let refused = fixture
        .catalog
        .create_job(&int8_job(Uuid::now_v7()))
        .await
        .unwrap_err();
    assert!(matches!(refused, CatalogError::ModelNotFound(_)));

    fixture
        .catalog
        .create_job(&int8_job(model.id))
        .await
        .unwrap();
    let refused = fixture
        .catalog
        .create_job(&int8_job(model.id))
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        CatalogError::QueueFull {
            queued: 2,
            limit: 2
        }
    ));
    assert_eq!(
        (refused.kind(), refused.slug(), refused.retry_after()),
        (ErrorKind::Unavailable, "queue-full", Some(10))
    );
    assert_eq!(
        refused.to_string(),
        "2 jobs are waiting, the limit is 2; retry later"
    );
}

#[tokio::test]
async fn cancelling_cancels_queued_jobs_and_asks_running_ones_to_stop() {
    let fixture = Fixture::new().await;
    let model = fixture.ingest("m", small_model()).await;
    let running = fixture
        .catalog
        .create_job(&int8_job(model.id))
        .await
        .unwrap();
    let queued = fixture
        .catalog
        .create_job(&int8_job(model.id))
        .await
        .unwrap();
    fixture
        .store
        .claim_job("worker", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("claimed");

    assert!(matches!(
        fixture.catalog.cancel_job(queued.id).await.unwrap(),
        Cancellation::Cancelled(job) if job.state == JobState::Cancelled
    ));
    assert!(matches!(
        fixture.catalog.cancel_job(queued.id).await.unwrap(),
        Cancellation::Cancelled(_)
    ));
    assert!(matches!(
        fixture.catalog.cancel_job(running.id).await.unwrap(),
        Cancellation::Requested(job) if job.cancel_requested
    ));
    assert!(matches!(
        fixture
            .catalog
            .cancel_job(Uuid::now_v7())
            .await
            .unwrap_err(),
        CatalogError::JobNotFound(_)
    ));
}

/// A model with a config.json and a tokenizer.json, a claimed int8 job on it, and its output
/// written to a staging file.
struct ClaimedJob {
    fixture: Fixture,
    job: crate::store::JobRecord,
    lease: Lease,
    model_files: Vec<StoredFile>,
    staging: crate::store::blobs::StagingFile,
    output: Vec<u8>,
}

async fn claimed_job_with_output() -> ClaimedJob {
    let fixture = Fixture::new().await;
    let model = fixture.ingest("m", small_model()).await;
    for (filename, bytes) in [
        ("config.json", &br#"{"model_type": "mlp"}"#[..]),
        ("tokenizer.json", &b"{}"[..]),
    ] {
        fixture
            .catalog
            .attach_file(model.id, file_name(filename))
            .await
            .unwrap()
            .upload(None, body(bytes.to_vec(), 16))
            .await
            .unwrap();
    }
    fixture
        .catalog
        .create_job(&int8_job(model.id))
        .await
        .unwrap();
    let job = fixture
        .store
        .claim_job("worker", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("claimed");
    let lease = Lease {
        job_id: job.id,
        owner: "worker".into(),
        attempt: job.attempt,
    };
    let model_files = fixture
        .catalog
        .model(model.id)
        .await
        .unwrap()
        .unwrap()
        .files;
    let staging = fixture.blobs.staging_file();
    let output = b"quantized bytes".to_vec();
    std::fs::write(staging.path(), &output).unwrap();
    ClaimedJob {
        fixture,
        job,
        lease,
        model_files,
        staging,
        output,
    }
}

impl ClaimedJob {
    fn artifact<'a>(&'a self, spec: &'a JobSpec) -> NewArtifact<'a> {
        NewArtifact {
            job: &self.job,
            spec,
            staged: self.staging.path(),
            sha256: sha256_hex(&self.output),
            size_bytes: self.output.len() as u64,
            report: serde_json::json!({"tensors": []}),
            quantization_config: Some(serde_json::json!({"quant_method": "compressed-tensors"})),
            model_files: self.model_files.clone(),
        }
    }
}

#[tokio::test]
async fn an_artifact_is_committed_recorded_and_completes_its_job() {
    let claimed = claimed_job_with_output().await;
    let spec = JobSpec::parse("int8", None, None).unwrap();
    let progress = Progress {
        tensors_done: 3,
        tensors_total: 3,
        bytes_done: 10,
        bytes_total: 10,
    };
    let outcome = claimed
        .fixture
        .catalog
        .record_artifact(&claimed.lease, progress, claimed.artifact(&spec))
        .await
        .unwrap();
    let ArtifactOutcome::Recorded(artifact) = outcome else {
        panic!("lease lost: {outcome:?}");
    };
    let names: Vec<&str> = artifact.files.iter().map(|f| f.filename.as_str()).collect();
    assert_eq!(
        names,
        ["model.safetensors", "config.json", "tokenizer.json"]
    );
    let config = claimed
        .fixture
        .blobs
        .read_small(&artifact.files[1].sha256)
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["model_type"], "mlp");
    assert_eq!(
        config["quantization_config"]["quant_method"],
        "compressed-tensors"
    );
    assert_eq!(
        artifact.files[2], claimed.model_files[1],
        "carried by reference"
    );
    assert_eq!(
        std::fs::read(claimed.fixture.blobs.local_path(&artifact.sha256)).unwrap(),
        claimed.output
    );
    assert!(claimed.fixture.staging_files().is_empty());
    let job = claimed
        .fixture
        .catalog
        .job(claimed.job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.artifact_id, Some(artifact.id));
    assert_eq!(job.progress, progress);
    let stored = claimed.fixture.catalog.artifact(artifact.id).await.unwrap();
    assert_eq!(stored.unwrap().files, artifact.files);
}

#[tokio::test]
async fn an_artifact_for_a_lost_lease_is_not_recorded_and_its_blobs_go() {
    let claimed = claimed_job_with_output().await;
    let spec = JobSpec::parse("int8", None, None).unwrap();
    let before = claimed.fixture.committed_blobs();
    let stale = Lease {
        owner: "someone-else".into(),
        ..claimed.lease.clone()
    };
    let outcome = claimed
        .fixture
        .catalog
        .record_artifact(&stale, Progress::default(), claimed.artifact(&spec))
        .await
        .unwrap();
    assert!(matches!(outcome, ArtifactOutcome::LeaseLost));
    assert_eq!(
        claimed.fixture.committed_blobs(),
        before,
        "output and config gone"
    );
    let job = claimed
        .fixture
        .catalog
        .job(claimed.job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Running);
}

#[tokio::test]
async fn an_artifact_row_that_cannot_be_written_leaves_no_blob() {
    let claimed = claimed_job_with_output().await;
    let spec = JobSpec::parse("int8", None, None).unwrap();
    let before = claimed.fixture.committed_blobs();
    claimed.fixture.refuse_inserts_into("artifacts").await;
    let refused = claimed
        .fixture
        .catalog
        .record_artifact(&claimed.lease, Progress::default(), claimed.artifact(&spec))
        .await
        .unwrap_err();
    assert!(matches!(refused, ArtifactError::Record(_)), "{refused}");
    assert_eq!(claimed.fixture.committed_blobs(), before);
    let job = claimed
        .fixture
        .catalog
        .job(claimed.job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Running, "the lease is left to expire");
    assert!(job.artifact_id.is_none());
}

#[tokio::test]
async fn an_artifact_whose_companion_vanished_is_refused_before_commit() {
    let claimed = claimed_job_with_output().await;
    let spec = JobSpec::parse("int8", None, None).unwrap();
    // The tokenizer was replaced (and its blob collected) while the job ran.
    let tokenizer = &claimed.model_files[1];
    claimed
        .fixture
        .blobs
        .delete(&tokenizer.sha256)
        .await
        .unwrap();
    let before = claimed.fixture.committed_blobs();
    let refused = claimed
        .fixture
        .catalog
        .record_artifact(&claimed.lease, Progress::default(), claimed.artifact(&spec))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ArtifactError::InputChanged { filename } if filename == "tokenizer.json"),
        "{refused}"
    );
    assert_eq!(
        claimed.fixture.committed_blobs(),
        before,
        "nothing committed"
    );
    assert!(
        claimed.fixture.staging_files().is_empty(),
        "staging file removed"
    );
}

#[tokio::test]
async fn an_unusable_model_config_is_refused_and_nothing_stays() {
    let claimed = claimed_job_with_output().await;
    let spec = JobSpec::parse("int8", None, None).unwrap();
    // A config.json that is not an object cannot take the quantization_config (uploads refuse
    // one; here its blob is another file's).
    let model_id = claimed.job.model_id;
    let list = claimed
        .fixture
        .catalog
        .attach_file(model_id, file_name("list.json"))
        .await
        .unwrap()
        .upload(None, body(b"[1]".to_vec(), 3))
        .await
        .unwrap();
    let before = claimed.fixture.committed_blobs();
    let mut artifact = claimed.artifact(&spec);
    artifact.model_files = vec![StoredFile {
        filename: "config.json".into(),
        ..list
    }];
    let refused = claimed
        .fixture
        .catalog
        .record_artifact(&claimed.lease, Progress::default(), artifact)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ArtifactError::InvalidModelConfig(_)),
        "{refused}"
    );
    assert_eq!(
        claimed.fixture.committed_blobs(),
        before,
        "the output is collected"
    );
    assert!(claimed.fixture.staging_files().is_empty());
}
