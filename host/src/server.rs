//! The HTTP/1.1 front door: accept on the listener, bound inbound bodies, hand requests to
//! the [`Dispatcher`], and drain in-flight connections on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::app::{Dispatcher, Origin, plain};

/// Largest inbound request body the host will buffer or stream to a guest. Guests set
/// their own, smaller limits; this one protects the host.
pub const REQUEST_BODY_BYTES_MAX: usize = 10 << 20;

/// Serve until `shutdown` resolves, then stop accepting and give open connections up to
/// `drain` to finish their requests.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    dispatcher: Arc<Dispatcher>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let dispatcher = dispatcher.clone();
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let dispatcher = dispatcher.clone();
            async move { Ok::<_, Infallible>(handle_inbound(&dispatcher, req, peer).await) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    dispatcher.begin_shutdown();
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    drop(dispatcher);
}

async fn handle_inbound(
    dispatcher: &Dispatcher,
    req: http::Request<Incoming>,
    peer: SocketAddr,
) -> http::Response<WasiBody> {
    let Ok(_permit) = dispatcher.inbound_permits.acquire().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n");
    };
    if declared_length(&req).is_some_and(|n| n > REQUEST_BODY_BYTES_MAX as u64) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large\n");
    }
    let req = req.map(|body| {
        Limited::new(body, REQUEST_BODY_BYTES_MAX)
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpError::HttpRequestBodySize(None)
                } else {
                    HttpError::HttpProtocolError
                }
            })
            .boxed_unsync()
    });
    dispatcher
        .dispatch(req, Origin::Inbound { client_addr: peer })
        .await
}

fn declared_length<B>(req: &http::Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
