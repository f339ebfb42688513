//! Pure request routing and query-string checks (unit-tested natively).

use http::Method;
use serde::Deserialize;
use spinpay_core::ApiError;
use spinpay_core::api::{Field, ListParams, WireRequest};
use spinpay_core::ids::{IdKind, is_valid_id};
use spinpay_guest::respond::RouteMiss;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A read or re-check by a merchant (secret key).
    Merchant(Read),
    /// `POST /v1/admin/reconcile` (admin token).
    Reconcile,
}

/// A merchant's read or re-check, scoped to the merchant of the bearer key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// `GET /v1/payments` (`?merchant_order_id=` or `?limit=&starting_after=`).
    ListPayments,
    /// `GET /v1/payments/{id}`.
    GetPayment {
        /// Payment id.
        id: String,
    },
    /// `POST /v1/payments/{id}/recheck`.
    RecheckPayment {
        /// Payment id.
        id: String,
    },
    /// `GET /v1/refunds/{id}`.
    GetRefund {
        /// Refund id.
        id: String,
    },
    /// `POST /v1/refunds/{id}/recheck`.
    RecheckRefund {
        /// Refund id.
        id: String,
    },
    /// `GET /v1/events`.
    ListEvents,
    /// `GET /v1/events/{id}`.
    GetEvent {
        /// Event id.
        id: String,
    },
}

/// Routes on the full request path.
pub fn route(method: &Method, path: &str) -> Result<Route, RouteMiss> {
    let segments: Vec<&str> = path.split('/').collect();
    let id = |s: &str| s.to_string();
    let read = Route::Merchant;
    let (allow, route) = match segments.as_slice() {
        ["", "v1", "payments"] => ("GET", read(Read::ListPayments)),
        ["", "v1", "events"] => ("GET", read(Read::ListEvents)),
        ["", "v1", "payments", p] if !p.is_empty() => ("GET", read(Read::GetPayment { id: id(p) })),
        ["", "v1", "refunds", r] if !r.is_empty() => ("GET", read(Read::GetRefund { id: id(r) })),
        ["", "v1", "events", e] if !e.is_empty() => ("GET", read(Read::GetEvent { id: id(e) })),
        ["", "v1", "payments", p, "recheck"] if !p.is_empty() => {
            ("POST", read(Read::RecheckPayment { id: id(p) }))
        }
        ["", "v1", "refunds", r, "recheck"] if !r.is_empty() => {
            ("POST", read(Read::RecheckRefund { id: id(r) }))
        }
        ["", "v1", "admin", "reconcile"] => ("POST", Route::Reconcile),
        _ => return Err(RouteMiss::NotFound),
    };
    if method.as_str() == allow {
        Ok(route)
    } else {
        Err(RouteMiss::MethodNotAllowed { allow })
    }
}

/// The list parameters; `starting_after` must be an id of the listed kind.
pub fn list_params(query: Option<&str>, kind: IdKind) -> Result<ListParams, ApiError> {
    let params = ListParams::parse(query.unwrap_or(""))?;
    if let Some(cursor) = &params.starting_after
        && !is_valid_id(kind, cursor)
    {
        return Err(ApiError::ParameterInvalid {
            param: "starting_after".into(),
            reason: format!("must be an id starting with {}", kind.prefix()),
        });
    }
    Ok(params)
}

/// Single-object reads and every POST (re-checks, reconcile) take no query parameters.
pub use spinpay_guest::inbound::no_query;

/// The body of a re-check: an empty object (or no body).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

impl WireRequest for EmptyBody {
    const SCHEMA: &'static [Field] = &[];
}

#[cfg(test)]
mod tests {
    use super::*;
    use spinpay_core::api::{BODY_BYTES_MAX, parse_body};
    use spinpay_guest::respond::ErrorResponse;

    #[test]
    fn every_read_routes_from_the_full_path() {
        // Proves each documented path and method maps to its route, ids taken from the path.
        let cases = [
            (
                Method::GET,
                "/v1/payments",
                Route::Merchant(Read::ListPayments),
            ),
            (Method::GET, "/v1/events", Route::Merchant(Read::ListEvents)),
            (
                Method::GET,
                "/v1/payments/pay_1",
                Route::Merchant(Read::GetPayment { id: "pay_1".into() }),
            ),
            (
                Method::GET,
                "/v1/refunds/re_1",
                Route::Merchant(Read::GetRefund { id: "re_1".into() }),
            ),
            (
                Method::GET,
                "/v1/events/evt_1",
                Route::Merchant(Read::GetEvent { id: "evt_1".into() }),
            ),
            (
                Method::POST,
                "/v1/payments/pay_1/recheck",
                Route::Merchant(Read::RecheckPayment { id: "pay_1".into() }),
            ),
            (
                Method::POST,
                "/v1/refunds/re_1/recheck",
                Route::Merchant(Read::RecheckRefund { id: "re_1".into() }),
            ),
            (Method::POST, "/v1/admin/reconcile", Route::Reconcile),
        ];
        for (method, path, want) in cases {
            assert_eq!(route(&method, path), Ok(want), "{method} {path}");
        }
    }

    #[test]
    fn wrong_methods_get_405_naming_the_allowed_one() {
        // Proves a POST to a read and a GET to a re-check are refused with Allow.
        assert_eq!(
            route(&Method::POST, "/v1/payments"),
            Err(RouteMiss::MethodNotAllowed { allow: "GET" })
        );
        assert_eq!(
            route(&Method::DELETE, "/v1/refunds/re_1"),
            Err(RouteMiss::MethodNotAllowed { allow: "GET" })
        );
        assert_eq!(
            route(&Method::GET, "/v1/admin/reconcile"),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
        let miss = route(&Method::GET, "/v1/payments/pay_1/recheck").unwrap_err();
        assert_eq!(miss, RouteMiss::MethodNotAllowed { allow: "POST" });
        let resp = miss.response("req_1");
        assert_eq!(
            (
                resp.status().as_u16(),
                resp.headers()["allow"].to_str().unwrap()
            ),
            (405, "POST")
        );
    }

    #[test]
    fn unknown_paths_are_not_found() {
        // Proves paths outside the read API (including other components' paths) are 404.
        for path in [
            "/v1/payments/",
            "/v1/refunds",
            "/v1/payments/pay_1/capture",
            "/v1/payments/pay_1/refunds",
            "/v1/events/evt_1/x",
            "/v2/payments",
        ] {
            assert_eq!(
                route(&Method::GET, path),
                Err(RouteMiss::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn list_cursors_must_be_ids_of_the_listed_kind() {
        // Proves a refund id as a payment cursor, and a junk limit, are precise 400s.
        let e = list_params(
            Some("starting_after=re_aaaaaaaaaaaaaaaaaaaaaaaaaa"),
            IdKind::Payment,
        )
        .unwrap_err();
        assert_eq!(
            (e.code(), e.param()),
            ("parameter_invalid", Some("starting_after"))
        );
        assert_eq!(
            list_params(Some("limit=0"), IdKind::Event)
                .unwrap_err()
                .param(),
            Some("limit")
        );
        assert_eq!(list_params(None, IdKind::Event).unwrap().limit, 10);
    }

    #[test]
    fn single_object_reads_refuse_query_parameters() {
        // Proves `?expand=x` on a one-object read is an unknown field, and none is fine.
        assert_eq!(
            no_query(Some("expand=x")).unwrap_err().param(),
            Some("expand")
        );
        assert!(no_query(None).is_ok());
        assert!(no_query(Some("")).is_ok());
    }

    #[test]
    fn a_recheck_body_must_be_empty_or_an_empty_object() {
        // Proves {} and no body are accepted and any field is refused by name.
        assert!(parse_body::<EmptyBody>(b"", BODY_BYTES_MAX).is_ok());
        assert!(parse_body::<EmptyBody>(b"{}", BODY_BYTES_MAX).is_ok());
        let e = parse_body::<EmptyBody>(br#"{"x":1}"#, BODY_BYTES_MAX).unwrap_err();
        assert_eq!(e.param(), Some("x"));
    }
}
