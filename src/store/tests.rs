//! The metadata store against a real SQLite database in a temporary directory: models, companion
//! files, the job queue with its leases, artifacts; happy paths and refusals.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::sqlite::SqliteStore;
use super::*;

/// A fresh database in its own temporary directory (kept alive by the returned guard).
async fn open_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("quantd.db").display()
    );
    let store = SqliteStore::connect(&url).await.expect("database opens");
    (dir, store)
}

fn model(name: &str, sha256: &str) -> ModelRecord {
    ModelRecord {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        sha256: sha256.to_owned(),
        size_bytes: 1024,
        n_tensors: 3,
        n_parameters: 200,
        dtypes: BTreeMap::from([("F32".to_owned(), 3)]),
        metadata: BTreeMap::from([("format".to_owned(), "pt".to_owned())]),
        files: Vec::new(),
        created_at: now(),
    }
}

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn new_job(model_id: Uuid, max_attempts: u32) -> NewJob {
    NewJob {
        id: Uuid::now_v7(),
        model_id,
        scheme: "int8".to_owned(),
        options: serde_json::json!({"granularity": "channel", "symmetric": true}),
        format: "safetensors".to_owned(),
        max_attempts,
    }
}

fn file(name: &str, sha256: &str) -> StoredFile {
    StoredFile {
        filename: name.to_owned(),
        sha256: sha256.to_owned(),
        size_bytes: 10,
    }
}

fn lease_of(job: &JobRecord, owner: &str) -> Lease {
    Lease {
        job_id: job.id,
        owner: owner.to_owned(),
        attempt: job.attempt,
    }
}

fn artifact_for(job: &JobRecord, files: Vec<StoredFile>) -> ArtifactRecord {
    ArtifactRecord {
        id: Uuid::now_v7(),
        job_id: job.id,
        model_id: job.model_id,
        scheme: job.scheme.clone(),
        options: job.options.clone(),
        format: job.format.clone(),
        sha256: files[0].sha256.clone(),
        size_bytes: files[0].size_bytes,
        files,
        report: serde_json::json!({"tensors": []}),
        created_at: now(),
    }
}

async fn queued(store: &SqliteStore, model_id: Uuid, max_attempts: u32) -> JobRecord {
    match store
        .enqueue_job(&new_job(model_id, max_attempts), 100)
        .await
        .unwrap()
    {
        EnqueueOutcome::Enqueued(job) => *job,
        other => panic!("not enqueued: {other:?}"),
    }
}

const LONG: Duration = Duration::from_secs(60);
/// A lease that has expired by the time the next statement runs.
const EXPIRED: Duration = Duration::from_millis(1);

async fn let_leases_expire() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn models_are_inserted_read_listed_by_page_and_found_by_name() {
    let (_dir, store) = open_store().await;
    let first = model("alpha", &sha(1));
    let second = model("alpha", &sha(2));
    let third = model("beta", &sha(3));
    for m in [&first, &second, &third] {
        store.insert_model(m).await.unwrap();
    }
    let read = store.get_model(second.id).await.unwrap().expect("stored");
    assert_eq!(
        (read.name.as_str(), read.sha256.as_str()),
        ("alpha", second.sha256.as_str())
    );
    assert_eq!(read.metadata, second.metadata);
    assert_eq!(read.created_at, second.created_at);
    assert!(store.get_model(Uuid::now_v7()).await.unwrap().is_none());

    // Newest first, two per page, then the rest.
    let page = store
        .list_models(PageRequest {
            limit: 2,
            before: None,
        })
        .await
        .unwrap();
    let ids: Vec<Uuid> = page.items.iter().map(|m| m.id).collect();
    assert_eq!(ids, [third.id, second.id]);
    let rest = store
        .list_models(PageRequest {
            limit: 2,
            before: page.next_cursor,
        })
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        [first.id]
    );
    assert!(rest.next_cursor.is_none());

    assert_eq!(
        store.model_ids_by_name("alpha", 10).await.unwrap(),
        [second.id, first.id]
    );
    assert!(store
        .model_ids_by_name("gamma", 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_duplicate_model_id_is_an_error_not_an_overwrite() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    let mut again = model("other", &sha(2));
    again.id = m.id;
    assert!(store.insert_model(&again).await.is_err());
    assert_eq!(store.get_model(m.id).await.unwrap().unwrap().name, "alpha");
}

#[tokio::test]
async fn companion_files_attach_replace_and_report_the_replaced_blob() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();

    assert_eq!(
        store
            .put_model_file(Uuid::now_v7(), &file("config.json", &sha(9)))
            .await
            .unwrap(),
        None,
        "unknown model"
    );
    assert_eq!(
        store
            .put_model_file(m.id, &file("config.json", &sha(2)))
            .await
            .unwrap(),
        Some(None),
        "attached, nothing replaced"
    );
    assert_eq!(
        store
            .put_model_file(m.id, &file("config.json", &sha(2)))
            .await
            .unwrap(),
        Some(None),
        "the same bytes again release nothing"
    );
    assert_eq!(
        store
            .put_model_file(m.id, &file("config.json", &sha(3)))
            .await
            .unwrap(),
        Some(Some(sha(2))),
        "the replaced blob is handed back"
    );
    store
        .put_model_file(m.id, &file("a.json", &sha(4)))
        .await
        .unwrap();
    let files = store.get_model(m.id).await.unwrap().unwrap().files;
    assert_eq!(
        files,
        [file("a.json", &sha(4)), file("config.json", &sha(3))]
    );
    assert!(store.blob_is_referenced(&sha(3)).await.unwrap());
    assert!(!store.blob_is_referenced(&sha(2)).await.unwrap());
}

#[tokio::test]
async fn a_model_with_an_active_job_cannot_be_deleted() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    store
        .put_model_file(m.id, &file("config.json", &sha(2)))
        .await
        .unwrap();
    let job = queued(&store, m.id, 1).await;

    match store.delete_model(m.id).await.unwrap() {
        DeleteModelOutcome::Busy { job_id } => assert_eq!(job_id, job.id),
        other => panic!("deleted under a queued job: {other:?}"),
    }
    // Running counts as active too.
    store
        .claim_job("worker", LONG)
        .await
        .unwrap()
        .expect("claimed");
    assert!(matches!(
        store.delete_model(m.id).await.unwrap(),
        DeleteModelOutcome::Busy { .. }
    ));
    assert!(store.get_model(m.id).await.unwrap().is_some());

    // Once the job is over, the delete goes through and hands back the model's blobs.
    store.cancel_job(job.id).await.unwrap();
    let running = store.get_job(job.id).await.unwrap().unwrap();
    assert!(store
        .mark_cancelled(&lease_of(&running, "worker"))
        .await
        .unwrap());
    match store.delete_model(m.id).await.unwrap() {
        DeleteModelOutcome::Deleted { released_blobs } => {
            assert_eq!(released_blobs, [sha(1), sha(2)])
        }
        other => panic!("not deleted: {other:?}"),
    }
    assert!(store.get_model(m.id).await.unwrap().is_none());
    assert!(
        !store.blob_is_referenced(&sha(2)).await.unwrap(),
        "files cascade"
    );
    assert!(matches!(
        store.delete_model(m.id).await.unwrap(),
        DeleteModelOutcome::NotFound
    ));
}

#[tokio::test]
async fn jobs_are_refused_for_unknown_models_and_beyond_the_queue_limit() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    assert!(matches!(
        store
            .enqueue_job(&new_job(Uuid::now_v7(), 1), 10)
            .await
            .unwrap(),
        EnqueueOutcome::ModelNotFound
    ));
    let first = match store.enqueue_job(&new_job(m.id, 3), 2).await.unwrap() {
        EnqueueOutcome::Enqueued(job) => *job,
        other => panic!("{other:?}"),
    };
    // Totals are known from the start; nothing has been attempted.
    assert_eq!(first.state, JobState::Queued);
    assert_eq!(
        (first.progress.tensors_total, first.progress.bytes_total),
        (3, 1024)
    );
    assert_eq!((first.attempt, first.max_attempts), (0, 3));
    let second = queued(&store, m.id, 1).await;
    assert!(matches!(
        store.enqueue_job(&new_job(m.id, 1), 2).await.unwrap(),
        EnqueueOutcome::QueueFull { queued: 2 }
    ));
    assert_eq!(store.queue_position(first.id).await.unwrap(), Some(0));
    assert_eq!(store.queue_position(second.id).await.unwrap(), Some(1));

    // A running job frees its queue slot.
    store
        .claim_job("worker", LONG)
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(store.queue_position(first.id).await.unwrap(), None);
    assert_eq!(store.queue_position(second.id).await.unwrap(), Some(0));
    assert!(matches!(
        store.enqueue_job(&new_job(m.id, 1), 2).await.unwrap(),
        EnqueueOutcome::Enqueued(_)
    ));
    let filtered = store
        .list_jobs(
            &JobFilter {
                state: Some(JobState::Running),
                model_id: Some(m.id),
            },
            PageRequest {
                limit: 10,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        filtered.items.iter().map(|j| j.id).collect::<Vec<_>>(),
        [first.id]
    );
}

#[tokio::test]
async fn a_claimed_job_is_finished_only_by_its_lease_holder() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    let job = queued(&store, m.id, 3).await;

    let claimed = store.claim_job("a", LONG).await.unwrap().expect("claimed");
    assert_eq!(
        (claimed.id, claimed.state, claimed.attempt),
        (job.id, JobState::Running, 1)
    );
    assert!(claimed.started_at.is_some());
    assert!(
        store.claim_job("b", LONG).await.unwrap().is_none(),
        "a live lease is never handed out twice"
    );

    let mine = lease_of(&claimed, "a");
    let stranger = lease_of(&claimed, "b");
    let progress = Progress {
        tensors_done: 1,
        tensors_total: 3,
        bytes_done: 100,
        bytes_total: 1024,
    };
    assert_eq!(
        store.heartbeat(&stranger, LONG, progress).await.unwrap(),
        HeartbeatOutcome::Lost
    );
    assert!(!store
        .fail_job(&stranger, &serde_json::json!({}), false)
        .await
        .unwrap());
    assert!(!store.mark_cancelled(&stranger).await.unwrap());
    assert!(!store.release_job(&stranger).await.unwrap());
    let stranger_artifact = artifact_for(&claimed, vec![file("model.safetensors", &sha(7))]);
    assert!(!store
        .complete_job(&stranger, progress, &stranger_artifact)
        .await
        .unwrap());
    assert!(store
        .get_artifact(stranger_artifact.id)
        .await
        .unwrap()
        .is_none());

    assert_eq!(
        store.heartbeat(&mine, LONG, progress).await.unwrap(),
        HeartbeatOutcome::Held {
            cancel_requested: false
        }
    );
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().progress,
        progress
    );
    let artifact = artifact_for(
        &claimed,
        vec![
            file("model.safetensors", &sha(7)),
            file("config.json", &sha(8)),
        ],
    );
    assert!(store
        .complete_job(&mine, progress, &artifact)
        .await
        .unwrap());
    let done = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.artifact_id, Some(artifact.id));
    assert!(done.finished_at.is_some());
    // Finished: nothing more may change it, not even by the former holder.
    assert!(!store
        .complete_job(&mine, progress, &artifact)
        .await
        .unwrap());
    assert_eq!(
        store.heartbeat(&mine, LONG, progress).await.unwrap(),
        HeartbeatOutcome::Lost
    );

    let stored = store
        .get_artifact(artifact.id)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(stored.files, artifact.files, "the primary file first");
    assert_eq!(stored.report, artifact.report);
    assert!(store.blob_is_referenced(&sha(8)).await.unwrap());
    assert!(store.has_blob_references().await.unwrap());
    assert!(store.get_artifact(Uuid::now_v7()).await.unwrap().is_none());
}

#[tokio::test]
async fn an_expired_lease_is_reclaimed_and_the_old_holder_is_refused() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    let job = queued(&store, m.id, 3).await;

    let first = store
        .claim_job("a", EXPIRED)
        .await
        .unwrap()
        .expect("claimed");
    let_leases_expire().await;
    let second = store
        .claim_job("b", LONG)
        .await
        .unwrap()
        .expect("reclaimed");
    assert_eq!((second.id, second.attempt), (job.id, 2));

    let stale = lease_of(&first, "a");
    assert_eq!(
        store
            .heartbeat(&stale, LONG, Progress::default())
            .await
            .unwrap(),
        HeartbeatOutcome::Lost
    );
    assert!(!store
        .fail_job(&stale, &serde_json::json!({}), false)
        .await
        .unwrap());
    let stale_artifact = artifact_for(&first, vec![file("model.safetensors", &sha(7))]);
    assert!(!store
        .complete_job(&stale, Progress::default(), &stale_artifact)
        .await
        .unwrap());
    // Even the same owner with the old attempt number is a stale lease.
    assert!(!store.release_job(&lease_of(&first, "b")).await.unwrap());
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    assert!(store.release_job(&lease_of(&second, "b")).await.unwrap());
}

#[tokio::test]
async fn failures_retry_while_attempts_remain_and_exhausted_jobs_are_failed() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    let job = queued(&store, m.id, 2).await;
    let problem = serde_json::json!({"type": "/problems/job-io-error", "status": 500});

    // A retryable failure with attempts left queues the job again, error kept.
    let first = store.claim_job("a", LONG).await.unwrap().unwrap();
    assert!(store
        .fail_job(&lease_of(&first, "a"), &problem, true)
        .await
        .unwrap());
    let again = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((again.state, again.attempt), (JobState::Queued, 1));
    assert_eq!(again.error.as_ref(), Some(&problem));
    assert!(again.finished_at.is_none());

    // The last attempt's worker vanishes: no one may claim it again, the reaper fails it.
    let last = store.claim_job("a", EXPIRED).await.unwrap().unwrap();
    assert_eq!(last.attempt, 2);
    let_leases_expire().await;
    assert!(store.claim_job("b", LONG).await.unwrap().is_none());
    let exhausted = serde_json::json!({"type": "/problems/job-attempts-exhausted", "status": 500});
    assert_eq!(store.fail_exhausted_jobs(&exhausted).await.unwrap(), 1);
    let failed = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error, Some(exhausted.clone()));
    assert!(failed.finished_at.is_some());
    assert_eq!(store.fail_exhausted_jobs(&exhausted).await.unwrap(), 0);
}

#[tokio::test]
async fn a_retryable_failure_on_the_last_attempt_fails_the_job() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    let job = queued(&store, m.id, 1).await;
    let claimed = store.claim_job("a", LONG).await.unwrap().unwrap();
    let problem = serde_json::json!({"type": "/problems/job-io-error"});
    assert!(store
        .fail_job(&lease_of(&claimed, "a"), &problem, true)
        .await
        .unwrap());
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().state,
        JobState::Failed
    );
}

#[tokio::test]
async fn cancellation_stops_queued_jobs_at_once_and_flags_running_ones() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    let running = queued(&store, m.id, 3).await;
    let waiting = queued(&store, m.id, 3).await;
    let claimed = store.claim_job("a", LONG).await.unwrap().unwrap();
    assert_eq!(claimed.id, running.id);

    match store.cancel_job(waiting.id).await.unwrap() {
        CancelOutcome::Accepted(job) => {
            assert_eq!(job.state, JobState::Cancelled);
            assert!(job.finished_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        store.claim_job("b", LONG).await.unwrap().is_none(),
        "a cancelled job is never claimed"
    );
    match store.cancel_job(running.id).await.unwrap() {
        CancelOutcome::Accepted(job) => {
            assert_eq!(job.state, JobState::Running);
            assert!(job.cancel_requested);
        }
        other => panic!("{other:?}"),
    }
    let lease = lease_of(&claimed, "a");
    assert_eq!(
        store
            .heartbeat(&lease, LONG, Progress::default())
            .await
            .unwrap(),
        HeartbeatOutcome::Held {
            cancel_requested: true
        }
    );
    assert!(store.mark_cancelled(&lease).await.unwrap());
    assert!(matches!(
        store.cancel_job(running.id).await.unwrap(),
        CancelOutcome::AlreadyFinished(job) if job.state == JobState::Cancelled
    ));
    assert!(matches!(
        store.cancel_job(Uuid::now_v7()).await.unwrap(),
        CancelOutcome::NotFound
    ));
}

#[tokio::test]
async fn a_cancel_requested_job_whose_worker_vanished_is_closed_as_cancelled() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    let job = queued(&store, m.id, 3).await;
    store.claim_job("a", EXPIRED).await.unwrap().unwrap();
    store.cancel_job(job.id).await.unwrap();
    let_leases_expire().await;
    assert!(
        store.claim_job("b", LONG).await.unwrap().is_none(),
        "not reclaimed once cancellation was asked for"
    );
    assert_eq!(
        store
            .fail_exhausted_jobs(&serde_json::json!({}))
            .await
            .unwrap(),
        1
    );
    let closed = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(closed.state, JobState::Cancelled);
    assert!(closed.error.is_none());
}

#[tokio::test]
async fn a_released_job_is_queued_again_without_counting_the_attempt() {
    let (_dir, store) = open_store().await;
    let m = model("alpha", &sha(1));
    store.insert_model(&m).await.unwrap();
    let job = queued(&store, m.id, 1).await;
    let claimed = store.claim_job("a", LONG).await.unwrap().unwrap();
    assert!(store.release_job(&lease_of(&claimed, "a")).await.unwrap());
    let released = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((released.state, released.attempt), (JobState::Queued, 0));
    // With max_attempts = 1 it can still run: the handed-back attempt did not count.
    let again = store
        .claim_job("b", LONG)
        .await
        .unwrap()
        .expect("claimable");
    assert_eq!(again.attempt, 1);
}

#[tokio::test]
async fn storage_failures_are_classified_by_kind() {
    use crate::error::{ErrorKind, Failure};
    let full = StoreError::Database(sqlx::Error::Io(std::io::Error::from(
        std::io::ErrorKind::StorageFull,
    )));
    assert!(full.is_storage_full());
    assert_eq!(full.kind(), ErrorKind::InsufficientStorage);
    assert_eq!(full.retry_after(), Some(60));
    let gone = StoreError::Database(sqlx::Error::PoolClosed);
    assert!(gone.is_unavailable());
    assert_eq!(
        (gone.kind(), gone.slug()),
        (ErrorKind::Unavailable, "database-unavailable")
    );
    let corrupt = StoreError::Corrupt("state".into());
    assert_eq!(
        (corrupt.kind(), corrupt.slug()),
        (ErrorKind::Internal, "internal-error")
    );
}
