//! The connection loop: what `axum::serve` does (accept, one HTTP/1.1 connection task each,
//! graceful shutdown), with hyper's connection settings in our hands. hyper answers some
//! malformed requests itself, before our service runs, with an empty body; its limits are set
//! here above the ones `envelope` enforces, so that requests over our limits reach our layer and
//! are refused in the path's envelope. Connection-level settings (limits, timeouts) belong here.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// hyper refuses a request with more header fields than this with a bare 431 (its default is
/// 100); ours, [`super::envelope::MAX_HEADER_FIELDS`], is lower and answered in the envelope.
pub const HYPER_MAX_HEADER_FIELDS: usize = 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its in-flight request, and returns once all have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = http1::Builder::new();
    http.max_headers(HYPER_MAX_HEADER_FIELDS);
    // Dropping the receiver tells connections to shut down; the sender's `closed()` is the
    // signal each connection task waits on.
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(stop_rx);
    });
    // Every connection task holds a receiver; when all are dropped the server is done.
    let (done_tx, done_rx) = watch::channel(());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_error(error).await;
                    continue;
                }
            },
            () = stop_tx.closed() => break,
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let stop_tx = stop_tx.clone();
        let done_rx = done_rx.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                }
                () = stop_tx.closed() => {
                    connection.as_mut().graceful_shutdown();
                    if let Err(error) = connection.await {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                }
            }
            drop(done_rx);
        });
    }
    drop(listener);
    drop(done_rx);
    done_tx.closed().await;
}

/// As axum does: errors of one connection are skipped; others (out of file descriptors) are
/// logged and the loop pauses before accepting again.
async fn accept_error(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
