//! # query: the read component
//!
//! One payment (with its refunds; a `processing` one is re-checked with the channel
//! first, one still unpaid past its expiry is closed there and canceled), a lookup by
//! merchant order id, cursor lists of payments and events, one refund, one event (with
//! the state of its delivery to the merchant's notify URL), and explicit re-checks
//! (`POST …/recheck`) of a payment or refund whose outcome the channel has not told us
//! yet. Every read is scoped to the merchant of
//! the bearer key: another merchant's id is 404, never 403.
//!
//! `POST /v1/admin/reconcile` (admin token; `{"limit"?, "merchant_id"?, "now_ms"?}`) is
//! the scheduled counterpart of those re-checks: it re-checks the payments and refunds
//! still waiting on their channel that nobody reads (see
//! `spinpay_core::service::reconcile`). A scheduler calls it every minute.
//!
//! Every route refuses a query string it does not take (400 `unknown_field` naming the
//! first such parameter); only the lists take any. A POST checks it before anything is
//! stored.
//!
//! Routing uses the request's full path, never Spin's route headers: `GET /v1/payments`
//! arrives here forwarded by `authorize` through service chaining, where those headers
//! describe a different route.

mod routes;

use spin_sdk::http::Request;
use spinpay_channels::dispatch::Channels;
use spinpay_core::ApiError;
use spinpay_core::api::{
    AdminSweepBody, BODY_BYTES_MAX, PaymentResponse, RefundResponse, parse_body,
};
use spinpay_core::idempotency::ADMIN_SCOPE;
use spinpay_core::ids::IdKind;
use spinpay_core::model::{Event, PaymentStatus};
use spinpay_core::service::{
    self, Ctx, DeliveryResponse, close_if_expired, event_delivery, get_event, get_payment,
    get_refund, list_events, list_payments, recheck_or_close_expired, recheck_refund,
};
use spinpay_guest::component::{self, Keyed, Services};
use spinpay_guest::env::{self, OsEntropy};
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond::{self, ok_json};

use routes::{EmptyBody, Read, Route, list_params, no_query};

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle_path(&parts, routes::route, async |route, request_id| {
        let read = match route {
            Route::Reconcile => {
                let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
                return reconcile(&parts, &body, request_id).await;
            }
            Route::Merchant(read) => read,
        };
        let (services, merchant) = Services::authenticated(&parts.headers).await?;
        let (ctx, m) = (services.ctx(), merchant.id.as_str());
        let query = parts.uri.query();
        let is_payment = matches!(read, Read::RecheckPayment { .. });
        match read {
            Read::ListPayments => {
                let params = list_params(query, IdKind::Payment)?;
                Ok(ok_json(&list_payments(&ctx, m, &params).await?))
            }
            Read::ListEvents => {
                let params = list_params(query, IdKind::Event)?;
                Ok(ok_json(&list_events(&ctx, m, &params).await?))
            }
            Read::GetPayment { id } => {
                no_query(query)?;
                Ok(ok_json(&payment_rechecked(&services, m, &id).await?))
            }
            Read::GetRefund { id } => {
                no_query(query)?;
                Ok(ok_json(&get_refund(&ctx, m, &id).await?))
            }
            Read::GetEvent { id } => {
                no_query(query)?;
                let event = get_event(&ctx, m, &id).await?;
                let delivery = event_delivery(&ctx, m, &id).await?;
                Ok(ok_json(&EventWithDelivery { event, delivery }))
            }
            Read::RecheckPayment { id } | Read::RecheckRefund { id } => {
                no_query(query)?;
                let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
                let channels = Channels::from_variables().await?;
                let run = async || {
                    parse_body::<EmptyBody>(&body, BODY_BYTES_MAX)?;
                    let (ctx, rng) = (services.ctx(), &mut OsEntropy);
                    Ok(if is_payment {
                        Rechecked::Payment(Box::new(
                            recheck_or_close_expired(&ctx, &channels, rng, m, &id).await?,
                        ))
                    } else {
                        Rechecked::Refund(recheck_refund(&ctx, &channels, rng, m, &id).await?)
                    })
                };
                let call = Keyed::new(m, &parts, &body);
                services.idempotent(call, request_id, run).await
            }
        }
    })
    .await
}

/// `POST /v1/admin/reconcile`: the admin token, then one bounded reconciliation call
/// (idempotent under an `Idempotency-Key` in the admin scope).
async fn reconcile(
    parts: &http::request::Parts,
    body: &[u8],
    request_id: &str,
) -> Result<HttpResponse, ApiError> {
    component::require_admin(&parts.headers).await?;
    no_query(parts.uri.query())?;
    let services = Services::open().await?;
    let channels = Channels::from_variables().await?;
    let call = Keyed::new(ADMIN_SCOPE, parts, body);
    services
        .idempotent(call, request_id, async || {
            let req = parse_body::<AdminSweepBody>(body, BODY_BYTES_MAX)?;
            let call = req.validate(env::now_ms(), service::RECONCILE_LIMIT_MAX)?;
            let ctx = Ctx {
                now_ms: call.now_ms,
                ..services.ctx()
            };
            let req = service::ReconcileRequest {
                limit: call.limit,
                merchant_id: call.merchant_id,
                wall_clock: Some(env::now_ms),
            };
            let report = service::reconcile(&ctx, &channels, &mut OsEntropy, &req).await?;
            component::log_passed_over(&report.merchants_failed, request_id);
            Ok(report)
        })
        .await
}

/// One event with the state of its delivery to the notify URL (`null` when it has
/// none: no notify URL when it was published).
#[derive(serde::Serialize)]
struct EventWithDelivery {
    #[serde(flatten)]
    event: Event,
    delivery: Option<DeliveryResponse>,
}

/// The answer to a re-check: the object re-checked.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Rechecked {
    Payment(Box<PaymentResponse>),
    Refund(RefundResponse),
}

/// The payment; a `processing` one is first re-checked with its channel (an unknown
/// answer keeps it `processing`, or sends it to the channel again once it has not
/// changed for 60 s: see `recheck_payment`), and one still waiting for its customer past
/// its `expires_at_ms` (a customer-presented code still `processing` included) is
/// re-checked and, still unpaid, closed at its channel and canceled as expired (see
/// `close_if_expired`). A missing channel configuration or
/// contention just serves what is stored.
async fn payment_rechecked(
    services: &Services,
    merchant_id: &str,
    id: &str,
) -> Result<PaymentResponse, ApiError> {
    let ctx = services.ctx();
    let stored = get_payment(&ctx, merchant_id, id).await?;
    let expired = stored.status == PaymentStatus::RequiresCustomerAction
        && ctx.now_ms >= stored.expires_at_ms;
    if stored.status != PaymentStatus::Processing && !expired {
        return Ok(stored);
    }
    let channels = match Channels::from_variables().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("re-check of {id} skipped: {e}");
            return Ok(stored);
        }
    };
    // Re-checks a `processing` payment too, and closes an expired customer code.
    let fresh = close_if_expired(&ctx, &channels, &mut OsEntropy, merchant_id, id).await;
    match fresh {
        Ok(fresh) => Ok(fresh),
        Err(e) if e.is_retryable() => {
            eprintln!("re-check of {id} failed ({e}); serving the stored payment");
            Ok(stored)
        }
        Err(e) => Err(e),
    }
}
