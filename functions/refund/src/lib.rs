//! # refund: the refund component
//!
//! `POST /v1/payments/{id}/refunds` creates a refund (all or part of what is still
//! refundable; many per payment; a query string is refused as `unknown_field`) and `GET`
//! lists the payment's refunds. A thin wrapper:
//! the request is parsed here, `spinpay-core` decides (reservation by compare-and-swap,
//! so concurrent refunds never exceed the captured amount), the channel adapter does the
//! HTTP, and the result becomes the response.
//!
//! An accepted refund is also counted for the risk engine's pay-then-refund AML rule.
//!
//! Routing uses the request's full path, never Spin's route headers, so a request
//! forwarded by another component through service chaining is served the same way.

mod routes;

use spin_sdk::http::Request;
use spinpay_channels::dispatch::Channels;
use spinpay_core::api::{BODY_BYTES_MAX, ListParams, RefundRequest, parse_body};
use spinpay_core::riskengine::store::record_refund_of;
use spinpay_core::service::{Ctx, create_refund_seeded, get_payment};
use spinpay_guest::component::{Keyed, Services};
use spinpay_guest::env::OsEntropy;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::kv::KvRepository;
use spinpay_guest::respond::{self, ok_json};

use routes::Route;

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle_path(&parts, routes::route, async |route, request_id| {
        let (services, merchant) = Services::authenticated(&parts.headers).await?;
        match route {
            Route::Create { payment_id } => {
                // Fields come from the body only: a query parameter is refused before
                // anything is read or an Idempotency-Key is touched.
                inbound::no_query(parts.uri.query())?;
                let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
                let channels = Channels::from_variables().await?;
                let call = Keyed::new(&merchant.id, &parts, &body);
                services
                    .idempotent_seeded(call, request_id, async |keyed| {
                        let req = parse_body::<RefundRequest>(&body, BODY_BYTES_MAX)?.validate()?;
                        let (ctx, m) = (services.ctx(), merchant.id.as_str());
                        let (rng, seed) = (&mut OsEntropy, keyed.map(|k| k.seed));
                        let refund =
                            create_refund_seeded(&ctx, &channels, rng, m, &payment_id, req, seed)
                                .await?;
                        count_for_aml(&ctx, m, &payment_id, &refund.id, request_id).await;
                        Ok(refund)
                    })
                    .await
            }
            Route::List { payment_id } => {
                let params = ListParams::parse(parts.uri.query().unwrap_or(""))?;
                let payment = get_payment(&services.ctx(), &merchant.id, &payment_id).await?;
                Ok(ok_json(&routes::page(payment.refunds, &params)?))
            }
        }
    })
    .await
}

/// Counts an accepted refund for the risk engine's pay-then-refund AML rule (the core's
/// `riskengine::store::record_refund_of`: idempotent per refund id, nothing for a failed
/// refund). The refund has happened whatever this does, so a failure is logged, not
/// answered: the merchant must not retry a refund because a risk counter missed.
async fn count_for_aml(
    ctx: &Ctx<'_, KvRepository>,
    merchant_id: &str,
    payment_id: &str,
    refund_id: &str,
    request_id: &str,
) {
    match record_refund_of(ctx, &mut OsEntropy, merchant_id, payment_id, refund_id).await {
        Ok(reports) => {
            for r in reports {
                eprintln!(
                    "request {request_id}: AML report {} filed for refund {refund_id}",
                    r.kind.as_str()
                );
            }
        }
        Err(e) => eprintln!("request {request_id}: refund {refund_id} not counted for AML: {e}"),
    }
}
