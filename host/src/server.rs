//! The HTTP/1.1 front door: one acceptor hands each connection to the least busy serving
//! thread; a serving thread bounds inbound bodies, hands requests to its [`Dispatcher`],
//! and drains its in-flight connections on shutdown.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::app::{Dispatcher, Origin, plain};

/// Largest inbound request body the host will buffer or stream to a guest. Guests set
/// their own, smaller limits; this one protects the host.
pub const REQUEST_BODY_BYTES_MAX: usize = 10 << 20;

/// How long the front door waits for a guest to finish a response body before it lets
/// the head go out alone. A guest hands over the head first and writes the body after, so
/// without this wait a short answer usually leaves as a head + first chunk and then, in a
/// second write and TCP segment, the last chunk: twice the syscalls and client wake-ups
/// per response (seen with `strace` under `wrk`). A body finished within the wait is sent
/// whole, with a `content-length`, in one write.
pub const RESPONSE_COALESCE_WAIT: Duration = Duration::from_millis(2);
/// Largest response body held back that way; bigger bodies stream as they come.
pub const RESPONSE_COALESCE_BYTES_MAX: usize = 64 * 1024;

/// A connection handed from the acceptor to a serving thread.
pub(crate) type Accepted = (std::net::TcpStream, SocketAddr);

/// One serving thread's end of the acceptor: where its connections arrive, and how many
/// of them are open (the acceptor gives each new connection to the least busy thread).
pub(crate) struct Lane {
    pub(crate) incoming: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    pub(crate) open: Arc<AtomicUsize>,
}

/// The acceptor's end of one serving thread's [`Lane`].
pub(crate) struct LaneSender {
    pub(crate) send: tokio::sync::mpsc::UnboundedSender<Accepted>,
    pub(crate) open: Arc<AtomicUsize>,
}

/// A new lane: the serving thread's end and the acceptor's.
pub(crate) fn lane() -> (Lane, LaneSender) {
    let (send, incoming) = tokio::sync::mpsc::unbounded_channel();
    let open = Arc::new(AtomicUsize::new(0));
    (
        Lane {
            incoming,
            open: open.clone(),
        },
        LaneSender { send, open },
    )
}

/// Accept until `shutdown` resolves (or every serving thread is gone), giving each
/// connection to the serving thread with the fewest open connections: one thread taking
/// a whole burst of connections would leave the other cores idle.
pub(crate) async fn accept(
    listener: tokio::net::TcpListener,
    lanes: Vec<LaneSender>,
    shutdown: impl Future<Output = ()>,
) {
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
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                // Dropping it closes the connection; the client sees a reset.
                tracing::warn!(error = %e, %peer, "cannot hand an accepted connection over");
                continue;
            }
        };
        let Some(lane) = lanes
            .iter()
            .filter(|l| !l.send.is_closed())
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
        else {
            break;
        };
        // Counted here, not when the thread picks it up: a burst spreads at once.
        lane.open.fetch_add(1, Ordering::Relaxed);
        if lane.send.send((stream, peer)).is_err() {
            lane.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serve the connections arriving on `lane` until `shutdown` resolves (or the acceptor
/// is gone), then give open connections up to `drain` to finish their requests. A
/// connection that takes longer than `header_read_timeout` to send a request head, or
/// stays idle that long between requests, is closed.
pub(crate) async fn serve(
    mut lane: Lane,
    dispatcher: Arc<Dispatcher>,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            next = lane.incoming.recv() => match next {
                Some(accepted) => accepted,
                None => break,
            },
        };
        let open = OpenConnection(lane.open.clone());
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot serve an accepted connection");
                continue;
            }
        };
        let dispatcher = dispatcher.clone();
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let dispatcher = dispatcher.clone();
            async move { Ok::<_, Infallible>(handle_inbound(&dispatcher, req, peer).await) }
        });
        // hyper enforces the head timeout only with a timer; it runs while the connection
        // waits for a head, so it also ends idle keep-alive connections.
        let conn = http1::Builder::new()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(lane);
    dispatcher.begin_shutdown();
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    drop(dispatcher);
}

/// Counts one connection of a serving thread as open until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
    let resp = dispatcher
        .dispatch(req, Origin::Inbound { client_addr: peer })
        .await;
    coalesce_body(resp).await
}

/// Wait (at most [`RESPONSE_COALESCE_WAIT`]) for a short response body to end, so hyper
/// writes head and body at once. Whatever was read stays in front of the rest of the
/// body; a body that does not end in time, is too big, or carries trailers or an error
/// streams on exactly as before.
async fn coalesce_body(resp: http::Response<WasiBody>) -> http::Response<WasiBody> {
    if resp.body().is_end_stream() {
        return resp;
    }
    let (parts, mut body) = resp.into_parts();
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut failure = None;
    let mut buffered = 0usize;
    let read = tokio::time::timeout(RESPONSE_COALESCE_WAIT, async {
        loop {
            match body.frame().await {
                None => return true,
                Some(Ok(frame)) => {
                    let is_data = frame.is_data();
                    if let Some(data) = frame.data_ref() {
                        buffered = buffered.saturating_add(data.len());
                    }
                    frames.push_back(frame);
                    if !is_data || buffered > RESPONSE_COALESCE_BYTES_MAX {
                        return false;
                    }
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    return false;
                }
            }
        }
    })
    .await;
    let body = if matches!(read, Ok(true)) && frames.iter().all(Frame::is_data) {
        whole_body(frames)
    } else {
        Prefixed {
            frames,
            failure,
            rest: body,
        }
        .boxed_unsync()
    };
    http::Response::from_parts(parts, body)
}

/// A finished body as one buffer: exact size, so hyper sets `content-length`.
fn whole_body(frames: VecDeque<Frame<Bytes>>) -> WasiBody {
    let mut chunks = frames.into_iter().filter_map(|f| f.into_data().ok());
    let bytes = match (chunks.next(), chunks.next()) {
        (None, _) => Bytes::new(),
        (Some(only), None) => only,
        (Some(first), Some(second)) => {
            let mut all = BytesMut::from(&first[..]);
            all.extend_from_slice(&second);
            chunks.for_each(|c| all.extend_from_slice(&c));
            all.freeze()
        }
    };
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Frames already read from a guest's body, then the failure met while reading them (if
/// any), then the rest of the body.
struct Prefixed {
    frames: VecDeque<Frame<Bytes>>,
    failure: Option<HttpError>,
    rest: WasiBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let me = self.get_mut();
        if let Some(frame) = me.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = me.failure.take() {
            return Poll::Ready(Some(Err(e)));
        }
        Pin::new(&mut me.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.failure.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Not exact once split: hyper then keeps the guest's framing.
        SizeHint::default()
    }
}

fn declared_length<B>(req: &http::Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use http_body_util::StreamBody;

    type Sent = Result<Frame<Bytes>, HttpError>;

    fn streamed(rx: mpsc::UnboundedReceiver<Sent>) -> http::Response<WasiBody> {
        http::Response::new(StreamBody::new(rx).boxed_unsync())
    }

    #[tokio::test]
    async fn the_acceptor_gives_each_connection_to_the_least_busy_serving_thread() {
        // Proves connections spread over the serving threads instead of a burst landing on
        // one: of 8 new connections, lanes holding 2, 0 and 0 get 2, 3 and 3 (least open
        // first), a lane whose thread is gone gets none, and a lane whose connections
        // ended gets the next one.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut lanes, senders): (Vec<_>, Vec<_>) = (0..4).map(|_| lane()).unzip();
        senders[0].open.store(2, Ordering::Relaxed);
        drop(lanes.pop()); // the fourth thread is gone
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let acceptor = tokio::spawn(accept(listener, senders, async move {
            let _ = stop_rx.await;
        }));
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Collected until all 8 are in, however slowly the acceptor gets to them.
        let mut got = [0usize; 3];
        let started = std::time::Instant::now();
        loop {
            for (i, lane) in lanes.iter_mut().enumerate() {
                while lane.incoming.try_recv().is_ok() {
                    got[i] += 1;
                }
            }
            if got.iter().sum::<usize>() >= 8 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "only {got:?} handed over"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(got, [2, 3, 3]);
        let open: Vec<usize> = lanes
            .iter()
            .map(|l| l.open.load(Ordering::Relaxed))
            .collect();
        assert_eq!(open, vec![4, 3, 3], "received {got:?}");
        // A connection of lane 1 ends: the next one goes there.
        drop(OpenConnection(lanes[1].open.clone()));
        drop(OpenConnection(lanes[1].open.clone()));
        clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        let next = tokio::time::timeout(Duration::from_secs(5), lanes[1].incoming.recv()).await;
        assert!(matches!(next, Ok(Some(_))));
        let _ = stop_tx.send(());
        acceptor.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_that_ends_within_the_wait_is_sent_whole_with_its_length() {
        // Proves two chunks and the end, all ready, come back as one exact-size buffer.
        let (tx, rx) = mpsc::unbounded::<Sent>();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"hel"))))
            .unwrap();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"lo"))))
            .unwrap();
        drop(tx);
        let body = coalesce_body(streamed(rx)).await.into_body();
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");
    }

    #[tokio::test]
    async fn a_body_still_open_after_the_wait_streams_on_in_order() {
        // Proves frames read during the wait are kept in front of later ones and the
        // response is not held back until its body ends: the body ends only after the
        // response is handed on. (The 30 s bound only turns a hang into a failure.)
        let (tx, rx) = mpsc::unbounded::<Sent>();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), coalesce_body(streamed(rx)))
            .await
            .expect("the response is handed on while its body is still open");
        let body = resp.into_body();
        assert_eq!(body.size_hint().exact(), None);
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"b"))))
            .unwrap();
        drop(tx);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"ab");
    }

    #[tokio::test]
    async fn a_body_error_is_still_reported_after_the_frames_before_it() {
        // Proves an error met during the wait is not swallowed: the client sees the data
        // first, then the failure, as it would have without the wait.
        let (tx, rx) = mpsc::unbounded::<Sent>();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .unwrap();
        tx.unbounded_send(Err(HttpError::HttpProtocolError))
            .unwrap();
        let mut body = coalesce_body(streamed(rx)).await.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"x"));
        assert!(body.frame().await.unwrap().is_err());
    }
}
