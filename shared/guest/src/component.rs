//! The request context every merchant-API component builds around the core, written
//! once: the shared key-value store and the keyring from `encryption_key` (one key
//! version for every component, so what one seals another opens), bearer
//! authentication through the core's `authenticate`, and the Idempotency-Key protocol
//! around a POST (the core's `idempotency_begin` / `idempotency_finish`), optionally
//! storing the replayable answer sealed when it holds a secret shown only once.

use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use serde::Serialize;
use spinpay_core::ApiError;
use spinpay_core::crypto::{Keyring, open, seal};
use spinpay_core::model::Merchant;
use spinpay_core::service::{self, Ctx, KeyedRun, Reply, Started};

use crate::env;
use crate::inbound::{self, HttpResponse};
use crate::kv::KvRepository;
use crate::respond::json_text;

/// The key-value store label every spinpay component shares.
pub const STORE_LABEL: &str = "default";
/// The version of the `encryption_key` in sealed envelopes (every component agrees).
pub const KEY_VERSION: u32 = 1;
/// The secret variable holding the AES-256-GCM key (64 hex characters).
pub const VAR_ENCRYPTION_KEY: &str = "encryption_key";
/// Response header set on an answer replayed for its Idempotency-Key.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The method every idempotent call is (the protocol guards POSTs).
const IDEMPOTENT_METHOD: &str = "POST";

/// Set once this instance found `encryption_key` to open the store's data
/// ([`service::check_encryption_key`]).
static KEY_CHECKED: AtomicBool = AtomicBool::new(false);

/// Storage and keys for one request.
#[derive(Debug)]
pub struct Services {
    repo: KvRepository,
    keys: Keyring,
}

/// `not_configured`'s `what` when `encryption_key` is set but is no key.
const ENCRYPTION_KEY_MALFORMED: &str =
    "a usable encryption_key (the one set is not 32 bytes as 64 hex characters)";

/// The keyring of the `encryption_key` value `hex`; a malformed one is 503
/// `not_configured` saying so (an operator who set it is not told it is missing).
fn keyring(hex: &str) -> Result<Keyring, ApiError> {
    Keyring::from_hex(KEY_VERSION, hex).map_err(|e| {
        eprintln!("{VAR_ENCRYPTION_KEY}: {e}");
        ApiError::NotConfigured {
            what: ENCRYPTION_KEY_MALFORMED,
        }
    })
}

impl Services {
    /// Reads `encryption_key` (missing or malformed → 503 `not_configured`: fail
    /// closed) and opens the shared store.
    pub async fn open() -> Result<Services, ApiError> {
        let hex = env::secret(VAR_ENCRYPTION_KEY)
            .await
            .map_err(|_| ApiError::NotConfigured {
                what: VAR_ENCRYPTION_KEY,
            })?;
        let keys = keyring(hex.expose())?;
        let repo = KvRepository::open(STORE_LABEL).await?;
        let services = Services { repo, keys };
        // Once per instance: the key is the same for the app's life.
        if !KEY_CHECKED.load(Ordering::Relaxed) {
            service::check_encryption_key(&services.ctx(), env::random_bytes())
                .await
                .inspect_err(|e| eprintln!("{VAR_ENCRYPTION_KEY}: {e}"))?;
            KEY_CHECKED.store(true, Ordering::Relaxed);
        }
        Ok(services)
    }

    /// The core's context, stamped with the current time.
    pub fn ctx(&self) -> Ctx<'_, KvRepository> {
        Ctx {
            repo: &self.repo,
            keys: &self.keys,
            now_ms: env::now_ms(),
        }
    }

    /// [`Services::open`], then `Authorization: Bearer sk_…` → the merchant (the core
    /// checks the key's hash): the start of every merchant-API request.
    pub async fn authenticated(headers: &HeaderMap) -> Result<(Services, Merchant), ApiError> {
        let services = Services::open().await?;
        let merchant = services.authenticate(headers).await?;
        Ok((services, merchant))
    }

    /// `Authorization: Bearer sk_…` → the merchant (the core checks the key's hash).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Merchant, ApiError> {
        service::authenticate(&self.ctx(), authorization(headers)).await
    }

    /// Runs `run` under the request's (optional) Idempotency-Key: a replayed key answers
    /// the stored reply with [`REPLAYED_HEADER`]; a first run answers 200 with its
    /// result and stores the reply unless it is retryable. An error from `run` comes
    /// back as `Err`, to be answered (and an internal one logged) by the caller's
    /// error response, whose body is the same as the stored one.
    pub async fn idempotent<T: Serialize>(
        &self,
        call: Keyed<'_>,
        request_id: &str,
        run: impl AsyncFnOnce() -> Result<T, ApiError>,
    ) -> Result<HttpResponse, ApiError> {
        self.idempotent_seeded(call, request_id, async |_keyed| run().await)
            .await
    }

    /// [`Services::idempotent`] for an operation that creates objects or acts on them:
    /// `run` gets the key's operation seed to derive ids from and whether the request
    /// takes over a crashed attempt's lock (`None` without an Idempotency-Key), so a
    /// retry finds what that attempt did and goes on from there instead of doing it
    /// twice.
    pub async fn idempotent_seeded<T: Serialize>(
        &self,
        call: Keyed<'_>,
        request_id: &str,
        run: impl AsyncFnOnce(Option<KeyedRun>) -> Result<T, ApiError>,
    ) -> Result<HttpResponse, ApiError> {
        let key = idempotency_key(call.headers)?;
        let ctx = self.ctx();
        let (scope, path) = (call.scope, call.path);
        let started = service::idempotency_begin(
            &ctx,
            scope,
            key.as_deref(),
            IDEMPOTENT_METHOD,
            path,
            call.body,
        )
        .await?;
        let ticket = match started {
            Started::Run(ticket) => ticket,
            Started::Replay(reply) => return self.replay(&call, reply),
        };
        let result = run(ticket.as_ref().map(|t| t.keyed_run())).await;
        let (reply, outcome) = service::reply_for(&result, 200);
        let stored = if call.seal && ticket.is_some() {
            let body = seal(
                &self.keys,
                env::random_bytes(),
                reply.body.as_bytes(),
                &aad(&call),
            );
            Reply {
                status: reply.status,
                body,
            }
        } else {
            reply.clone()
        };
        if let Err(e) = service::idempotency_finish(&self.ctx(), ticket, &stored, outcome).await {
            // The operation itself happened: answer its result truthfully; the key stays
            // locked until its lock expires, then the request may run again.
            eprintln!("request {request_id}: idempotency record not completed: {e}");
        }
        result.map(|_| json_text(reply.status, reply.body))
    }

    fn replay(&self, call: &Keyed<'_>, reply: Reply) -> Result<HttpResponse, ApiError> {
        let body = if call.seal {
            match open(&self.keys, &reply.body, &aad(call)).map(String::from_utf8) {
                Ok(Ok(body)) => body,
                Ok(Err(_)) | Err(_) => {
                    let detail = "stored idempotent reply could not be opened".to_string();
                    return Err(ApiError::Internal { detail });
                }
            }
        } else {
            reply.body
        };
        let resp = json_text(reply.status, body);
        Ok(inbound::with_header(resp, REPLAYED_HEADER, "true"))
    }
}

/// The secret variable holding the admin bearer token.
pub const VAR_ADMIN_TOKEN: &str = "admin_token";

/// Checks the admin bearer token of an admin call against the secret variable
/// `admin_token` (constant time; with no token configured every admin call is refused
/// with 503 `not_configured`).
pub async fn require_admin(headers: &HeaderMap) -> Result<(), ApiError> {
    let configured = env::secret(VAR_ADMIN_TOKEN).await.ok();
    let configured = configured.as_ref().map(|s| s.expose().as_str());
    service::check_admin_token(authorization(headers), configured)
}

/// Refuses a change to the account or its rules (401 `api_key_retiring`) to a caller
/// whose secret key is `merchant`'s rotated-out one: a key rotated out because it leaked
/// still takes payments during its grace period, but cannot take the account over.
pub fn require_current_key(headers: &HeaderMap, merchant: &Merchant) -> Result<(), ApiError> {
    if service::by_current_key(merchant, authorization(headers)) {
        Ok(())
    } else {
        Err(ApiError::ApiKeyRetiring)
    }
}

/// The raw `Authorization` header value, if any (the core parses it).
pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// What identifies an idempotent POST.
#[derive(Debug, Clone, Copy)]
pub struct Keyed<'a> {
    /// Whose keys these are (a merchant id, or a fixed scope for admin calls).
    pub scope: &'a str,
    /// The request headers (the optional `Idempotency-Key` is read from them).
    pub headers: &'a HeaderMap,
    /// The request path.
    pub path: &'a str,
    /// The raw body.
    pub body: &'a [u8],
    /// Store the replayable answer sealed (it holds secrets shown only once).
    pub seal: bool,
}

impl<'a> Keyed<'a> {
    /// The request `parts` with `body`, under `scope`'s keys, stored in clear.
    pub fn new(scope: &'a str, parts: &'a http::request::Parts, body: &'a [u8]) -> Keyed<'a> {
        Keyed {
            scope,
            headers: &parts.headers,
            path: parts.uri.path(),
            body,
            seal: false,
        }
    }

    /// The same call with its stored answer sealed under the encryption key.
    pub fn sealed(self) -> Keyed<'a> {
        Keyed { seal: true, ..self }
    }
}

/// The optional `Idempotency-Key`: absent → `None`; present → validated.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if headers.contains_key("idempotency-key") {
        inbound::idempotency_key(headers).map(Some)
    } else {
        Ok(None)
    }
}

/// Binds a sealed stored answer to its scope and path, so it opens for no other call.
fn aad(call: &Keyed<'_>) -> Vec<u8> {
    format!("idempotency:{}:{}", call.scope, call.path).into_bytes()
}

/// Logs once, on the component's stderr, every merchant a sweep or reconciliation passed
/// over, with the full error (its answer carries only the code and message).
pub fn log_passed_over(failures: &[service::MerchantFailure], request_id: &str) {
    for f in failures {
        eprintln!(
            "request {request_id}: merchant {} passed over: {}",
            f.merchant_id, f.detail
        );
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_malformed_encryption_key_is_reported_as_unusable_not_missing() {
        // Proves an encryption_key that is set but is not 64 hex characters fails closed
        // (503 not_configured) with a message saying what is wrong with it, while a good
        // one opens.
        for bad in ["abc", "zz", &"0".repeat(63), &"g".repeat(64)] {
            let e = keyring(bad).expect_err(bad);
            assert_eq!((e.status(), e.code()), (503, "not_configured"), "{bad}");
            assert!(e.message().contains("64 hex characters"), "{}", e.message());
        }
        assert!(keyring(&"0f".repeat(32)).is_ok());
    }
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
    fn sealed_replies_are_bound_to_their_scope_and_path() {
        // Proves a sealed stored reply opens only for the same scope and path.
        let keys = Keyring::new(KEY_VERSION, [3; 32]);
        let headers = HeaderMap::new();
        let k = |scope, path| Keyed {
            scope,
            headers: &headers,
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

    #[test]
    fn a_keyed_call_takes_its_path_and_headers_from_the_request() {
        // Proves Keyed::new reads the request path (not the query) and sealed() only
        // flips the sealing.
        let req = http::Request::post("/v1/payments/pay_1/capture?x=1")
            .header("idempotency-key", "k")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let call = Keyed::new("mch_1", &parts, b"{}");
        assert_eq!(
            (call.path, call.seal),
            ("/v1/payments/pay_1/capture", false)
        );
        assert_eq!(idempotency_key(call.headers).unwrap().as_deref(), Some("k"));
        assert!(call.sealed().seal);
    }

    #[test]
    fn the_authorization_header_is_passed_raw_or_absent() {
        // Proves the raw value reaches the core untouched and a missing one is None.
        let mut h = HeaderMap::new();
        assert_eq!(authorization(&h), None);
        h.insert("authorization", "Bearer sk_x".parse().unwrap());
        assert_eq!(authorization(&h), Some("Bearer sk_x"));
    }
}
