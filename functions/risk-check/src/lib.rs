//! # risk-check: risk assessments and per-merchant rules
//!
//! A thin Spin component over `spinpay-core`'s risk engine (pure rules in
//! `spinpay_core::risk`; the merchant's configuration in key-value storage).
//!
//! | method + path | what |
//! |---|---|
//! | POST /v1/risk/assessments | assess a prospective payment without paying |
//! | GET /v1/risk/rules | the merchant's configuration (defaults until the first PUT) |
//! | PUT /v1/risk/rules | replace it (validated; `version` grows) |
//! | POST /v1/risk/internal/assess | authorize's call over service chaining (body: core's `api::RiskInputWire`) |
//!
//! Every endpoint is authenticated by the merchant's secret key (authorize forwards the
//! merchant's own header), so no caller can reach another merchant's rules.

mod wire;

use spin_sdk::http::{Method, Request};
use spinpay_core::ApiError;
use spinpay_core::api::{self, BODY_BYTES_MAX, RiskAssessmentRequest, RiskInputWire};
use spinpay_core::model::Merchant;
use spinpay_core::risk::{self, RiskInput};
use spinpay_core::service::{self, Ctx};
use spinpay_guest::component::{Keyed, Services};
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::kv::KvRepository;
use spinpay_guest::respond::{self, RouteMiss, ok_json};

use wire::AssessmentResponse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Assessments,
    Rules,
    InternalAssess,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        match path {
            "/v1/risk/assessments" => Some(Route::Assessments),
            "/v1/risk/rules" => Some(Route::Rules),
            "/v1/risk/internal/assess" => Some(Route::InternalAssess),
            _other => None,
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Assessments | Route::InternalAssess => "POST",
            Route::Rules => "GET, PUT",
        }
    }

    /// The route of a request whose method the path takes.
    fn of(parts: &http::request::Parts) -> Result<Route, RouteMiss> {
        let route = Route::parse(parts.uri.path()).ok_or(RouteMiss::NotFound)?;
        let allowed = matches!(
            (route, &parts.method),
            (Route::Assessments | Route::InternalAssess, &Method::POST)
                | (Route::Rules, &Method::GET | &Method::PUT)
        );
        if allowed {
            Ok(route)
        } else {
            Err(RouteMiss::MethodNotAllowed {
                allow: route.allow(),
            })
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
            let (services, merchant) = Services::authenticated(&parts.headers).await?;
            let ctx = services.ctx();
            if parts.method == Method::GET {
                return Ok(ok_json(
                    &service::get_risk_config(&ctx, &merchant.id).await?,
                ));
            }
            let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
            match route {
                Route::Rules => Ok(ok_json(&put_rules(&ctx, &merchant, &body).await?)),
                Route::InternalAssess => {
                    Ok(ok_json(&internal_assess(&ctx, &merchant, &body).await?))
                }
                Route::Assessments => {
                    let call = Keyed::new(&merchant.id, &parts, &body);
                    services
                        .idempotent(call, request_id, async || {
                            let req: RiskAssessmentRequest =
                                api::parse_body(&body, BODY_BYTES_MAX)?;
                            assess(&ctx, req.validate(&merchant.id)?).await
                        })
                        .await
                }
            }
        },
    )
    .await
}

/// Runs the merchant's rules on `input`.
async fn assess(
    ctx: &Ctx<'_, KvRepository>,
    input: RiskInput,
) -> Result<AssessmentResponse, ApiError> {
    let config = service::get_risk_config(ctx, &input.merchant_id).await?;
    Ok(risk::assess(&config, &input).into())
}

async fn internal_assess(
    ctx: &Ctx<'_, KvRepository>,
    merchant: &Merchant,
    body: &[u8],
) -> Result<AssessmentResponse, ApiError> {
    let input: RiskInputWire = inbound::parse_json(body)?;
    assess(ctx, input.into_input(&merchant.id)?).await
}

async fn put_rules(
    ctx: &Ctx<'_, KvRepository>,
    merchant: &Merchant,
    body: &[u8],
) -> Result<risk::RiskConfig, ApiError> {
    let config = wire::parse_rules(body)?;
    service::put_risk_config(ctx, &merchant.id, config).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_paths_map_to_routes_and_others_to_none() {
        // Proves the three endpoints are routed and anything else under /v1/risk is a 404.
        assert_eq!(
            Route::parse("/v1/risk/assessments"),
            Some(Route::Assessments)
        );
        assert_eq!(Route::parse("/v1/risk/rules"), Some(Route::Rules));
        assert_eq!(
            Route::parse("/v1/risk/internal/assess"),
            Some(Route::InternalAssess)
        );
        assert_eq!(Route::parse("/v1/risk/rules/x"), None);
        assert_eq!(Route::parse("/v1/risk"), None);
        assert_eq!(Route::Rules.allow(), "GET, PUT");
    }

    #[test]
    fn a_method_the_path_does_not_take_is_405_naming_the_allowed_ones() {
        // Proves GET/PUT on rules and POST on the assessment paths are served, and
        // anything else is refused with the path's Allow.
        let parts = |method: &str, path: &str| {
            let req = http::Request::builder().method(method).uri(path);
            req.body(()).unwrap().into_parts().0
        };
        assert_eq!(Route::of(&parts("PUT", "/v1/risk/rules")), Ok(Route::Rules));
        assert_eq!(
            Route::of(&parts("POST", "/v1/risk/internal/assess")),
            Ok(Route::InternalAssess)
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
