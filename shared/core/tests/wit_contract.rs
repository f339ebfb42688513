//! Keeps wit/spinpay.wit and the Rust types from drifting: the WIT is parsed with
//! `wit-parser` (so a syntax error fails here), and every enum / variant case list is
//! compared with the Rust serde names (snake_case / dotted ⇔ kebab-case).

use std::collections::BTreeMap;
use std::path::Path;

use spinpay_core::error::ERROR_CODES;
use spinpay_core::model::{
    CancellationReason, CaptureMode, Channel, EventType, MethodKind, NextAction, PaymentStatus,
    RefundStatus, RiskDecision,
};
use spinpay_core::money::Currency;
use spinpay_core::service::{ActionOutcome, ChannelOutcome, RefundOutcome};
use wit_parser::{Resolve, TypeDefKind};

/// Every named enum and variant in the package, with its case names in order.
fn wit_cases() -> BTreeMap<String, Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/spinpay.wit");
    let mut resolve = Resolve::default();
    resolve
        .push_file(&path)
        .unwrap_or_else(|e| panic!("{} does not parse: {e:?}", path.display()));
    let mut out = BTreeMap::new();
    for (_, ty) in resolve.types.iter() {
        let cases: Vec<String> = match &ty.kind {
            TypeDefKind::Enum(e) => e.cases.iter().map(|c| c.name.clone()).collect(),
            TypeDefKind::Variant(v) => v.cases.iter().map(|c| c.name.clone()).collect(),
            _other_kind => continue,
        };
        if let Some(name) = &ty.name {
            out.insert(name.clone(), cases);
        }
    }
    out
}

fn kebab(serde_name: &str) -> String {
    serde_name.to_lowercase().replace(['_', '.'], "-")
}

fn serde_names<T: serde::Serialize>(values: &[T]) -> Vec<String> {
    values
        .iter()
        .map(|v| match serde_json::to_value(v).unwrap() {
            serde_json::Value::String(s) => kebab(&s),
            serde_json::Value::Object(m) => kebab(m["type"].as_str().unwrap()),
            other => panic!("unexpected serde form {other}"),
        })
        .collect()
}

fn debug_names<T: std::fmt::Debug>(values: &[T]) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            let d = format!("{v:?}");
            let name: String = d.chars().take_while(|c| c.is_alphanumeric()).collect();
            let mut out = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        })
        .collect()
}

fn assert_same(wit: &BTreeMap<String, Vec<String>>, name: &str, rust: Vec<String>) {
    let got = wit
        .get(name)
        .unwrap_or_else(|| panic!("WIT has no enum/variant `{name}`"));
    assert_eq!(got, &rust, "WIT `{name}` differs from the Rust type");
}

#[test]
fn wit_enums_match_the_rust_serde_names() {
    // Proves each closed enum lists exactly the Rust cases, in the same order.
    let wit = wit_cases();
    assert_same(&wit, "currency", serde_names(&Currency::ALL));
    assert_same(&wit, "payment-channel", serde_names(&Channel::ALL));
    assert_same(
        &wit,
        "capture-mode",
        serde_names(&[CaptureMode::Automatic, CaptureMode::Manual]),
    );
    assert_same(
        &wit,
        "cancellation-reason",
        serde_names(&CancellationReason::ALL),
    );
    assert_same(&wit, "method-kind", serde_names(&MethodKind::ALL));
    assert_same(&wit, "payment-method", serde_names(&MethodKind::ALL));
    assert_same(&wit, "payment-status", serde_names(&PaymentStatus::ALL));
    assert_same(&wit, "refund-status", serde_names(&RefundStatus::ALL));
    assert_same(&wit, "risk-decision", serde_names(&RiskDecision::ALL));
    assert_same(&wit, "event-type", serde_names(&EventType::ALL));
}

#[test]
fn wit_variants_match_the_rust_variants() {
    // Proves next-action, the channel outcomes and the error types agree with Rust.
    let wit = wit_cases();
    let actions = [
        NextAction::DisplayQr {
            qr_payload: String::new(),
        },
        NextAction::Redirect { url: String::new() },
        NextAction::AppOrder {
            order_string: String::new(),
        },
        NextAction::EnterOtp,
    ];
    assert_same(&wit, "next-action", serde_names(&actions));
    let s = String::new;
    let outcomes = [
        ChannelOutcome::Succeeded { channel_ref: None },
        ChannelOutcome::Authorized { channel_ref: None },
        ChannelOutcome::Pending {
            channel_ref: None,
            next_action: None,
        },
        ChannelOutcome::Declined {
            code: s(),
            message: s(),
        },
        ChannelOutcome::Unknown { detail: s() },
    ];
    assert_same(&wit, "channel-outcome", debug_names(&outcomes));
    let actions = [
        ActionOutcome::Done,
        ActionOutcome::Declined {
            code: s(),
            message: s(),
        },
        ActionOutcome::Unknown { detail: s() },
    ];
    assert_same(&wit, "action-outcome", debug_names(&actions));
    let refunds = [
        RefundOutcome::Succeeded { channel_ref: None },
        RefundOutcome::Pending { channel_ref: None },
        RefundOutcome::Failed {
            code: s(),
            message: s(),
        },
        RefundOutcome::Unknown { detail: s() },
    ];
    assert_same(&wit, "refund-outcome", debug_names(&refunds));
    let mut types: Vec<String> = Vec::new();
    for (_, _, t, _) in ERROR_CODES {
        if !types.contains(&kebab(t)) {
            types.push(kebab(t));
        }
    }
    let wit_types = &wit["error-type"];
    assert!(
        types.iter().all(|t| wit_types.contains(t)),
        "{types:?} vs {wit_types:?}"
    );
}
