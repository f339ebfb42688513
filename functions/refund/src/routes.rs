//! Pure request routing and the refund list page (unit-tested natively).

use http::Method;
use spinpay_core::ApiError;
use spinpay_core::api::{ListParams, ListResponse, RefundResponse};
use spinpay_guest::respond::RouteMiss;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/payments/{id}/refunds`.
    Create {
        /// The payment.
        payment_id: String,
    },
    /// `GET /v1/payments/{id}/refunds`.
    List {
        /// The payment.
        payment_id: String,
    },
}

/// Routes on the full request path (`/v1/payments/{id}/refunds`).
pub fn route(method: &Method, path: &str) -> Result<Route, RouteMiss> {
    let segments: Vec<&str> = path.split('/').collect();
    let payment_id = match segments.as_slice() {
        ["", "v1", "payments", id, "refunds"] if !id.is_empty() => id.to_string(),
        _ => return Err(RouteMiss::NotFound),
    };
    match *method {
        Method::POST => Ok(Route::Create { payment_id }),
        Method::GET => Ok(Route::List { payment_id }),
        _ => Err(RouteMiss::MethodNotAllowed { allow: "GET, POST" }),
    }
}

/// One page of a payment's refunds, newest first. A payment has at most
/// `REFUNDS_PER_PAYMENT_MAX` refunds, so they are paged in memory; `starting_after`
/// must be one of this payment's refunds.
pub fn page(
    refunds_oldest_first: Vec<RefundResponse>,
    params: &ListParams,
) -> Result<ListResponse<RefundResponse>, ApiError> {
    if params.merchant_order_id.is_some() {
        return Err(ApiError::UnknownField {
            param: "merchant_order_id".into(),
        });
    }
    let mut refunds = refunds_oldest_first;
    refunds.reverse();
    let start = match &params.starting_after {
        None => 0,
        Some(id) => {
            let at = refunds.iter().position(|r| r.id == *id);
            at.map(|i| i + 1)
                .ok_or_else(|| ApiError::ParameterInvalid {
                    param: "starting_after".into(),
                    reason: format!("{id:?} is not a refund of this payment"),
                })?
        }
    };
    let mut data = refunds.split_off(start);
    let limit = usize::try_from(params.limit).unwrap_or(usize::MAX);
    let has_more = data.len() > limit;
    data.truncate(limit);
    Ok(ListResponse::new(data, has_more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spinpay_core::model::RefundStatus;
    use spinpay_core::money::Currency;
    use spinpay_guest::respond::ErrorResponse;

    fn refund(n: u32) -> RefundResponse {
        RefundResponse {
            id: format!("re_{n}"),
            object: "refund".into(),
            payment_id: "pay_1".into(),
            amount_minor: 100,
            currency: Currency::Cny,
            status: RefundStatus::Succeeded,
            reason: None,
            merchant_refund_id: None,
            failure: None,
            created_at_ms: i64::from(n),
            updated_at_ms: i64::from(n),
        }
    }

    fn ids(list: &ListResponse<RefundResponse>) -> Vec<&str> {
        list.data.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn the_refunds_path_routes_by_method() {
        // Proves POST creates, GET lists and the payment id comes from the path itself.
        let path = "/v1/payments/pay_abc/refunds";
        assert_eq!(
            route(&Method::POST, path),
            Ok(Route::Create {
                payment_id: "pay_abc".into()
            })
        );
        assert_eq!(
            route(&Method::GET, path),
            Ok(Route::List {
                payment_id: "pay_abc".into()
            })
        );
    }

    #[test]
    fn other_methods_get_405_with_allow_and_other_paths_404() {
        // Proves DELETE is refused naming GET and POST, and near-miss paths are not found.
        let miss = route(&Method::DELETE, "/v1/payments/pay_abc/refunds").unwrap_err();
        assert_eq!(miss, RouteMiss::MethodNotAllowed { allow: "GET, POST" });
        let resp = miss.response("req_1");
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, POST");
        for path in [
            "/v1/payments//refunds",
            "/v1/payments/pay_abc/refunds/x",
            "/v1/payments/pay_abc",
            "/v1/refunds",
        ] {
            assert_eq!(
                route(&Method::GET, path),
                Err(RouteMiss::NotFound),
                "{path}"
            );
        }
        assert_eq!(RouteMiss::NotFound.response("r").status(), 404);
    }

    #[test]
    fn refund_pages_are_newest_first_with_a_cursor() {
        // Proves ordering, limit, has_more and starting_after over five refunds.
        let all: Vec<_> = (1..=5).map(refund).collect();
        let first = page(all.clone(), &ListParams::parse("limit=2").unwrap()).unwrap();
        assert_eq!((ids(&first), first.has_more), (vec!["re_5", "re_4"], true));
        let next = ListParams::parse("limit=2&starting_after=re_4").unwrap();
        let second = page(all.clone(), &next).unwrap();
        assert_eq!(
            (ids(&second), second.has_more),
            (vec!["re_3", "re_2"], true)
        );
        let last = ListParams::parse("limit=2&starting_after=re_2").unwrap();
        let third = page(all.clone(), &last).unwrap();
        assert_eq!((ids(&third), third.has_more), (vec!["re_1"], false));
        let whole = page(all, &ListParams::parse("").unwrap()).unwrap();
        assert_eq!((whole.data.len(), whole.has_more), (5, false));
    }

    #[test]
    fn a_foreign_cursor_or_an_order_id_filter_is_rejected() {
        // Proves starting_after must name a refund of this payment and merchant_order_id
        // is not a refund-list parameter.
        let bad = ListParams::parse("starting_after=re_9").unwrap();
        assert_eq!(
            page(vec![refund(1)], &bad).unwrap_err().param(),
            Some("starting_after")
        );
        let order = ListParams::parse("merchant_order_id=ORD-1").unwrap();
        assert_eq!(page(vec![], &order).unwrap_err().code(), "unknown_field");
    }
}
