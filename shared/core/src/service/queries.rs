//! Reads: one payment (with refunds), one refund, lookup by order id, cursor lists of
//! payments and events. Lists never scan the store: each merchant has a sequence counter
//! and an index slot per sequence number; a page walks the slots downward with
//! `get_many` (newest first), skipping slots a crashed writer left empty.

use serde::de::DeserializeOwned;

use super::{
    Ctx, LIST_BATCHES_MAX, LIST_EMPTY_SLOTS_MAX, LIST_GAP_BATCH, internal, load_payment, read,
};
use crate::api::{ListParams, ListResponse, PaymentResponse, RefundResponse};
use crate::error::ApiError;
use crate::ids::{IdKind, is_valid_id};
use crate::keys;
use crate::model::{Event, Payment, Refund, StoredEvent};
use crate::repo::Repository;

/// Most bytes of JSON one page of `GET /v1/payments` holds. Every payment carries its
/// refunds (up to 100, each with a reason of up to 255 characters), so a page of 100
/// refund-heavy payments could run to megabytes: the page ends early instead, with
/// `has_more` (it always holds at least one payment).
pub const LIST_PAGE_BYTES_MAX: usize = 1024 * 1024;

/// `GET /v1/payments/{id}`: the payment with its refunds.
pub async fn get_payment<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    payment_id: &str,
) -> Result<PaymentResponse, ApiError> {
    let p = load_payment(ctx, merchant_id, payment_id).await?;
    let refunds = load_refunds(ctx, &p).await?;
    let p = repair_settlements(ctx, p, &refunds).await?;
    Ok(PaymentResponse::new(&p, &refunds))
}

/// Read repair: a refund the channel settled while its payment still holds the
/// reservation (a crash between the two writes) is settled on the payment now, so a
/// payment never reads with `refunded_minor` disagreeing with its refunds.
async fn repair_settlements<R: Repository>(
    ctx: &Ctx<'_, R>,
    p: Payment,
    refunds: &[Refund],
) -> Result<Payment, ApiError> {
    use crate::model::RefundStatus;
    let mut repaired = false;
    for r in refunds {
        let settled = match r.state.status {
            RefundStatus::Pending => false,
            RefundStatus::Succeeded | RefundStatus::Failed => true,
        };
        let reserved = p
            .state
            .refunds_pending
            .iter()
            .any(|pending| pending.refund_id == r.id);
        if settled && reserved {
            super::refunds::settle_reservation(ctx, r).await?;
            repaired = true;
        }
    }
    if !repaired {
        return Ok(p);
    }
    load_payment(ctx, &p.merchant_id, &p.id).await
}

async fn load_refunds<R: Repository>(
    ctx: &Ctx<'_, R>,
    p: &Payment,
) -> Result<Vec<Refund>, ApiError> {
    let keys: Vec<String> = p
        .state
        .refund_ids
        .iter()
        .map(|id| keys::refund(id))
        .collect();
    // A reserved refund whose record is not written yet is simply not shown.
    decode_all::<Refund>(ctx.repo.get_many(&keys).await?)
}

fn decode_all<T: DeserializeOwned>(
    values: Vec<Option<crate::repo::Versioned>>,
) -> Result<Vec<T>, ApiError> {
    values
        .into_iter()
        .flatten()
        .map(|v| serde_json::from_slice(&v.value).map_err(internal))
        .collect()
}

/// `GET /v1/refunds/{id}`.
pub async fn get_refund<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    refund_id: &str,
) -> Result<RefundResponse, ApiError> {
    let r = super::refunds::load_refund(ctx, merchant_id, refund_id).await?;
    Ok(RefundResponse::new(&r))
}

/// `GET /v1/payments?merchant_order_id=…` for one order id.
pub async fn find_payment_by_order_id<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    merchant_order_id: &str,
) -> Result<PaymentResponse, ApiError> {
    crate::api::validate_ref(merchant_order_id, "merchant_order_id")?;
    let key = keys::merchant_order(merchant_id, merchant_order_id);
    let missing = || ApiError::ResourceMissing {
        resource: "payment",
        id: merchant_order_id.to_string(),
    };
    let (claim, _) = read::<super::payments::OrderClaim, R>(ctx.repo, &key)
        .await?
        .ok_or_else(missing)?;
    get_payment(ctx, merchant_id, &claim.payment_id)
        .await
        .map_err(|e| match e {
            ApiError::ResourceMissing { .. } => missing(),
            other => other,
        })
}

/// `GET /v1/payments?limit=&starting_after=` (or `merchant_order_id=`: a list of 0 or 1).
pub async fn list_payments<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    params: &ListParams,
) -> Result<ListResponse<PaymentResponse>, ApiError> {
    if let Some(order_id) = params.order_lookup()? {
        return match find_payment_by_order_id(ctx, merchant_id, order_id).await {
            Ok(p) => Ok(ListResponse::new(vec![p], false)),
            Err(ApiError::ResourceMissing { .. }) => Ok(ListResponse::new(vec![], false)),
            Err(e) => Err(e),
        };
    }
    let below = match &params.starting_after {
        Some(id) => cursor(load_payment(ctx, merchant_id, id).await, id)?.seq,
        None => {
            ctx.repo
                .increment(&keys::payment_seq(merchant_id), 0)
                .await?
                + 1
        }
    };
    let slot = |seq| keys::payment_index(merchant_id, seq);
    let (ids, has_more) = walk_index(ctx.repo, slot, below, params.limit).await?;
    let records = ctx
        .repo
        .get_many(&ids.iter().map(|id| keys::payment(id)).collect::<Vec<_>>())
        .await?;
    let payments: Vec<Payment> = decode_all(records)?;
    let mut data = Vec::with_capacity(payments.len());
    let mut page_bytes = 0usize;
    let mut full = false;
    for p in payments.iter().filter(|p| p.merchant_id == merchant_id) {
        let refunds = load_refunds(ctx, p).await?;
        let p = repair_settlements(ctx, p.clone(), &refunds).await?;
        let one = PaymentResponse::new(&p, &refunds);
        let bytes = json_len(&one).saturating_add(1);
        if !data.is_empty() && page_bytes.saturating_add(bytes) > LIST_PAGE_BYTES_MAX {
            full = true;
            break;
        }
        page_bytes = page_bytes.saturating_add(bytes);
        data.push(one);
    }
    Ok(ListResponse::new(data, has_more || full))
}

/// The length of `value`'s JSON, without building it.
fn json_len<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and the response types always serialize.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The object a list's `starting_after` names: one the merchant does not have (another
/// merchant's, or none) is a bad parameter, named, as the refund list answers it.
fn cursor<T>(loaded: Result<T, ApiError>, id: &str) -> Result<T, ApiError> {
    loaded.map_err(|e| match e {
        ApiError::ResourceMissing { resource, .. } => ApiError::ParameterInvalid {
            param: "starting_after".into(),
            reason: format!("{id:?} is not one of this merchant's {resource}s"),
        },
        other => other,
    })
}

/// `GET /v1/events?limit=&starting_after=`: the merchant's event log, newest first.
pub async fn list_events<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    params: &ListParams,
) -> Result<ListResponse<Event>, ApiError> {
    if params.merchant_order_id.is_some() {
        return Err(ApiError::UnknownField {
            param: "merchant_order_id".into(),
        });
    }
    let below = match &params.starting_after {
        Some(id) => cursor(load_event(ctx, merchant_id, id).await, id)?.seq,
        None => ctx.repo.increment(&keys::event_seq(merchant_id), 0).await? + 1,
    };
    let slot = |seq| keys::event_index(merchant_id, seq);
    let (ids, has_more) = walk_index(ctx.repo, slot, below, params.limit).await?;
    let records = ctx
        .repo
        .get_many(&ids.iter().map(|id| keys::event(id)).collect::<Vec<_>>())
        .await?;
    let events: Vec<StoredEvent> = decode_all(records)?;
    let data = events
        .iter()
        .filter(|e| e.merchant_id == merchant_id)
        .map(StoredEvent::to_event)
        .collect();
    Ok(ListResponse::new(data, has_more))
}

/// `GET /v1/events/{id}` (for redelivery and debugging).
pub async fn get_event<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    event_id: &str,
) -> Result<Event, ApiError> {
    Ok(load_event(ctx, merchant_id, event_id).await?.to_event())
}

/// Loads an event owned by `merchant_id` (404 `resource_missing` otherwise).
pub(crate) async fn load_event<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    event_id: &str,
) -> Result<StoredEvent, ApiError> {
    let missing = || ApiError::ResourceMissing {
        resource: "event",
        id: event_id.chars().take(crate::ids::ID_LEN_MAX).collect(),
    };
    if !is_valid_id(IdKind::Event, event_id) {
        return Err(missing());
    }
    match read::<StoredEvent, R>(ctx.repo, &keys::event(event_id)).await? {
        Some((e, _)) if e.merchant_id == merchant_id => Ok(e),
        Some(_) | None => Err(missing()),
    }
}

/// Walks index slots `below-1, below-2, …` collecting up to `limit` ids (plus one to
/// know whether there are more), in batches of `limit + 1`, at most
/// [`LIST_BATCHES_MAX`] batches once something was found; a page that has found nothing
/// goes on past the empty run in bigger batches, up to [`LIST_EMPTY_SLOTS_MAX`] slots,
/// so it never ends empty while older items remain.
async fn walk_index<R: Repository>(
    repo: &R,
    slot: impl Fn(i64) -> String,
    below: i64,
    limit: u32,
) -> Result<(Vec<String>, bool), ApiError> {
    let want = i64::from(limit) + 1;
    let mut ids = Vec::new();
    let mut next = below - 1;
    let mut walked = 0i64;
    for batch in 0.. {
        if next < 1 || ids.len() as i64 >= want {
            break;
        }
        let size = if batch < LIST_BATCHES_MAX {
            want
        } else if ids.is_empty() && walked < LIST_EMPTY_SLOTS_MAX {
            LIST_GAP_BATCH.max(want)
        } else {
            break;
        };
        let low = (next - size + 1).max(1);
        let keys: Vec<String> = (low..=next).rev().map(&slot).collect();
        for v in repo.get_many(&keys).await?.into_iter().flatten() {
            ids.push(serde_json::from_slice::<String>(&v.value).map_err(internal)?);
        }
        walked += next - low + 1;
        next = low - 1;
    }
    // Stopped by the batch cap (a run of empty slots) with more slots below: say so,
    // and the client continues from the last id it got.
    let capped = next >= 1 && !ids.is_empty();
    let has_more = ids.len() as i64 > i64::from(limit) || capped;
    ids.truncate(limit as usize);
    Ok((ids, has_more))
}
