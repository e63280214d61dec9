//! Dynamic batching: concurrent requests for one loaded model are merged into one batch.
//!
//! Each loaded model owns one [`Batcher`]: a tokio task fed by a channel. A request is a list of
//! *items* (token-id sequences for `bert`, input rows for `mlp`). The task takes the first waiting
//! request, waits for a free run slot (at most `max_concurrent` batches of a model run at once),
//! then keeps adding waiting requests until the batch holds at least `max_batch` items or, while
//! another batch of the model is running, `max_delay` has passed since the first request arrived
//! (an idle model takes only what is already waiting, so a lone request pays no delay). It moves
//! the requests' items into one shared batch and hands it to the model's runner (one worker-pool
//! job; a BERT pass fans out from there). While batches run, new requests queue in the channel
//! and form the next batch as soon as a slot frees up, so under load batches fill without
//! waiting for the delay.
//!
//! Items are independent (every architecture computes each item on its own; see
//! `infer::bert`), so a merged batch gives every request exactly the outputs it would get alone.
//! If a merged batch fails because of one request's bad input, each request of that batch is run
//! again on its own so that only the faulty one gets the error.
//!
//! The task ends when the last handle to the [`Batcher`] is dropped (the model was unloaded or
//! evicted and no request still holds it); batches already running finish first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::ServingError;

/// Batching limits of one model.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// A batch is closed once it holds at least this many items (a larger request still runs,
    /// as a batch of its own).
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub max_delay: Duration,
    /// Batches of one model running at once.
    pub max_concurrent: usize,
}

/// Queue and compute time of one request, and the size of the batch it ran in.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From submission until its batch started running.
    pub queue: Duration,
    /// Running the batch.
    pub compute: Duration,
    /// Items in the batch this request ran in (its own included).
    pub batch_items: usize,
}

impl Timing {
    /// The `Server-Timing` header value: `parse`, `queue` and `compute` in milliseconds, and
    /// the batch size.
    pub fn server_timing(&self, parse: Duration) -> String {
        format!(
            "parse;dur={:.3}, queue;dur={:.3}, compute;dur={:.3}, batch;desc=\"{} items\"",
            parse.as_secs_f64() * 1e3,
            self.queue.as_secs_f64() * 1e3,
            self.compute.as_secs_f64() * 1e3,
            self.batch_items
        )
    }
}

/// What a request got back, with its timing.
#[derive(Debug)]
pub struct Batched<O> {
    /// One output per item of the request, in order.
    pub outputs: Vec<O>,
    pub timing: Timing,
}

type Reply<O> = oneshot::Sender<Result<Batched<O>, ServingError>>;

/// Runs one batch of items (shared, so that it can move to a worker thread without a copy);
/// returns one output per item, in order.
pub type RunFn<I, O> = Arc<
    dyn Fn(Arc<[I]>) -> Pin<Box<dyn Future<Output = Result<Vec<O>, ServingError>> + Send>>
        + Send
        + Sync,
>;

struct Pending<I, O> {
    items: Vec<I>,
    submitted: Instant,
    reply: Reply<O>,
}

/// Handle to a model's batching task.
pub struct Batcher<I, O> {
    sender: mpsc::UnboundedSender<Pending<I, O>>,
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<I, O> Batcher<I, O>
where
    I: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Starts the batching task on the current tokio runtime.
    pub fn start(config: BatchConfig, run: RunFn<I, O>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(config, run, receiver));
        Batcher { sender }
    }

    /// Submits a request and waits for its outputs.
    pub async fn submit(&self, items: Vec<I>) -> Result<Batched<O>, ServingError> {
        if items.is_empty() {
            return Ok(Batched {
                outputs: Vec::new(),
                timing: Timing {
                    queue: Duration::ZERO,
                    compute: Duration::ZERO,
                    batch_items: 0,
                },
            });
        }
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending {
                items,
                submitted: Instant::now(),
                reply,
            })
            .map_err(|_| {
                ServingError::internal("submitting a request", "the model's batcher has stopped")
            })?;
        answer
            .await
            .map_err(|dropped| ServingError::internal("waiting for a batch", dropped))?
    }
}

async fn batch_loop<I, O>(
    config: BatchConfig,
    run: RunFn<I, O>,
    mut receiver: mpsc::UnboundedReceiver<Pending<I, O>>,
) where
    I: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
    let max_batch = config.max_batch.max(1);
    while let Some(first) = receiver.recv().await {
        // Wait for a run slot first: requests arriving meanwhile join this batch below.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Wait for company only while another batch of this model is running: an idle model
        // runs a lone request at once (no added latency), a busy one fills its next batch.
        let busy = slots.available_permits() + 1 < config.max_concurrent.max(1);
        let delay = if busy {
            config.max_delay
        } else {
            Duration::ZERO
        };
        let deadline = tokio::time::Instant::from_std(first.submitted + delay);
        let mut items = first.items.len();
        let mut batch = vec![first];
        while items < max_batch {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(next)) => {
                    items += next.items.len();
                    batch.push(next);
                }
                // The channel closed (keep what we have) or the delay is over.
                Ok(None) | Err(_) => break,
            }
        }
        let run = run.clone();
        tokio::spawn(async move {
            run_batch(&run, batch).await;
            drop(slot);
        });
    }
}

async fn run_batch<I, O>(run: &RunFn<I, O>, batch: Vec<Pending<I, O>>)
where
    I: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    // Requests whose caller has gone (timed out, disconnected) are not computed.
    let mut batch: Vec<Pending<I, O>> =
        batch.into_iter().filter(|p| !p.reply.is_closed()).collect();
    if batch.is_empty() {
        return;
    }
    let started = Instant::now();
    // The items move into one batch (no copy); each request keeps its range of it.
    let mut merged = Vec::with_capacity(batch.iter().map(|p| p.items.len()).sum());
    let ranges: Vec<std::ops::Range<usize>> = batch
        .iter_mut()
        .map(|pending| {
            let start = merged.len();
            merged.append(&mut pending.items);
            start..merged.len()
        })
        .collect();
    let total = merged.len();
    let merged: Arc<[I]> = merged.into();
    match run(merged.clone()).await {
        Ok(outputs) if outputs.len() == total => {
            let compute = started.elapsed();
            let mut outputs = outputs.into_iter();
            for (pending, range) in batch.into_iter().zip(&ranges) {
                let mine: Vec<O> = outputs.by_ref().take(range.len()).collect();
                // A caller that has gone away just does not read its answer.
                let _ = pending.reply.send(Ok(Batched {
                    outputs: mine,
                    timing: Timing {
                        queue: started.saturating_duration_since(pending.submitted),
                        compute,
                        batch_items: total,
                    },
                }));
            }
        }
        Ok(outputs) => {
            let error = ServingError::internal(
                "running a batch",
                format!(
                    "a batch of {total} items returned {} outputs",
                    outputs.len()
                ),
            );
            for pending in batch {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
        Err(error) if error.is_input_fault() && batch.len() > 1 => {
            // One request's input spoiled the batch (bad input, or values that overflow): run
            // each on its own so that only the faulty one fails.
            tracing::debug!(%error, requests = batch.len(), "re-running a failed batch one request at a time");
            for (pending, range) in batch.into_iter().zip(ranges) {
                let started = Instant::now();
                let count = range.len();
                let result = match run(merged[range].into()).await {
                    Ok(outputs) if outputs.len() == count => Ok(Batched {
                        outputs,
                        timing: Timing {
                            queue: started.saturating_duration_since(pending.submitted),
                            compute: started.elapsed(),
                            batch_items: count,
                        },
                    }),
                    Ok(outputs) => Err(ServingError::internal(
                        "running a batch",
                        format!(
                            "a batch of {count} items returned {} outputs",
                            outputs.len()
                        ),
                    )),
                    Err(error) => Err(error),
                };
                let _ = pending.reply.send(result);
            }
        }
        Err(error) => {
            for pending in batch {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A runner that doubles numbers, counts its calls and records batch sizes; 13 is bad input.
    /// A batcher over [`doubler`] with one run slot and a long delay, so that requests sent
    /// while a batch runs queue up into the next one.
    fn one_slot_doubler(
        calls: &Arc<AtomicUsize>,
        sizes: &Arc<std::sync::Mutex<Vec<usize>>>,
    ) -> Arc<Batcher<u32, u32>> {
        Arc::new(Batcher::start(
            BatchConfig {
                max_batch: 64,
                max_delay: Duration::from_millis(200),
                max_concurrent: 1,
            },
            doubler(calls.clone(), sizes.clone()),
        ))
    }

    fn doubler(
        calls: Arc<AtomicUsize>,
        sizes: Arc<std::sync::Mutex<Vec<usize>>>,
    ) -> RunFn<u32, u32> {
        Arc::new(move |items: Arc<[u32]>| {
            let calls = calls.clone();
            let sizes = sizes.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                sizes.lock().unwrap().push(items.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
                if items.contains(&13) {
                    return Err(ServingError::BadInput("13 is unlucky".into()));
                }
                if items.contains(&u32::MAX) {
                    return Err(ServingError::Overflow("doubling overflows".into()));
                }
                // A broken runner: one output too few for a batch holding 999.
                if items.contains(&999) {
                    return Ok(items.iter().skip(1).map(|v| v * 2).collect());
                }
                Ok(items.iter().map(|v| v * 2).collect())
            })
        })
    }

    #[tokio::test]
    async fn concurrent_requests_share_a_batch_and_get_their_own_outputs() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let batcher = one_slot_doubler(&calls, &sizes);
        let tasks: Vec<_> = (0..8u32)
            .map(|r| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.submit(vec![r * 10, r * 10 + 1]).await })
            })
            .collect();
        let mut largest = 0;
        for (r, task) in tasks.into_iter().enumerate() {
            let got = task.await.unwrap().unwrap();
            let r = r as u32;
            assert_eq!(got.outputs, vec![r * 20, r * 20 + 2]);
            largest = largest.max(got.timing.batch_items);
        }
        // The model was idle, so the first request ran at once; the others waited for it and
        // were merged into one batch.
        assert!(calls.load(Ordering::SeqCst) <= 2, "at most two batches");
        assert!(largest >= 14, "largest batch {largest}");
    }

    #[tokio::test]
    async fn a_full_batch_closes_before_the_delay() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let batcher = Arc::new(Batcher::start(
            BatchConfig {
                max_batch: 4,
                max_delay: Duration::from_secs(30),
                max_concurrent: 2,
            },
            doubler(calls.clone(), sizes.clone()),
        ));
        let started = Instant::now();
        let tasks: Vec<_> = (0..8u32)
            .map(|r| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.submit(vec![r]).await })
            })
            .collect();
        for (r, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap().unwrap().outputs, vec![2 * r as u32]);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not wait for max_delay"
        );
        let sizes = sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|&s| s <= 4), "batches {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 8);
    }

    #[tokio::test]
    async fn a_lone_request_on_an_idle_model_does_not_wait_for_the_delay() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let batcher = Batcher::start(
            BatchConfig {
                max_batch: 64,
                max_delay: Duration::from_secs(30),
                max_concurrent: 2,
            },
            doubler(calls, sizes),
        );
        let got = tokio::time::timeout(Duration::from_secs(10), batcher.submit(vec![4]))
            .await
            .expect("an idle model runs a lone request at once")
            .unwrap();
        assert_eq!(got.outputs, vec![8]);
        assert!(
            got.timing.queue < Duration::from_secs(5),
            "{:?}",
            got.timing
        );
    }

    #[tokio::test]
    async fn bad_input_fails_only_its_own_request() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let batcher = one_slot_doubler(&calls, &sizes);
        let good = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(vec![1, 2]).await })
        };
        let bad = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(vec![13]).await })
        };
        assert_eq!(good.await.unwrap().unwrap().outputs, vec![2, 4]);
        assert!(matches!(bad.await.unwrap(), Err(ServingError::BadInput(_))));
    }

    #[tokio::test]
    async fn overflow_fails_only_its_own_request_and_output_counts_are_checked() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let batcher = one_slot_doubler(&calls, &sizes);
        // Occupy the only run slot so that the next three requests share one batch.
        let first = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(vec![0]).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let submit = |items: Vec<u32>| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(items).await })
        };
        let (good, overflowing, short) = (
            submit(vec![1, 2]),
            submit(vec![u32::MAX]),
            submit(vec![999, 1]),
        );
        assert_eq!(first.await.unwrap().unwrap().outputs, vec![0]);
        assert_eq!(good.await.unwrap().unwrap().outputs, vec![2, 4]);
        assert!(matches!(
            overflowing.await.unwrap(),
            Err(ServingError::Overflow(_))
        ));
        // Re-run on its own, a request the runner answers with too few outputs gets an
        // internal error, not a short answer.
        assert!(matches!(
            short.await.unwrap(),
            Err(ServingError::Internal { .. })
        ));
    }

    #[tokio::test]
    async fn the_task_stops_when_the_batcher_is_dropped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let run = doubler(calls, sizes);
        let weak = Arc::downgrade(&run);
        let batcher = Batcher::start(
            BatchConfig {
                max_batch: 1,
                max_delay: Duration::ZERO,
                max_concurrent: 1,
            },
            run,
        );
        assert_eq!(batcher.submit(vec![3]).await.unwrap().outputs, vec![6]);
        drop(batcher);
        for _ in 0..100 {
            if weak.upgrade().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the batching task still holds the runner");
    }
}
