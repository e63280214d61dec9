//! Bytes of safetensors headers that concurrent uploads may buffer together: the memory bound
//! of ingest (one header is bounded by `max_header_bytes`; this bounds their sum).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of safetensors headers that concurrent uploads may buffer together. The validator
/// bounds one header (`max_header_bytes`); this bounds their sum, so that many concurrent
/// uploads with large headers cannot take the process's memory.
///
/// A counter rather than a `tokio::sync::Semaphore`: nobody waits for room (an upload that
/// does not fit is answered 503 at once, so the client, not the server, holds the queue), and
/// a semaphore counts permits in `u32` while a header limit may exceed 4 GiB.
#[derive(Debug, Clone)]
pub struct HeaderBudget {
    /// Bytes currently reserved, shared with every outstanding [`HeaderReservation`].
    reserved: Arc<AtomicU64>,
    capacity: u64,
}

/// Bytes reserved from a [`HeaderBudget`]; given back when dropped (header parsed, upload
/// failed, or the handler cancelled because the client went away).
#[derive(Debug)]
pub struct HeaderReservation {
    reserved: Arc<AtomicU64>,
    n_bytes: u64,
}

/// The budget had no room for a header; answered 503 with Retry-After.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{requested} header bytes requested, {available} of {capacity} available")]
pub struct BudgetExhausted {
    pub requested: u64,
    pub available: u64,
    pub capacity: u64,
}

impl HeaderBudget {
    pub fn new(capacity: u64) -> Self {
        HeaderBudget {
            reserved: Arc::new(AtomicU64::new(0)),
            capacity,
        }
    }

    /// Reserves `n_bytes` if they fit beside the current reservations.
    pub fn try_reserve(&self, n_bytes: u64) -> Result<HeaderReservation, BudgetExhausted> {
        let update = self
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
                reserved
                    .checked_add(n_bytes)
                    .filter(|&total| total <= self.capacity)
            });
        match update {
            Ok(_) => Ok(HeaderReservation {
                reserved: self.reserved.clone(),
                n_bytes,
            }),
            Err(reserved) => Err(BudgetExhausted {
                requested: n_bytes,
                available: self.capacity.saturating_sub(reserved),
                capacity: self.capacity,
            }),
        }
    }

    /// Bytes currently reserved.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }
}

impl Drop for HeaderReservation {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.n_bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_budget_and_are_given_back_on_drop() {
        let budget = HeaderBudget::new(100);
        let first = budget.try_reserve(60).expect("fits");
        let refused = budget.try_reserve(41).unwrap_err();
        assert_eq!((refused.requested, refused.available), (41, 40));
        let second = budget.try_reserve(40).expect("fits exactly");
        assert_eq!(budget.reserved(), 100);
        drop(first);
        assert_eq!(budget.reserved(), 40);
        drop(second);
        assert_eq!(budget.reserved(), 0);
        assert!(budget.try_reserve(u64::MAX).is_err(), "no overflow");
    }
}
