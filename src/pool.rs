//! The bounded blocking worker pool: a fixed set of OS threads that run all CPU-heavy work
//! (quantization), so the async executor never does.
//!
//! Admission is bounded by a semaphore with one permit per thread: a caller first takes a
//! [`WorkerSlot`] (waiting asynchronously if all threads are busy), then hands the closure over.
//! The task channel therefore never holds more than `size` closures.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::Span;

type Task = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the worker pool is shut down")]
    ShutDown,
    #[error("a worker panicked: {0}")]
    Panicked(String),
}

pub struct WorkerPool {
    size: usize,
    /// One permit per thread: a slot must be held to submit work (bounded admission).
    slots: Arc<Semaphore>,
    sender: Mutex<Option<mpsc::Sender<Task>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The right to run one task on the pool; released when the task finishes or the slot drops.
pub struct WorkerSlot {
    _permit: OwnedSemaphorePermit,
}

impl WorkerPool {
    pub fn new(size: usize) -> Arc<Self> {
        let size = size.max(1);
        let (sender, receiver) = mpsc::channel::<Task>();
        // The receiver is shared: whichever idle thread locks it first takes the next task.
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = (0..size)
            .map(|index| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("quantd-worker-{index}"))
                    .spawn(move || loop {
                        let task = {
                            let guard = receiver.lock().unwrap_or_else(|p| p.into_inner());
                            guard.recv()
                        };
                        match task {
                            Ok(task) => task(),
                            Err(_) => break, // sender dropped: shutting down
                        }
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        Arc::new(WorkerPool {
            size,
            slots: Arc::new(Semaphore::new(size)),
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(threads),
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Threads currently free.
    pub fn idle(&self) -> usize {
        self.slots.available_permits()
    }

    /// Waits for a free thread.
    pub async fn acquire(&self) -> Result<WorkerSlot, PoolError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::ShutDown)?;
        Ok(WorkerSlot { _permit: permit })
    }

    /// Runs `work` on a pool thread holding `slot`, carrying the caller's tracing span across.
    /// A panic in `work` is caught and reported as [`PoolError::Panicked`].
    pub async fn run<T, F>(&self, slot: WorkerSlot, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let span = Span::current();
        let task: Task = Box::new(move || {
            let _entered = span.enter();
            let outcome = catch_unwind(AssertUnwindSafe(work));
            drop(slot);
            let _ = reply.send(outcome);
        });
        {
            let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
            let sender = sender.as_ref().ok_or(PoolError::ShutDown)?;
            sender.send(task).map_err(|_| PoolError::ShutDown)?;
        }
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(PoolError::Panicked(panic_message(&panic))),
            Err(_) => Err(PoolError::ShutDown),
        }
    }

    /// Stops taking work and joins the threads once their current tasks end. Blocking: call it
    /// from a blocking context or at the very end of shutdown.
    pub fn shutdown(&self) {
        self.slots.close();
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_off_the_executor_and_panics_are_reported() {
        let pool = WorkerPool::new(2);
        let slot = pool.acquire().await.unwrap();
        let name = pool
            .run(slot, || std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("quantd-worker-"));

        let slot = pool.acquire().await.unwrap();
        let err = pool
            .run(slot, || -> u32 { panic!("boom") })
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Panicked(ref m) if m == "boom"));
        // The pool still works after a panic.
        let slot = pool.acquire().await.unwrap();
        assert_eq!(pool.run(slot, || 7).await.unwrap(), 7);
        pool.shutdown();
    }

    #[tokio::test]
    async fn admission_is_bounded_by_the_thread_count() {
        let pool = WorkerPool::new(1);
        let held = pool.acquire().await.unwrap();
        assert_eq!(pool.idle(), 0);
        let second =
            tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire()).await;
        assert!(
            second.is_err(),
            "a second slot must wait while the only thread is taken"
        );
        drop(held);
        assert!(pool.acquire().await.is_ok());
        pool.shutdown();
    }
}
