//! The key layout: every key spinpay writes, in one place.
//!
//! | key | value | written with |
//! |---|---|---|
//! | `mch/{merchant_id}` | [`crate::model::Merchant`] JSON | put_if_version |
//! | `apikey/{sha256 hex of secret key}` | merchant id (JSON string) | put_if_version 0 |
//! | `pay/{payment_id}` | [`crate::model::Payment`] JSON (money state) | put_if_version (CAS loop) |
//! | `re/{refund_id}` | [`crate::model::Refund`] JSON | put_if_version (CAS loop) |
//! | `otp/{payment_id}` | [`crate::service::OtpChallenge`] JSON | put_if_version; deleted when used |
//! | `evt/{event_id}` | [`crate::model::StoredEvent`] JSON | put_if_version 0 |
//! | `mch/{merchant_id}/order/{merchant_order_id}` | payment id (JSON string) | put_if_version 0 (uniqueness claim) |
//! | `mch/{merchant_id}/refref/{merchant_refund_id}` | refund id (JSON string) | put_if_version 0 |
//! | `mch/{merchant_id}/seq/pay` | counter (i64) | increment only |
//! | `mch/{merchant_id}/pay/{seq:020}` | payment id (JSON string) | put_if_version 0 |
//! | `mch/{merchant_id}/seq/evt` | counter (i64) | increment only |
//! | `mch/{merchant_id}/evt/{seq:020}` | event id (JSON string) | put_if_version 0 |
//! | `mch/{merchant_id}/idem/{sha256 hex of Idempotency-Key}` | [`crate::idempotency::IdempotencyRecord`] | put_if_version; deleted on a retryable error, and by the sweep once expired |
//! | `mch/{merchant_id}/seq/exp` | counter (i64) | increment only |
//! | `mch/{merchant_id}/exp/{seq:020}` | expiry queue slot (idempotency key hash, claim time), written before the claim | put_if_version 0; deleted by the sweep |
//! | `mch/{merchant_id}/exp/head` | expiry queue head | put_if_version |
//! | `replay/{channel}/{sha256 hex}` | a channel notification's claimed replay key (claim time) | put_if_version 0; deleted by the sweep after [`crate::service::REPLAY_KEY_RETENTION_MS`] |
//! | `replay/{channel}/seq` | counter (i64) | increment only |
//! | `replay/{channel}/exp/{seq:020}` | replay-expiry queue slot (replay key, claim time), written before the claim | put_if_version 0; deleted by the sweep |
//! | `replay/{channel}/exp/head` | replay-expiry queue head | put_if_version |
//! | `mch/{merchant_id}/risk/config` | [`crate::riskengine::EngineConfig`] JSON | put_if_version |
//! | `mch/{merchant_id}/seq/obx` | counter (i64) | increment only |
//! | `mch/{merchant_id}/obx/{seq:020}` | outbox marker (object kind, id, time), written before a state write that adds events | put_if_version 0; deleted by the sweep |
//! | `mch/{merchant_id}/obx/head` | outbox marker queue head | put_if_version |
//! | `dlv/{event_id}` | [`crate::service::Delivery`] JSON | put_if_version (CAS loop) |
//! | `mch/{merchant_id}/seq/dlv` | counter (i64) | increment only |
//! | `mch/{merchant_id}/dlv/{seq:020}` | delivery queue slot (event id, time) | put_if_version 0; deleted by the sweep |
//! | `mch/{merchant_id}/dlv/head` | delivery queue head | put_if_version |
//! | `mch/{merchant_id}/whsec/prev` | rotated-out webhook secret (sealed) + expiry | put_if_version |
//! | `mch/{merchant_id}/ntf` | the merchant's notification-registry slot number | put_if_version 0 |
//! | `ntf/seq` | counter (i64) | increment only |
//! | `ntf/m/{seq:020}` | merchant id in the notification registry (the sweep walks it) | put_if_version 0 |
//! | `ntf/cursor` | where the sweep's round-robin continues | put_if_version |
//! | `mch/{merchant_id}/seq/rcn` | counter (i64) | increment only |
//! | `mch/{merchant_id}/rcn/{seq:020}` | reconciliation queue slot (object kind, id, time): a payment or refund still waiting on its channel | put_if_version 0; deleted by reconciliation |
//! | `mch/{merchant_id}/rcn/head` | reconciliation queue head | put_if_version |
//! | `rcn/cursor` | where reconciliation's round-robin over the registry continues | put_if_version |
//!
//! `pay/` and `re/` records also carry `outbox`: events of their changes not yet
//! published to the log (written in the same compare-and-swap as the change; see
//! `service::outbox`). Every writer of those keys goes through the outbox write path.
//!
//! Ids are validated ([`crate::ids::is_valid_id`]) and merchant references restricted to
//! `A-Za-z0-9_.:-` before they become part of a key, so a key can never escape its
//! prefix. Counters are touched only through `increment` (Spin stores them differently
//! per backend). Sequence numbers are zero-padded to 20 digits so a key scan would sort;
//! lists never scan, they walk the sequence downward with `get_many`.

/// A merchant record.
pub fn merchant(merchant_id: &str) -> String {
    format!("mch/{merchant_id}")
}

/// API key hash → merchant id.
pub fn api_key(key_hash_hex: &str) -> String {
    format!("apikey/{key_hash_hex}")
}

/// A payment.
pub fn payment(payment_id: &str) -> String {
    format!("pay/{payment_id}")
}

/// A refund.
pub fn refund(refund_id: &str) -> String {
    format!("re/{refund_id}")
}

/// A payment's open OTP challenge.
pub fn otp(payment_id: &str) -> String {
    format!("otp/{payment_id}")
}

/// An event.
pub fn event(event_id: &str) -> String {
    format!("evt/{event_id}")
}

/// Merchant order id → payment id.
pub fn merchant_order(merchant_id: &str, merchant_order_id: &str) -> String {
    format!("mch/{merchant_id}/order/{merchant_order_id}")
}

/// Merchant refund id → refund id.
pub fn merchant_refund(merchant_id: &str, merchant_refund_id: &str) -> String {
    format!("mch/{merchant_id}/refref/{merchant_refund_id}")
}

/// The merchant's payment sequence counter.
pub fn payment_seq(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/seq/pay")
}

/// The merchant's payment list slot `seq`.
pub fn payment_index(merchant_id: &str, seq: i64) -> String {
    format!("mch/{merchant_id}/pay/{seq:020}")
}

/// The merchant's event sequence counter.
pub fn event_seq(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/seq/evt")
}

/// The merchant's event log slot `seq`.
pub fn event_index(merchant_id: &str, seq: i64) -> String {
    format!("mch/{merchant_id}/evt/{seq:020}")
}

/// An idempotency record.
pub fn idempotency(merchant_id: &str, key_hash_hex: &str) -> String {
    format!("mch/{merchant_id}/idem/{key_hash_hex}")
}

/// The merchant's idempotency-expiry queue counter.
pub fn expiry_seq(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/seq/exp")
}

/// Where the merchant's idempotency-expiry queue keeps its slots.
pub fn expiry_slots(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/exp")
}

/// The channel's replay-expiry queue counter.
pub fn replay_expiry_seq(channel: &str) -> String {
    format!("replay/{channel}/seq")
}

/// Where the channel's replay-expiry queue keeps its slots.
pub fn replay_expiry_slots(channel: &str) -> String {
    format!("replay/{channel}/exp")
}

/// The merchant's risk configuration.
pub fn risk_config(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/risk/config")
}

/// The merchant's outbox marker counter.
pub fn outbox_seq(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/seq/obx")
}

/// Where the merchant's outbox markers are kept.
pub fn outbox_markers(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/obx")
}

/// An event's delivery record.
pub fn delivery(event_id: &str) -> String {
    format!("dlv/{event_id}")
}

/// The merchant's delivery queue counter.
pub fn delivery_seq(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/seq/dlv")
}

/// Where the merchant's delivery queue keeps its slots.
pub fn delivery_slots(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/dlv")
}

/// The merchant's rotated-out webhook secret.
pub fn webhook_secret_previous(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/whsec/prev")
}

/// The merchant's notification-registry claim.
pub fn notify_registration(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/ntf")
}

/// The notification-registry counter.
pub fn notify_registry_seq() -> &'static str {
    "ntf/seq"
}

/// Notification-registry slot `seq`.
pub fn notify_registry(seq: i64) -> String {
    format!("ntf/m/{seq:020}")
}

/// The record telling whether `encryption_key` is the key the store's data is sealed
/// with (see `service::check_encryption_key`).
pub fn key_check() -> &'static str {
    "sys/keycheck"
}

/// The sweep's round-robin cursor.
pub fn notify_cursor() -> &'static str {
    "ntf/cursor"
}

/// The name of the merchant's reconciliation queue of tier `tier` (tier 0 kept its
/// original name, `rcn`).
fn reconcile_queue(tier: usize) -> String {
    match tier {
        0 => "rcn".to_string(),
        t => format!("rcn{t}"),
    }
}

/// The counter of the merchant's reconciliation queue of tier `tier`.
pub fn reconcile_seq(merchant_id: &str, tier: usize) -> String {
    format!("mch/{merchant_id}/seq/{}", reconcile_queue(tier))
}

/// Where the merchant's reconciliation queue of tier `tier` keeps its slots.
pub fn reconcile_slots(merchant_id: &str, tier: usize) -> String {
    format!("mch/{merchant_id}/{}", reconcile_queue(tier))
}

/// Reconciliation's round-robin cursor over the notification registry.
pub fn reconcile_cursor() -> &'static str {
    "rcn/cursor"
}

/// Slot `seq` of the queue keeping its slots under `slots` (zero-padded: key order is
/// queue order).
pub fn queue_slot(slots: &str, seq: i64) -> String {
    format!("{slots}/{seq:020}")
}

/// The head of the queue keeping its slots under `slots`.
pub fn queue_head(slots: &str) -> String {
    format!("{slots}/head")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sequence_slots_sort_lexicographically() {
        // Proves zero padding keeps key order equal to numeric order.
        assert!(super::payment_index("m", 9) < super::payment_index("m", 10));
        assert!(super::event_index("m", 99) < super::event_index("m", 100));
    }
}
