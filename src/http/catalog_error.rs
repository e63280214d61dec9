//! How the catalog's failures answer: [`CatalogError`] → [`ApiError`], from what the error says
//! of itself (kind, slug, title, field, Retry-After). Storage and database failures answer as
//! their own types always do (opaque 5xx bodies, the cause logged).

use super::error::{ApiError, ErrorKind};
use crate::catalog::CatalogError;
use crate::error::Failure;

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Store(e) => e.into(),
            CatalogError::Blob(e) => e.into(),
            CatalogError::LowSpace(e) => e.into(),
            CatalogError::Safetensors(e) => e.into(),
            other => rendered(&other, other.title()),
        }
    }
}

/// A failure whose `Display` is the detail a client may read (every catalog refusal, the full
/// queue included), under `title`. An internal failure stays opaque and its `source` chain is
/// logged.
fn rendered(failure: &dyn Failure, title: &'static str) -> ApiError {
    if failure.kind() == ErrorKind::Internal {
        let mut chain = failure.to_string();
        let mut source = failure.source();
        while let Some(cause) = source {
            chain = format!("{chain}: {cause}");
            source = cause.source();
        }
        return ApiError::internal(&chain);
    }
    let mut error = ApiError::new(failure.kind(), failure.slug(), title, failure.to_string());
    error.field = failure.field().map(str::to_owned);
    error.retry_after_secs = failure.retry_after();
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_answer_with_their_slug_title_field_and_retry_after() {
        let queue_full = ApiError::from(CatalogError::QueueFull {
            queued: 3,
            limit: 3,
        });
        let problem = queue_full.problem();
        assert_eq!(
            (
                problem.status,
                problem.type_uri.as_str(),
                problem.title.as_str()
            ),
            (503, "/problems/queue-full", "Job queue full")
        );
        assert_eq!(
            problem.detail,
            "3 jobs are waiting, the limit is 3; retry later"
        );
        assert_eq!(queue_full.retry_after_secs, Some(10));

        let bad_name = ApiError::from(CatalogError::InvalidName { name: ".x".into() }).problem();
        assert_eq!(
            (bad_name.status, bad_name.field.as_deref()),
            (422, Some("name"))
        );

        let low = ApiError::from(CatalogError::LowSpace(crate::store::reserve::LowSpace {
            path: "/data".into(),
            available_bytes: 1,
            needed_bytes: 2,
        }));
        let problem = low.problem();
        assert_eq!((problem.status, low.retry_after_secs), (507, Some(60)));
        assert!(!problem.detail.contains("/data"), "5xx bodies are opaque");
    }
}
