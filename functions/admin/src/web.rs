//! Request plumbing around the core: the environment (key-value store, encryption keys,
//! clock), responses carrying the request id, 405 with `Allow`, and the Idempotency-Key
//! protocol wrapped around a POST handler.
//!
//! The same shape lives in each spinpay component (admin, authorize, risk-check); it is
//! a candidate for `spinpay-guest`.

use http::HeaderMap;
use serde::Serialize;
use spinpay_core::ApiError;
use spinpay_core::crypto::{Keyring, open, seal};
use spinpay_core::service::{
    Ctx, Reply, Started, idempotency_begin, idempotency_finish, reply_for,
};
use spinpay_guest::env;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::kv::KvRepository;

/// The key-value label every merchant-API component uses.
pub const STORE_LABEL: &str = "default";
/// The version of the `encryption_key` variable's key in sealed envelopes.
pub const KEY_VERSION: u32 = 1;
/// The secret variable holding the AES-256-GCM key (64 hex characters).
pub const VAR_ENCRYPTION_KEY: &str = "encryption_key";
/// Response header set on a replayed idempotent response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Storage and keys for one request.
pub struct Env {
    repo: KvRepository,
    keys: Keyring,
}

impl Env {
    /// Opens the store and reads the encryption key; a missing or malformed key fails
    /// closed with `not_configured`.
    pub async fn load() -> Result<Env, ApiError> {
        let not_configured = ApiError::NotConfigured {
            what: VAR_ENCRYPTION_KEY,
        };
        let hex = env::secret(VAR_ENCRYPTION_KEY)
            .await
            .map_err(|_| not_configured.clone())?;
        let keys = Keyring::from_hex(KEY_VERSION, hex.expose()).map_err(|e| {
            eprintln!("{VAR_ENCRYPTION_KEY}: {e}");
            not_configured
        })?;
        let repo = KvRepository::open(STORE_LABEL).await?;
        Ok(Env { repo, keys })
    }

    /// The core's context, stamped with the current time.
    pub fn ctx(&self) -> Ctx<'_, KvRepository> {
        Ctx {
            repo: &self.repo,
            keys: &self.keys,
            now_ms: env::now_ms(),
        }
    }
}

/// A JSON body already serialized, with the request id.
pub fn json_text(status: u16, body: String, request_id: &str) -> HttpResponse {
    let resp = inbound::bytes_response(status, "application/json", body.into_bytes());
    inbound::with_header(resp, inbound::REQUEST_ID_HEADER, request_id)
}

/// The error JSON (internal details are logged once, never sent).
pub fn error(e: &ApiError, request_id: &str) -> HttpResponse {
    inbound::error_response(e, request_id)
}

/// 405 `method_not_allowed` with the methods the path accepts in `Allow`.
pub fn method_not_allowed(allow: &str, request_id: &str) -> HttpResponse {
    let resp = error(&ApiError::MethodNotAllowed, request_id);
    inbound::with_header(resp, "allow", allow)
}

/// The optional `Idempotency-Key`: absent → `None`; present → validated.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if headers.contains_key("idempotency-key") {
        inbound::idempotency_key(headers).map(Some)
    } else {
        Ok(None)
    }
}

/// What identifies a keyed request.
pub struct Keyed<'a> {
    /// Whose keys these are (a merchant id, or a fixed scope for admin calls).
    pub scope: &'a str,
    /// The request's `Idempotency-Key`, if any.
    pub key: Option<&'a str>,
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// Raw body.
    pub body: &'a [u8],
    /// Store the replayable body encrypted (it holds secrets shown only once).
    pub seal: bool,
}

/// Runs `run` under the Idempotency-Key protocol: a replay answers the stored reply, a
/// first run stores its reply (unless retryable). Successes answer 200.
pub async fn idempotent<T: Serialize>(
    ctx: &Ctx<'_, KvRepository>,
    k: Keyed<'_>,
    request_id: &str,
    run: impl AsyncFnOnce() -> Result<T, ApiError>,
) -> HttpResponse {
    let started = idempotency_begin(ctx, k.scope, k.key, k.method, k.path, k.body).await;
    let ticket = match started {
        Ok(Started::Run(ticket)) => ticket,
        Ok(Started::Replay(reply)) => return replay(ctx, &k, reply, request_id),
        Err(e) => return error(&e, request_id),
    };
    let result = run().await;
    let (reply, retryable) = reply_for(&result, 200);
    let stored = if k.seal && ticket.is_some() {
        Reply {
            status: reply.status,
            body: seal(
                ctx.keys,
                env::random_bytes(),
                reply.body.as_bytes(),
                &aad(&k),
            ),
        }
    } else {
        reply.clone()
    };
    if let Err(e) = idempotency_finish(ctx, ticket, &stored, retryable).await {
        // The operation itself happened: answer its result; the key stays locked until
        // its lock expires, then the request may run again.
        eprintln!("request {request_id}: idempotency record not completed: {e:?}");
    }
    match result {
        Ok(_) => json_text(reply.status, reply.body, request_id),
        Err(e) => error(&e, request_id),
    }
}

fn aad(k: &Keyed<'_>) -> Vec<u8> {
    format!("idempotency:{}:{}", k.scope, k.path).into_bytes()
}

fn replay(
    ctx: &Ctx<'_, KvRepository>,
    k: &Keyed<'_>,
    reply: Reply,
    request_id: &str,
) -> HttpResponse {
    let body = if k.seal {
        match open(ctx.keys, &reply.body, &aad(k)).map(String::from_utf8) {
            Ok(Ok(body)) => body,
            Ok(Err(_)) | Err(_) => {
                let detail = "stored idempotent reply could not be opened".to_string();
                return error(&ApiError::Internal { detail }, request_id);
            }
        }
    } else {
        reply.body
    };
    inbound::with_header(
        json_text(reply.status, body, request_id),
        REPLAYED_HEADER,
        "true",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_idempotency_key_is_none_and_a_bad_one_is_refused() {
        // Proves the header is optional, kept verbatim when valid, refused when not.
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert("idempotency-key", "k-1".parse().unwrap());
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("k-1"));
        h.insert("idempotency-key", "a".repeat(256).parse().unwrap());
        let e = idempotency_key(&h).unwrap_err();
        assert_eq!(e.code(), "idempotency_key_invalid");
    }

    #[test]
    fn a_wrong_method_answers_405_with_allow_and_the_request_id() {
        // Proves the 405 carries Allow, the request id and the method_not_allowed code.
        let resp = method_not_allowed("GET, POST", "req_1");
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, POST");
        assert_eq!(resp.headers()[inbound::REQUEST_ID_HEADER], "req_1");
    }

    #[test]
    fn sealed_replies_are_bound_to_their_scope_and_path() {
        // Proves a sealed stored reply opens only for the same scope and path.
        let keys = Keyring::new(KEY_VERSION, [3; 32]);
        let k = |scope, path| Keyed {
            scope,
            key: Some("k"),
            method: "POST",
            path,
            body: b"{}",
            seal: true,
        };
        let sealed = seal(
            &keys,
            [1; 12],
            b"{\"secret_key\":\"sk\"}",
            &aad(&k("admin", "/a")),
        );
        assert!(open(&keys, &sealed, &aad(&k("admin", "/a"))).is_ok());
        assert!(open(&keys, &sealed, &aad(&k("mch_x", "/a"))).is_err());
        assert!(open(&keys, &sealed, &aad(&k("admin", "/b"))).is_err());
    }
}
