//! Storage for the webhook: the repository and keys, and the raw-notification archive.
//!
//! Every verified notification is kept, sealed (AES-256-GCM under `encryption_key`,
//! bound to its key), at `ntf/{channel}/{sha256 hex of the body}` before it is applied,
//! so a notification about an unknown payment, or one that flags a conflict, can be
//! investigated later. A byte-identical redelivery finds its record already there.

use serde::Serialize;
use spinpay_channels::sandbox::transformers::ParsedNotification;
use spinpay_core::ApiError;
use spinpay_core::crypto::{Keyring, seal, sha256_hex};
use spinpay_core::model::Channel;
use spinpay_core::repo::{RepoError, Repository};
use spinpay_core::service::Ctx;
use spinpay_guest::env;
use spinpay_guest::kv::KvRepository;

/// The key-value store label every spinpay component shares.
const STORE_LABEL: &str = "default";
/// The version of `encryption_key` in sealed envelopes (all components agree on it).
const KEY_VERSION: u32 = 1;

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

/// Storage and keys for one request.
#[derive(Debug)]
pub struct Store {
    repo: KvRepository,
    keys: Keyring,
}

impl Store {
    /// Reads `encryption_key` (missing or malformed → 503 `not_configured`) and opens
    /// the store.
    pub async fn open() -> Result<Store, ApiError> {
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
        Ok(Store { repo, keys })
    }

    /// The core's context, stamped with the current time.
    pub fn ctx(&self) -> Ctx<'_, KvRepository> {
        Ctx {
            repo: &self.repo,
            keys: &self.keys,
            now_ms: env::now_ms(),
        }
    }

    /// Archives a verified notification (idempotent per body).
    pub async fn keep(
        &self,
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
        match self.repo.put_if_version(&key, 0, bytes).await {
            Ok(_) | Err(RepoError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
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
