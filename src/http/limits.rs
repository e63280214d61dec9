//! Bounds on what one client can hold of the server in time: a request body that stops arriving
//! fails after the idle timeout. The header-read timeout lives in the serve loop (`startup`),
//! since only hyper sees a request before its head is complete. Memory (safetensors headers
//! buffered by concurrent uploads share one byte budget) is bounded by ingest itself
//! (`catalog::header_budget`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::util::MapRequestLayer;

use super::error::{ApiError, ErrorKind};

/// The error a request body yields when no byte arrived for the idle timeout.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no body bytes arrived for {} s", .timeout.as_secs_f64())]
pub struct BodyIdleTimeout {
    pub timeout: Duration,
}

/// Wraps every request body in an [`IdleTimeoutBody`], so that every extractor and every
/// streaming handler sees a stalled body fail instead of waiting on it forever.
pub fn body_idle_timeout_layer(
    timeout: Duration,
) -> MapRequestLayer<impl FnMut(Request) -> Request + Clone + Send + Sync + 'static> {
    MapRequestLayer::new(move |request: Request| {
        request.map(|body| Body::new(IdleTimeoutBody::new(body, timeout)))
    })
}

/// A body that fails with [`BodyIdleTimeout`] when it is polled and no frame arrives within
/// `timeout`. The clock runs only while the consumer waits: time a handler spends between
/// reads (writing a chunk to disk, a database query before the first read) is not the
/// client's.
pub struct IdleTimeoutBody {
    inner: Body,
    timeout: Duration,
    /// Created on the first wait, then reset for each later one; most bodies (empty, or
    /// already buffered by hyper) never wait and never allocate it.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` is set for the current wait (it is disarmed by every arriving frame).
    armed: bool,
    timed_out: bool,
}

impl IdleTimeoutBody {
    pub fn new(inner: Body, timeout: Duration) -> Self {
        IdleTimeoutBody {
            inner,
            timeout,
            sleep: None,
            armed: false,
            timed_out: false,
        }
    }

    fn error(&self) -> axum::Error {
        axum::Error::new(BodyIdleTimeout {
            timeout: self.timeout,
        })
    }
}

impl HttpBody for IdleTimeoutBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // Once timed out, stay failed: a consumer must not mistake a later poll for progress.
        if this.timed_out {
            return Poll::Ready(Some(Err(this.error())));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame);
        }
        let deadline = Instant::now() + this.timeout;
        let sleep = match &mut this.sleep {
            Some(sleep) => {
                if !this.armed {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => this
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        this.armed = true;
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out = true;
                Poll::Ready(Some(Err(this.error())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.timed_out && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` or anything in its source chain is a [`BodyIdleTimeout`] (the body error
/// reaches handlers wrapped in `axum::Error`, multipart errors, extractor rejections).
pub fn is_body_idle_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.downcast_ref::<BodyIdleTimeout>().is_some() {
            return true;
        }
        current = error.source();
    }
    false
}

impl ApiError {
    /// 408: the client stopped sending the body; nothing of the request was kept.
    pub fn body_timeout(cause: &dyn std::fmt::Display) -> Self {
        ApiError::new(
            ErrorKind::RequestTimeout,
            "body-timeout",
            "Request body timed out",
            format!("{cause}; nothing of the request was kept"),
        )
    }

    /// The answer to a body that could not be read: 408 when it stalled, 400 otherwise.
    pub fn body_read_failed(error: &(dyn std::error::Error + 'static)) -> Self {
        if is_body_idle_timeout(error) {
            ApiError::body_timeout(&error)
        } else {
            ApiError::bad_request(
                "upload-interrupted",
                format!("reading the body failed: {error}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_idle_timeout() {
        let timeout = Duration::from_millis(300);
        let (mut sender, receiver) =
            futures::channel::mpsc::channel::<Result<Bytes, axum::Error>>(4);
        let body = IdleTimeoutBody::new(Body::from_stream(receiver), timeout);
        let mut stream = Body::new(body).into_data_stream();
        // A frame every 200 ms keeps it alive: the clock restarts with each frame.
        for _ in 0..3 {
            let feed = async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                futures::SinkExt::send(&mut sender, Ok(Bytes::from_static(b"x")))
                    .await
                    .unwrap();
            };
            let (chunk, ()) = tokio::join!(stream.next(), feed);
            assert_eq!(chunk.unwrap().unwrap(), Bytes::from_static(b"x"));
        }
        // Then silence.
        let started = Instant::now();
        let error = stream.next().await.unwrap().unwrap_err();
        assert!(started.elapsed() >= timeout);
        assert!(is_body_idle_timeout(&error), "{error}");
        assert!(stream.next().await.unwrap().is_err(), "stays failed");
        drop(sender);
    }

    #[tokio::test]
    async fn time_between_reads_is_not_counted() {
        let body = IdleTimeoutBody::new(Body::from("ready"), Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let bytes = axum::body::to_bytes(Body::new(body), usize::MAX)
            .await
            .unwrap();
        assert_eq!(bytes, Bytes::from_static(b"ready"));
    }
}
