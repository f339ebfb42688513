//! # webhook: inbound channel notifications
//!
//! `POST /v1/webhooks/{sandbox|alipay|wechatpay|unionpay}`, called by a payment channel
//! (no merchant auth). For each channel: verify its signature with the channel's
//! transformers (a bad one is refused before anything is read from or written to
//! storage), store the raw notification sealed with the `encryption_key`, recognise a
//! replayed message by its replay key, apply it through `spinpay-core` (idempotent:
//! duplicates and out-of-order notifications are harmless; an unknown payment is
//! acknowledged so the channel stops retrying; an amount or currency mismatch flags the
//! payment and raises `payment.conflicted`) and acknowledge in the channel's own format:
//! Alipay the text `success`, WeChat Pay 204, UnionPay 200 `ok`, the sandbox its JSON.
//! Only a failure on our side answers 5xx, so the channel retries exactly when nothing
//! may have been recorded.

mod raw;
mod routes;

use spin_sdk::http::Request;
use spinpay_channels::alipay::transformers::AlipayNotificationKind;
use spinpay_channels::alipay::{self, AlipayClient};
use spinpay_channels::sandbox::transformers::{self, ParsedNotification};
use spinpay_channels::sandbox::{self, wire};
use spinpay_channels::unionpay::transformers::UnionpayNotificationKind;
use spinpay_channels::unionpay::{self, UnionpayClient};
use spinpay_channels::wechatpay::transformers::WechatNotificationKind;
use spinpay_channels::wechatpay::{self, WechatpayClient};
use spinpay_channels::wiring::Slot;
use spinpay_core::ApiError;
use spinpay_core::api::NOTIFICATION_BODY_BYTES_MAX;
use spinpay_core::model::Channel;
use spinpay_core::service::{
    NotificationResult, apply_payment_notification, apply_refund_notification, claim_replay_key,
    replay_key_claimed,
};
use spinpay_guest::component::Services;
use spinpay_guest::env::{self, OsEntropy};
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond;

use routes::{HookError, Inbound};

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle_path(&parts, routes::route, async |inbound, _request_id| {
        let body = inbound::read_body(&parts.headers, body, NOTIFICATION_BODY_BYTES_MAX).await?;
        match inbound {
            Inbound::Sandbox => sandbox(&parts, &body).await,
            Inbound::Alipay => alipay_notify(&body).await,
            Inbound::Wechatpay => wechatpay_callback(&parts, &body).await,
            Inbound::Unionpay => unionpay_notify(&body).await,
        }
    })
    .await
}

async fn sandbox(parts: &http::request::Parts, body: &[u8]) -> Result<HttpResponse, HookError> {
    // Switched off (`sandbox_host` empty, as production runs): refused like any channel
    // that is off, whoever holds the secret.
    let off = sandbox::off_by_variables()
        .await
        .map_err(|_| ApiError::NotConfigured {
            what: sandbox::VAR_URL,
        })?;
    if off {
        return Err(ApiError::ChannelUnsupported {
            value: Channel::Sandbox.as_str().to_string(),
        }
        .into());
    }
    let secret = env::secret(sandbox::VAR_SECRET)
        .await
        .map_err(|_| ApiError::NotConfigured {
            what: sandbox::VAR_SECRET,
        })?;
    let signature = parts
        .headers
        .get(wire::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let key = secret.expose().as_bytes();
    let n = transformers::verify_notification(signature, body, key, env::now_unix_s())?;
    keep_and_apply(Channel::Sandbox, body, &n.parsed, Some(&n.replay_key)).await?;
    let ack = transformers::notification_ack().as_bytes().to_vec();
    Ok(inbound::bytes_response(200, "application/json", ack))
}

async fn alipay_notify(body: &[u8]) -> Result<HttpResponse, HookError> {
    let client = configured(AlipayClient::load().await, Channel::Alipay)?;
    let n = alipay::transformers::parse_notification(client.config(), body)
        .map_err(|e| HookError::Channel(Inbound::Alipay, e))?;
    let parsed = match n.kind {
        AlipayNotificationKind::Payment(p) => ParsedNotification::Payment(p),
        AlipayNotificationKind::Refund(r) => ParsedNotification::Refund(r),
    };
    keep_and_apply(Channel::Alipay, body, &parsed, Some(&n.replay_key)).await?;
    Ok(inbound::bytes_response(
        200,
        "text/plain; charset=utf-8",
        alipay::NOTIFY_ACK.as_bytes().to_vec(),
    ))
}

async fn wechatpay_callback(
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<HttpResponse, HookError> {
    let slot = WechatpayClient::load().await;
    let client = configured(slot, Channel::Wechatpay)?;
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let now = env::now_unix_s();
    let n = wechatpay::transformers::parse_callback(client.config(), &headers, body, now)
        .map_err(|e| HookError::Channel(Inbound::Wechatpay, e))?;
    let parsed = match n.kind {
        WechatNotificationKind::Payment(p) => ParsedNotification::Payment(p),
        WechatNotificationKind::Refund(r) => ParsedNotification::Refund(r),
    };
    keep_and_apply(Channel::Wechatpay, body, &parsed, Some(&n.replay_key)).await?;
    let status = wechatpay::transformers::CALLBACK_ACK_STATUS;
    Ok(inbound::bytes_response(
        status,
        "application/json",
        Vec::new(),
    ))
}

async fn unionpay_notify(body: &[u8]) -> Result<HttpResponse, HookError> {
    let slot = UnionpayClient::load().await;
    let client = configured(slot, Channel::Unionpay)?;
    let n = unionpay::transformers::parse_notification(client.config(), body)
        .map_err(|e| HookError::Channel(Inbound::Unionpay, e))?;
    let parsed = match n.kind {
        UnionpayNotificationKind::Payment(p) => ParsedNotification::Payment(p),
        UnionpayNotificationKind::Refund(r) => ParsedNotification::Refund(r),
    };
    keep_and_apply(Channel::Unionpay, body, &parsed, Some(&n.replay_key)).await?;
    Ok(inbound::bytes_response(
        200,
        "text/plain; charset=utf-8",
        unionpay::NOTIFY_ACK.as_bytes().to_vec(),
    ))
}

/// The channel's adapter; a channel not switched on is 400 `channel_unsupported`, one
/// switched on with an unusable variable 503 `not_configured` naming it (the channel
/// retries either until an operator fixes it).
fn configured<C>(slot: Slot<C>, channel: Channel) -> Result<C, ApiError> {
    match slot {
        Slot::Ready(c) => Ok(c),
        Slot::Off => Err(ApiError::ChannelUnsupported {
            value: channel.as_str().to_string(),
        }),
        Slot::Broken(what) => Err(ApiError::NotConfigured { what }),
    }
}

/// Archives the verified notification, then applies it unless its replay key shows it
/// was applied before; the key is claimed only after a successful apply, so a
/// redelivery after a failure on our side is applied, not skipped.
async fn keep_and_apply(
    channel: Channel,
    body: &[u8],
    parsed: &ParsedNotification,
    replay_key: Option<&str>,
) -> Result<NotificationResult, ApiError> {
    let services = Services::open().await?;
    let ctx = services.ctx();
    raw::keep(&ctx, channel, body, parsed).await?;
    if let Some(key) = replay_key
        && replay_key_claimed(&ctx, key).await?
    {
        return Ok(NotificationResult::Duplicate);
    }
    let result = match parsed {
        ParsedNotification::Payment(n) => apply_payment_notification(&ctx, &mut OsEntropy, n).await,
        ParsedNotification::Refund(n) => apply_refund_notification(&ctx, &mut OsEntropy, n).await,
    }?;
    if let Some(key) = replay_key {
        claim_replay_key(&ctx, channel, key).await?;
    }
    match result {
        NotificationResult::Applied | NotificationResult::Duplicate => {}
        NotificationResult::Conflicted | NotificationResult::UnknownObject => {
            let id: String = raw::object_id(parsed).chars().take(64).collect();
            eprintln!("{} notification about {id:?}: {result:?}", channel.as_str());
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_off_or_broken_refuses_notifications_naming_why() {
        // Proves off → 400 channel_unsupported naming the channel, broken → 503
        // not_configured naming the variable, ready → the adapter.
        let off = configured::<()>(Slot::Off, Channel::Alipay).unwrap_err();
        assert_eq!((off.code(), off.status()), ("channel_unsupported", 400));
        assert!(off.to_string().contains("alipay"));
        let broken = configured::<()>(Slot::Broken("wechatpay_apiv3_key"), Channel::Wechatpay);
        assert_eq!(
            broken.unwrap_err(),
            ApiError::NotConfigured {
                what: "wechatpay_apiv3_key"
            }
        );
        assert!(configured(Slot::Ready(7), Channel::Unionpay).is_ok());
    }
}
