//! Outbound HTTP to the network, for requests that passed `allowed_outbound_hosts`:
//! resolve the host, drop the addresses in the runtime config's `block_networks` (none
//! left → `destination-IP-prohibited`, as in Spin), connect to one of the remaining
//! addresses within the connect timeout, TLS with the webpki roots for `https`, then one
//! HTTP/1.1 exchange with first-byte and between-bytes timeouts.
//!
//! The address that was checked is the address connected to: resolving once more at
//! connect time would let a name answer differently the second time (DNS rebinding).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
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

/// Sends `req` (absolute URI) over the network. `options` carries the timeouts, already
/// capped by the host.
pub(crate) async fn send(
    mut req: http::Request<WasiBody>,
    options: RequestOptions,
    blocked: &BlockedNetworks,
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
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });

    // One deadline for the whole connection set-up: lookup, connect, TLS, handshake.
    let deadline = later(connect_timeout);
    let addrs = timeout_at(deadline, resolve(&host, port))
        .await
        .map_err(|_| HttpError::DnsTimeout)??;
    let addrs = allowed_addrs(addrs, blocked, &host)?;
    let stream = timeout_at(deadline, connect(&addrs))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = if tls {
        let name = server_name(&host)?;
        let stream = timeout_at(deadline, tls_connector().connect(name, stream))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = timeout_at(
        deadline,
        hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(io)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request line names the path only; the host is in the `host` header.
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = http::Uri::try_from(path).map_err(|_| HttpError::HttpRequestUriInvalid)?;

    // The connection runs on its own task; dropping `sender` below lets it close once
    // this one exchange is over.
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = ended_tx.send(conn.await);
    });
    let resp = tokio::time::timeout(first_byte_timeout, sender.send_request(req))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    drop(sender);
    let resp = resp.map(|body| TimedBody::new(body, between_bytes_timeout).boxed_unsync());
    let ended = async move {
        match ended_rx.await {
            Ok(Err(e)) if e.is_timeout() => Err(HttpError::HttpResponseTimeout),
            Ok(Err(e)) => Err(HttpError::Hyper(e)),
            // Ended cleanly, or its task was dropped with the runtime.
            Ok(Ok(())) | Err(_) => Ok(()),
        }
    };
    Ok((resp, Box::new(ended)))
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
        // Proves frames spaced within the gap all arrive (each one restarts the clock) and
        // a stall longer than the gap ends the body with ConnectionReadTimeout.
        let gap = Duration::from_millis(300);
        let (feed, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut body = TimedBody::new(Fed(rx), gap);
        // Four frames, a third of the gap apart: longer than the gap in all, while the
        // body waits for each one.
        let feeder = tokio::spawn(async move {
            for i in 0..4u8 {
                tokio::time::sleep(gap / 3).await;
                feed.send(Bytes::from(vec![i])).unwrap();
            }
            feed
        });
        let started = std::time::Instant::now();
        for i in 0..4u8 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from(vec![i]));
        }
        assert!(
            started.elapsed() > gap,
            "the frames came faster than planned"
        );
        let _feed = feeder.await.unwrap();
        let stalled = std::time::Instant::now();
        let end = body.frame().await.unwrap();
        assert!(
            matches!(end, Err(HttpError::ConnectionReadTimeout)),
            "{end:?}"
        );
        assert!(
            stalled.elapsed() >= gap - gap / 3,
            "ended well before the gap"
        );
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
