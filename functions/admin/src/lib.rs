//! # admin: merchant onboarding
//!
//! A thin Spin component over `spinpay-core`:
//!
//! | method + path | what |
//! |---|---|
//! | POST /v1/admin/merchants | `create_merchant` `{"name", "notify_url"?, "default_capture"?}` |
//! | GET /v1/account | the calling merchant's settings (secret key auth) |
//! | POST /v1/account | `update_merchant` `{"name"?, "notify_url"?, "default_capture"?}` |
//! | POST /v1/account/webhook-secret/rotate | `rotate_webhook_secret` `{"grace_period_s"?}`: a new signing secret, shown once; the old one also signs during the grace period |
//! | POST /v1/account/secret-key/rotate | `rotate_secret_key` `{"grace_period_s"?}`: a new secret key, shown once; the old one also works during the grace period (5 minutes to 7 days) |
//!
//! Every POST here takes its fields from the body only: a query string is refused (400
//! `unknown_field` naming its first parameter) before anything is read or stored.
//!
//! The merchants route is guarded by `Authorization: Bearer <admin token>` (the secret
//! variable `admin_token`), compared in constant time; with no usable token configured
//! (none, one shorter than 20 characters, or the template's placeholder) the endpoint is
//! disabled (503 `not_configured`, whose message says which). A call without the header
//! answers 401 `authentication_required` asking for `Bearer <admin token>`. The answer
//! holds the merchant's secret key, shown once: under an Idempotency-Key the stored
//! replay is sealed with the encryption key, never kept in clear.

use spin_sdk::http::{Method, Request};
use spinpay_core::ApiError;
use spinpay_core::api::{
    self, BODY_BYTES_MAX, CreateMerchantRequest, MerchantResponse, UpdateMerchantRequest,
};
use spinpay_core::idempotency::ADMIN_SCOPE;
use spinpay_core::service::{self, KeyedRun};
use spinpay_guest::component::{self, Keyed, Services};
use spinpay_guest::env::OsEntropy;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond::{self, RouteMiss};

/// Merchant onboarding (admin token).
const MERCHANTS_PATH: &str = "/v1/admin/merchants";
/// The calling merchant's own settings (secret key).
const ACCOUNT_PATH: &str = "/v1/account";
/// Webhook signing secret rotation (secret key).
const ROTATE_PATH: &str = "/v1/account/webhook-secret/rotate";
/// Secret key rotation (secret key).
const ROTATE_KEY_PATH: &str = "/v1/account/secret-key/rotate";

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle(
        &parts,
        route,
        async |route, request_id| -> Result<HttpResponse, ApiError> {
            match route {
                Route::CreateMerchant => create_merchant(&parts, body, request_id).await,
                Route::Account => {
                    let (_, merchant) = Services::authenticated(&parts.headers).await?;
                    inbound::no_query(parts.uri.query())?;
                    Ok(respond::ok_json(&MerchantResponse::new(&merchant)))
                }
                Route::UpdateAccount => update_account(&parts, body, request_id).await,
                Route::RotateSecret => rotate_secret(&parts, body, request_id).await,
                Route::RotateKey => rotate_key(&parts, body, request_id).await,
            }
        },
    )
    .await
}

/// `POST /v1/admin/merchants`: admin token, then create under a sealed idempotent reply.
async fn create_merchant<B>(
    parts: &http::request::Parts,
    body: B,
    request_id: &str,
) -> Result<HttpResponse, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    component::require_admin(&parts.headers).await?;
    let services = Services::open().await?;
    // The answer holds the merchant's secret key: its replay is stored sealed. Under an
    // Idempotency-Key the merchant derives from the key's operation seed, so a retry
    // resumes an attempt that failed part-way instead of onboarding a second merchant.
    keyed_write(
        &services,
        ADMIN_SCOPE,
        Seal::Yes,
        parts,
        body,
        request_id,
        async |req: CreateMerchantRequest, keyed| {
            let ctx = services.ctx();
            let seed = keyed.map(|k| k.seed);
            service::create_merchant_seeded(&ctx, &mut OsEntropy, req.validate()?, seed).await
        },
    )
    .await
}

/// `POST /v1/account`: the calling merchant changes its own settings.
async fn update_account<B>(
    parts: &http::request::Parts,
    body: B,
    request_id: &str,
) -> Result<HttpResponse, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (services, merchant) = Services::authenticated(&parts.headers).await?;
    // Before the Idempotency-Key's stored answer too: no replay to a rotated-out key.
    component::require_current_key(&parts.headers, &merchant)?;
    keyed_write(
        &services,
        &merchant.id,
        Seal::No,
        parts,
        body,
        request_id,
        async |req: UpdateMerchantRequest, _keyed| {
            service::update_merchant(&services.ctx(), &merchant.id, req.validate()?).await
        },
    )
    .await
}

/// `POST /v1/account/webhook-secret/rotate`: the answer holds the new secret, so its
/// idempotent replay is stored sealed.
async fn rotate_secret<B>(
    parts: &http::request::Parts,
    body: B,
    request_id: &str,
) -> Result<HttpResponse, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (services, merchant) = Services::authenticated(&parts.headers).await?;
    // Before the Idempotency-Key's stored answer too: a rotated-out key must not get the
    // new secret by replaying the current key's rotation.
    component::require_current_key(&parts.headers, &merchant)?;
    keyed_write(
        &services,
        &merchant.id,
        Seal::Yes,
        parts,
        body,
        request_id,
        async |req: RotateSecretRequest, keyed| {
            let (ctx, seed) = (services.ctx(), keyed.map(|k| k.seed));
            service::rotate_webhook_secret(
                &ctx,
                &mut OsEntropy,
                &merchant.id,
                req.grace_period_s,
                seed,
            )
            .await
        },
    )
    .await
}

/// `POST /v1/account/secret-key/rotate`: the answer holds the new key, so its idempotent
/// replay is stored sealed; under an Idempotency-Key the new key derives from the key's
/// operation seed, so a retry after a lost answer gets the same key.
async fn rotate_key<B>(
    parts: &http::request::Parts,
    body: B,
    request_id: &str,
) -> Result<HttpResponse, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (services, merchant) = Services::authenticated(&parts.headers).await?;
    keyed_write(
        &services,
        &merchant.id,
        Seal::Yes,
        parts,
        body,
        request_id,
        async |req: RotateSecretRequest, keyed| {
            let (ctx, grace, seed) = (services.ctx(), req.grace_period_s, keyed.map(|k| k.seed));
            // The retry of the rotation that retired the caller's key gets its answer.
            if !seed.is_some_and(|seed| service::rotation_landed(&ctx, &merchant, seed)) {
                component::require_current_key(&parts.headers, &merchant)?;
            }
            service::rotate_secret_key(&ctx, &mut OsEntropy, &merchant.id, grace, seed).await
        },
    )
    .await
}

/// Whether a write's idempotent replay is stored sealed (its answer holds a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seal {
    Yes,
    No,
}

/// The shared tail of every write once the caller is authorized: refuse a query string
/// (`unknown_field`: a setting put there would otherwise be ignored by a 200), read
/// the body, then, under the request's Idempotency-Key in `scope`, parse it as
/// `Req` and run `op` with the key's run (operation seed, whether it resumes a crashed
/// attempt; `None` without a key), for a write that derives what it creates from the
/// seed so that a retry resumes it.
async fn keyed_write<B, Req, T>(
    services: &Services,
    scope: &str,
    seal: Seal,
    parts: &http::request::Parts,
    body: B,
    request_id: &str,
    op: impl AsyncFnOnce(Req, Option<KeyedRun>) -> Result<T, ApiError>,
) -> Result<HttpResponse, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
    Req: api::WireRequest,
    T: serde::Serialize,
{
    inbound::no_query(parts.uri.query())?;
    let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
    let call = Keyed::new(scope, parts, &body);
    let call = match seal {
        Seal::Yes => call.sealed(),
        Seal::No => call,
    };
    services
        .idempotent_seeded(call, request_id, async |keyed| {
            op(api::parse_body(&body, BODY_BYTES_MAX)?, keyed).await
        })
        .await
}

/// `{"grace_period_s"?}`: how long the old webhook secret keeps signing (0..=604800,
/// default 86400), or the old secret key keeps working (300..=604800, default 300).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateSecretRequest {
    grace_period_s: Option<i64>,
}

impl api::WireRequest for RotateSecretRequest {
    const SCHEMA: &'static [api::Field] = &[api::Field {
        name: "grace_period_s",
        kind: api::Kind::Integer,
        required: false,
    }];
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    CreateMerchant,
    Account,
    UpdateAccount,
    RotateSecret,
    RotateKey,
}

/// POST to the merchants path; GET or POST to the account path.
fn route(parts: &http::request::Parts) -> Result<Route, RouteMiss> {
    match parts.uri.path() {
        MERCHANTS_PATH if parts.method == Method::POST => Ok(Route::CreateMerchant),
        MERCHANTS_PATH => Err(RouteMiss::MethodNotAllowed { allow: "POST" }),
        ACCOUNT_PATH if parts.method == Method::GET => Ok(Route::Account),
        ACCOUNT_PATH if parts.method == Method::POST => Ok(Route::UpdateAccount),
        ACCOUNT_PATH => Err(RouteMiss::MethodNotAllowed { allow: "GET, POST" }),
        ROTATE_PATH if parts.method == Method::POST => Ok(Route::RotateSecret),
        ROTATE_PATH => Err(RouteMiss::MethodNotAllowed { allow: "POST" }),
        ROTATE_KEY_PATH if parts.method == Method::POST => Ok(Route::RotateKey),
        ROTATE_KEY_PATH => Err(RouteMiss::MethodNotAllowed { allow: "POST" }),
        _ => Err(RouteMiss::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_post_to_the_merchants_path_is_served() {
        // Proves the one route, 405 naming POST for other methods, and 404 elsewhere.
        let parts = |method: &str, path: &str| {
            let req = http::Request::builder().method(method).uri(path);
            req.body(()).unwrap().into_parts().0
        };
        assert_eq!(
            route(&parts("POST", MERCHANTS_PATH)),
            Ok(Route::CreateMerchant)
        );
        assert_eq!(route(&parts("GET", ACCOUNT_PATH)), Ok(Route::Account));
        assert_eq!(
            route(&parts("POST", ACCOUNT_PATH)),
            Ok(Route::UpdateAccount)
        );
        assert_eq!(
            route(&parts("DELETE", ACCOUNT_PATH)),
            Err(RouteMiss::MethodNotAllowed { allow: "GET, POST" })
        );
        assert_eq!(
            route(&parts("GET", MERCHANTS_PATH)),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route(&parts("POST", "/v1/admin/merchants/x")),
            Err(RouteMiss::NotFound)
        );
        assert_eq!(route(&parts("POST", ROTATE_PATH)), Ok(Route::RotateSecret));
        assert_eq!(route(&parts("POST", ROTATE_KEY_PATH)), Ok(Route::RotateKey));
        assert_eq!(
            route(&parts("GET", ROTATE_PATH)),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
    }
}
