//! The seams between a merchant-API component and the core: storage and keys from the
//! component's variables, the channel adapters, merchant authentication, the
//! Idempotency-Key protocol and response building. The same file serves `refund` and
//! `query` (kept identical; a candidate for `spinpay-guest`/`spinpay-channels`).

use http::HeaderMap;
use serde::Serialize;
use spinpay_channels::sandbox::{NOTIFY_URL_DEFAULT, SandboxClient};
use spinpay_core::ApiError;
use spinpay_core::crypto::Keyring;
use spinpay_core::model::{Channel, Merchant, Payment, PaymentMethod, Refund};
use spinpay_core::service::{
    self, ActionOutcome, ChannelClient, ChannelOutcome, ChannelReport, Ctx, RefundOutcome, Reply,
    Started,
};
use spinpay_guest::env::{self, OsEntropy};
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::kv::KvRepository;

/// The key-value store label every spinpay component shares.
pub const STORE_LABEL: &str = "default";
/// The version of `encryption_key` in sealed envelopes (all components agree on it).
pub const KEY_VERSION: u32 = 1;
/// Where the sandbox lives when `sandbox_host` has no value.
pub const SANDBOX_HOST_DEFAULT: &str = "sandbox.spin.internal";

/// Storage and keys for one request.
#[derive(Debug)]
pub struct Services {
    repo: KvRepository,
    keys: Keyring,
}

impl Services {
    /// Opens the store and reads `encryption_key` (missing or malformed → 503
    /// `not_configured`: fail closed).
    pub async fn open() -> Result<Services, ApiError> {
        let not_configured = ApiError::NotConfigured {
            what: "encryption_key",
        };
        let hex = env::secret("encryption_key")
            .await
            .map_err(|_| not_configured.clone())?;
        let keys = Keyring::from_hex(KEY_VERSION, hex.expose()).map_err(|e| {
            eprintln!("encryption_key: {e}");
            not_configured
        })?;
        let repo = KvRepository::open(STORE_LABEL).await?;
        Ok(Services { repo, keys })
    }

    /// The core's context, stamped with the current time.
    pub fn ctx(&self) -> Ctx<'_, KvRepository> {
        Ctx {
            repo: &self.repo,
            keys: &self.keys,
            now_ms: env::now_ms(),
        }
    }

    /// `Authorization: Bearer sk_…` → the merchant.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Merchant, ApiError> {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        service::authenticate(&self.ctx(), authorization).await
    }

    /// Runs `run` under the request's Idempotency-Key (optional header): a replayed key
    /// answers the stored reply; otherwise the result is stored unless retryable. An
    /// internal error's detail is logged here, once, with `request_id`.
    pub async fn idempotent<T, F>(
        &self,
        request_id: &str,
        merchant_id: &str,
        headers: &HeaderMap,
        path: &str,
        body: &[u8],
        run: F,
    ) -> Result<HttpResponse, ApiError>
    where
        T: Serialize,
        F: AsyncFnOnce() -> Result<T, ApiError>,
    {
        let key = idempotency_key(headers)?;
        let started = service::idempotency_begin(
            &self.ctx(),
            merchant_id,
            key.as_deref(),
            "POST",
            path,
            body,
        )
        .await?;
        let ticket = match started {
            Started::Replay(reply) => return Ok(reply_response(&reply)),
            Started::Run(ticket) => ticket,
        };
        let result = run().await;
        if let Err(ApiError::Internal { detail }) = &result {
            eprintln!("request {request_id}: internal error: {detail}");
        }
        let (reply, retryable) = service::reply_for(&result, 200);
        if let Err(e) = service::idempotency_finish(&self.ctx(), ticket, &reply, retryable).await {
            // The work is done; only the replay record is missing. Answer truthfully.
            eprintln!("request {request_id}: idempotency record not finished: {e}");
        }
        Ok(reply_response(&reply))
    }
}

/// The optional `Idempotency-Key` header, validated when present.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if headers.contains_key("idempotency-key") {
        inbound::idempotency_key(headers).map(Some)
    } else {
        Ok(None)
    }
}

/// A stored or fresh reply as an HTTP response.
pub fn reply_response(reply: &Reply) -> HttpResponse {
    inbound::bytes_response(
        reply.status,
        "application/json",
        reply.body.clone().into_bytes(),
    )
}

/// A successful JSON answer.
pub fn ok_json(value: &impl Serialize) -> HttpResponse {
    inbound::json_response(200, value)
}

/// Fresh randomness for ids and events.
pub fn entropy() -> OsEntropy {
    OsEntropy
}

/// Every channel adapter this build has, dispatched on the payment's channel. A
/// channel without an adapter gives an *unknown* outcome (nothing is decided; the
/// payment stays `processing` / the refund `pending`).
#[derive(Debug, Clone)]
pub struct Channels {
    sandbox: SandboxClient,
}

impl Channels {
    /// Reads `sandbox_host` and `sandbox_secret` (missing secret → 503
    /// `not_configured`).
    pub async fn from_variables() -> Result<Channels, ApiError> {
        let secret = env::secret("sandbox_secret")
            .await
            .map_err(|_| ApiError::NotConfigured {
                what: "sandbox_secret",
            })?;
        let host = env::variable("sandbox_host")
            .await
            .ok()
            .flatten()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| SANDBOX_HOST_DEFAULT.to_string());
        let base = format!("http://{host}");
        Ok(Channels {
            sandbox: SandboxClient::new(&base, secret, NOTIFY_URL_DEFAULT),
        })
    }

    fn adapter(&self, channel: Channel) -> Option<&SandboxClient> {
        match channel {
            Channel::Sandbox => Some(&self.sandbox),
            Channel::Alipay | Channel::Wechatpay | Channel::Unionpay => None,
        }
    }
}

fn no_adapter(channel: Channel) -> String {
    format!("no adapter for channel {}", channel.as_str())
}

impl ChannelClient for Channels {
    async fn authorize(&self, payment: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.authorize(payment, method).await,
            None => ChannelOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn capture(&self, payment: &Payment, amount_minor: i64) -> ActionOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.capture(payment, amount_minor).await,
            None => ActionOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn cancel(&self, payment: &Payment) -> ActionOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.cancel(payment).await,
            None => ActionOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn query(&self, payment: &Payment) -> ChannelReport {
        match self.adapter(payment.channel) {
            Some(a) => a.query(payment).await,
            None => ChannelReport {
                outcome: ChannelOutcome::Unknown {
                    detail: no_adapter(payment.channel),
                },
                amount_minor: None,
                currency: None,
            },
        }
    }

    async fn refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.refund(payment, refund).await,
            None => RefundOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn query_refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        match self.adapter(payment.channel) {
            Some(a) => a.query_refund(payment, refund).await,
            None => RefundOutcome::Unknown {
                detail: no_adapter(payment.channel),
            },
        }
    }

    async fn send_sms(&self, phone: &str, text: &str) -> Result<(), String> {
        self.sandbox.send_sms(phone, text).await
    }
}
