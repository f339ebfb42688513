//! # risk-check: risk assessments, per-merchant rules and AML reports
//!
//! A thin Spin component over `spinpay-core`'s risk and AML engine
//! (`spinpay_core::riskengine`: pure rules, counters and reports; its `store` module does
//! the storage steps). Every public endpoint is authenticated by the merchant's secret key
//! and scoped to that merchant.
//!
//! | method + path | what |
//! |---|---|
//! | POST /v1/risk/assessments | preview: what a payment would get now; reads counters, writes none |
//! | GET /v1/risk/rules | the merchant's configuration (defaults, version 1, until the first PUT) |
//! | PUT /v1/risk/rules | replace it (validated, errors name the field; `version` + 1 by CAS) |
//! | GET /v1/risk/aml-reports?day=yyyy-mm-dd[&format=csv] | one day's AML reports, JSON or CSV |
//! | POST /v1/risk/internal/assess | authorize's call: assess and count the payment |
//!
//! Assessments answer a `Server-Timing` header splitting the guest's own time
//! (`engine`) from the time it waited on the key-value store (`kv`).
//!
//! **The internal endpoint.** Spin's `{ private = true }` would hide the whole component,
//! and this one also serves public routes, so authorize proves itself with a MAC instead:
//! header `spinpay-internal-mac` = HMAC-SHA256 under the app's secret `encryption_key`
//! over the path, the merchant id authorize authenticated (`spinpay-merchant-id`) and the
//! body (`riskengine::store::internal_mac`). A public caller never holds that key and gets
//! the same 404 as for any unknown path. The merchant is the one the MAC covers, never
//! taken from the body, and its key is not authenticated a second time.

mod timing;
mod wire;

use spin_sdk::http::{Method, Request};
use spinpay_core::ApiError;
use spinpay_core::api::{self, BODY_BYTES_MAX, RiskAssessmentRequest, RiskInputWire};
use spinpay_core::model::Merchant;
use spinpay_core::riskengine::store::{self, Mode};
use spinpay_core::riskengine::{INTERNAL_MAC_HEADER, INTERNAL_MERCHANT_HEADER, render_csv};
use spinpay_core::service::Ctx;
use spinpay_guest::component::{self, Keyed, Services};
use spinpay_guest::env::OsEntropy;
use spinpay_guest::inbound::{self, HttpResponse, Query};
use spinpay_guest::kv::KvRepository;
use spinpay_guest::respond::{self, RouteMiss, ok_json};

use wire::{AmlListResponse, AssessmentResponse, ListFormat, RulesResponse};

/// Decoded merchant configurations, kept while this instance is reused (keyed by the
/// stored record's version, so a PUT is seen by the very next request).
static CONFIGS: store::ConfigCache = store::ConfigCache::new();

/// Largest `PUT /v1/risk/rules` body: room for large block lists (10,000 entries of a
/// list fit), unlike the 16 KiB of every other request.
pub const RULES_BODY_BYTES_MAX: u64 = 1024 * 1024;

/// The path of authorize's internal call.
pub const INTERNAL_ASSESS_PATH: &str = "/v1/risk/internal/assess";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Assessments,
    Rules,
    AmlReports,
    InternalAssess,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        match path {
            "/v1/risk/assessments" => Some(Route::Assessments),
            "/v1/risk/rules" => Some(Route::Rules),
            "/v1/risk/aml-reports" => Some(Route::AmlReports),
            INTERNAL_ASSESS_PATH => Some(Route::InternalAssess),
            _other => None,
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Assessments | Route::InternalAssess => "POST",
            Route::Rules => "GET, PUT",
            Route::AmlReports => "GET",
        }
    }

    /// The route of a request whose method the path takes.
    fn of(parts: &http::request::Parts) -> Result<Route, RouteMiss> {
        let route = Route::parse(parts.uri.path()).ok_or(RouteMiss::NotFound)?;
        let allowed = matches!(
            (route, &parts.method),
            (Route::Assessments | Route::InternalAssess, &Method::POST)
                | (Route::Rules, &Method::GET | &Method::PUT)
                | (Route::AmlReports, &Method::GET)
        );
        match (allowed, route) {
            (true, _) => Ok(route),
            // The internal path does not exist for anyone who may not call it.
            (false, Route::InternalAssess) => Err(RouteMiss::NotFound),
            (false, Route::Assessments | Route::Rules | Route::AmlReports) => {
                Err(RouteMiss::MethodNotAllowed {
                    allow: route.allow(),
                })
            }
        }
    }
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle(
        &parts,
        Route::of,
        async |route, request_id| -> Result<HttpResponse, ApiError> {
            if route == Route::InternalAssess {
                let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
                return internal_assess(&parts, &body).await;
            }
            let (services, merchant) = Services::authenticated(&parts.headers).await?;
            let ctx = services.ctx();
            match (route, &parts.method) {
                (Route::Rules, &Method::GET) => {
                    inbound::no_query(parts.uri.query())?;
                    let config = store::get_config(&ctx, &merchant.id).await?;
                    Ok(ok_json(&RulesResponse::from(config)))
                }
                (Route::AmlReports, _) => aml_reports(&ctx, &merchant, &parts).await,
                (Route::Rules, _) => {
                    // A rotated-out key must not loosen the rules (allow-list a payer,
                    // empty a block list) beyond its own grace period.
                    component::require_current_key(&parts.headers, &merchant)?;
                    inbound::no_query(parts.uri.query())?;
                    let body =
                        inbound::read_body(&parts.headers, body, RULES_BODY_BYTES_MAX).await?;
                    Ok(ok_json(&put_rules(&ctx, &merchant, &body).await?))
                }
                (Route::Assessments | Route::InternalAssess, _) => {
                    inbound::no_query(parts.uri.query())?;
                    let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
                    let call = Keyed::new(&merchant.id, &parts, &body);
                    let server_timing = std::cell::RefCell::new(None);
                    let resp = services
                        .idempotent(call, request_id, async || {
                            let req: RiskAssessmentRequest =
                                api::parse_body(&body, BODY_BYTES_MAX)?;
                            let input = req.validate(&merchant.id)?;
                            let (a, t) =
                                timing::assess(&ctx, &input, Mode::Preview, &CONFIGS).await?;
                            server_timing.replace(Some(t));
                            Ok(AssessmentResponse::from(a))
                        })
                        .await?;
                    Ok(match server_timing.into_inner() {
                        Some(t) => inbound::with_header(resp, timing::SERVER_TIMING, &t),
                        None => resp, // a replayed answer: nothing was assessed now
                    })
                }
            }
        },
    )
    .await
}

/// authorize's call: MAC over path, merchant id and body first (a miss is a plain 404),
/// then assess and count the payment for the merchant the MAC covers.
async fn internal_assess(
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let services = Services::open().await?;
    let ctx = services.ctx();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let merchant_id = header(INTERNAL_MERCHANT_HEADER).unwrap_or_default();
    let mac = header(INTERNAL_MAC_HEADER);
    if !store::verify_internal_mac(ctx.keys, INTERNAL_ASSESS_PATH, merchant_id, body, mac) {
        return Err(ApiError::RouteNotFound);
    }
    let input: RiskInputWire = inbound::parse_json(body)?;
    let input = input.into_input(merchant_id)?;
    let (a, t) = timing::assess(&ctx, &input, Mode::Record, &CONFIGS).await?;
    let resp = ok_json(&AssessmentResponse::from(a));
    Ok(inbound::with_header(resp, timing::SERVER_TIMING, &t))
}

async fn put_rules(
    ctx: &Ctx<'_, KvRepository>,
    merchant: &Merchant,
    body: &[u8],
) -> Result<RulesResponse, ApiError> {
    let input = wire::parse_rules(body)?;
    let m = store::load_merchant(ctx, &mut OsEntropy, &merchant.id, None).await?;
    let config = input.into_config(m.salt.expose());
    Ok(store::put_config(ctx, &merchant.id, config).await?.into())
}

async fn aml_reports(
    ctx: &Ctx<'_, KvRepository>,
    merchant: &Merchant,
    parts: &http::request::Parts,
) -> Result<HttpResponse, ApiError> {
    let q = Query::parse(parts.uri.query())?;
    q.only(&["day", "format"])?;
    let day = q.get("day").ok_or_else(|| ApiError::ParameterMissing {
        param: "day".into(),
    })?;
    let accept = parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = wire::list_format(q.get("format"), accept)?;
    let reports = store::aml_reports(ctx, &merchant.id, day).await?;
    match format {
        ListFormat::Json => Ok(ok_json(&AmlListResponse::new(day.to_string(), reports))),
        ListFormat::Csv => {
            let csv = render_csv(&reports).into_bytes();
            let resp = inbound::bytes_response(200, "text/csv; charset=utf-8", csv);
            let disposition = format!("attachment; filename=\"aml-reports-{day}.csv\"");
            Ok(inbound::with_header(
                resp,
                "content-disposition",
                &disposition,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_paths_map_to_routes_and_others_to_none() {
        // Proves the four endpoints are routed and anything else under /v1/risk is a 404.
        assert_eq!(
            Route::parse("/v1/risk/assessments"),
            Some(Route::Assessments)
        );
        assert_eq!(Route::parse("/v1/risk/rules"), Some(Route::Rules));
        assert_eq!(
            Route::parse("/v1/risk/aml-reports"),
            Some(Route::AmlReports)
        );
        assert_eq!(
            Route::parse("/v1/risk/internal/assess"),
            Some(Route::InternalAssess)
        );
        assert_eq!(Route::parse("/v1/risk/rules/x"), None);
        assert_eq!(Route::parse("/v1/risk"), None);
        assert_eq!(Route::Rules.allow(), "GET, PUT");
    }

    #[test]
    fn a_method_the_path_does_not_take_is_405_and_the_internal_path_stays_hidden() {
        // Proves served methods route, others get 405 with Allow, and a wrong method on
        // the internal path is a plain 404 (it does not advertise itself).
        let parts = |method: &str, path: &str| {
            let req = http::Request::builder().method(method).uri(path);
            req.body(()).unwrap().into_parts().0
        };
        assert_eq!(Route::of(&parts("PUT", "/v1/risk/rules")), Ok(Route::Rules));
        assert_eq!(
            Route::of(&parts("GET", "/v1/risk/aml-reports?day=2026-11-25")),
            Ok(Route::AmlReports)
        );
        assert_eq!(
            Route::of(&parts("POST", "/v1/risk/internal/assess")),
            Ok(Route::InternalAssess)
        );
        assert_eq!(
            Route::of(&parts("GET", "/v1/risk/internal/assess")),
            Err(RouteMiss::NotFound)
        );
        assert_eq!(
            Route::of(&parts("POST", "/v1/risk/rules")),
            Err(RouteMiss::MethodNotAllowed { allow: "GET, PUT" })
        );
        assert_eq!(
            Route::of(&parts("GET", "/v1/risk/assessments")),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            Route::of(&parts("GET", "/v1/risk")),
            Err(RouteMiss::NotFound)
        );
    }
}
