//! Outbound HTTP with a deadline.
//!
//! [`send`] races spin-sdk's outbound `send` (plus reading the whole response body)
//! against a WASI monotonic-clock timer. The result keeps the three outcomes apart,
//! because they mean different things for money: a response (parse it), a timeout or a
//! transport failure after the request may have left (the outcome is unknown: the
//! payment stays `processing` until a query or a notification settles it).

use bytes::Bytes;
use futures::future::{Either, select};

/// Default deadline for a call to a payment channel.
pub const CHANNEL_TIMEOUT_MS_DEFAULT: u64 = 2_500;
/// Default limit on a channel's response body.
pub const RESPONSE_BYTES_MAX_DEFAULT: u64 = 256 * 1024;

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// `GET`, `POST`, ...
    pub method: http::Method,
    /// Absolute URL (`https://…`, or `http://<component>.spin.internal/…`).
    pub url: String,
    /// Headers to send.
    pub headers: Vec<(String, String)>,
    /// Body bytes (empty for none).
    pub body: Vec<u8>,
}

impl OutboundRequest {
    /// A `POST` of a JSON body.
    pub fn post_json(url: impl Into<String>, body: Vec<u8>) -> OutboundRequest {
        OutboundRequest {
            method: http::Method::POST,
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> OutboundRequest {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A response that arrived in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl OutboundResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no response is available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The deadline passed first. The request may have been processed.
    #[error("no response within {after_ms} ms")]
    Timeout {
        /// The deadline used.
        after_ms: u64,
    },
    /// The request could not be built (bad URL or header); nothing was sent.
    #[error("invalid outbound request: {0}")]
    InvalidRequest(String),
    /// Connection refused, denied by `allowed_outbound_hosts`, reset, ... The request
    /// may or may not have reached the peer.
    #[error("transport error: {0}")]
    Transport(String),
    /// The response body exceeded the limit (treated like a garbage answer).
    #[error("response body exceeds {limit_bytes} bytes")]
    ResponseTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
}

impl OutboundError {
    /// True when the peer may have acted on the request (only an invalid request is
    /// known not to have left).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            OutboundError::Timeout { .. }
            | OutboundError::Transport(_)
            | OutboundError::ResponseTooLarge { .. } => true,
            OutboundError::InvalidRequest(_) => false,
        }
    }
}

/// Builds the `http` request (pure; unit-tested). A body goes with its
/// `content-length`, so the host sends it framed by length instead of chunked: some
/// merchants' endpoints read only `Content-Length` bytes, and some channel gateways
/// refuse chunked requests.
pub fn build_request(
    req: &OutboundRequest,
) -> Result<http::Request<http_body_util::Full<Bytes>>, OutboundError> {
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(req.url.as_str());
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !req.body.is_empty() {
        builder = builder.header(http::header::CONTENT_LENGTH, req.body.len());
    }
    builder
        .body(http_body_util::Full::new(Bytes::from(req.body.clone())))
        .map_err(|e| OutboundError::InvalidRequest(e.to_string()))
}

/// Sends `req` and reads the whole response, giving up after `timeout_ms`
/// (request + response body) or when the body exceeds `body_limit_bytes`.
pub async fn send(
    req: &OutboundRequest,
    timeout_ms: u64,
    body_limit_bytes: u64,
) -> Result<OutboundResponse, OutboundError> {
    let request = build_request(req)?;
    within(timeout_ms, exchange(request, body_limit_bytes)).await
}

/// Sends `req` and answers the response's status as soon as its head arrives, giving up
/// after `timeout_ms`; the body is never read. For a peer whose answer is its status
/// alone (a merchant's notification endpoint): a large or slow body after a 2xx must not
/// turn it into a failure.
pub async fn send_for_status(req: &OutboundRequest, timeout_ms: u64) -> Result<u16, OutboundError> {
    let request = build_request(req)?;
    let head = async {
        spin_sdk::http::send(request)
            .await
            .map(|response| response.status().as_u16())
            .map_err(|e| OutboundError::Transport(format!("{e:?}")))
    };
    within(timeout_ms, head).await
}

/// `work`'s result, or a timeout once `timeout_ms` have passed.
async fn within<T>(
    timeout_ms: u64,
    work: impl Future<Output = Result<T, OutboundError>>,
) -> Result<T, OutboundError> {
    let timeout_ns = timeout_ms.saturating_mul(1_000_000);
    let timer = spin_sdk::wasip3::clocks::monotonic_clock::wait_for(timeout_ns);
    futures::pin_mut!(work, timer);
    match select(work, timer).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => Err(OutboundError::Timeout {
            after_ms: timeout_ms,
        }),
    }
}

async fn exchange(
    request: http::Request<http_body_util::Full<Bytes>>,
    body_limit_bytes: u64,
) -> Result<OutboundResponse, OutboundError> {
    let response = spin_sdk::http::send(request)
        .await
        .map_err(|e| OutboundError::Transport(format!("{e:?}")))?;
    let (parts, body) = response.into_parts();
    let body = crate::inbound::read_body(&parts.headers, body, body_limit_bytes)
        .await
        .map_err(|e| match e {
            spinpay_core::ApiError::BodyTooLarge { limit_bytes } => {
                OutboundError::ResponseTooLarge { limit_bytes }
            }
            other => OutboundError::Transport(other.to_string()),
        })?;
    let headers = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    Ok(OutboundResponse {
        status: parts.status.as_u16(),
        headers,
        body,
    })
}

/// `scheme://host[:port]` of `url`, for logs: never its user-info, path or query, which
/// may carry credentials (a merchant's notify URL often does).
pub fn loggable_origin(url: &str) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return "(unparsable URL)".to_string();
    };
    let scheme = uri.scheme_str().unwrap_or("?");
    match (uri.host(), uri.port_u16()) {
        (Some(host), Some(port)) => format!("{scheme}://{host}:{port}"),
        (Some(host), None) => format!("{scheme}://{host}"),
        (None, _) => "(URL without a host)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_url_shows_its_origin_only() {
        // Proves user-info, path and query (where webhook credentials live) never reach
        // a log line, and an unparsable URL is not echoed either.
        let url = "https://hook:s3cret@shop.example:8443/cb/tok_live_1?sig=abc";
        assert_eq!(loggable_origin(url), "https://shop.example:8443");
        assert_eq!(
            loggable_origin("http://127.0.0.1/x?token=y"),
            "http://127.0.0.1"
        );
        assert_eq!(loggable_origin("not a url s3cret"), "(unparsable URL)");
    }

    #[test]
    fn requests_are_built_with_method_url_headers_and_body() {
        // Proves build_request carries every part of the outbound request.
        let req = OutboundRequest::post_json(
            "http://sandbox.spin.internal/sandbox/v1/payments",
            b"{}".to_vec(),
        )
        .header("sandbox-signature", "t=1,v1=ab");
        let built = build_request(&req).unwrap();
        assert_eq!(built.method(), http::Method::POST);
        assert_eq!(built.uri().host(), Some("sandbox.spin.internal"));
        assert_eq!(built.headers()["sandbox-signature"], "t=1,v1=ab");
        assert_eq!(built.headers()["content-type"], "application/json");
        assert_eq!(built.headers()["content-length"], "2");
    }

    #[test]
    fn a_bad_url_is_an_invalid_request_known_not_to_have_left() {
        // Proves an unparsable URL is InvalidRequest and its outcome is known.
        let req = OutboundRequest::post_json("http://bad host/", Vec::new());
        let err = build_request(&req).unwrap_err();
        assert!(matches!(err, OutboundError::InvalidRequest(_)));
        assert!(!err.outcome_unknown());
        assert!(OutboundError::Timeout { after_ms: 1 }.outcome_unknown());
    }

    #[test]
    fn response_headers_are_found_case_insensitively() {
        // Proves header lookup ignores case.
        let resp = OutboundResponse {
            status: 200,
            headers: vec![("sandbox-signature".into(), "t=1,v1=x".into())],
            body: Vec::new(),
        };
        assert_eq!(resp.header("Sandbox-Signature"), Some("t=1,v1=x"));
        assert_eq!(resp.header("other"), None);
    }
}
