//! Outbound HTTP to the network, for requests that passed `allowed_outbound_hosts`:
//! resolve the host, drop the addresses in the runtime config's `block_networks` (none
//! left → `destination-IP-prohibited`, as in Spin), connect to one of the remaining
//! addresses within the connect timeout, TLS with the webpki roots for `https`, then an
//! HTTP/1.1 exchange with first-byte and between-bytes timeouts.
//!
//! The address that was checked is the address connected to: resolving once more at
//! connect time would let a name answer differently the second time (DNS rebinding).
//!
//! Connections are kept alive and reused ([`Pool`], one per app): a channel called once
//! per payment (Alipay, WeChat Pay over HTTPS, often far away) would otherwise cost a TCP
//! and a TLS handshake, several round trips, on every call. A connection goes back to the
//! pool once its response has been read to the end, and is reused only while younger
//! than [`POOL_IDLE_TIMEOUT`] and still open; older ones are closed every
//! [`POOL_PRUNE_EVERY`], used again or not. A request a reused connection could not
//! take (it closed meanwhile) goes out on a new connection: hyper hands it back unsent,
//! so nothing is sent twice.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, timeout_at};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use crate::blocked_networks::BlockedNetworks;

/// What [`send`] gives back: the response, and a future that ends with the connection
/// (and reports its error, if any).
pub(crate) type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

/// How long an idle connection is kept for reuse: well below the keep-alive timeout of
/// common servers and load balancers (60–75 s), so a reused connection is rarely one the
/// server is closing at that very moment.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most idle connections kept per origin.
pub const POOL_IDLE_PER_ORIGIN_MAX: usize = 16;
/// How often [`spawn_pruner`] closes the idle connections past [`POOL_IDLE_TIMEOUT`].
pub const POOL_PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Idle keep-alive connections of one app, by origin. Per app, like the
/// `block_networks` its connections were checked against.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Conn>>>,
}

/// An origin: connections are shared only between requests to the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    tls: bool,
    host: String,
    port: u16,
}

/// One open connection: where requests go in, and how its task ended.
struct Conn {
    sender: SendRequest<WasiBody>,
    ended: tokio::sync::oneshot::Receiver<Result<(), hyper::Error>>,
    idle_since: std::time::Instant,
}

impl Conn {
    fn reusable(&self) -> bool {
        self.idle_since.elapsed() < POOL_IDLE_TIMEOUT && !self.sender.is_closed()
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Conn>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently idle reusable connection to `key`, if any.
    fn take(&self, key: &PoolKey) -> Option<Conn> {
        let mut idle = self.lock();
        let conns = idle.get_mut(key)?;
        while let Some(conn) = conns.pop() {
            if conn.reusable() && conn.sender.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to `key` (dropping the stale ones; a full origin
    /// closes it instead).
    fn put(&self, key: PoolKey, mut conn: Conn) {
        conn.idle_since = std::time::Instant::now();
        let mut idle = self.lock();
        let conns = idle.entry(key).or_default();
        conns.retain(Conn::reusable);
        if conns.len() < POOL_IDLE_PER_ORIGIN_MAX {
            conns.push(conn);
        }
    }

    /// Closes the idle connections no longer reusable and forgets origins left with none
    /// (dropping a connection's sender ends it).
    fn prune(&self) {
        self.lock().retain(|_, conns| {
            conns.retain(Conn::reusable);
            !conns.is_empty()
        });
    }

    /// Idle connections kept now (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Makes every idle connection look idle for `by` longer (for tests).
    #[cfg(test)]
    fn age(&self, by: Duration) {
        for conn in self.lock().values_mut().flatten() {
            conn.idle_since -= by;
        }
    }
}

/// Prunes `pool` every `every` on the current runtime (if any) for as long as the pool
/// exists. Without it an origin called once and never again, such as one merchant's
/// notify URL, would keep its idle connections open until its server closes them, which
/// some servers never do.
pub(crate) fn spawn_pruner(pool: &Arc<Pool>, every: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pool = Arc::downgrade(pool);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            pool.prune();
        }
    });
}

/// Sends `req` (absolute URI) over the network, on an idle connection of `pool` when one
/// to the same origin is open. `options` carries the timeouts, already capped by the
/// host.
pub(crate) async fn send(
    mut req: http::Request<WasiBody>,
    options: RequestOptions,
    blocked: &BlockedNetworks,
    pool: &Arc<Pool>,
) -> Result<Sent, HttpError> {
    let connect_timeout = options.connect_timeout.unwrap_or(Duration::MAX);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(Duration::MAX);
    let between_bytes_timeout = options.between_bytes_timeout.unwrap_or(Duration::MAX);
    let uri = req.uri();
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or(HttpError::HttpRequestUriInvalid)?;
    // `http` keeps an IPv6 literal's brackets.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_string();
    let default_port = if tls { 443 } else { 80 };
    let port = uri.port_u16().unwrap_or(default_port);
    // As Spin does, the `host` header is the URL's host and a port other than the
    // scheme's, never the whole authority: a URL's user-info must not reach the server.
    let host_header = match uri.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", uri.host().unwrap_or_default()),
        _ => uri.host().unwrap_or_default().to_string(),
    };
    let host_header =
        http::HeaderValue::try_from(host_header).map_err(|_| HttpError::HttpRequestUriInvalid)?;
    req.headers_mut().insert(http::header::HOST, host_header);
    let key = PoolKey {
        tls,
        host: host.clone(),
        port,
    };

    // The request line names the path only; the host is in the `host` header.
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = http::Uri::try_from(path).map_err(|_| HttpError::HttpRequestUriInvalid)?;

    if let Some(mut conn) = pool.take(&key) {
        match tokio::time::timeout(first_byte_timeout, conn.sender.try_send_request(req)).await {
            Err(_) => return Err(HttpError::ConnectionReadTimeout),
            Ok(Ok(resp)) => return Ok(exchanged(resp, conn, key, pool, between_bytes_timeout)),
            Ok(Err(mut refused)) => match refused.take_message() {
                // Never written: the connection had closed. A new one takes it below.
                Some(unsent) => req = unsent,
                None => return Err(HttpError::Hyper(refused.into_error())),
            },
        }
    }
    let mut conn = open(&host, port, tls, connect_timeout, blocked).await?;
    let resp = tokio::time::timeout(first_byte_timeout, conn.sender.send_request(req))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    Ok(exchanged(resp, conn, key, pool, between_bytes_timeout))
}

/// The response of an exchange on `conn`, with a future that ends with the exchange:
/// once the response has been read to its end the connection goes back to `pool`
/// (`Ok`); if the connection ends first, its task's outcome.
fn exchanged(
    resp: http::Response<Incoming>,
    mut conn: Conn,
    key: PoolKey,
    pool: &Arc<Pool>,
    between_bytes_timeout: Duration,
) -> Sent {
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let pool = pool.clone();
    tokio::spawn(async move {
        enum Next {
            Reuse,
            Ended(Result<(), hyper::Error>),
        }
        let next = tokio::select! {
            ready = conn.sender.ready() => match ready {
                Ok(()) => Next::Reuse,
                // Closed: its task's outcome tells how.
                Err(_) => Next::Ended((&mut conn.ended).await.unwrap_or(Ok(()))),
            },
            // The task was dropped with its runtime: ended, nothing to report.
            ended = &mut conn.ended => Next::Ended(ended.unwrap_or(Ok(()))),
        };
        let outcome = match next {
            Next::Reuse => {
                pool.put(key, conn);
                Ok(())
            }
            Next::Ended(Ok(())) => Ok(()),
            Next::Ended(Err(e)) if e.is_timeout() => Err(HttpError::HttpResponseTimeout),
            Next::Ended(Err(e)) => Err(HttpError::Hyper(e)),
        };
        let _ = ended_tx.send(outcome);
    });
    let resp = resp.map(|body| TimedBody::new(body, between_bytes_timeout).boxed_unsync());
    let ended = async move { ended_rx.await.unwrap_or(Ok(())) };
    (resp, Box::new(ended))
}

/// A new connection to `host`:`port` (TLS when `tls`): lookup, the `block_networks`
/// check, connect, TLS and the HTTP/1.1 handshake, all within `connect_timeout`; its
/// task runs on this runtime.
async fn open(
    host: &str,
    port: u16,
    tls: bool,
    connect_timeout: Duration,
    blocked: &BlockedNetworks,
) -> Result<Conn, HttpError> {
    // One deadline for the whole connection set-up: lookup, connect, TLS, handshake.
    let deadline = later(connect_timeout);
    let addrs = timeout_at(deadline, resolve(host, port))
        .await
        .map_err(|_| HttpError::DnsTimeout)??;
    let addrs = allowed_addrs(addrs, blocked, host)?;
    let stream = timeout_at(deadline, connect(&addrs))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = if tls {
        let name = server_name(host)?;
        let stream = timeout_at(deadline, tls_connector().connect(name, stream))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (sender, connection) = timeout_at(
        deadline,
        hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(io)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    // The connection runs on its own task until the server or the pool closes it.
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = ended_tx.send(connection.await);
    });
    Ok(Conn {
        sender,
        ended,
        idle_since: std::time::Instant::now(),
    })
}

/// A connection hyper can run on: plain TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// `now + after`, or far in the future when that does not fit.
fn later(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// The addresses of `host` (an IP literal is its own address).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| dns_error(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(dns_error(format!("{host} has no address")));
    }
    Ok(addrs)
}

fn dns_error(message: String) -> HttpError {
    HttpError::DnsError {
        rcode: Some(message),
        info_code: None,
    }
}

/// `addrs` without the blocked ones; none left is `DestinationIpProhibited`.
fn allowed_addrs(
    addrs: Vec<SocketAddr>,
    blocked: &BlockedNetworks,
    host: &str,
) -> Result<Vec<SocketAddr>, HttpError> {
    if blocked.is_empty() {
        return Ok(addrs);
    }
    let (refused, allowed): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|a| blocked.is_blocked(a.ip()));
    if allowed.is_empty() {
        tracing::error!(
            %host,
            addresses = ?refused,
            "outbound request refused: every address of the host is in the runtime config's block_networks"
        );
        return Err(HttpError::DestinationIpProhibited);
    }
    Ok(allowed)
}

/// The first of `addrs` that accepts a connection, in order (the caller bounds the time).
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, HttpError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(HttpError::Connect(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to")
    })))
}

/// The name the server's certificate must carry: the IP literal or the DNS name.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    use rustls::pki_types::ServerName;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_string()).map_err(|_| HttpError::HttpRequestUriInvalid)
}

/// One TLS client configuration for the process: the webpki roots, no client certificate.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// A response body that fails with `ConnectionReadTimeout` when no frame arrives within
/// `gap` of the previous one (or of the response head).
struct TimedBody<B = Incoming> {
    body: B,
    gap: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<B> TimedBody<B> {
    fn new(body: B, gap: Duration) -> Self {
        TimedBody {
            body,
            gap,
            timer: Box::pin(tokio::time::sleep_until(later(gap))),
        }
    }
}

impl<B: Body<Data = Bytes, Error = hyper::Error> + Unpin> Body for TimedBody<B> {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = later(self.gap);
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::Hyper(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_host_whose_every_address_is_blocked_is_refused() {
        // Proves blocked addresses are dropped, the rest kept in order, and a host left
        // with none is DestinationIpProhibited; with nothing blocked every address stays.
        let blocked = BlockedNetworks::parse(["private"]).unwrap();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mixed = vec![
            a("10.0.0.1:443"),
            a("8.8.8.8:443"),
            a("[::1]:443"),
            a("1.1.1.1:443"),
        ];
        let kept = allowed_addrs(mixed.clone(), &blocked, "h").unwrap();
        assert_eq!(kept, vec![a("8.8.8.8:443"), a("1.1.1.1:443")]);
        let private = vec![a("127.0.0.1:80"), a("[::1]:80")];
        assert!(matches!(
            allowed_addrs(private.clone(), &blocked, "h"),
            Err(HttpError::DestinationIpProhibited)
        ));
        let open = BlockedNetworks::default();
        assert_eq!(allowed_addrs(private.clone(), &open, "h").unwrap(), private);
    }

    /// A body whose frames arrive when the test sends them.
    struct Fed(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn a_response_body_that_stalls_longer_than_the_gap_fails_with_a_read_timeout() {
        // Proves each frame restarts the clock (the deadline moves to a gap after it, so
        // frames a third of the gap apart keep coming for longer than the gap in all) and a
        // stall longer than the gap ends the body with ConnectionReadTimeout, never before
        // the gap. Each frame is sent before the body is asked for it, so a slow machine
        // cannot make one late.
        let gap = Duration::from_millis(300);
        let (feed, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut body = TimedBody::new(Fed(rx), gap);
        let first_deadline = body.timer.deadline();
        for i in 0..4u8 {
            tokio::time::sleep(gap / 3).await;
            feed.send(Bytes::from(vec![i])).unwrap();
            let asked = Instant::now();
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from(vec![i]));
            assert!(
                body.timer.deadline() >= asked + gap,
                "frame {i} did not restart the clock"
            );
        }
        assert!(
            Instant::now() > first_deadline,
            "the frames came faster than planned"
        );
        // The feed stays open (a closed one would end the body): the body just stalls.
        let deadline = body.timer.deadline();
        let end = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("a stalled body ends")
            .unwrap();
        assert!(
            matches!(end, Err(HttpError::ConnectionReadTimeout)),
            "{end:?}"
        );
        assert!(Instant::now() >= deadline, "ended before the gap");
        drop(feed);
    }

    /// Connections a [`counting_server`] accepted, and of those, how many ended.
    struct Counted {
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        ended: Arc<std::sync::atomic::AtomicUsize>,
        drop_all: Arc<tokio::sync::Notify>,
    }

    impl Counted {
        /// Drops every connection open now, idle or not, without a word to the client (a
        /// server whose keep-alive timeout ran out).
        fn drop_connections(&self) {
            self.drop_all.notify_waiters();
        }

        fn accepted(&self) -> usize {
            self.accepted.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn ended(&self) -> usize {
            self.ended.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A loopback HTTP/1.1 server answering `<connection>:<request on it>` (4 MiB at
    /// `/big`, the `host` headers it got at `/host`) and counting the connections it
    /// accepted and saw end. It never closes a connection itself, only when told to by
    /// [`Counted::drop_connections`], and then without a `connection: close` header.
    async fn counting_server() -> (u16, Counted) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counted = Counted {
            accepted: Arc::new(AtomicUsize::new(0)),
            ended: Arc::new(AtomicUsize::new(0)),
            drop_all: Arc::new(tokio::sync::Notify::new()),
        };
        let counter = counted.accepted.clone();
        let ended = counted.ended.clone();
        let drop_all = counted.drop_all.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let ended = ended.clone();
                let drop_all = drop_all.clone();
                tokio::spawn(async move {
                    // Listening before the connection can answer anything, so a drop asked
                    // for after an answer is never missed.
                    let dropped = drop_all.notified();
                    let served = Arc::new(AtomicUsize::new(0));
                    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let k = served.fetch_add(1, Ordering::SeqCst) + 1;
                        let text = match req.uri().path() {
                            "/big" => "x".repeat(4 << 20),
                            "/host" => req
                                .headers()
                                .get_all(http::header::HOST)
                                .iter()
                                .map(|v| v.to_str().unwrap_or("?"))
                                .collect::<Vec<_>>()
                                .join(","),
                            _ => format!("{n}:{k}"),
                        };
                        async move {
                            let body = http_body_util::Full::new(Bytes::from(text));
                            Ok::<_, std::convert::Infallible>(http::Response::new(body))
                        }
                    });
                    let serving = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = serving => {}
                        () = dropped => {}
                    }
                    // The socket is closed by now (`serving` owned it).
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (port, counted)
    }

    /// `GET http://127.0.0.1:<port><path>`, as a guest hands it to the host.
    fn get(port: u16, path: &str) -> http::Request<WasiBody> {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::get(format!("http://127.0.0.1:{port}{path}"))
            .header(http::header::HOST, format!("127.0.0.1:{port}"))
            .body(body)
            .unwrap()
    }

    /// GETs `http://127.0.0.1:<port>/` through [`send`] and reads the answer to its end.
    async fn fetch(port: u16, pool: &Arc<Pool>) -> String {
        let req = get(port, "/");
        let timeouts = RequestOptions {
            connect_timeout: Some(Duration::from_secs(5)),
            first_byte_timeout: Some(Duration::from_secs(5)),
            between_bytes_timeout: Some(Duration::from_secs(5)),
        };
        let (resp, ended) = send(req, timeouts, &BlockedNetworks::default(), pool)
            .await
            .unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Box::into_pin(ended).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_host_header_names_the_host_and_port_never_the_urls_user_info() {
        // Proves a URL with user-info (which wasmtime copies into the `host` header it
        // adds) reaches the server with one `host: 127.0.0.1:<port>`, as Spin sends it.
        let (port, _server) = counting_server().await;
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let req = http::Request::get(format!("http://user:secret@127.0.0.1:{port}/host"))
            .header(http::header::HOST, format!("user:secret@127.0.0.1:{port}"))
            .body(body)
            .unwrap();
        let timeouts = RequestOptions {
            connect_timeout: Some(Duration::from_secs(5)),
            first_byte_timeout: Some(Duration::from_secs(5)),
            between_bytes_timeout: Some(Duration::from_secs(5)),
        };
        let pool = Arc::new(Pool::default());
        let (resp, _ended) = send(req, timeouts, &BlockedNetworks::default(), &pool)
            .await
            .unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let seen = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(seen, format!("127.0.0.1:{port}"));
    }

    #[tokio::test]
    async fn requests_to_one_origin_reuse_one_kept_alive_connection() {
        // Proves a connection goes back to the pool once its answer has been read and the
        // next requests to the same origin go out on it: one connection for three.
        let (port, server) = counting_server().await;
        let pool = Arc::new(Pool::default());
        for k in 1..=3 {
            assert_eq!(fetch(port, &pool).await, format!("1:{k}"));
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(server.accepted(), 1);
        // Another origin gets its own.
        let (other, other_server) = counting_server().await;
        assert_eq!(fetch(other, &pool).await, "1:1");
        assert_eq!(pool.idle_count(), 2);
        assert_eq!(other_server.accepted(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_dropped_is_replaced_without_failing_the_request() {
        // Proves a pooled connection the server closed while it was idle is not used: the
        // next request opens a new connection and succeeds, every time. The server drops
        // each connection once it is idle in the pool, and the next request waits for it.
        let (port, server) = counting_server().await;
        let pool = Arc::new(Pool::default());
        for n in 1..=3 {
            assert_eq!(fetch(port, &pool).await, format!("{n}:1"));
            assert_eq!(pool.idle_count(), 1, "connection {n} is pooled");
            server.drop_connections();
            let started = std::time::Instant::now();
            while server.ended() < n {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the server never dropped connection {n}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(server.accepted(), 3);
    }

    #[tokio::test]
    async fn a_connection_whose_answer_was_not_read_to_the_end_is_not_reused() {
        // Proves an answer dropped half-read never leaves its connection in the pool (the
        // next request on it would read the rest of the old answer).
        let (port, server) = counting_server().await;
        let pool = Arc::new(Pool::default());
        let (resp, ended) = send(
            get(port, "/big"),
            RequestOptions::default(),
            &BlockedNetworks::default(),
            &pool,
        )
        .await
        .unwrap();
        drop(resp);
        let _ = Box::into_pin(ended).await;
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(fetch(port, &pool).await, "2:1");
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_once_past_the_idle_timeout_with_no_other_request() {
        // Proves the pruner closes an idle connection that outlived POOL_IDLE_TIMEOUT,
        // even to a server that never closes idle connections itself and with no further
        // request to its origin, and forgets the origin; a fresh one is kept.
        let (port, server) = counting_server().await;
        let pool = Arc::new(Pool::default());
        assert_eq!(fetch(port, &pool).await, "1:1");
        pool.prune();
        assert_eq!(pool.idle_count(), 1, "a fresh idle connection is kept");
        assert_eq!(server.ended(), 0);
        pool.age(POOL_IDLE_TIMEOUT);
        spawn_pruner(&pool, Duration::from_millis(10));
        let started = std::time::Instant::now();
        while server.ended() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the server never saw the connection closed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.accepted(), 1);
        assert_eq!(pool.idle_count(), 0);
        assert!(pool.lock().is_empty(), "the origin is forgotten");
    }

    #[test]
    fn tls_names_are_ip_literals_or_dns_names() {
        // Proves an IPv6 literal (brackets already stripped) and an IPv4 literal become IP
        // server names, and a host name a DNS name.
        use rustls::pki_types::ServerName;
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("10.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("pay.example"),
            Ok(ServerName::DnsName(_))
        ));
    }
}
