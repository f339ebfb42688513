//! The refund limit: a payment takes at most `REFUNDS_PER_PAYMENT_MAX` (100) refunds,
//! through the service over the in-memory repository and the simulated channel; the
//! refund past it is refused as `refund_limit_reached` and leaves nothing behind.

mod common;

use std::collections::BTreeMap;

use common::*;
use futures::executor::block_on;
use spinpay_core::api::NewRefund;
use spinpay_core::error::ApiError;
use spinpay_core::machine::REFUNDS_PER_PAYMENT_MAX;
use spinpay_core::model::{PaymentStatus, RefundStatus};
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::repo::{Repository, Versioned};
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const QRC: &str = r#"{"type":"qr_customer","auth_code":"28763443825664"}"#;

/// Every record in `repo`, with its version.
async fn snapshot(repo: &MemoryRepository) -> BTreeMap<String, Versioned> {
    let mut records = BTreeMap::new();
    for key in repo.keys_with_prefix("") {
        let stored = repo
            .get(&key)
            .await
            .unwrap()
            .expect("a listed key is stored");
        records.insert(key, stored);
    }
    records
}

#[test]
fn a_payment_takes_a_hundred_refunds_and_the_hundred_and_first_is_refused_changing_nothing() {
    // Proves the limit through the service: a 10 CNY payment takes 100 refunds of one
    // fen, each succeeded; the 101st (with or without a merchant refund id) gets 409
    // refund_limit_reached although 9.00 CNY is left, and the store holds exactly what
    // it held before (same payment and refunds, no refund record, the merchant refund id
    // not held: another payment's refund takes it); the channel is not asked.
    assert_eq!(
        REFUNDS_PER_PAYMENT_MAX, 100,
        "the limit this test counts to"
    );
    let (repo, keys, ch, mut rng) = (
        MemoryRepository::new(),
        keyring(),
        SimChannel::default(),
        SplitMix64::new(61),
    );
    block_on(async {
        let c = ctx(&repo, &keys, 1_000);
        let (m, _) = merchant(&c, &mut rng).await;
        let p = pay(&c, &ch, &mut rng, &m, 1000, QRC).await.unwrap();
        assert_eq!(p.status, PaymentStatus::Succeeded);
        for i in 0..REFUNDS_PER_PAYMENT_MAX {
            let r = create_refund(&c, &ch, &mut rng, &m.id, &p.id, refund_of(1))
                .await
                .unwrap_or_else(|e| panic!("refund {i}: {e:?}"));
            assert_eq!(r.status, RefundStatus::Succeeded, "refund {i}");
        }
        let full = get_payment(&c, &m.id, &p.id).await.unwrap();
        assert_eq!((full.refunded_minor, full.refunds.len()), (100, 100));
        let stored = snapshot(&repo).await;
        let asked = ch.refunded_ids.borrow().len();
        assert_eq!(asked, 100);
        assert_eq!(repo.keys_with_prefix("re/").len(), 100, "refund records");

        let with_id = || NewRefund {
            merchant_refund_id: Some("RF-101".into()),
            ..refund_of(1)
        };
        for (name, req) in [("plain", refund_of(1)), ("with an id", with_id())] {
            let e = create_refund(&c, &ch, &mut rng, &m.id, &p.id, req)
                .await
                .unwrap_err();
            assert_eq!(e, ApiError::RefundLimitReached { max: 100 }, "{name}");
            let public = (e.code(), e.status(), e.error_type());
            let documented = ("refund_limit_reached", 409, "invalid_request_error");
            assert_eq!(public, documented, "{name}");
            let after = get_payment(&c, &m.id, &p.id).await.unwrap();
            assert_eq!(after, full, "{name}: the payment changed");
            assert_eq!(snapshot(&repo).await, stored, "{name}: the store changed");
            assert_eq!(
                ch.refunded_ids.borrow().len(),
                asked,
                "{name}: channel asked"
            );
        }

        // The refused refund's merchant refund id was released, not burned.
        let other = pay(&c, &ch, &mut rng, &m, 500, QRC).await.unwrap();
        let r = create_refund(&c, &ch, &mut rng, &m.id, &other.id, with_id())
            .await
            .unwrap();
        assert_eq!(r.status, RefundStatus::Succeeded);
    });
}
