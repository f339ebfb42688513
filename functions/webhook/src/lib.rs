//! # webhook: inbound channel notifications
//!
//! `POST /v1/webhooks/{channel}`, called by a payment channel (no merchant auth). For
//! each channel: verify its signature (a bad one is refused before anything is read
//! from or written to storage), store the raw notification sealed with the
//! `encryption_key`, apply it through `spinpay-core` (idempotent: duplicates and
//! out-of-order notifications are harmless; an unknown payment is acknowledged so the
//! channel stops retrying; an amount or currency mismatch flags the payment) and
//! acknowledge in the channel's own format. Only a storage failure answers 5xx, so the
//! channel retries exactly when nothing may have been recorded.

mod raw;
mod routes;

use spin_sdk::http::Request;
use spinpay_channels::sandbox::transformers::{self, ParsedNotification};
use spinpay_channels::sandbox::wire;
use spinpay_core::ApiError;
use spinpay_core::api::NOTIFICATION_BODY_BYTES_MAX;
use spinpay_core::model::Channel;
use spinpay_core::service::{
    NotificationResult, apply_payment_notification, apply_refund_notification,
};
use spinpay_guest::component::Services;
use spinpay_guest::env::{self, OsEntropy};
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond;

use routes::{HookError, Inbound};

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle_path(
        &parts,
        routes::route,
        async |channel, _request_id| match channel {
            Inbound::Sandbox => sandbox(&parts, body).await,
        },
    )
    .await
}

async fn sandbox(
    parts: &http::request::Parts,
    body: impl http_body::Body<Data = bytes::Bytes, Error: std::fmt::Display> + Unpin,
) -> Result<HttpResponse, HookError> {
    let body = inbound::read_body(&parts.headers, body, NOTIFICATION_BODY_BYTES_MAX).await?;
    let secret = env::secret("sandbox_secret")
        .await
        .map_err(|_| ApiError::NotConfigured {
            what: "sandbox_secret",
        })?;
    let signature = parts
        .headers
        .get(wire::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let key = secret.expose().as_bytes();
    let parsed = transformers::parse_notification(signature, &body, key, env::now_unix_s())?;
    let services = Services::open().await?;
    let ctx = services.ctx();
    raw::keep(&ctx, Channel::Sandbox, &body, &parsed).await?;
    let result = match &parsed {
        ParsedNotification::Payment(n) => apply_payment_notification(&ctx, &mut OsEntropy, n).await,
        ParsedNotification::Refund(n) => apply_refund_notification(&ctx, &mut OsEntropy, n).await,
    }?;
    match result {
        NotificationResult::Applied | NotificationResult::Duplicate => {}
        NotificationResult::Conflicted | NotificationResult::UnknownObject => {
            let id: String = raw::object_id(&parsed).chars().take(64).collect();
            eprintln!("sandbox notification about {id:?}: {result:?}");
        }
    }
    let ack = transformers::notification_ack().as_bytes().to_vec();
    Ok(inbound::bytes_response(200, "application/json", ack))
}
