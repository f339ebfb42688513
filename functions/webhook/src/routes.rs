//! Pure routing and the error answers (unit-tested natively).

use http::Method;
use spinpay_channels::sandbox::transformers::NotificationRejected;
use spinpay_channels::sandbox::wire::{ErrorAnswer, ErrorBody};
use spinpay_core::ApiError;
use spinpay_core::model::Channel;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond::{ErrorResponse, RouteMiss};

/// A channel this build has a notification adapter for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// The sandbox provider.
    Sandbox,
}

/// Routes `/v1/webhooks/{channel}` on the full path (the `spin-path-match-channel`
/// header says the same for a direct hit, nothing for a chained one).
pub fn route(method: &Method, path: &str) -> Result<Inbound, RouteMiss> {
    let segments: Vec<&str> = path.split('/').collect();
    let name = match segments.as_slice() {
        ["", "v1", "webhooks", name] => *name,
        _ => return Err(RouteMiss::NotFound),
    };
    let inbound = match Channel::parse(name) {
        Some(Channel::Sandbox) => Inbound::Sandbox,
        // Real channels get their notification adapters with the channels issue.
        Some(Channel::Alipay | Channel::Wechatpay | Channel::Unionpay) | None => {
            return Err(RouteMiss::NotFound);
        }
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
    /// The channel's side: bad signature or malformed (answered in its format).
    Rejected(NotificationRejected),
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

impl ErrorResponse for HookError {
    /// 401 `signature_invalid` / 400 `notification_invalid` in the sandbox's error
    /// format; our own errors in the API's.
    fn response(&self, request_id: &str) -> HttpResponse {
        let (status, code, message) = match self {
            HookError::Api(e) => return inbound::error_response(e, request_id),
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
        // Proves sandbox POST routes, other methods are 405 and unknown channels 404.
        assert_eq!(
            route(&Method::POST, "/v1/webhooks/sandbox"),
            Ok(Inbound::Sandbox)
        );
        assert_eq!(
            route(&Method::GET, "/v1/webhooks/sandbox"),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
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
}
