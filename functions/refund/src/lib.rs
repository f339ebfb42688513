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

mod glue;
mod routes;

use glue::{Channels, Services, entropy, ok_json};
use spin_sdk::http::Request;
use spinpay_core::ApiError;
use spinpay_core::api::{BODY_BYTES_MAX, ListParams, RefundRequest, parse_body};
use spinpay_core::service::{create_refund, get_payment};
use spinpay_guest::env;
use spinpay_guest::inbound::{self, HttpResponse, REQUEST_ID_HEADER};

use routes::Route;

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let request_id = inbound::request_id(&parts.headers, env::random_bytes());
    let resp = match routes::route(&parts.method, parts.uri.path()) {
        Err(miss) => miss.response(&request_id),
        Ok(route) => match serve(route, &parts, body, &request_id).await {
            Ok(resp) => resp,
            Err(e) => inbound::error_response(&e, &request_id),
        },
    };
    inbound::with_header(resp, REQUEST_ID_HEADER, &request_id)
}

async fn serve(
    route: Route,
    parts: &http::request::Parts,
    body: impl http_body::Body<Data = bytes::Bytes, Error: std::fmt::Display> + Unpin,
    request_id: &str,
) -> Result<HttpResponse, ApiError> {
    let services = Services::open().await?;
    let merchant = services.authenticate(&parts.headers).await?;
    match route {
        Route::Create { payment_id } => {
            let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
            let channels = Channels::from_variables().await?;
            let path = parts.uri.path();
            let run = async || {
                let req = parse_body::<RefundRequest>(&body, BODY_BYTES_MAX)?.validate()?;
                let ctx = services.ctx();
                create_refund(
                    &ctx,
                    &channels,
                    &mut entropy(),
                    &merchant.id,
                    &payment_id,
                    req,
                )
                .await
            };
            services
                .idempotent(request_id, &merchant.id, &parts.headers, path, &body, run)
                .await
        }
        Route::List { payment_id } => {
            let params = ListParams::parse(parts.uri.query().unwrap_or(""))?;
            let payment = get_payment(&services.ctx(), &merchant.id, &payment_id).await?;
            Ok(ok_json(&routes::page(payment.refunds, &params)?))
        }
    }
}
