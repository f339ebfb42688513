//! # refund: the refund component
//!
//! `POST /v1/payments/{id}/refunds` creates a refund (all or part of what is still
//! refundable; many per payment) and `GET` lists the payment's refunds. A thin wrapper:
//! the request is parsed here, `spinpay-core` decides (reservation by compare-and-swap,
//! so concurrent refunds never exceed the captured amount), the channel adapter does the
//! HTTP, and the result becomes the response.
//!
//! Routing uses the request's full path, never Spin's route headers, so a request
//! forwarded by another component through service chaining is served the same way.

mod routes;

use spin_sdk::http::Request;
use spinpay_channels::dispatch::Channels;
use spinpay_core::api::{BODY_BYTES_MAX, ListParams, RefundRequest, parse_body};
use spinpay_core::service::{create_refund, get_payment};
use spinpay_guest::component::{Keyed, Services};
use spinpay_guest::env::OsEntropy;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond::{self, ok_json};

use routes::Route;

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle_path(&parts, routes::route, async |route, request_id| {
        let (services, merchant) = Services::authenticated(&parts.headers).await?;
        match route {
            Route::Create { payment_id } => {
                let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
                let channels = Channels::from_variables().await?;
                let call = Keyed::new(&merchant.id, &parts, &body);
                services
                    .idempotent(call, request_id, async || {
                        let req = parse_body::<RefundRequest>(&body, BODY_BYTES_MAX)?.validate()?;
                        let (ctx, m) = (services.ctx(), merchant.id.as_str());
                        create_refund(&ctx, &channels, &mut OsEntropy, m, &payment_id, req).await
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
