//! Pure routing and request bodies (unit-tested natively).

use http::Method;
use serde::Deserialize;
use spinpay_core::ApiError;
use spinpay_core::api::{Field, Kind, WireRequest};
use spinpay_core::ids::IdKind;
use spinpay_core::service::{SWEEP_LIMIT_MAX, SweepRequest};
use spinpay_guest::respond::RouteMiss;

/// How far behind the wall clock a sweep's `now_ms` may be (clock skew between
/// the scheduler and the app); earlier would re-run the past.
pub const NOW_MS_SKEW_MAX: i64 = 60_000;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/admin/notifications/sweep`.
    Sweep,
    /// `POST /v1/events/{id}/redeliver`.
    Redeliver {
        /// The event id (validated by the core: a bad one is `resource_missing`).
        id: String,
    },
}

/// Routes on the full request path; both routes take POST only.
pub fn route(method: &Method, path: &str) -> Result<Route, RouteMiss> {
    let segments: Vec<&str> = path.split('/').collect();
    let route = match segments.as_slice() {
        ["", "v1", "admin", "notifications", "sweep"] => Route::Sweep,
        ["", "v1", "events", id, "redeliver"] if !id.is_empty() => Route::Redeliver {
            id: id.chars().take(spinpay_core::ids::ID_LEN_MAX + 1).collect(),
        },
        _ => return Err(RouteMiss::NotFound),
    };
    if *method == Method::POST {
        Ok(route)
    } else {
        Err(RouteMiss::MethodNotAllowed { allow: "POST" })
    }
}

/// The sweep's body: every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepBody {
    /// Most delivery attempts (1..=100, default 20).
    pub limit: Option<i64>,
    /// Only this merchant.
    pub merchant_id: Option<String>,
    /// The schedule clock (Unix ms); not earlier than now.
    pub now_ms: Option<i64>,
}

impl WireRequest for SweepBody {
    const SCHEMA: &'static [Field] = &[
        Field {
            name: "limit",
            kind: Kind::Integer,
            required: false,
        },
        Field {
            name: "merchant_id",
            kind: Kind::String,
            required: false,
        },
        Field {
            name: "now_ms",
            kind: Kind::Integer,
            required: false,
        },
    ];
}

impl SweepBody {
    /// The core's request and the schedule clock, given the wall clock `wall_ms`.
    pub fn validate(self, wall_ms: i64) -> Result<(SweepRequest, i64), ApiError> {
        let invalid = |param: &str, reason: String| ApiError::ParameterInvalid {
            param: param.into(),
            reason,
        };
        let limit = match self.limit {
            None => None,
            Some(n) => match u32::try_from(n) {
                Ok(n) if (1..=SWEEP_LIMIT_MAX).contains(&n) => Some(n),
                Ok(_) | Err(_) => {
                    return Err(invalid("limit", format!("must be 1..={SWEEP_LIMIT_MAX}")));
                }
            },
        };
        if let Some(mid) = &self.merchant_id
            && !spinpay_core::ids::is_valid_id(IdKind::Merchant, mid)
        {
            return Err(invalid(
                "merchant_id",
                "must be a merchant id (mch_…)".into(),
            ));
        }
        let now_ms = match self.now_ms {
            None => wall_ms,
            Some(t) if t >= wall_ms.saturating_sub(NOW_MS_SKEW_MAX) => t.max(wall_ms),
            Some(_) => {
                return Err(invalid(
                    "now_ms",
                    "must not be earlier than the current time".into(),
                ));
            }
        };
        let req = SweepRequest {
            limit,
            merchant_id: self.merchant_id,
            wall_clock_ms: Some(wall_ms),
        };
        Ok((req, now_ms))
    }
}

/// Redelivery takes no fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeliverBody {}

impl WireRequest for RedeliverBody {
    const SCHEMA: &'static [Field] = &[];
}

#[cfg(test)]
mod tests {
    use super::*;
    use spinpay_core::api::parse_body;

    #[test]
    fn only_post_to_the_two_paths_is_served() {
        // Proves the sweep and redeliver routes, 405 naming POST, and 404 elsewhere.
        assert_eq!(
            route(&Method::POST, "/v1/admin/notifications/sweep"),
            Ok(Route::Sweep)
        );
        assert_eq!(
            route(&Method::POST, "/v1/events/evt_x/redeliver"),
            Ok(Route::Redeliver { id: "evt_x".into() })
        );
        assert_eq!(
            route(&Method::GET, "/v1/admin/notifications/sweep"),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route(&Method::POST, "/v1/events//redeliver"),
            Err(RouteMiss::NotFound)
        );
    }

    #[test]
    fn sweep_bodies_are_checked_field_by_field() {
        // Proves defaults, each bound naming its field, and unknown fields refused.
        let parse = |b: &str| parse_body::<SweepBody>(b.as_bytes(), 1024);
        let (req, now) = parse("").unwrap().validate(5_000).unwrap();
        assert_eq!((req.limit, req.merchant_id, now), (None, None, 5_000));
        let (_, now) = parse(r#"{"now_ms": 9000}"#)
            .unwrap()
            .validate(5_000)
            .unwrap();
        assert_eq!(now, 9_000);
        let param = |b: &str| {
            let e = match parse(b) {
                Ok(body) => body.validate(100_000).unwrap_err(),
                Err(e) => e,
            };
            e.param().map(str::to_string)
        };
        assert_eq!(param(r#"{"limit": 0}"#).as_deref(), Some("limit"));
        assert_eq!(param(r#"{"limit": 101}"#).as_deref(), Some("limit"));
        assert_eq!(param(r#"{"limit": "5"}"#).as_deref(), Some("limit"));
        assert_eq!(
            param(r#"{"merchant_id": "x"}"#).as_deref(),
            Some("merchant_id")
        );
        assert_eq!(param(r#"{"now_ms": 1}"#).as_deref(), Some("now_ms"));
        assert_eq!(param(r#"{"nope": 1}"#).as_deref(), Some("nope"));
    }
}
