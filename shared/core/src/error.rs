//! The one public error type: every operating error maps here to an HTTP status, an error
//! type, a stable snake_case code, a message naming the field, and the field (`param`).
//! Internal errors reach clients as a generic 500; the detail is for the log only.

use serde_json::json;

/// Every error a merchant can see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A required field is absent.
    #[error("missing required parameter: {param}")]
    ParameterMissing {
        /// The field.
        param: String,
    },
    /// A field has the wrong type, format or range.
    #[error("invalid parameter {param}: {reason}")]
    ParameterInvalid {
        /// The field.
        param: String,
        /// What is wrong.
        reason: String,
    },
    /// An amount is not an integer in 1..=AMOUNT_MINOR_MAX.
    #[error("invalid amount {param}: {reason}")]
    AmountInvalid {
        /// The field.
        param: String,
        /// What is wrong.
        reason: String,
    },
    /// Unknown or unsupported currency code.
    #[error("unsupported currency {value:?} (supported: CNY, HKD, USD, EUR, JPY, KWD, GBP, SGD)")]
    CurrencyUnsupported {
        /// What was sent.
        value: String,
    },
    /// Unknown payment method type, or a method the channel does not support.
    #[error("unsupported payment method {value:?}")]
    MethodUnsupported {
        /// What was sent.
        value: String,
    },
    /// Unknown channel.
    #[error("channel {value:?} is unknown or not enabled in this deployment")]
    ChannelUnsupported {
        /// What was sent.
        value: String,
    },
    /// The body exceeds the endpoint's limit.
    #[error("request body exceeds {limit_bytes} bytes")]
    BodyTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// The body is not JSON, not an object, or names a key twice in one object.
    #[error("the request body is not accepted as JSON: {detail}")]
    JsonInvalid {
        /// Parser detail.
        detail: String,
    },
    /// A field the endpoint does not know.
    #[error("unknown parameter: {param}")]
    UnknownField {
        /// The field.
        param: String,
    },
    /// Absent (or another merchant's) object.
    #[error("no such {resource}: {id}")]
    ResourceMissing {
        /// `payment`, `refund`, `event`, `merchant`.
        resource: &'static str,
        /// The id asked for.
        id: String,
    },
    /// No route for this method and path.
    #[error("no such endpoint")]
    RouteNotFound,
    /// HTTP method not allowed on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Capture on a payment that is not `requires_capture`.
    #[error("payment is {status}, not requires_capture")]
    PaymentNotCapturable {
        /// Current status.
        status: &'static str,
    },
    /// Capture larger than the authorization.
    #[error("amount_minor exceeds the authorized amount {authorized_minor}")]
    CaptureExceedsAuthorized {
        /// The authorization.
        authorized_minor: i64,
    },
    /// Cancel on a payment that cannot be voided.
    #[error("payment is {status} and cannot be canceled")]
    PaymentNotCancelable {
        /// Current status.
        status: &'static str,
    },
    /// Confirm on a payment without an open OTP challenge.
    #[error("payment is {status} and has no OTP to confirm")]
    PaymentNotConfirmable {
        /// Current status.
        status: &'static str,
    },
    /// Refund on a payment that has not succeeded.
    #[error("payment is {status}; only succeeded payments can be refunded")]
    PaymentNotRefundable {
        /// Current status.
        status: &'static str,
    },
    /// Refund larger than what is left.
    #[error("amount_minor exceeds the refundable amount {available_minor}")]
    RefundExceedsCaptured {
        /// What is left.
        available_minor: i64,
    },
    /// Too many refunds on one payment.
    #[error("a payment may have at most {max} refunds")]
    RefundLimitReached {
        /// The limit.
        max: u32,
    },
    /// Review approve/decline on a payment not in review.
    #[error("payment is {status}, not requires_review")]
    PaymentNotInReview {
        /// Current status.
        status: &'static str,
    },
    /// Same Idempotency-Key, different request.
    #[error("Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// Same Idempotency-Key, first request still running (or its expired record being
    /// deleted).
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyKeyInUse,
    /// Missing or malformed Idempotency-Key header.
    #[error("Idempotency-Key header is {reason}")]
    IdempotencyKeyInvalid {
        /// `missing` or what is wrong.
        reason: String,
    },
    /// Order id already used by this merchant.
    #[error("merchant_order_id {id:?} is already used by payment {payment_id}")]
    MerchantOrderIdDuplicate {
        /// The order id.
        id: String,
        /// The payment holding it.
        payment_id: String,
    },
    /// Merchant refund id already used.
    #[error("merchant_refund_id {id:?} is already used")]
    MerchantRefundIdDuplicate {
        /// The id.
        id: String,
    },
    /// No `Authorization: Bearer` header on a merchant route.
    #[error("an Authorization: Bearer <secret key> header is required")]
    AuthenticationRequired,
    /// No `Authorization: Bearer` header on an admin route: the same code as
    /// [`ApiError::AuthenticationRequired`], with a message naming the credential the
    /// route takes.
    #[error("an Authorization: Bearer <admin token> header is required")]
    AdminTokenRequired,
    /// The key is unknown.
    #[error("the API key is invalid")]
    ApiKeyInvalid,
    /// A rotated-out key (still in its grace period) asked to change the account.
    #[error(
        "this secret key has been rotated out: it cannot change the account (its settings, \
         secret key or webhook secret); use the current key"
    )]
    ApiKeyRetiring,
    /// Wrong admin token.
    #[error("the admin token is invalid")]
    AdminTokenInvalid,
    /// The server has no secret configured (fails closed).
    #[error("this endpoint is disabled: {what} is not configured")]
    NotConfigured {
        /// What is missing.
        what: &'static str,
    },
    /// Wrong OTP.
    #[error("the code is incorrect; {attempts_left} attempt{} left", if *attempts_left == 1 { "" } else { "s" })]
    OtpInvalid {
        /// Attempts left.
        attempts_left: u32,
    },
    /// OTP expired.
    #[error("the code has expired")]
    OtpExpired,
    /// Too many wrong OTPs; the payment failed.
    #[error("too many incorrect codes; the payment has failed")]
    OtpAttemptsExceeded,
    /// Risk refused.
    #[error("the payment was refused by risk control")]
    RiskDenied,
    /// Risk could not be asked (fails closed).
    #[error("risk control is unavailable; try again")]
    RiskUnavailable,
    /// The channel declined.
    #[error("the channel declined: {message}")]
    ChannelDeclined {
        /// The channel's reason.
        message: String,
    },
    /// The channel could not be reached.
    #[error("the channel is unavailable; try again")]
    ChannelUnavailable,
    /// Redelivery asked while the merchant has no notify URL to deliver to.
    #[error("the merchant has no notify_url; set one with POST /v1/account")]
    NotifyUrlMissing,
    /// Too many requests.
    #[error("too many requests")]
    RateLimited,
    /// Contention: the compare-and-swap retry budget ran out.
    #[error("the object is being changed concurrently; retry")]
    ConcurrentModification,
    /// Storage unavailable.
    #[error("storage is unavailable; retry")]
    StorageUnavailable,
    /// A bug or broken record. `detail` goes to the log, never to the client.
    #[error("internal error")]
    Internal {
        /// For the log.
        detail: String,
    },
}

/// `(code, HTTP status, error type, meaning)` for every code: the docs table.
pub const ERROR_CODES: &[(&str, u16, &str, &str)] = &[
    (
        "parameter_missing",
        400,
        "invalid_request_error",
        "A required field is absent.",
    ),
    (
        "parameter_invalid",
        400,
        "invalid_request_error",
        "A field has the wrong type, format or range.",
    ),
    (
        "amount_invalid",
        400,
        "invalid_request_error",
        "An amount is not an integer in 1..=10^12 minor units.",
    ),
    (
        "currency_unsupported",
        400,
        "invalid_request_error",
        "The currency is not supported.",
    ),
    (
        "method_unsupported",
        400,
        "invalid_request_error",
        "The payment method type is unknown.",
    ),
    (
        "channel_unsupported",
        400,
        "invalid_request_error",
        "The channel is unknown, or switched off in this deployment.",
    ),
    (
        "body_too_large",
        413,
        "invalid_request_error",
        "The body exceeds the endpoint's limit.",
    ),
    (
        "json_invalid",
        400,
        "invalid_request_error",
        "The body is not a JSON object, or one of its objects names a key twice (`{\"amount_minor\":1,\"amount_minor\":2}`: refused rather than taking either copy).",
    ),
    (
        "unknown_field",
        400,
        "invalid_request_error",
        "The body or the query string has a field the endpoint does not know.",
    ),
    (
        "resource_missing",
        404,
        "invalid_request_error",
        "No such object for this merchant.",
    ),
    (
        "route_not_found",
        404,
        "invalid_request_error",
        "No such endpoint.",
    ),
    (
        "method_not_allowed",
        405,
        "invalid_request_error",
        "HTTP method not allowed here.",
    ),
    (
        "payment_not_capturable",
        409,
        "invalid_request_error",
        "Only requires_capture payments can be captured.",
    ),
    (
        "capture_exceeds_authorized",
        400,
        "invalid_request_error",
        "Capture larger than the authorization.",
    ),
    (
        "payment_not_cancelable",
        409,
        "invalid_request_error",
        "The payment cannot be voided in its status.",
    ),
    (
        "payment_not_confirmable",
        409,
        "invalid_request_error",
        "The payment has no open OTP challenge.",
    ),
    (
        "payment_not_refundable",
        409,
        "invalid_request_error",
        "Only succeeded payments can be refunded.",
    ),
    (
        "refund_exceeds_captured",
        400,
        "invalid_request_error",
        "Refunds would exceed the captured amount.",
    ),
    (
        "refund_limit_reached",
        409,
        "invalid_request_error",
        "The payment has the maximum number of refunds.",
    ),
    (
        "payment_not_in_review",
        409,
        "invalid_request_error",
        "The payment is not waiting for review.",
    ),
    (
        "idempotency_key_reused",
        409,
        "idempotency_error",
        "Same Idempotency-Key, different request.",
    ),
    (
        "idempotency_key_in_use",
        409,
        "idempotency_error",
        "The first request with this key is still running, or the key's expired record is being deleted: retry shortly.",
    ),
    (
        "idempotency_key_invalid",
        400,
        "idempotency_error",
        "Idempotency-Key (optional) sent but not 1-255 printable ASCII.",
    ),
    (
        "merchant_order_id_duplicate",
        409,
        "invalid_request_error",
        "The merchant_order_id is already used.",
    ),
    (
        "merchant_refund_id_duplicate",
        409,
        "invalid_request_error",
        "The merchant_refund_id is already used.",
    ),
    (
        "authentication_required",
        401,
        "authentication_error",
        "No Authorization: Bearer header. The message names what the endpoint takes: the secret key, or the admin token on admin endpoints.",
    ),
    (
        "api_key_invalid",
        401,
        "authentication_error",
        "The secret key is unknown.",
    ),
    (
        "api_key_retiring",
        401,
        "authentication_error",
        "A rotated-out secret key (in its grace period) cannot change the account; use the current key.",
    ),
    (
        "admin_token_invalid",
        401,
        "authentication_error",
        "The admin token is wrong.",
    ),
    (
        "not_configured",
        503,
        "api_error",
        "A required secret is missing or unusable (e.g. an admin_token shorter than 20 characters or still the template placeholder); the message names it, and the endpoint fails closed.",
    ),
    (
        "otp_invalid",
        400,
        "invalid_request_error",
        "The one-time code is wrong.",
    ),
    (
        "otp_expired",
        400,
        "invalid_request_error",
        "The one-time code expired (5 minutes).",
    ),
    (
        "otp_attempts_exceeded",
        400,
        "invalid_request_error",
        "Five wrong codes; the payment failed.",
    ),
    (
        "risk_denied",
        402,
        "channel_error",
        "Reserved: never an error answer in v1. A risk denial is a payment with status failed and failure.code risk_denied.",
    ),
    (
        "risk_unavailable",
        503,
        "api_error",
        "Risk control could not be asked; nothing was charged.",
    ),
    (
        "channel_declined",
        402,
        "channel_error",
        "The channel declined (also a failure.code).",
    ),
    (
        "channel_unavailable",
        503,
        "channel_error",
        "The channel could not be reached.",
    ),
    (
        "rate_limited",
        429,
        "rate_limit_error",
        "Reserved: v1 does not rate-limit.",
    ),
    (
        "notify_url_missing",
        400,
        "invalid_request_error",
        "Redelivery needs a notify_url on the account (POST /v1/account).",
    ),
    (
        "concurrent_modification",
        409,
        "api_error",
        "Too much contention on the object; retry.",
    ),
    (
        "storage_unavailable",
        503,
        "api_error",
        "Storage is unavailable; retry.",
    ),
    (
        "internal_error",
        500,
        "api_error",
        "A bug; details are in the server log.",
    ),
];

impl ApiError {
    /// The stable public code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::ParameterMissing { .. } => "parameter_missing",
            ApiError::ParameterInvalid { .. } => "parameter_invalid",
            ApiError::AmountInvalid { .. } => "amount_invalid",
            ApiError::CurrencyUnsupported { .. } => "currency_unsupported",
            ApiError::MethodUnsupported { .. } => "method_unsupported",
            ApiError::ChannelUnsupported { .. } => "channel_unsupported",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::JsonInvalid { .. } => "json_invalid",
            ApiError::UnknownField { .. } => "unknown_field",
            ApiError::ResourceMissing { .. } => "resource_missing",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PaymentNotCapturable { .. } => "payment_not_capturable",
            ApiError::CaptureExceedsAuthorized { .. } => "capture_exceeds_authorized",
            ApiError::PaymentNotCancelable { .. } => "payment_not_cancelable",
            ApiError::PaymentNotConfirmable { .. } => "payment_not_confirmable",
            ApiError::PaymentNotRefundable { .. } => "payment_not_refundable",
            ApiError::RefundExceedsCaptured { .. } => "refund_exceeds_captured",
            ApiError::RefundLimitReached { .. } => "refund_limit_reached",
            ApiError::PaymentNotInReview { .. } => "payment_not_in_review",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyKeyInUse => "idempotency_key_in_use",
            ApiError::IdempotencyKeyInvalid { .. } => "idempotency_key_invalid",
            ApiError::MerchantOrderIdDuplicate { .. } => "merchant_order_id_duplicate",
            ApiError::MerchantRefundIdDuplicate { .. } => "merchant_refund_id_duplicate",
            ApiError::AuthenticationRequired | ApiError::AdminTokenRequired => {
                "authentication_required"
            }
            ApiError::ApiKeyInvalid => "api_key_invalid",
            ApiError::ApiKeyRetiring => "api_key_retiring",
            ApiError::AdminTokenInvalid => "admin_token_invalid",
            ApiError::NotConfigured { .. } => "not_configured",
            ApiError::OtpInvalid { .. } => "otp_invalid",
            ApiError::OtpExpired => "otp_expired",
            ApiError::OtpAttemptsExceeded => "otp_attempts_exceeded",
            ApiError::RiskDenied => "risk_denied",
            ApiError::RiskUnavailable => "risk_unavailable",
            ApiError::ChannelDeclined { .. } => "channel_declined",
            ApiError::ChannelUnavailable => "channel_unavailable",
            ApiError::NotifyUrlMissing => "notify_url_missing",
            ApiError::RateLimited => "rate_limited",
            ApiError::ConcurrentModification => "concurrent_modification",
            ApiError::StorageUnavailable => "storage_unavailable",
            ApiError::Internal { .. } => "internal_error",
        }
    }

    fn entry(&self) -> &'static (&'static str, u16, &'static str, &'static str) {
        let code = self.code();
        ERROR_CODES
            .iter()
            .find(|(c, ..)| *c == code)
            .expect("every code is in ERROR_CODES (tested)")
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.entry().1
    }

    /// The error type (`invalid_request_error`, `authentication_error`, …).
    pub fn error_type(&self) -> &'static str {
        self.entry().2
    }

    /// The message shown to the client (generic for internal errors).
    pub fn message(&self) -> String {
        match self {
            ApiError::Internal { .. } => "An internal error occurred.".to_string(),
            other => other.to_string(),
        }
    }

    /// The field the error is about, if any.
    pub fn param(&self) -> Option<&str> {
        match self {
            ApiError::ParameterMissing { param }
            | ApiError::ParameterInvalid { param, .. }
            | ApiError::AmountInvalid { param, .. }
            | ApiError::UnknownField { param } => Some(param),
            ApiError::CurrencyUnsupported { .. } => Some("currency"),
            ApiError::MethodUnsupported { .. } => Some("method.type"),
            ApiError::ChannelUnsupported { .. } => Some("channel"),
            ApiError::CaptureExceedsAuthorized { .. } | ApiError::RefundExceedsCaptured { .. } => {
                Some("amount_minor")
            }
            ApiError::MerchantOrderIdDuplicate { .. } => Some("merchant_order_id"),
            ApiError::MerchantRefundIdDuplicate { .. } => Some("merchant_refund_id"),
            ApiError::IdempotencyKeyInvalid { .. }
            | ApiError::IdempotencyKeyReused
            | ApiError::IdempotencyKeyInUse => Some("Idempotency-Key"),
            ApiError::OtpInvalid { .. } | ApiError::OtpExpired | ApiError::OtpAttemptsExceeded => {
                Some("otp")
            }
            ApiError::ResourceMissing { .. } => Some("id"),
            ApiError::NotifyUrlMissing => Some("notify_url"),
            _no_param => None,
        }
    }

    /// `{"error":{"type","code","message","param"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({"error": {
            "type": self.error_type(),
            "code": self.code(),
            "message": self.message(),
            "param": self.param(),
        }})
    }

    /// True for a request refused as it stands, before anything was done for it: its
    /// body or a field is malformed or out of range.
    pub fn is_request_invalid(&self) -> bool {
        matches!(
            self,
            ApiError::ParameterMissing { .. }
                | ApiError::ParameterInvalid { .. }
                | ApiError::AmountInvalid { .. }
                | ApiError::CurrencyUnsupported { .. }
                | ApiError::MethodUnsupported { .. }
                | ApiError::ChannelUnsupported { .. }
                | ApiError::BodyTooLarge { .. }
                | ApiError::JsonInvalid { .. }
                | ApiError::UnknownField { .. }
        )
    }

    /// True for errors not stored as an Idempotency-Key's result: the request never ran
    /// ([`ApiError::is_request_invalid`]) or the app lacks its configuration (an operator
    /// fixes it), so the key is freed for the corrected request; or the error is
    /// [`ApiError::is_retryable`], so the same request retried resumes
    /// (`service::KeyOutcome`).
    pub fn leaves_key_unused(&self) -> bool {
        self.is_retryable()
            || self.is_request_invalid()
            || matches!(
                self,
                ApiError::NotConfigured { .. } | ApiError::ApiKeyRetiring
            )
    }

    /// True for errors that must not be stored as an idempotent result (the client may
    /// retry the same request and expect it to run again).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::IdempotencyKeyInUse
                | ApiError::RiskUnavailable
                | ApiError::ChannelUnavailable
                | ApiError::RateLimited
                | ApiError::ConcurrentModification
                | ApiError::StorageUnavailable
                | ApiError::Internal { .. }
        )
    }
}

impl From<crate::repo::RepoError> for ApiError {
    fn from(e: crate::repo::RepoError) -> Self {
        match e {
            crate::repo::RepoError::Conflict { .. } => ApiError::ConcurrentModification,
            crate::repo::RepoError::Unavailable(_)
            | crate::repo::RepoError::OutcomeUnknown { .. } => ApiError::StorageUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_code_counts_the_attempts_left_in_words() {
        // Proves "1 attempt left" and "4 attempts left".
        let left = |n| ApiError::OtpInvalid { attempts_left: n }.message();
        assert_eq!(left(1), "the code is incorrect; 1 attempt left");
        assert_eq!(left(4), "the code is incorrect; 4 attempts left");
    }

    #[test]
    fn every_code_is_in_the_table_once() {
        // Proves the docs table has no duplicates and covers sample errors of each type.
        let mut codes: Vec<_> = ERROR_CODES.iter().map(|e| e.0).collect();
        codes.sort();
        let before = codes.len();
        codes.dedup();
        assert_eq!(before, codes.len());
        let samples = [
            ApiError::RouteNotFound,
            ApiError::OtpExpired,
            ApiError::IdempotencyKeyReused,
            ApiError::Internal { detail: "x".into() },
            ApiError::RefundExceedsCaptured { available_minor: 1 },
        ];
        for s in samples {
            assert!(s.status() >= 400);
        }
    }

    #[test]
    fn every_variant_has_a_table_entry_with_a_matching_status_class() {
        // Proves code(), status() and error_type() resolve for every variant (no panic)
        // and that every table row is used by some variant.
        let s = String::new;
        let all = [
            ApiError::ParameterMissing { param: s() },
            ApiError::ParameterInvalid {
                param: s(),
                reason: s(),
            },
            ApiError::AmountInvalid {
                param: s(),
                reason: s(),
            },
            ApiError::CurrencyUnsupported { value: s() },
            ApiError::MethodUnsupported { value: s() },
            ApiError::ChannelUnsupported { value: s() },
            ApiError::BodyTooLarge { limit_bytes: 1 },
            ApiError::JsonInvalid { detail: s() },
            ApiError::UnknownField { param: s() },
            ApiError::ResourceMissing {
                resource: "payment",
                id: s(),
            },
            ApiError::RouteNotFound,
            ApiError::MethodNotAllowed,
            ApiError::PaymentNotCapturable { status: "x" },
            ApiError::CaptureExceedsAuthorized {
                authorized_minor: 1,
            },
            ApiError::PaymentNotCancelable { status: "x" },
            ApiError::PaymentNotConfirmable { status: "x" },
            ApiError::PaymentNotRefundable { status: "x" },
            ApiError::RefundExceedsCaptured { available_minor: 1 },
            ApiError::RefundLimitReached { max: 1 },
            ApiError::PaymentNotInReview { status: "x" },
            ApiError::IdempotencyKeyReused,
            ApiError::IdempotencyKeyInUse,
            ApiError::IdempotencyKeyInvalid { reason: s() },
            ApiError::MerchantOrderIdDuplicate {
                id: s(),
                payment_id: s(),
            },
            ApiError::MerchantRefundIdDuplicate { id: s() },
            ApiError::AuthenticationRequired,
            ApiError::AdminTokenRequired,
            ApiError::ApiKeyInvalid,
            ApiError::ApiKeyRetiring,
            ApiError::AdminTokenInvalid,
            ApiError::NotConfigured { what: "x" },
            ApiError::OtpInvalid { attempts_left: 1 },
            ApiError::OtpExpired,
            ApiError::OtpAttemptsExceeded,
            ApiError::RiskDenied,
            ApiError::RiskUnavailable,
            ApiError::ChannelDeclined { message: s() },
            ApiError::ChannelUnavailable,
            ApiError::NotifyUrlMissing,
            ApiError::RateLimited,
            ApiError::ConcurrentModification,
            ApiError::StorageUnavailable,
            ApiError::Internal { detail: s() },
        ];
        for e in &all {
            let class = match e.error_type() {
                "authentication_error" => (401..402).contains(&e.status()),
                "api_error" => e.status() >= 409,
                _other => (400..600).contains(&e.status()),
            };
            assert!(class, "{e:?}");
        }
        // What openapi.yaml lists as not stored under an Idempotency-Key: the request
        // never ran (the key is freed) or may be retried (the key is released for the
        // same request to resume).
        let unused: Vec<_> = all
            .iter()
            .filter(|e| e.leaves_key_unused())
            .map(|e| e.code())
            .collect();
        assert_eq!(
            unused,
            [
                "parameter_missing",
                "parameter_invalid",
                "amount_invalid",
                "currency_unsupported",
                "method_unsupported",
                "channel_unsupported",
                "body_too_large",
                "json_invalid",
                "unknown_field",
                "idempotency_key_in_use",
                "api_key_retiring",
                "not_configured",
                "risk_unavailable",
                "channel_unavailable",
                "rate_limited",
                "concurrent_modification",
                "storage_unavailable",
                "internal_error",
            ]
        );
        let used: Vec<_> = all.iter().map(|e| e.code()).collect();
        for (code, ..) in ERROR_CODES {
            assert!(used.contains(code), "{code} is documented but unused");
        }
    }

    #[test]
    fn error_json_has_the_documented_shape_and_hides_internal_detail() {
        // Proves to_json yields type/code/message/param and never leaks an internal detail.
        let e = ApiError::ParameterMissing {
            param: "amount_minor".into(),
        };
        let v = e.to_json();
        assert_eq!(v["error"]["code"], "parameter_missing");
        assert_eq!(v["error"]["param"], "amount_minor");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("amount_minor")
        );
        let i = ApiError::Internal {
            detail: "secret path /x".into(),
        };
        assert!(!i.to_json().to_string().contains("secret path"));
        assert_eq!(i.status(), 500);
    }
}
