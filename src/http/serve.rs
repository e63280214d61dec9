//! The connection loop: what `axum::serve` does (accept, one HTTP/1.1 connection task each,
//! graceful shutdown), with hyper's connection settings in our hands:
//! - hyper answers some malformed requests itself, before our service runs, with an empty body;
//!   its limits are set here above the ones `envelope` enforces, so that requests over our limits
//!   reach our layer and are refused in the path's envelope;
//! - `header_read_timeout` bounds the time a client takes to send a request head: a connection
//!   whose head is incomplete after that long (including an idle keep-alive connection) is
//!   closed, so slow or silent clients cannot pile up connections. Body timeouts are a layer
//!   (`limits`), since only the handler knows when it waits for body bytes.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// hyper refuses a request with more header fields than this with a bare 431 (its default is
/// 100); ours, [`super::envelope::MAX_HEADER_FIELDS`], is lower and answered in the envelope.
pub const HYPER_MAX_HEADER_FIELDS: usize = 1024;

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting, lets every
/// connection finish its in-flight request (idle ones close at once), and returns once all have
/// closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.max_headers(HYPER_MAX_HEADER_FIELDS)
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => stream,
                Err(error) => {
                    accept_error(error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Timeouts and clients that hang up mid-request end up here; not our failure.
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// As axum does: errors of one connection are skipped; others (out of file descriptors) are
/// logged and the loop pauses before accepting again, so that it does not spin while they last.
async fn accept_error(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
