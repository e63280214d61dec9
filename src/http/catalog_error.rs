//! How the catalog's failures answer: [`CatalogError`] → [`ApiError`], from what the error says
//! of itself as a [`Failure`](crate::error::Failure) (kind, slug, title, field, Retry-After).
//! Storage and database failures say what their own types say (opaque 5xx bodies, the cause
//! logged).

use super::error::ApiError;
use crate::catalog::CatalogError;

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        ApiError::from_failure(&error)
    }
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
