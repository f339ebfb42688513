//! Pure routing and the error answers (unit-tested natively).

use http::Method;
use spinpay_channels::sandbox::transformers::NotificationRejected;
use spinpay_channels::sandbox::wire::{ErrorAnswer, ErrorBody};
use spinpay_channels::wechatpay::NotificationRejected as ChannelRejected;
use spinpay_channels::wechatpay::transformers::callback_failure;
use spinpay_core::ApiError;
use spinpay_core::model::Channel;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond::{ErrorResponse, RouteMiss};

/// A channel this build has a notification adapter for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// The sandbox provider.
    Sandbox,
    /// Alipay async notifications (form, RSA2).
    Alipay,
    /// WeChat Pay v3 callbacks (signed headers, encrypted resource).
    Wechatpay,
    /// UnionPay ACP back-notifications (form, RSA under a pinned key).
    Unionpay,
}

/// Routes `/v1/webhooks/{channel}` on the full path; never on the
/// `spin-path-match-channel` header, which a client can send ahead of Spin's own.
pub fn route(method: &Method, path: &str) -> Result<Inbound, RouteMiss> {
    let segments: Vec<&str> = path.split('/').collect();
    let name = match segments.as_slice() {
        ["", "v1", "webhooks", name] => *name,
        _ => return Err(RouteMiss::NotFound),
    };
    let inbound = match Channel::parse(name) {
        Some(Channel::Sandbox) => Inbound::Sandbox,
        Some(Channel::Alipay) => Inbound::Alipay,
        Some(Channel::Wechatpay) => Inbound::Wechatpay,
        Some(Channel::Unionpay) => Inbound::Unionpay,
        None => return Err(RouteMiss::NotFound),
    };
    if *method == Method::POST {
        Ok(inbound)
    } else {
        Err(RouteMiss::MethodNotAllowed { allow: "POST" })
    }
}

/// Why a notification was not acknowledged.
#[derive(Debug)]
pub enum HookError {
    /// Our side: body too large, not configured, storage (the channel retries).
    Api(ApiError),
    /// The sandbox's side: bad signature or malformed (answered in its format).
    Rejected(NotificationRejected),
    /// A real channel's side: bad signature, stale, another merchant's, malformed.
    Channel(Inbound, ChannelRejected),
}

impl From<ApiError> for HookError {
    fn from(e: ApiError) -> Self {
        HookError::Api(e)
    }
}

impl From<NotificationRejected> for HookError {
    fn from(e: NotificationRejected) -> Self {
        HookError::Rejected(e)
    }
}

/// What Alipay and UnionPay get for a refused notification (anything but their
/// success answer makes them retry).
pub const REFUSED_TEXT: &str = "fail";

impl ErrorResponse for HookError {
    /// The sandbox: 401 `signature_invalid` / 400 `notification_invalid` in its error
    /// format. WeChat Pay: 401 / 400 with `{"code":"FAIL","message"}`. Alipay and
    /// UnionPay: 401 / 400 with the text `fail`. Our own errors (5xx, 413) in the API's
    /// format, so the channel retries.
    fn response(&self, request_id: &str) -> HttpResponse {
        let (status, code, message) = match self {
            // Our side (every channel retries a non-2xx): the API's own error format.
            HookError::Api(e) => return inbound::error_response(e, request_id),
            HookError::Channel(Inbound::Wechatpay, e) => {
                let (status, body) = callback_failure(e);
                return inbound::bytes_response(status, "application/json", body.into_bytes());
            }
            HookError::Channel(Inbound::Sandbox | Inbound::Alipay | Inbound::Unionpay, e) => {
                eprintln!("notification refused: {e}");
                let status = match e {
                    ChannelRejected::Signature(_) | ChannelRejected::Stale => 401,
                    ChannelRejected::WrongMerchant(_) | ChannelRejected::Malformed(_) => 400,
                };
                return inbound::bytes_response(
                    status,
                    "text/plain; charset=utf-8",
                    REFUSED_TEXT.as_bytes().to_vec(),
                );
            }
            HookError::Rejected(e @ NotificationRejected::Signature(_)) => {
                (401, "signature_invalid", e.to_string())
            }
            HookError::Rejected(e @ NotificationRejected::Malformed(_)) => {
                (400, "notification_invalid", e.to_string())
            }
        };
        let answer = ErrorAnswer {
            error: ErrorBody {
                code: code.into(),
                message,
            },
        };
        inbound::json_response(status, &answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_post_to_a_supported_channel_is_served() {
        // Proves every channel's POST routes, other methods are 405 and unknown channels 404.
        assert_eq!(
            route(&Method::POST, "/v1/webhooks/sandbox"),
            Ok(Inbound::Sandbox)
        );
        assert_eq!(
            route(&Method::GET, "/v1/webhooks/sandbox"),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
        for (path, inbound) in [
            ("/v1/webhooks/alipay", Inbound::Alipay),
            ("/v1/webhooks/wechatpay", Inbound::Wechatpay),
            ("/v1/webhooks/unionpay", Inbound::Unionpay),
        ] {
            assert_eq!(route(&Method::POST, path), Ok(inbound), "{path}");
        }
        for path in [
            "/v1/webhooks/paypal",
            "/v1/webhooks/",
            "/v1/webhooks/sandbox/x",
        ] {
            assert_eq!(
                route(&Method::POST, path),
                Err(RouteMiss::NotFound),
                "{path}"
            );
        }
        let resp = RouteMiss::MethodNotAllowed { allow: "POST" }.response("r");
        assert_eq!(
            (
                resp.status().as_u16(),
                resp.headers()["allow"].to_str().unwrap()
            ),
            (405, "POST")
        );
    }

    #[test]
    fn rejected_notifications_answer_in_the_sandbox_format() {
        // Proves a bad signature is 401 and a malformed body 400, both {"error":{code,message}}.
        let sig = HookError::from(NotificationRejected::Signature("stale".into())).response("r");
        assert_eq!(sig.status(), 401);
        let bad = HookError::from(NotificationRejected::Malformed("x".into())).response("r");
        assert_eq!(bad.status(), 400);
        let ours = HookError::from(ApiError::StorageUnavailable).response("r");
        assert_eq!(ours.status(), 503);
    }

    #[test]
    fn rejected_channel_notifications_answer_in_each_channels_format() {
        // Proves WeChat Pay gets 4xx/5xx with {"code":"FAIL"} and Alipay / UnionPay a
        // 4xx `fail` text, so each retries a genuine message we could not take.
        let stale = ChannelRejected::Stale;
        let wx = HookError::Channel(Inbound::Wechatpay, stale.clone()).response("r");
        assert_eq!(wx.status(), 401);
        let ours = HookError::from(ApiError::StorageUnavailable).response("r");
        assert_eq!(ours.status(), 503);
        assert_eq!(ours.headers()["content-type"], "application/json");
        let malformed = ChannelRejected::Malformed("x".into());
        for inbound in [Inbound::Alipay, Inbound::Unionpay] {
            let resp = HookError::Channel(inbound, malformed.clone()).response("r");
            assert_eq!(resp.status(), 400);
            let resp = HookError::Channel(inbound, stale.clone()).response("r");
            assert_eq!(resp.status(), 401);
        }
    }
}
