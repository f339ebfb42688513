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
//! | POST /v1/risk/internal/assess | authorize's call over service chaining (body: [`wire::RiskInputWire`]) |
//!
//! Every endpoint is authenticated by the merchant's secret key (authorize forwards the
//! merchant's own header), so no caller can reach another merchant's rules.

mod web;
mod wire;

use spin_sdk::http::{Method, Request};
use spinpay_core::ApiError;
use spinpay_core::api::{self, BODY_BYTES_MAX, RiskAssessmentRequest};
use spinpay_core::model::Merchant;
use spinpay_core::risk::{self, RiskInput};
use spinpay_core::service::{self, Ctx};
use spinpay_guest::env;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::kv::KvRepository;

use web::{Env, Keyed};
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
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let request_id = inbound::request_id(&parts.headers, env::random_bytes());
    let Some(route) = Route::parse(parts.uri.path()) else {
        return web::error(&ApiError::RouteNotFound, &request_id);
    };
    let allowed = matches!(
        (route, &parts.method),
        (Route::Assessments | Route::InternalAssess, &Method::POST)
            | (Route::Rules, &Method::GET | &Method::PUT)
    );
    if !allowed {
        return web::method_not_allowed(route.allow(), &request_id);
    }
    let env = match Env::load().await {
        Ok(env) => env,
        Err(e) => return web::error(&e, &request_id),
    };
    let ctx = env.ctx();
    let authorization = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let merchant = match service::authenticate(&ctx, authorization).await {
        Ok(m) => m,
        Err(e) => return web::error(&e, &request_id),
    };
    if parts.method == Method::GET {
        let config = service::get_risk_config(&ctx, &merchant.id).await;
        return respond(config, &request_id);
    }
    let body = match inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) => return web::error(&e, &request_id),
    };
    match route {
        Route::Rules => {
            let stored = put_rules(&ctx, &merchant, &body).await;
            respond(stored, &request_id)
        }
        Route::InternalAssess => {
            let result = internal_assess(&ctx, &merchant, &body).await;
            respond(result, &request_id)
        }
        Route::Assessments => {
            let key = match web::idempotency_key(&parts.headers) {
                Ok(k) => k,
                Err(e) => return web::error(&e, &request_id),
            };
            let keyed = Keyed {
                scope: &merchant.id,
                key: key.as_deref(),
                method: "POST",
                path: parts.uri.path(),
                body: &body,
                seal: false,
            };
            web::idempotent(&ctx, keyed, &request_id, async || {
                let req: RiskAssessmentRequest = api::parse_body(&body, BODY_BYTES_MAX)?;
                assess(&ctx, req.validate(&merchant.id)?).await
            })
            .await
        }
    }
}

fn respond<T: serde::Serialize>(result: Result<T, ApiError>, request_id: &str) -> HttpResponse {
    match result {
        Ok(value) => web::ok(&value, request_id),
        Err(e) => web::error(&e, request_id),
    }
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
    let input: wire::RiskInputWire = inbound::parse_json(body)?;
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
}
