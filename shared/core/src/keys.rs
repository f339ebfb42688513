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
//! | `mch/{merchant_id}/idem/{sha256 hex of Idempotency-Key}` | [`crate::idempotency::IdempotencyRecord`] | put_if_version; deleted on expiry/retryable error |
//! | `mch/{merchant_id}/risk/config` | [`crate::risk::RiskConfig`] JSON | put_if_version |
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

/// The merchant's risk configuration.
pub fn risk_config(merchant_id: &str) -> String {
    format!("mch/{merchant_id}/risk/config")
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
