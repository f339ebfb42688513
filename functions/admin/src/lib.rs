//! # admin: merchant onboarding
//!
//! A thin Spin component over `spinpay-core`:
//!
//! | method + path | what |
//! |---|---|
//! | POST /v1/admin/merchants | `create_merchant` `{"name", "notify_url"?, "default_capture"?}` |
//!
//! Guarded by `Authorization: Bearer <admin token>` (the secret variable `admin_token`),
//! compared in constant time; with no token configured the endpoint is disabled (503
//! `not_configured`). The answer holds the merchant's secret key, shown once: under an
//! Idempotency-Key the stored replay is sealed with the encryption key, never kept in
//! clear.

mod web;

use spin_sdk::http::{Method, Request};
use spinpay_core::ApiError;
use spinpay_core::api::{self, BODY_BYTES_MAX, CreateMerchantRequest};
use spinpay_core::service;
use spinpay_guest::env::{self, OsEntropy};
use spinpay_guest::inbound::{self, HttpResponse};

use web::{Env, Keyed};

/// The secret variable holding the admin bearer token.
const VAR_ADMIN_TOKEN: &str = "admin_token";
/// The one route.
const MERCHANTS_PATH: &str = "/v1/admin/merchants";
/// Idempotency scope of admin calls (not a merchant id, so never one's keys).
const ADMIN_SCOPE: &str = "admin";

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let request_id = inbound::request_id(&parts.headers, env::random_bytes());
    if parts.uri.path() != MERCHANTS_PATH {
        return web::error(&ApiError::RouteNotFound, &request_id);
    }
    if parts.method != Method::POST {
        return web::method_not_allowed("POST", &request_id);
    }
    let configured = env::secret(VAR_ADMIN_TOKEN).await.ok();
    let authorization = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let configured = configured.as_ref().map(|s| s.expose().as_str());
    if let Err(e) = service::check_admin_token(authorization, configured) {
        return web::error(&e, &request_id);
    }
    let env = match Env::load().await {
        Ok(env) => env,
        Err(e) => return web::error(&e, &request_id),
    };
    let ctx = env.ctx();
    let body = match inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) => return web::error(&e, &request_id),
    };
    let key = match web::idempotency_key(&parts.headers) {
        Ok(k) => k,
        Err(e) => return web::error(&e, &request_id),
    };
    let keyed = Keyed {
        scope: ADMIN_SCOPE,
        key: key.as_deref(),
        method: "POST",
        path: MERCHANTS_PATH,
        body: &body,
        seal: true,
    };
    web::idempotent(&ctx, keyed, &request_id, async || {
        let req: CreateMerchantRequest = api::parse_body(&body, BODY_BYTES_MAX)?;
        service::create_merchant(&ctx, &mut OsEntropy, req.validate()?).await
    })
    .await
}
