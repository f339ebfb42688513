//! Inbound HTTP plumbing for `#[http_service]` components: bounded body reads, JSON and
//! error responses, and the request headers spinpay relies on (bearer token,
//! `Idempotency-Key`, request id, query strings). What the route matched is read from
//! the URI, never from Spin's `spin-path-*` headers: Spin passes a client's own ahead of
//! them.
//!
//! Everything here is generic over `http` types, so it is unit-tested natively.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use spinpay_core::ApiError;

/// The response type every helper builds (implements spin-sdk's `IntoResponse`).
pub type HttpResponse = http::Response<http_body_util::Full<Bytes>>;

/// Default body limit for merchant API requests.
pub const BODY_BYTES_MAX_DEFAULT: u64 = 64 * 1024;
/// Longest accepted `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// Longest request id taken from a caller's `x-request-id`.
pub const REQUEST_ID_LEN_MAX: usize = 64;
/// Most query parameters accepted on one request.
pub const QUERY_PARAMS_MAX: usize = 32;
/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "request-id";

/// Reads a whole body, refusing (413 `body_too_large`) past `limit_bytes`. A declared
/// `Content-Length` above the limit is refused before anything is read.
pub async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit_bytes: u64,
) -> Result<Vec<u8>, ApiError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = ApiError::BodyTooLarge { limit_bytes };
    if let Some(declared) = headers.get(http::header::CONTENT_LENGTH) {
        let declared = declared
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::ParameterInvalid {
                param: "Content-Length".into(),
                reason: "not a non-negative integer".into(),
            })?;
        if declared > limit_bytes {
            return Err(too_large);
        }
    }
    let mut body = body;
    let mut out: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::ParameterInvalid {
            param: "body".into(),
            reason: format!("could not be read: {e}"),
        })?;
        if let Ok(data) = frame.into_data() {
            let total = u64::try_from(out.len())
                .ok()
                .and_then(|n| n.checked_add(u64::try_from(data.len()).ok()?));
            match total {
                Some(total) if total <= limit_bytes => out.extend_from_slice(&data),
                Some(_) | None => return Err(too_large),
            }
        }
    }
    Ok(out)
}

/// Parses a JSON body into `T`; a body that is not JSON is `json_invalid`, a field of
/// the wrong type or an unknown field names the field.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    refuse_empty(body)?;
    serde_json::from_slice(body).map_err(|e| json_error(&e))
}

/// [`parse_json`] into a JSON value for a caller that checks its fields itself: an
/// object naming one key twice is `json_invalid` too, where a plain `Value` would keep
/// the last copy ([`spinpay_core::api::parse_json_value`]).
pub fn parse_json_value(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    refuse_empty(body)?;
    spinpay_core::api::parse_json_value(body)
}

fn refuse_empty(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::JsonInvalid {
            detail: "the body is empty".into(),
        });
    }
    Ok(())
}

fn json_error(e: &serde_json::Error) -> ApiError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return ApiError::UnknownField {
            param: field.to_string(),
        };
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return ApiError::ParameterMissing {
            param: field.to_string(),
        };
    }
    match e.classify() {
        serde_json::error::Category::Data => ApiError::ParameterInvalid {
            param: "body".into(),
            reason: msg,
        },
        serde_json::error::Category::Io
        | serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof => ApiError::JsonInvalid { detail: msg },
    }
}

/// A JSON response with `status`.
pub fn json_response(status: u16, value: &impl serde::Serialize) -> HttpResponse {
    let body = serde_json::to_vec(value).expect("response types always serialize");
    bytes_response(status, "application/json", body)
}

/// A response with raw bytes and a content type.
pub fn bytes_response(status: u16, content_type: &str, body: Vec<u8>) -> HttpResponse {
    let mut resp = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Adds (or replaces) a header; a value that is not a valid header value is skipped.
pub fn with_header(mut resp: HttpResponse, name: &'static str, value: &str) -> HttpResponse {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

/// The error response `{"error":{"type","code","message","param"}}` carrying the request
/// id. An internal error's detail is written to the log here, once, with the request id;
/// the client sees only a generic message. A 401 names the scheme to authenticate with
/// (`WWW-Authenticate: Bearer`, as RFC 9110 requires of a 401), with RFC 6750's
/// `error="invalid_token"` when a token was sent and refused.
pub fn error_response(err: &ApiError, request_id: &str) -> HttpResponse {
    if let ApiError::Internal { detail } = err {
        eprintln!("request {request_id}: internal error: {detail}");
    }
    let mut resp = json_response(err.status(), &err.to_json());
    if err.status() == 401 {
        let challenge = match err {
            ApiError::AuthenticationRequired | ApiError::AdminTokenRequired => {
                r#"Bearer realm="spinpay""#
            }
            _ => r#"Bearer realm="spinpay", error="invalid_token""#,
        };
        resp = with_header(resp, "www-authenticate", challenge);
    }
    with_header(resp, REQUEST_ID_HEADER, request_id)
}

/// `Authorization: Bearer <token>` → the token; absent or not a bearer token →
/// `authentication_required`.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::AuthenticationRequired)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(ApiError::AuthenticationRequired)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::AuthenticationRequired);
    }
    Ok(token)
}

/// The `Idempotency-Key` header's value, which must be 1–255 printable ASCII characters
/// (0x20–0x7E, not only spaces); absent is an error here (the header itself is optional:
/// see `component::idempotency_key`).
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let invalid = |reason: &str| ApiError::IdempotencyKeyInvalid {
        reason: reason.to_string(),
    };
    let mut values = headers.get_all("idempotency-key").iter();
    let value = values.next().ok_or_else(|| invalid("missing"))?;
    if values.next().is_some() {
        return Err(invalid("given more than once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.iter().all(|b| *b == b' ') {
        return Err(invalid("empty"));
    }
    if bytes.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(invalid("longer than 255 characters"));
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(invalid("not printable ASCII"));
    }
    Ok(String::from_utf8(bytes.to_vec()).expect("checked ASCII"))
}

/// The request id: the caller's `x-request-id` when it is short and plain
/// (`[A-Za-z0-9_.-]`), otherwise `req_` + hex of `random`.
pub fn request_id(headers: &HeaderMap, random: [u8; 12]) -> String {
    let given = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= REQUEST_ID_LEN_MAX
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        });
    match given {
        Some(id) => id.to_string(),
        None => format!("req_{}", hex::encode(random)),
    }
}

/// A request that takes no query parameters: any is `unknown_field` naming the first.
/// Single-object reads call it, and so does every merchant or admin POST (its fields come
/// from the body only; a setting put in the query would otherwise be ignored by a 200),
/// before it reads or stores anything. Not the channels' notification endpoints
/// (`/v1/webhooks/...`, `/sandbox/...`), whose callers may put data in the query.
pub fn no_query(query: Option<&str>) -> Result<(), ApiError> {
    Query::parse(query)?.only(&[])
}

/// Parsed query parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `a=1&b=x%20y` (percent-decoding, `+` as space). A repeated name, bad
    /// percent-encoding or more than [`QUERY_PARAMS_MAX`] parameters is `parameter_invalid`.
    pub fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = percent_decode(name).ok_or_else(|| bad_query("query", "bad encoding"))?;
            let value = percent_decode(value).ok_or_else(|| bad_query(&name, "bad encoding"))?;
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(bad_query(&name, "given more than once"));
            }
            if pairs.len() >= QUERY_PARAMS_MAX {
                return Err(bad_query("query", "too many parameters"));
            }
            pairs.push((name, value));
        }
        Ok(Query { pairs })
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses any parameter not in `allowed` (`unknown_field` naming it).
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self
            .pairs
            .iter()
            .find(|(n, _)| !allowed.contains(&n.as_str()))
        {
            Some((name, _)) => Err(ApiError::UnknownField {
                param: name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// An optional integer parameter within `min..=max`.
    pub fn int_in(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                Ok(_) | Err(_) => Err(bad_query(
                    name,
                    &format!("must be an integer from {min} to {max}"),
                )),
            },
        }
    }
}

fn bad_query(param: &str, reason: &str) -> ApiError {
    ApiError::ParameterInvalid {
        param: param.to_string(),
        reason: reason.to_string(),
    }
}

/// Percent-decodes (with `+` as space); `None` on a bad escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use http_body_util::Full;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_body_within_the_limit_is_read_whole() {
        // Proves read_body returns every byte when the body fits exactly.
        let body = Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(
            block_on(read_body(&HeaderMap::new(), body, 10)).unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn an_oversize_body_is_refused_with_body_too_large() {
        // Proves a body one byte over the limit yields 413 body_too_large.
        let body = Full::new(Bytes::from_static(b"0123456789x"));
        let err = block_on(read_body(&HeaderMap::new(), body, 10)).unwrap_err();
        assert_eq!(err.code(), "body_too_large");
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn a_declared_oversize_content_length_is_refused_before_reading() {
        // Proves Content-Length above the limit is refused even if the body is short.
        let h = headers(&[("content-length", "999999")]);
        let err = block_on(read_body(&h, Full::new(Bytes::new()), 10)).unwrap_err();
        assert_eq!(err.code(), "body_too_large");
    }

    #[test]
    fn json_errors_name_the_unknown_or_missing_field() {
        // Proves bad JSON, unknown fields, missing fields and wrong types get distinct codes.
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            amount_minor: i64,
        }
        assert_eq!(parse_json::<T>(b"{").unwrap_err().code(), "json_invalid");
        assert_eq!(parse_json::<T>(b"").unwrap_err().code(), "json_invalid");
        let unknown = parse_json::<T>(br#"{"amount_minor":1,"x":2}"#).unwrap_err();
        assert_eq!(unknown.param(), Some("x"));
        let missing = parse_json::<T>(b"{}").unwrap_err();
        assert_eq!(missing.code(), "parameter_missing");
        assert_eq!(missing.param(), Some("amount_minor"));
        let wrong = parse_json::<T>(br#"{"amount_minor":"1"}"#).unwrap_err();
        assert_eq!(wrong.code(), "parameter_invalid");
    }

    #[test]
    fn error_responses_have_the_documented_shape_and_request_id() {
        // Proves status, JSON body and request-id header of an error response.
        let resp = error_response(&ApiError::IdempotencyKeyReused, "req_1");
        assert_eq!(resp.status(), 409);
        assert_eq!(resp.headers()[REQUEST_ID_HEADER], "req_1");
        let body = block_on(resp.into_body().collect()).unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "idempotency_key_reused");
        assert_eq!(v["error"]["type"], "idempotency_error");
        assert!(resp_has_no_challenge(&ApiError::IdempotencyKeyReused));
    }

    fn resp_has_no_challenge(err: &ApiError) -> bool {
        error_response(err, "req_1")
            .headers()
            .get("www-authenticate")
            .is_none()
    }

    #[test]
    fn a_401_names_the_bearer_scheme_and_says_whether_the_token_was_refused() {
        // Proves every 401 carries WWW-Authenticate (RFC 9110): a bare Bearer challenge
        // when no token came, error="invalid_token" when one was refused; others none.
        let challenge = |err: &ApiError| {
            let resp = error_response(err, "req_1");
            assert_eq!(resp.status(), 401, "{err:?}");
            resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string()
        };
        for absent in [
            ApiError::AuthenticationRequired,
            ApiError::AdminTokenRequired,
        ] {
            assert_eq!(challenge(&absent), r#"Bearer realm="spinpay""#);
        }
        for refused in [ApiError::ApiKeyInvalid, ApiError::AdminTokenInvalid] {
            assert_eq!(
                challenge(&refused),
                r#"Bearer realm="spinpay", error="invalid_token""#
            );
        }
        assert!(resp_has_no_challenge(&ApiError::RouteNotFound));
    }

    #[test]
    fn bearer_tokens_are_extracted_and_other_schemes_refused() {
        // Proves Bearer (any case) yields the token; Basic, empty and absent are refused.
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer sk_1")])).unwrap(),
            "sk_1"
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer  sk_2 ")])).unwrap(),
            "sk_2"
        );
        assert!(bearer_token(&headers(&[("authorization", "Basic abc")])).is_err());
        assert!(bearer_token(&headers(&[("authorization", "Bearer ")])).is_err());
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn idempotency_keys_must_be_1_to_255_printable_ascii() {
        // Proves the accepted range and each refusal reason.
        assert_eq!(
            idempotency_key(&headers(&[("idempotency-key", "k-1 x")])).unwrap(),
            "k-1 x"
        );
        let long = "a".repeat(256);
        assert!(idempotency_key(&headers(&[("idempotency-key", &long)])).is_err());
        assert!(idempotency_key(&headers(&[("idempotency-key", &"a".repeat(255))])).is_ok());
        assert!(idempotency_key(&headers(&[("idempotency-key", "")])).is_err());
        assert!(idempotency_key(&headers(&[("idempotency-key", "a\tb")])).is_err());
        assert!(
            idempotency_key(&headers(&[
                ("idempotency-key", "a"),
                ("idempotency-key", "b")
            ]))
            .is_err()
        );
        let missing = idempotency_key(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.code(), "idempotency_key_invalid");
    }

    #[test]
    fn request_ids_come_from_a_plain_header_or_randomness() {
        // Proves a safe x-request-id is kept and anything else is replaced.
        assert_eq!(
            request_id(&headers(&[("x-request-id", "abc-1")]), [0; 12]),
            "abc-1"
        );
        assert_eq!(
            request_id(&headers(&[("x-request-id", "a b")]), [1; 12]),
            "req_010101010101010101010101"
        );
    }

    #[test]
    fn a_post_with_a_query_string_is_refused_naming_its_first_parameter() {
        // Proves the check the POST handlers run on their request's URI: POST
        // /v1/account?notify_url=… is 400 unknown_field naming notify_url (decoded, the
        // first of several), a bare name or a malformed query is refused too, and no
        // query or an empty one passes.
        let query_of = |uri: &str| {
            let req = http::Request::post(uri).body(()).unwrap();
            no_query(req.uri().query())
        };
        let e =
            query_of("/v1/account?notify_url=https%3A%2F%2Fshop.example%2Fn&name=zzz").unwrap_err();
        assert_eq!(
            (e.status(), e.code(), e.param()),
            (400, "unknown_field", Some("notify_url"))
        );
        let e = query_of("/v1/payments/pay_1/cancel?x").unwrap_err();
        assert_eq!((e.code(), e.param()), ("unknown_field", Some("x")));
        let e = query_of("/v1/admin/merchants?na%6De=A").unwrap_err();
        assert_eq!(e.param(), Some("name"));
        let e = query_of("/v1/events/evt_1/redeliver?a=%zz").unwrap_err();
        assert_eq!(e.code(), "parameter_invalid");
        assert!(query_of("/v1/admin/notifications/sweep").is_ok());
        assert!(query_of("/v1/admin/reconcile?").is_ok());
    }

    #[test]
    fn query_strings_are_decoded_and_validated() {
        // Proves decoding, duplicate refusal, unknown-name refusal and integer ranges.
        let q = Query::parse(Some("limit=10&merchant_order_id=ORD%2D1+x")).unwrap();
        assert_eq!(q.get("merchant_order_id"), Some("ORD-1 x"));
        assert_eq!(q.int_in("limit", 1, 100).unwrap(), Some(10));
        assert!(q.only(&["limit", "merchant_order_id"]).is_ok());
        assert_eq!(
            q.only(&["limit"]).unwrap_err().param(),
            Some("merchant_order_id")
        );
        assert!(Query::parse(Some("limit=1&limit=2")).is_err());
        assert!(Query::parse(Some("a=%zz")).is_err());
        let big = Query::parse(Some("limit=101")).unwrap();
        assert_eq!(
            big.int_in("limit", 1, 100).unwrap_err().param(),
            Some("limit")
        );
        assert_eq!(Query::parse(None).unwrap(), Query::default());
    }
}
