//! The use cases, written against traits so they stay pure: storage is a
//! [`Repository`], the payment provider a [`ChannelClient`], risk control a
//! [`RiskClient`], randomness an [`Entropy`], time a `now_ms` in [`Ctx`].
//!
//! Rules every function here follows:
//! * reads and writes are scoped to the authenticated merchant (another merchant's
//!   object is `resource_missing`, never `permission_error`, so ids do not leak);
//! * every write of money state is a compare-and-swap inside a loop bounded by
//!   [`CAS_RETRIES_MAX`], re-reading and re-applying the command on conflict;
//! * every state change stores its events in the same compare-and-swap as the change
//!   (the outbox, `outbox.rs`), then publishes them to the merchant's log and delivery
//!   queue; the sweep (`delivery.rs`) publishes what a crash left and delivers;
//! * a channel answer that is a timeout or garbage ([`ChannelOutcome::Unknown`]) changes
//!   nothing: the payment stays `processing` until a query or a notification decides.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::Keyring;
use crate::error::ApiError;
use crate::ids::IdKind;
use crate::keys;
use crate::machine::{PaymentState, assert_payment_invariants};
use crate::model::{EventType, NextAction, Payment, PaymentMethod, Refund, RiskAssessment};
use crate::repo::{RepoError, Repository, Versioned};
use crate::riskengine::RiskInput;
use crate::rng::Entropy;

mod delivery;
mod idempotent;
mod merchants;
mod notifications;
mod outbox;
mod payments;
mod queries;
mod reconcile;
mod refunds;
mod replay;
mod retention;

pub use delivery::{
    Attempt, DELIVERY_ATTEMPTS_MAX, DELIVERY_LEASE_MS, Delivery, DeliveryResponse, DeliveryStatus,
    MerchantFailure, Notifier, RETRY_DELAYS_MS, SECRET_GRACE_S_DEFAULT, SECRET_GRACE_S_MAX,
    SWEEP_ATTEMPTS_WINDOW_MS, SWEEP_LIMIT_DEFAULT, SWEEP_LIMIT_MAX, SWEEP_MERCHANTS_MAX,
    SweepReport, SweepRequest, WebhookSecretRotated, attempt, event_delivery, redeliver_event,
    rotate_webhook_secret, signature_header, sweep,
};
pub use idempotent::{
    IdempotencyTicket, KeyOutcome, KeyedRun, Reply, Started, idempotency_begin, idempotency_finish,
    reply_for,
};
pub use merchants::{
    SECRET_KEY_GRACE_S_MAX, SECRET_KEY_GRACE_S_MIN, SecretKeyRotated, authenticate, by_current_key,
    check_admin_token, check_encryption_key, create_merchant, create_merchant_seeded, get_merchant,
    reset_merchant_credentials, rotate_secret_key, rotation_landed, update_merchant,
    webhook_secret,
};
pub use notifications::{
    NotificationResult, PaymentNotification, RefundNotification, apply_payment_notification,
    apply_refund_notification,
};
pub use outbox::{OUTBOX_EVENTS_MAX, ObjectKind, PUBLISH_GRACE_MS, PendingEvent, event_id};
pub use payments::{
    CLOSED_UNPAID_CODE, OTP_ATTEMPTS_MAX, OTP_CODES_MAX, OTP_TTL_MS, OtpChallenge, cancel_payment,
    capture_payment, confirm_payment, create_payment, create_payment_seeded, recheck_payment,
    review_payment,
};
pub use queries::{
    LIST_PAGE_BYTES_MAX, find_payment_by_order_id, get_event, get_payment, get_refund, list_events,
    list_payments,
};
pub use reconcile::{
    RECONCILE_CLOSE_GRACE_MS, RECONCILE_HORIZON_MS, RECONCILE_INTERVAL_MS, RECONCILE_LIMIT_DEFAULT,
    RECONCILE_LIMIT_MAX, RECONCILE_TIERS, RECONCILE_WINDOW_MS, ReconcileReport, ReconcileRequest,
    close_if_expired, recheck_or_close_expired, reconcile,
};
pub use refunds::{create_refund, create_refund_seeded, recheck_refund};
pub use replay::{REPLAY_KEY_RETENTION_MS, claim_replay_key, replay_key_claimed};
pub use retention::EXPIRY_SWEEP_MAX;

/// Most compare-and-swap attempts for one write before giving up with
/// `concurrent_modification` (sized for 64 requests racing on one payment).
pub const CAS_RETRIES_MAX: u32 = 128;
/// Most index batches a list walks past gaps before it ends the page with what it found.
pub const LIST_BATCHES_MAX: u32 = 8;
/// Most empty index slots a list walks past to find one item: a page never ends empty
/// while an item older than a run of empty slots (sequence numbers drawn by requests
/// that failed or crashed before writing) is within this many slots.
pub const LIST_EMPTY_SLOTS_MAX: i64 = 10_000;
/// Slots read in one batch once a page has found nothing in [`LIST_BATCHES_MAX`] batches.
const LIST_GAP_BATCH: i64 = 256;

/// What every use case needs: storage, the encryption keys and the current time.
#[derive(Debug)]
pub struct Ctx<'a, R> {
    /// Storage.
    pub repo: &'a R,
    /// Keys for sealed secrets and keyed hashes.
    pub keys: &'a Keyring,
    /// Now, in Unix milliseconds (the caller's clock).
    pub now_ms: i64,
}

/// A channel's answer to authorize or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelOutcome {
    /// Paid and captured.
    Succeeded {
        /// The channel's reference.
        channel_ref: Option<String>,
    },
    /// Authorized only (manual capture).
    Authorized {
        /// The channel's reference.
        channel_ref: Option<String>,
    },
    /// Accepted, not decided; with the customer's next step if there is one
    /// (QR payload, redirect URL, app order string).
    Pending {
        /// The channel's reference.
        channel_ref: Option<String>,
        /// What the customer must do.
        next_action: Option<NextAction>,
    },
    /// Refused (final).
    Declined {
        /// The channel's code, e.g. `insufficient_funds`.
        code: String,
        /// Its message.
        message: String,
    },
    /// Timeout, transport error or an answer that could not be understood.
    Unknown {
        /// For the log.
        detail: String,
    },
}

/// A channel's report about a payment (query answer or notification), with the amount
/// and currency it states so that mismatches are caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelReport {
    /// The outcome.
    pub outcome: ChannelOutcome,
    /// The amount the channel states, if any.
    pub amount_minor: Option<i64>,
    /// The currency code the channel states, if any.
    pub currency: Option<String>,
}

/// A channel's answer to capture or cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Done.
    Done,
    /// Refused (e.g. already paid, so it cannot be voided).
    Declined {
        /// Code.
        code: String,
        /// Message.
        message: String,
    },
    /// No usable answer.
    Unknown {
        /// For the log.
        detail: String,
    },
}

/// A channel's answer about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Money returned.
    Succeeded {
        /// Reference.
        channel_ref: Option<String>,
    },
    /// Accepted, not finished.
    Pending {
        /// Reference.
        channel_ref: Option<String>,
    },
    /// Refused.
    Failed {
        /// Code.
        code: String,
        /// Message.
        message: String,
    },
    /// No usable answer.
    Unknown {
        /// For the log.
        detail: String,
    },
}

/// The payment provider (an adapter per channel does the HTTP). Implementations must be
/// idempotent per payment / refund id (they send our ids as the channel's order numbers).
#[allow(async_fn_in_trait)]
pub trait ChannelClient {
    /// Authorize (and capture, in automatic mode) `payment` with its unsealed `method`.
    async fn authorize(&self, payment: &Payment, method: &PaymentMethod) -> ChannelOutcome;
    /// Capture `amount_minor` of an authorization.
    async fn capture(&self, payment: &Payment, amount_minor: i64) -> ActionOutcome;
    /// Void / close an unpaid or uncaptured payment.
    async fn cancel(&self, payment: &Payment) -> ActionOutcome;
    /// Ask the channel where a payment stands.
    async fn query(&self, payment: &Payment) -> ChannelReport;
    /// Refund.
    async fn refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome;
    /// Ask the channel where a refund stands.
    async fn query_refund(&self, payment: &Payment, refund: &Refund) -> RefundOutcome;
    /// Send an SMS (the OTP) through the SMS provider.
    async fn send_sms(&self, phone: &str, text: &str) -> Result<(), String>;
}

/// Risk control (the risk-check component, reached by service chaining).
#[allow(async_fn_in_trait)]
pub trait RiskClient {
    /// Assess a prospective payment; `Err` = could not ask (the payment fails closed).
    async fn assess(&self, input: &RiskInput) -> Result<RiskAssessment, String>;
}

/// A [`RiskClient`] that runs the risk engine in-process with a given configuration and
/// no history (empty counters): limits, lists and per-payment thresholds apply; velocity
/// and anomalies need the risk-check component's stored counters.
#[derive(Debug, Clone, Default)]
pub struct LocalRisk {
    /// The configuration.
    pub config: crate::riskengine::EngineConfig,
}

impl RiskClient for LocalRisk {
    async fn assess(&self, input: &RiskInput) -> Result<RiskAssessment, String> {
        let engine_input = input
            .engine_input(b"local-risk")
            .map_err(|e| e.to_string())?;
        let counters = crate::riskengine::Counters::default();
        let a = crate::riskengine::evaluate(&self.config, &engine_input, &counters, 0);
        Ok(a.into_model())
    }
}

pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("domain types serialize")
}

pub(crate) fn internal(detail: impl std::fmt::Display) -> ApiError {
    ApiError::Internal {
        detail: detail.to_string(),
    }
}

/// Reads and decodes a record with its storage version.
pub(crate) async fn read<T: DeserializeOwned, R: Repository>(
    repo: &R,
    key: &str,
) -> Result<Option<(T, u64)>, ApiError> {
    decode_read(key, repo.get(key).await?)
}

/// [`read`] for a read-modify-write: through [`Repository::get_for_update`], for the
/// `put_if_version` of `key` that follows.
pub(crate) async fn read_for_update<T: DeserializeOwned, R: Repository>(
    repo: &R,
    key: &str,
) -> Result<Option<(T, u64)>, ApiError> {
    decode_read(key, repo.get_for_update(key).await?)
}

/// How a read-modify-write reads its record: what the caller expects of the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFor {
    /// A change is all but certain (a command the record was checked to allow, a
    /// channel's first answer): read through the compare-and-swap handle the write will
    /// use ([`read_for_update`]), one store round trip less.
    Change,
    /// The read may well end in no write (a repeated notification, a re-check of a payment
    /// that has not moved): a plain [`read`], and the write, if any, opens its handle
    /// then. On Spin's Redis store every handle is a new connection, so a handle opened
    /// for nothing costs more than the read it saves.
    Check,
}

impl ReadFor {
    pub(crate) async fn read<T: DeserializeOwned, R: Repository>(
        self,
        repo: &R,
        key: &str,
    ) -> Result<Option<(T, u64)>, ApiError> {
        match self {
            ReadFor::Change => read_for_update(repo, key).await,
            ReadFor::Check => read(repo, key).await,
        }
    }
}

fn decode_read<T: DeserializeOwned>(
    key: &str,
    v: Option<Versioned>,
) -> Result<Option<(T, u64)>, ApiError> {
    let Some(v) = v else {
        return Ok(None);
    };
    let value = serde_json::from_slice(&v.value).map_err(|e| internal(format!("{key}: {e}")))?;
    Ok(Some((value, v.version)))
}

/// Creates a record; `Ok(false)` if the key already holds another value. A conflict is
/// re-read: absent means the conflict was spurious (retry); our own bytes mean the write
/// committed although the store reported otherwise (Spin's Redis CAS does).
pub(crate) async fn insert<T: Serialize, R: Repository>(
    repo: &R,
    key: &str,
    value: &T,
) -> Result<bool, ApiError> {
    let bytes = to_bytes(value);
    for _attempt in 0..CAS_RETRIES_MAX {
        match repo.put_if_version(key, 0, bytes.clone()).await {
            Ok(_) => return Ok(true),
            Err(RepoError::Conflict { .. }) => match repo.get(key).await? {
                None => continue,
                Some(v) => return Ok(v.value == bytes),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// The result of a compare-and-swap update.
#[derive(Debug, Clone)]
pub(crate) struct Updated<T> {
    pub before: T,
    pub after: T,
    pub changed: bool,
    /// For outboxed records: what the write stored (lets the writer publish without
    /// reading the record back). `None` when nothing was written.
    pub written: Option<outbox::Written>,
}

/// Read-modify-write with bounded retries. `f` returns `Ok(None)` for "nothing to do";
/// `check` asserts invariants on what was read and what will be written.
pub(crate) async fn update<T, R, F>(
    repo: &R,
    key: &str,
    mut f: F,
    check: fn(&T),
) -> Result<Updated<T>, ApiError>
where
    T: Serialize + DeserializeOwned + Clone,
    R: Repository,
    F: FnMut(&T) -> Result<Option<T>, ApiError>,
{
    for _attempt in 0..CAS_RETRIES_MAX {
        let (current, version) = read_for_update::<T, R>(repo, key)
            .await?
            .ok_or_else(|| internal(format!("{key} vanished")))?;
        check(&current);
        let Some(next) = f(&current)? else {
            return Ok(Updated {
                before: current.clone(),
                after: current,
                changed: false,
                written: None,
            });
        };
        check(&next);
        match repo.put_if_version(key, version, to_bytes(&next)).await {
            Ok(_) => {
                return Ok(Updated {
                    before: current,
                    after: next,
                    changed: true,
                    written: None,
                });
            }
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

fn check_payment(p: &Payment) {
    assert_payment_invariants(&p.state);
}

fn check_refund(r: &Refund) {
    assert!(r.amount_minor > 0, "refund amount positive: {}", r.id);
    assert!(r.state.version >= 1, "refund version: {}", r.id);
}

/// CAS update of a payment; stamps `updated_at_ms` on a change. The events the change
/// implies (see [`payment_change_events`]) are written in the same compare-and-swap
/// (the outbox); [`payment_events`] publishes them.
pub(crate) async fn update_payment<R, F>(
    ctx: &Ctx<'_, R>,
    payment_id: &str,
    f: F,
) -> Result<Updated<Payment>, ApiError>
where
    R: Repository,
    F: FnMut(&Payment) -> Result<Option<Payment>, ApiError>,
{
    update_payment_with(ctx, payment_id, ReadFor::Change, Vec::new(), f).await
}

/// [`update_payment`] that reads as `read_for` says and also records `extra` events with
/// the change (e.g. `refund.created` with the refund's reservation).
pub(crate) async fn update_payment_with<R, F>(
    ctx: &Ctx<'_, R>,
    payment_id: &str,
    read_for: ReadFor,
    extra: Vec<outbox::PendingEvent>,
    mut f: F,
) -> Result<Updated<Payment>, ApiError>
where
    R: Repository,
    F: FnMut(&Payment) -> Result<Option<Payment>, ApiError>,
{
    let now_ms = ctx.now_ms;
    let stamped = move |p: &Payment| {
        Ok(f(p)?.map(|mut next| {
            next.updated_at_ms = now_ms.max(p.updated_at_ms);
            next
        }))
    };
    let events = |before: &Payment, after: &Payment| {
        let mut all = payment_change_events(before, after, now_ms);
        all.extend(extra.iter().cloned());
        all
    };
    outbox::update_with_events(ctx, payment_id, read_for, stamped, check_payment, events).await
}

/// CAS update of a refund (read as `read_for` says); stamps `updated_at_ms` on a change
/// and records the status event in the same write.
pub(crate) async fn update_refund<R, F>(
    ctx: &Ctx<'_, R>,
    refund_id: &str,
    read_for: ReadFor,
    mut f: F,
) -> Result<Updated<Refund>, ApiError>
where
    R: Repository,
    F: FnMut(&Refund) -> Result<Option<Refund>, ApiError>,
{
    let now_ms = ctx.now_ms;
    let stamped = move |r: &Refund| {
        Ok(f(r)?.map(|mut next| {
            next.updated_at_ms = now_ms.max(r.updated_at_ms);
            next
        }))
    };
    let events = |before: &Refund, after: &Refund| refund_change_events(before, after, now_ms);
    outbox::update_with_events(ctx, refund_id, read_for, stamped, check_refund, events).await
}

/// Loads a payment owned by `merchant_id` (bad id, absent or foreign → resource_missing).
pub(crate) async fn load_payment<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    payment_id: &str,
) -> Result<Payment, ApiError> {
    let missing = || ApiError::ResourceMissing {
        resource: "payment",
        id: payment_id.chars().take(crate::ids::ID_LEN_MAX).collect(),
    };
    if !crate::ids::is_valid_id(IdKind::Payment, payment_id) {
        return Err(missing());
    }
    match read::<Payment, R>(ctx.repo, &keys::payment(payment_id)).await? {
        Some((p, _)) if p.merchant_id == merchant_id => {
            check_payment(&p);
            Ok(p)
        }
        Some(_) | None => Err(missing()),
    }
}

/// The event data for a payment (its API form, without refunds).
pub(crate) fn payment_data(p: &Payment) -> serde_json::Value {
    serde_json::to_value(crate::api::PaymentResponse::new(p, &[])).expect("serializes")
}

/// The event data for a refund.
pub(crate) fn refund_data(r: &Refund) -> serde_json::Value {
    serde_json::to_value(crate::api::RefundResponse::new(r)).expect("serializes")
}

/// The events a payment change implies: `payment.conflicted` when the conflict flag was
/// raised, the status event when the status moved. Ids derive from the payment id and
/// its new state version, so the same change always yields the same events.
pub(crate) fn payment_change_events(
    before: &Payment,
    after: &Payment,
    now_ms: i64,
) -> Vec<outbox::PendingEvent> {
    let (b, a): (&PaymentState, &PaymentState) = (&before.state, &after.state);
    let mut events = Vec::new();
    if a.conflicted && !b.conflicted {
        let t = EventType::PaymentConflicted;
        let data = payment_data(after);
        events.push(outbox::pending(&after.id, a.version, t, now_ms, data));
    }
    if a.status != b.status {
        let t = EventType::for_payment_status(a.status);
        let data = payment_data(after);
        events.push(outbox::pending(&after.id, a.version, t, now_ms, data));
    }
    events
}

/// The event a refund change implies: its status event when the status moved.
pub(crate) fn refund_change_events(
    before: &Refund,
    after: &Refund,
    now_ms: i64,
) -> Vec<outbox::PendingEvent> {
    if before.state.status == after.state.status {
        return Vec::new();
    }
    let t = EventType::for_refund_status(after.state.status);
    let data = refund_data(after);
    vec![outbox::pending(
        &after.id,
        after.state.version,
        t,
        now_ms,
        data,
    )]
}

/// `refund.created`, recorded with the reservation that commits the refund.
pub(crate) fn refund_created_event(refund: &Refund, now_ms: i64) -> outbox::PendingEvent {
    let t = EventType::RefundCreated;
    outbox::pending(&refund.id, 0, t, now_ms, refund_data(refund))
}

/// Publishes the events a payment write recorded (a failure is left to the sweep: the
/// change and its events are already stored together).
pub(crate) async fn payment_events<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    _rng: &mut E,
    u: &Updated<Payment>,
) -> Result<(), ApiError> {
    publish_update(ctx, u, None).await;
    Ok(())
}

/// Publishes the events a refund write recorded (see [`payment_events`]).
pub(crate) async fn refund_events<R: Repository>(ctx: &Ctx<'_, R>, u: &Updated<Refund>) {
    publish_update(ctx, u, None).await;
}

/// Publishes what the write `u` recorded, from what it wrote (no read-back); `merchant`
/// when the caller already has it. Failures are left to the sweep.
pub(crate) async fn publish_update<T: outbox::Outboxed, R: Repository>(
    ctx: &Ctx<'_, R>,
    u: &Updated<T>,
    merchant: Option<&crate::model::Merchant>,
) {
    if !u.changed {
        return;
    }
    let _ = match &u.written {
        Some(w) => outbox::publish_written(ctx, &u.after, w, merchant).await,
        None => outbox::publish(ctx, T::KIND, outbox::Outboxed::id(&u.after)).await,
    };
}
