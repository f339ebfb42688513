//! Pure routing and request bodies (unit-tested natively).

use http::Method;
use serde::Deserialize;
use spinpay_core::api::{Field, WireRequest};
use spinpay_guest::respond::RouteMiss;

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
}
