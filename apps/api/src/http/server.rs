//! The HTTP server loop. axum's own `serve` sets no header timeout and no connection cap, so a
//! slow-loris client or ten thousand idle sockets could hold the gateway: here every connection
//! gets a deadline for its request headers, the number of open connections is capped (one over the
//! cap is closed at once), and a stop lets requests in flight finish within the request timeout.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, Response},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::config::HttpLimits;

/// The most a request line and headers may take: a larger header block is answered 431 before any
/// handler runs. (hyper's default is ~400 KB; a browser's headers are a few KB.)
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

pub async fn run<S, B>(
    listener: TcpListener,
    app: S,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: protocol detection (for HTTP/2 without TLS) would wait for a client's first
    // bytes with no deadline at all. A load balancer in front speaks HTTP/2 to clients if wanted.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            metrics::counter!("gamify_http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = tower::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let app = app.clone();
            // Boxed: hyper keeps a slot of the future's size for every open connection, busy or
            // idle, and the whole request travels inside it; boxed, an idle connection holds a
            // pointer (one allocation per request against hundreds of bytes per connection).
            Box::pin(async move {
                Ok::<_, Infallible>(app.oneshot(request).await.unwrap_or_else(|e| match e {}))
            })
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // A connection that has sent nothing yet holds only this small task (no HTTP state,
            // no read buffer) until its first bytes arrive, so ten thousand idle sockets cost
            // little. Silent past the header timeout, it is closed, as hyper would close it.
            tokio::select! {
                () = shutdown.cancelled() => return,
                readable = tokio::time::timeout(header_timeout, stream.readable()) => {
                    if !matches!(readable, Ok(Ok(()))) {
                        return;
                    }
                }
            }
            // Boxed once it starts: inline, the connection's state would make every task, idle
            // or not, as large as a busy connection.
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(err) = Box::pin(watcher.watch(connection)).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Requests in flight finish; idle keep-alive connections are closed at once.
    if tokio::time::timeout(limits.request_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the request timeout; closing them");
    }
    Ok(())
}
