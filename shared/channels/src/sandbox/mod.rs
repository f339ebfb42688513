//! The sandbox channel: spinpay's simulated provider (the `sandbox` component), reached
//! over HTTP exactly like a real one. [`wire`] is its protocol, [`transformers`] the pure
//! request building and answer parsing, and [`SandboxClient`] the thin wiring that
//! implements the core's [`ChannelClient`] with signed outbound calls.

pub mod transformers;
pub mod wire;

#[cfg(test)]
mod tests;

use spinpay_core::crypto::Secret;
use spinpay_core::model::{Payment, PaymentMethod, Refund};
use spinpay_core::service::{
    ActionOutcome, ChannelClient, ChannelOutcome, ChannelReport, RefundOutcome,
};
use spinpay_guest::env::{self, EnvError};
use spinpay_guest::outbound::{
    self, CHANNEL_TIMEOUT_MS_DEFAULT, OutboundError, OutboundRequest, OutboundResponse,
    RESPONSE_BYTES_MAX_DEFAULT,
};

use crate::wiring::settle;
use transformers::SignedRequest;
use wire::Op;

/// Variable: base URL of the sandbox (default [`SANDBOX_URL_DEFAULT`]).
pub const VAR_URL: &str = "sandbox_url";
/// Variable (secret): the HMAC key shared with the sandbox.
pub const VAR_SECRET: &str = "sandbox_secret";
/// Variable: where the sandbox should send notifications (default
/// [`NOTIFY_URL_DEFAULT`]).
pub const VAR_NOTIFY_URL: &str = "sandbox_notify_url";
/// The sandbox component over Spin service chaining.
pub const SANDBOX_URL_DEFAULT: &str = "http://sandbox.spin.internal";
/// The webhook component over Spin service chaining.
pub const NOTIFY_URL_DEFAULT: &str = "http://webhook.spin.internal/v1/webhooks/sandbox";

/// Whether a `sandbox_url` switches the sandbox off: it names no host (`http://`, what
/// spin.toml's `http://{{ sandbox_host }}` becomes with `sandbox_host` empty).
pub fn url_is_off(base_url: &str) -> bool {
    !base_url
        .trim()
        .parse::<http::Uri>()
        .is_ok_and(|u| u.host().is_some_and(|h| !h.trim().is_empty()))
}

/// Whether this component's `sandbox_url` variable switches the sandbox off (empty means
/// the default URL: on).
pub async fn off_by_variables() -> Result<bool, EnvError> {
    Ok(url_is_off(&base_url_from_variables().await?))
}

/// This component's `sandbox_url` (empty means [`SANDBOX_URL_DEFAULT`]).
async fn base_url_from_variables() -> Result<String, EnvError> {
    Ok(non_empty(env::variable(VAR_URL).await?).unwrap_or_else(|| SANDBOX_URL_DEFAULT.to_string()))
}

/// The sandbox adapter.
#[derive(Debug, Clone)]
pub struct SandboxClient {
    /// No host in the URL: see [`SandboxClient::is_off`].
    off: bool,
    base_url: String,
    secret: Secret<String>,
    notify_url: String,
    timeout_ms: u64,
}

impl SandboxClient {
    /// An adapter for the sandbox at `base_url` (no trailing slash needed).
    pub fn new(base_url: &str, secret: Secret<String>, notify_url: &str) -> SandboxClient {
        SandboxClient {
            off: url_is_off(base_url),
            base_url: base_url.trim_end_matches('/').to_string(),
            secret,
            notify_url: notify_url.to_string(),
            timeout_ms: CHANNEL_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Whether the sandbox is switched off: its URL names no host (`http://`, what
    /// spin.toml's `http://{{ sandbox_host }}` becomes with `sandbox_host` empty, as a
    /// deployment without the sandbox component sets it). New sandbox payments are then
    /// refused as an unsupported channel, and one-time codes cannot go through it.
    pub fn is_off(&self) -> bool {
        self.off
    }

    /// The same adapter with another deadline per call.
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> SandboxClient {
        self.timeout_ms = timeout_ms;
        self
    }

    /// Reads `sandbox_url`, `sandbox_secret` (required) and `sandbox_notify_url` from
    /// the component's variables.
    pub async fn from_variables() -> Result<SandboxClient, EnvError> {
        let secret = env::secret(VAR_SECRET).await?;
        let base = base_url_from_variables().await?;
        let notify = non_empty(env::variable(VAR_NOTIFY_URL).await?)
            .unwrap_or_else(|| NOTIFY_URL_DEFAULT.to_string());
        Ok(SandboxClient::new(&base, secret, &notify))
    }

    fn key(&self) -> &[u8] {
        self.secret.expose().as_bytes()
    }

    async fn call(&self, req: SignedRequest) -> Result<OutboundResponse, OutboundError> {
        let out = OutboundRequest::post_json(format!("{}{}", self.base_url, req.path), req.body)
            .header(wire::SIGNATURE_HEADER, req.signature);
        outbound::send(&out, self.timeout_ms, RESPONSE_BYTES_MAX_DEFAULT).await
    }

    /// Sends an SMS through the sandbox's SMS endpoint with an explicit message id
    /// (idempotent per id).
    pub async fn send_sms_with_id(
        &self,
        message_id: &str,
        phone: &str,
        text: &str,
    ) -> Result<(), String> {
        let now = env::now_unix_s();
        let req = transformers::sms_request(message_id, phone, text, self.key(), now);
        let resp = self.call(req).await.map_err(|e| e.to_string())?;
        transformers::parse_sms(&resp, message_id, self.key(), env::now_unix_s())
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl ChannelClient for SandboxClient {
    async fn authorize(&self, payment: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        let now = env::now_unix_s();
        let req = transformers::create_request(payment, method, &self.notify_url, self.key(), now);
        settle(self.call(req).await, |resp| {
            transformers::parse_authorize(resp, &payment.id, self.key(), env::now_unix_s())
        })
    }

    async fn capture(&self, payment: &Payment, amount_minor: i64) -> ActionOutcome {
        self.action(Op::PaymentCapture, payment, Some(amount_minor))
            .await
    }

    async fn cancel(&self, payment: &Payment) -> ActionOutcome {
        self.action(Op::PaymentCancel, payment, None).await
    }

    async fn query(&self, payment: &Payment) -> ChannelReport {
        let now = env::now_unix_s();
        let req =
            transformers::action_request(Op::PaymentQuery, &payment.id, None, self.key(), now);
        settle(self.call(req).await, |resp| {
            transformers::parse_query(resp, &payment.id, self.key(), env::now_unix_s())
        })
    }

    async fn refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        let now = env::now_unix_s();
        let req = transformers::refund_request(payment, refund, self.key(), now);
        self.refund_call(req, &refund.id).await
    }

    async fn query_refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome {
        let now = env::now_unix_s();
        let req = transformers::refund_query_request(&payment.id, &refund.id, self.key(), now);
        self.refund_call(req, &refund.id).await
    }

    async fn send_sms(&self, phone: &str, text: &str) -> Result<(), String> {
        let message_id = format!("sms_{}", hex_id());
        self.send_sms_with_id(&message_id, phone, text).await
    }
}

impl SandboxClient {
    async fn action(&self, op: Op, payment: &Payment, amount_minor: Option<i64>) -> ActionOutcome {
        let now = env::now_unix_s();
        let req = transformers::action_request(op, &payment.id, amount_minor, self.key(), now);
        settle(self.call(req).await, |resp| {
            transformers::parse_action(resp, op, &payment.id, self.key(), env::now_unix_s())
        })
    }

    async fn refund_call(&self, req: SignedRequest, refund_id: &str) -> RefundOutcome {
        settle(self.call(req).await, |resp| {
            transformers::parse_refund(resp, refund_id, self.key(), env::now_unix_s())
        })
    }
}

fn hex_id() -> String {
    hex::encode(env::random_bytes::<12>())
}
