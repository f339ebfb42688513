//! The webhook's raw-notification archive.
//!
//! Every verified notification is kept, sealed (AES-256-GCM under `encryption_key`,
//! bound to its key), at `ntf/{channel}/{sha256 hex of the body}` before it is applied,
//! so a notification about an unknown payment, or one that flags a conflict, can be
//! investigated later. A byte-identical redelivery finds its record already there.

use serde::Serialize;
use spinpay_channels::sandbox::transformers::ParsedNotification;
use spinpay_core::ApiError;
use spinpay_core::crypto::{seal, sha256_hex};
use spinpay_core::model::Channel;
use spinpay_core::repo::{RepoError, Repository};
use spinpay_core::service::Ctx;
use spinpay_guest::env;
use spinpay_guest::kv::KvRepository;

/// A stored raw notification.
#[derive(Debug, Serialize)]
struct RawNotification<'a> {
    channel: &'static str,
    /// `payment` or `refund`.
    object: &'static str,
    /// Our id the notification is about (as the channel sent it).
    object_id: &'a str,
    received_at_ms: i64,
    /// The body, sealed.
    body_sealed: String,
}

/// Archives a verified notification (idempotent per body).
pub async fn keep(
    ctx: &Ctx<'_, KvRepository>,
    channel: Channel,
    body: &[u8],
    parsed: &ParsedNotification,
) -> Result<(), ApiError> {
    let key = key(channel, body);
    let record = RawNotification {
        channel: channel.as_str(),
        object: match parsed {
            ParsedNotification::Payment(_) => "payment",
            ParsedNotification::Refund(_) => "refund",
        },
        object_id: object_id(parsed),
        received_at_ms: ctx.now_ms,
        body_sealed: seal(ctx.keys, env::random_bytes(), body, key.as_bytes()),
    };
    let bytes = serde_json::to_vec(&record).expect("the record serializes");
    match ctx.repo.put_if_version(&key, 0, bytes).await {
        Ok(_) | Err(RepoError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Where a notification body is archived.
pub fn key(channel: Channel, body: &[u8]) -> String {
    format!("ntf/{}/{}", channel.as_str(), sha256_hex(body))
}

/// The id a notification is about.
pub fn object_id(parsed: &ParsedNotification) -> &str {
    match parsed {
        ParsedNotification::Payment(n) => &n.payment_id,
        ParsedNotification::Refund(n) => &n.refund_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_keys_are_per_channel_and_body() {
        // Proves identical bodies share a key (redelivery is a no-op) and others do not.
        let a = key(Channel::Sandbox, b"{\"a\":1}");
        assert_eq!(a, key(Channel::Sandbox, b"{\"a\":1}"));
        assert_ne!(a, key(Channel::Sandbox, b"{\"a\":2}"));
        assert_ne!(a, key(Channel::Alipay, b"{\"a\":1}"));
        assert!(a.starts_with("ntf/sandbox/") && a.len() == "ntf/sandbox/".len() + 64);
    }
}
