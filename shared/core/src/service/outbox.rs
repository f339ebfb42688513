//! The transactional outbox: no event lost between a state write and the event log, none
//! duplicated by retries.
//!
//! The key-value store only has single-key compare-and-swap, so an event can only be
//! atomic with the state change if it is written *in the same record*:
//!
//! 1. **Marker** (before the write). The writer appends a marker `{object, at_ms}` to the
//!    merchant's outbox queue (`mch/{m}/obx/{seq}`) and makes sure the merchant is in the
//!    notification registry the sweep walks. A crash here leaves a marker for an object
//!    with nothing pending: harmless.
//! 2. **State + pending events** (one CAS). The payment or refund record is stored as
//!    [`Stored`]: the record's own fields plus `outbox`, the events its changes produced
//!    and nobody has published yet. Event ids are deterministic — a hash of the object id,
//!    the object's state version and the event type — so recomputing or republishing an
//!    event can never mint a second one.
//! 3. **Publish** (idempotent): per pending event, the event record (`evt/{id}`, which
//!    keeps the log sequence it was first given), its log slot, and — when the merchant
//!    has a notify URL — its delivery record and delivery-queue slot; then a CAS removes
//!    the published ids from the record's outbox.
//! 4. **Recovery**: the sweep walks each merchant's marker queue; a marker older than
//!    [`PUBLISH_GRACE_MS`] (longer than any request lives) whose object still has pending
//!    events is published by the sweep. No scan of the store: only queue slots. An
//!    object that still waits on its channel then is handed to reconciliation
//!    (`service::reconcile`).
//!
//! A crash at any point therefore ends, after a sweep, with exactly one event per state
//! change in the log and every created payment in its merchant's list (tested by
//! crashing at every storage operation).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    CAS_RETRIES_MAX, Ctx, ReadFor, Updated, insert, internal, read, read_for_update, to_bytes,
};
use crate::error::ApiError;
use crate::ids::{IdKind, make_id};
use crate::keys;
use crate::model::{EventType, Merchant, StoredEvent};
use crate::repo::{RepoError, Repository};

/// A marker younger than this may belong to a request still running; the sweep leaves
/// it alone (request deadlines are far shorter).
pub const PUBLISH_GRACE_MS: i64 = 60_000;
/// Most unpublished events one record may carry. A write that would exceed it publishes
/// the backlog first; if publishing keeps failing, changes stop instead of the record
/// growing without bound. Sized above a burst of concurrent refunds on one payment.
pub const OUTBOX_EVENTS_MAX: usize = 128;
/// How long after a marker a write of the same object may rely on it instead of writing
/// its own: half the grace period, so a request that started within it commits long
/// before the sweep reads the object for that marker.
pub const MARKER_REUSE_MS: i64 = PUBLISH_GRACE_MS / 2;
/// Queue slots looked at per merchant and queue in one sweep.
pub const QUEUE_WINDOW_MAX: i64 = 100;

/// An event produced by a state change and not yet published to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// Deterministic `evt_…` id ([`event_id`]).
    pub id: String,
    /// Type.
    pub event_type: EventType,
    /// When the change happened.
    pub created_at_ms: i64,
    /// The object after the change, as the API shows it.
    pub data: serde_json::Value,
}

/// A payment or refund record as stored: its fields plus the unpublished events.
/// Readers that only want the record decode it as the plain type (unknown fields are
/// ignored); every writer of `pay/` and `re/` keys must go through this type so the
/// outbox is carried forward.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored<T> {
    #[serde(flatten)]
    pub record: T,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<PendingEvent>,
    /// When the newest marker for this object was written (by the write that stored
    /// it). A later write adding events within [`MARKER_REUSE_MS`] of it relies on that
    /// marker instead of writing another: the sweep reads the object only once the marker
    /// is older than [`PUBLISH_GRACE_MS`], by which time such a write has long committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_at_ms: Option<i64>,
}

/// What a write of an outboxed record stored: its new version and the events it left
/// pending in it. Lets the writer publish without reading the record back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Written {
    /// The record's version after the write.
    pub version: u64,
    /// The pending events the record now holds.
    pub outbox: Vec<PendingEvent>,
    /// The record's marker time (see [`Stored::marked_at_ms`]).
    pub marked_at_ms: Option<i64>,
}

/// Which record holds pending events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// `pay/{id}`.
    Payment,
    /// `re/{id}`.
    Refund,
}

/// A queue slot: the merchant's outbox markers, delivery queue and expiry queue hold these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slot {
    /// For markers the object kind; for deliveries absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ObjectKind>,
    /// The object id (markers), event id (deliveries), idempotency key hash (expiries)
    /// or replay key (replay expiries); empty in a tombstone.
    pub id: String,
    /// When the slot was written.
    pub at_ms: i64,
}

/// Where a queue's consumer has got to: every slot `≤ done_through` is finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueHead {
    pub done_through: i64,
}

/// The deterministic id of the event `event_type` for `object_id` at `version`.
pub fn event_id(object_id: &str, version: u64, event_type: EventType) -> String {
    let name = serde_json::to_string(&event_type).expect("event types serialize");
    let digest = Sha256::digest(format!("{object_id}:{version}:{name}").as_bytes());
    make_id(IdKind::Event, &digest[..crate::ids::OBJECT_ID_BYTES])
}

/// A pending event for `object_id` at `version`.
pub(crate) fn pending(
    object_id: &str,
    version: u64,
    event_type: EventType,
    now_ms: i64,
    data: serde_json::Value,
) -> PendingEvent {
    PendingEvent {
        id: event_id(object_id, version, event_type),
        event_type,
        created_at_ms: now_ms,
        data,
    }
}

fn object_key(kind: ObjectKind, id: &str) -> String {
    match kind {
        ObjectKind::Payment => keys::payment(id),
        ObjectKind::Refund => keys::refund(id),
    }
}

/// Makes sure the sweep will visit `merchant_id`: a registry slot (walked round-robin)
/// and a claim key that says it is there. A crash between the two only registers the
/// merchant twice, which costs one extra visit.
pub(crate) async fn ensure_registered<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
) -> Result<(), ApiError> {
    let claim = keys::notify_registration(merchant_id);
    if ctx.repo.get(&claim).await?.is_some() {
        return Ok(());
    }
    let seq = ctx.repo.increment(keys::notify_registry_seq(), 1).await?;
    insert(ctx.repo, &keys::notify_registry(seq), &merchant_id).await?;
    insert(ctx.repo, &claim, &seq).await?;
    Ok(())
}

/// Step 1: the marker that lets the sweep find an object whose events were not
/// published (written before the state write that adds them).
async fn write_marker<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    kind: ObjectKind,
    id: &str,
) -> Result<(), ApiError> {
    ensure_registered(ctx, merchant_id).await?;
    let slot = Slot {
        kind: Some(kind),
        id: id.to_string(),
        at_ms: ctx.now_ms,
    };
    enqueue(ctx, &Queue::markers(merchant_id), &slot).await
}

/// Creates a record (payment or refund) together with its first events, marker first.
pub(crate) async fn insert_with_events<T: Serialize, R: Repository>(
    ctx: &Ctx<'_, R>,
    kind: ObjectKind,
    merchant_id: &str,
    id: &str,
    record: &T,
    events: Vec<PendingEvent>,
) -> Result<bool, ApiError> {
    assert!(events.len() <= OUTBOX_EVENTS_MAX, "outbox bound: {id}");
    let marked_at_ms = if events.is_empty() {
        None
    } else {
        write_marker(ctx, merchant_id, kind, id).await?;
        Some(ctx.now_ms)
    };
    let stored = Stored {
        record,
        outbox: events,
        marked_at_ms,
    };
    insert(ctx.repo, &object_key(kind, id), &stored).await
}

/// What an outboxed record must tell the write path.
pub(crate) trait Outboxed: Serialize + DeserializeOwned + Clone + PartialEq {
    const KIND: ObjectKind;
    fn id(&self) -> &str;
    fn merchant_id(&self) -> &str;
}

impl Outboxed for crate::model::Payment {
    const KIND: ObjectKind = ObjectKind::Payment;
    fn id(&self) -> &str {
        &self.id
    }
    fn merchant_id(&self) -> &str {
        &self.merchant_id
    }
}

impl Outboxed for crate::model::Refund {
    const KIND: ObjectKind = ObjectKind::Refund;
    fn id(&self) -> &str {
        &self.id
    }
    fn merchant_id(&self) -> &str {
        &self.merchant_id
    }
}

/// Step 2: read-modify-write with bounded retries, where the change and the events it
/// produces (`events(before, after)`) are one compare-and-swap. The marker is written
/// once, before the first write that adds events.
pub(crate) async fn update_with_events<T, R, F, G>(
    ctx: &Ctx<'_, R>,
    id: &str,
    read_for: ReadFor,
    mut f: F,
    check: fn(&T),
    events: G,
) -> Result<Updated<T>, ApiError>
where
    T: Outboxed,
    R: Repository,
    F: FnMut(&T) -> Result<Option<T>, ApiError>,
    G: Fn(&T, &T) -> Vec<PendingEvent>,
{
    let key = object_key(T::KIND, id);
    let mut marked: Option<i64> = None;
    // A write whose outcome the store could not tell: (the record before, the one written).
    let mut unseen: Option<(T, T)> = None;
    for _attempt in 0..CAS_RETRIES_MAX {
        let (stored, version) = read_for
            .read::<Stored<T>, R>(ctx.repo, &key)
            .await?
            .ok_or_else(|| internal(format!("{key} vanished")))?;
        check(&stored.record);
        if let Some((before, written)) = unseen.take()
            && stored.record == written
        {
            // It landed: this request's change, answered as made (asking `f` again would
            // see a change already made and could refuse it as not allowed).
            return Ok(Updated {
                before,
                after: stored.record,
                changed: true,
                written: Some(Written {
                    version,
                    outbox: stored.outbox,
                    marked_at_ms: stored.marked_at_ms,
                }),
            });
        }
        let Some(next) = f(&stored.record)? else {
            return Ok(Updated {
                before: stored.record.clone(),
                after: stored.record,
                changed: false,
                written: None,
            });
        };
        check(&next);
        let mut outbox = stored.outbox.clone();
        let fresh: Vec<PendingEvent> = events(&stored.record, &next)
            .into_iter()
            .filter(|e| !stored.outbox.iter().any(|o| o.id == e.id))
            .collect();
        let mut marked_at_ms = stored.marked_at_ms;
        let recent_marker = marked_at_ms
            .is_some_and(|at| at <= ctx.now_ms && ctx.now_ms.saturating_sub(at) < MARKER_REUSE_MS);
        if !fresh.is_empty() && !recent_marker {
            if marked.is_none() {
                write_marker(ctx, next.merchant_id(), T::KIND, id).await?;
                marked = Some(ctx.now_ms);
            }
            marked_at_ms = marked;
        }
        outbox.extend(fresh);
        if outbox.len() > OUTBOX_EVENTS_MAX {
            if publish(ctx, T::KIND, id).await? == 0 {
                return Err(internal(format!("{key}: outbox full, nothing published")));
            }
            continue;
        }
        let stored_next = Stored {
            record: &next,
            outbox,
            marked_at_ms,
        };
        let bytes = to_bytes(&stored_next);
        let outbox = stored_next.outbox;
        match ctx.repo.put_if_version(&key, version, bytes).await {
            Ok(new_version) => {
                return Ok(Updated {
                    before: stored.record,
                    after: next,
                    changed: true,
                    written: Some(Written {
                        version: new_version,
                        outbox,
                        marked_at_ms,
                    }),
                });
            }
            Err(RepoError::Conflict { .. }) => continue,
            // The re-read tells: the record as written means it landed (above);
            // otherwise payments and refunds change only through their state machines,
            // whose commands are idempotent, so `f` cannot apply the change twice. Its
            // events went with the record's outbox, and the sweep publishes them.
            Err(RepoError::OutcomeUnknown { .. }) => {
                unseen = Some((stored.record, next));
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// Step 3: publishes the pending events of one record (idempotent; safe to run
/// concurrently with writers and with another publisher). Returns how many events were
/// taken out of the record's outbox.
pub(crate) async fn publish<R: Repository>(
    ctx: &Ctx<'_, R>,
    kind: ObjectKind,
    id: &str,
) -> Result<u32, ApiError> {
    let key = object_key(kind, id);
    let Some((stored, _)) = read::<Stored<serde_json::Value>, R>(ctx.repo, &key).await? else {
        return Ok(0);
    };
    if stored.outbox.is_empty() {
        return Ok(0);
    }
    let merchant_id = stored.record["merchant_id"]
        .as_str()
        .ok_or_else(|| internal(format!("{key}: no merchant_id")))?
        .to_string();
    let created = |e: &PendingEvent| e.event_type == EventType::PaymentCreated;
    if kind == ObjectKind::Payment && stored.outbox.iter().any(created) {
        // Its creation never published: the request may have died before naming the
        // payment in the merchant's list.
        let seq = stored.record["seq"]
            .as_i64()
            .ok_or_else(|| internal(format!("{key}: no seq")))?;
        super::payments::list_payment(ctx, &merchant_id, seq, id).await?;
    }
    publish_events(ctx, &merchant_id, None, &stored.outbox).await?;
    let done: Vec<&str> = stored.outbox.iter().map(|e| e.id.as_str()).collect();
    remove_published(ctx, &key, &done).await?;
    Ok(done.len() as u32)
}

/// [`publish`] right after this request wrote `record` as `written`: no read of the
/// record (the events are the ones just stored), the merchant when the caller has it,
/// and the events taken out with a compare-and-swap on the version just written (a
/// concurrent writer since then only costs the re-reading path).
pub(crate) async fn publish_written<T: Outboxed, R: Repository>(
    ctx: &Ctx<'_, R>,
    record: &T,
    written: &Written,
    merchant: Option<&Merchant>,
) -> Result<u32, ApiError> {
    if written.outbox.is_empty() {
        return Ok(0);
    }
    publish_events(ctx, record.merchant_id(), merchant, &written.outbox).await?;
    let key = object_key(T::KIND, record.id());
    let done: Vec<&str> = written.outbox.iter().map(|e| e.id.as_str()).collect();
    let rest = Stored {
        record,
        outbox: Vec::new(),
        marked_at_ms: written.marked_at_ms,
    };
    match ctx
        .repo
        .put_if_version(&key, written.version, to_bytes(&rest))
        .await
    {
        Ok(_) => {}
        Err(RepoError::Conflict { .. }) => remove_published(ctx, &key, &done).await?,
        Err(e) => return Err(e.into()),
    }
    Ok(done.len() as u32)
}

/// Puts `events` in `merchant_id`'s log (and delivery queue when it has a notify URL):
/// one batched read finds the events already published, the rest get their record, log
/// slot and delivery.
async fn publish_events<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    merchant: Option<&Merchant>,
    events: &[PendingEvent],
) -> Result<(), ApiError> {
    let mut keys: Vec<String> = events.iter().map(|e| keys::event(&e.id)).collect();
    let merchant_key = keys::merchant(merchant_id);
    if merchant.is_none() {
        keys.push(merchant_key.clone());
    }
    let mut found = ctx.repo.get_many(&keys).await?;
    let read_merchant: Option<Merchant> = match merchant {
        Some(_) => None,
        None => match found.pop().flatten() {
            Some(v) => Some(
                serde_json::from_slice(&v.value)
                    .map_err(|e| internal(format!("{merchant_key}: {e}")))?,
            ),
            None => None,
        },
    };
    let merchant = merchant.or(read_merchant.as_ref());
    let mut existing = Vec::with_capacity(events.len());
    for (event, v) in events.iter().zip(found) {
        existing.push(match v {
            Some(v) => Some(
                serde_json::from_slice::<StoredEvent>(&v.value)
                    .map_err(|e| internal(format!("{}: {e}", keys::event(&event.id))))?,
            ),
            None => None,
        });
    }
    // One draw of the log sequence for every event not yet recorded (consecutive numbers,
    // in the events' order).
    let missing =
        i64::try_from(existing.iter().filter(|e| e.is_none()).count()).map_err(internal)?;
    let mut next_seq = if missing > 0 {
        let last = ctx
            .repo
            .increment(&keys::event_seq(merchant_id), missing)
            .await?;
        last - missing + 1
    } else {
        0
    };
    for (event, existing) in events.iter().zip(existing) {
        let seq = match existing {
            Some(record) => record.seq,
            None => {
                let drawn = next_seq;
                next_seq += 1;
                ensure_event(ctx, merchant_id, event, drawn).await?
            }
        };
        // The slot is the event's own sequence: every publisher writes the same id there.
        let index = keys::event_index(merchant_id, seq);
        ctx.repo.put_fresh(&index, to_bytes(&event.id)).await?;
        if let Some(m) = merchant.filter(|m| m.notify_url.is_some()) {
            super::delivery::schedule(ctx, m, &event.id).await?;
        }
    }
    Ok(())
}

/// The event record, created once with the log sequence `drawn` for it; the sequence is
/// kept in the record, so a republish reuses it (a draw lost to a crash, or to another
/// publisher that recorded the event first, only leaves a gap, which the log skips).
async fn ensure_event<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    event: &PendingEvent,
    drawn: i64,
) -> Result<i64, ApiError> {
    let key = keys::event(&event.id);
    let record = StoredEvent {
        id: event.id.clone(),
        event_type: event.event_type,
        merchant_id: merchant_id.to_string(),
        seq: drawn,
        created_at_ms: event.created_at_ms,
        data: event.data.clone(),
    };
    if insert(ctx.repo, &key, &record).await? {
        return Ok(drawn);
    }
    // Another publisher wrote it first: use its sequence.
    let (existing, _) = read::<StoredEvent, R>(ctx.repo, &key)
        .await?
        .ok_or_else(|| internal(format!("{key} vanished")))?;
    Ok(existing.seq)
}

async fn remove_published<R: Repository>(
    ctx: &Ctx<'_, R>,
    key: &str,
    done: &[&str],
) -> Result<(), ApiError> {
    for _attempt in 0..CAS_RETRIES_MAX {
        let Some((mut stored, version)) =
            read_for_update::<Stored<serde_json::Value>, R>(ctx.repo, key).await?
        else {
            return Ok(());
        };
        let before = stored.outbox.len();
        stored.outbox.retain(|e| !done.contains(&e.id.as_str()));
        if stored.outbox.len() == before {
            return Ok(());
        }
        match ctx
            .repo
            .put_if_version(key, version, to_bytes(&stored))
            .await
        {
            Ok(_) => return Ok(()),
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// How a queue slot was judged by its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Finished: the head may pass it.
    Done,
    /// Not finished: the head stops here.
    Wait,
}

/// Reads up to [`QUEUE_WINDOW_MAX`] slots after a queue's head: `(head, head version,
/// slots)` where each slot is `(seq, value or None)`.
pub(crate) async fn queue_window<R: Repository>(
    repo: &R,
    queue: &Queue,
) -> Result<(QueueHead, u64, Vec<(i64, Option<Slot>)>), ApiError> {
    let (head, version) = read::<QueueHead, R>(repo, &queue.head())
        .await?
        .unwrap_or_default();
    let tail = repo.increment(&queue.seq, 0).await?;
    let last = tail.min(head.done_through.saturating_add(QUEUE_WINDOW_MAX));
    if last <= head.done_through {
        return Ok((head, version, Vec::new()));
    }
    let seqs: Vec<i64> = (head.done_through + 1..=last).collect();
    let keys: Vec<String> = seqs.iter().map(|s| queue.slot(*s)).collect();
    let values = repo.get_many(&keys).await?;
    let mut slots = Vec::with_capacity(seqs.len());
    for (seq, value) in seqs.into_iter().zip(values) {
        let slot = match value {
            Some(v) => Some(serde_json::from_slice::<Slot>(&v.value).map_err(internal)?),
            None => None,
        };
        slots.push((seq, slot));
    }
    Ok((head, version, slots))
}

/// Advances a queue head past the leading finished slots and returns the processed
/// slots it passed (for deletion): none when a concurrent sweep moved the head first,
/// whose head may still be behind them (deleted there, they would look like writers that
/// died, and be tombstoned and left there). A tombstone this call wrote into a slot that
/// concurrent sweep had already passed (and emptied) is deleted again: that slot's writer
/// had written it, and nothing reads behind the head.
///
/// An empty slot is a writer that drew the sequence number and has not written it yet
/// (or died). Once a later slot is older than the grace period it is presumed dead and
/// the slot is **tombstoned** (created with an empty id) before the head passes it: a
/// writer that was only slow then finds its slot taken and draws another number, so
/// passing a slot never loses a write. The callers judge a tombstone finished, so it is
/// deleted with the slots the head passed: by then its writer is gone for good (the
/// grace period outlasts any request), unless a forwarded schedule clock (a testing aid)
/// judged it dead early.
pub(crate) async fn advance_head<R: Repository>(
    ctx: &Ctx<'_, R>,
    queue: &Queue,
    head: QueueHead,
    version: u64,
    judged: &[(i64, Option<Slot>, SlotState)],
) -> Result<Vec<i64>, ApiError> {
    let mut done_through = head.done_through;
    let mut passed = Vec::new();
    let mut tombstoned = Vec::new();
    for (index, (seq, slot, state)) in judged.iter().enumerate() {
        match (slot, state) {
            (Some(_), SlotState::Done) => passed.push(*seq),
            (Some(_), SlotState::Wait) => break,
            (None, SlotState::Done | SlotState::Wait) => {
                let writer_gone = judged[index + 1..].iter().any(|(_, s, _)| {
                    s.as_ref()
                        .is_some_and(|s| s.at_ms.saturating_add(PUBLISH_GRACE_MS) <= ctx.now_ms)
                });
                let tombstone = Slot {
                    kind: None,
                    id: String::new(),
                    at_ms: ctx.now_ms,
                };
                if !writer_gone || !insert(ctx.repo, &queue.slot(*seq), &tombstone).await? {
                    break;
                }
                tombstoned.push(*seq);
            }
        }
        done_through = *seq;
    }
    if done_through != head.done_through {
        let next = QueueHead { done_through };
        // A concurrent sweep moved it: fine, the next sweep continues from there (and
        // passes, and deletes, these slots again).
        match ctx
            .repo
            .put_if_version(&queue.head(), version, to_bytes(&next))
            .await
        {
            Ok(_) => {}
            Err(RepoError::Conflict { .. }) => {
                let (now, _) = read::<QueueHead, R>(ctx.repo, &queue.head())
                    .await?
                    .unwrap_or_default();
                for seq in tombstoned.into_iter().filter(|s| *s <= now.done_through) {
                    // Best effort, like the deletion of passed slots.
                    let _ = ctx.repo.delete(&queue.slot(seq)).await;
                }
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(passed)
}

/// Appends `slot` to a queue: draws a sequence number and creates the slot; a number
/// whose slot a sweep has tombstoned (this writer looked dead) is abandoned for a new one.
pub(crate) async fn enqueue<R: Repository>(
    ctx: &Ctx<'_, R>,
    queue: &Queue,
    slot: &Slot,
) -> Result<(), ApiError> {
    for _attempt in 0..CAS_RETRIES_MAX {
        let seq = ctx.repo.increment(&queue.seq, 1).await?;
        if insert(ctx.repo, &queue.slot(seq), slot).await? {
            return Ok(());
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// Appends a slot naming `id` (no object kind), written now, to `queue`.
pub(crate) async fn enqueue_id<R: Repository>(
    ctx: &Ctx<'_, R>,
    queue: &Queue,
    id: &str,
) -> Result<(), ApiError> {
    let slot = Slot {
        kind: None,
        id: id.to_string(),
        at_ms: ctx.now_ms,
    };
    enqueue(ctx, queue, &slot).await
}

/// A queue of a merchant (or, for replay expiries, of a channel): its head, its sequence
/// counter and its slots.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub seq: String,
    /// Where the slots (and the head, [`keys::queue_head`]) are kept.
    slots: String,
}

impl Queue {
    /// The merchant's outbox marker queue.
    pub fn markers(merchant_id: &str) -> Queue {
        Queue {
            seq: keys::outbox_seq(merchant_id),
            slots: keys::outbox_markers(merchant_id),
        }
    }

    /// The merchant's delivery queue.
    pub fn deliveries(merchant_id: &str) -> Queue {
        Queue {
            seq: keys::delivery_seq(merchant_id),
            slots: keys::delivery_slots(merchant_id),
        }
    }

    /// The merchant's reconciliation queue of tier `tier` (see `service::reconcile`).
    pub fn reconciles(merchant_id: &str, tier: usize) -> Queue {
        Queue {
            seq: keys::reconcile_seq(merchant_id, tier),
            slots: keys::reconcile_slots(merchant_id, tier),
        }
    }

    /// The merchant's idempotency-expiry queue.
    pub fn expiries(merchant_id: &str) -> Queue {
        Queue {
            seq: keys::expiry_seq(merchant_id),
            slots: keys::expiry_slots(merchant_id),
        }
    }

    /// The channel's replay-key expiry queue.
    pub fn replay_expiries(channel: &str) -> Queue {
        Queue {
            seq: keys::replay_expiry_seq(channel),
            slots: keys::replay_expiry_slots(channel),
        }
    }

    /// The key of slot `seq`.
    pub fn slot(&self, seq: i64) -> String {
        keys::queue_slot(&self.slots, seq)
    }

    /// The key of the head.
    pub fn head(&self) -> String {
        keys::queue_head(&self.slots)
    }
}

/// Step 4: publishes what crashed writers left for `merchant_id` (markers older than the
/// grace period). Returns the number of events published.
pub(crate) async fn recover_merchant<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
) -> Result<u32, ApiError> {
    let queue = Queue::markers(merchant_id);
    let (head, version, slots) = queue_window(ctx.repo, &queue).await?;
    let mut published = 0_u32;
    let mut judged = Vec::with_capacity(slots.len());
    for (seq, slot) in slots {
        let state = match &slot {
            Some(s) if s.at_ms.saturating_add(PUBLISH_GRACE_MS) <= ctx.now_ms => {
                if let Some(kind) = s.kind {
                    published = published.saturating_add(publish(ctx, kind, &s.id).await?);
                    // Long enough for any request: what still waits on the channel now
                    // is handed to reconciliation.
                    super::reconcile::track(ctx, merchant_id, kind, &s.id).await?;
                }
                SlotState::Done
            }
            Some(_) | None => SlotState::Wait,
        };
        judged.push((seq, slot, state));
    }
    for seq in advance_head(ctx, &queue, head, version, &judged).await? {
        // Best effort: a marker left behind is only re-read, never republished twice.
        let _ = ctx.repo.delete(&queue.slot(seq)).await;
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::Queue;

    #[test]
    fn queue_keys_keep_their_stored_names() {
        // Proves each queue's head, counter and slot keys are the ones data is stored
        // under (a renamed key would orphan every queue already written).
        let cases = [
            (Queue::markers("m"), "mch/m/obx", "mch/m/seq/obx"),
            (Queue::deliveries("m"), "mch/m/dlv", "mch/m/seq/dlv"),
            (Queue::expiries("m"), "mch/m/exp", "mch/m/seq/exp"),
            (Queue::replay_expiries("c"), "replay/c/exp", "replay/c/seq"),
            (Queue::reconciles("m", 0), "mch/m/rcn", "mch/m/seq/rcn"),
            (Queue::reconciles("m", 2), "mch/m/rcn2", "mch/m/seq/rcn2"),
        ];
        for (queue, slots, seq) in cases {
            assert_eq!(queue.head(), format!("{slots}/head"));
            assert_eq!(queue.slot(7), format!("{slots}/{:020}", 7));
            assert_eq!(queue.seq, seq);
        }
    }
}
