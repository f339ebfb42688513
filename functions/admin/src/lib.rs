//! # admin: merchant onboarding and recovery, and a merchant's own account
//!
//! A thin Spin component over `spinpay-core`:
//!
//! | method + path | what |
//! |---|---|
//! | POST /v1/admin/merchants | `create_merchant` `{"name", "notify_url"?, "default_capture"?}` |
//! | GET /v1/admin/merchants/{id} | `get_merchant`: the merchant as `GET /v1/account` shows it (no secrets) |
//! | POST /v1/admin/merchants/{id}/credentials/reset | `reset_merchant_credentials` `{"notify_url"?}`: a new secret key and webhook secret, shown once; every earlier key and secret stops working at once |
//! | GET /v1/account | the calling merchant's settings (secret key auth) |
//! | POST /v1/account | `update_merchant` `{"name"?, "notify_url"?, "default_capture"?}` |
//! | POST /v1/account/webhook-secret/rotate | `rotate_webhook_secret` `{"grace_period_s"?}`: a new signing secret, shown once; the old one also signs during the grace period |
//! | POST /v1/account/secret-key/rotate | `rotate_secret_key` `{"grace_period_s"?}`: a new secret key, shown once; the old one also works during the grace period (5 minutes to 7 days) |
//!
//! Every POST here takes its fields from the body only: a query string is refused (400
//! `unknown_field` naming its first parameter) before anything is read or stored.
//!
//! The `/v1/admin/merchants` routes are guarded by `Authorization: Bearer <admin token>`
//! (the secret variable `admin_token`), compared in constant time; with no usable token
//! configured (none, one shorter than 20 characters, or the template's placeholder) they
//! are disabled (503 `not_configured`, whose message says which). A call without the
//! header answers 401 `authentication_required` asking for `Bearer <admin token>`. The
//! onboarding and reset answers hold the merchant's secret key, shown once: under an
//! Idempotency-Key (admin scope) the stored replay is sealed with the encryption key,
//! never kept in clear.
//!
//! The reset is the way back when a merchant's current secret key leaked and someone
//! else rotated it first: the rotated-out key cannot change the account (so it cannot
//! take it back), and nothing else could.

use spin_sdk::http::{Method, Request};
use spinpay_core::ApiError;
use spinpay_core::api::{
    self, BODY_BYTES_MAX, CreateMerchantRequest, MerchantResponse, ResetCredentialsRequest,
    UpdateMerchantRequest,
};
use spinpay_core::idempotency::ADMIN_SCOPE;
use spinpay_core::service::{self, KeyedRun};
use spinpay_guest::component::{self, Keyed, Services};
use spinpay_guest::env::OsEntropy;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond::{self, RouteMiss};

/// Merchant onboarding (admin token); one merchant is `{MERCHANTS_PATH}/{id}`.
const MERCHANTS_PATH: &str = "/v1/admin/merchants";
/// After `{MERCHANTS_PATH}/{id}`: the operator's credentials reset (admin token).
const RESET_SUFFIX: &str = "credentials/reset";
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
                Route::GetMerchant { id } => {
                    component::require_admin(&parts.headers).await?;
                    inbound::no_query(parts.uri.query())?;
                    let services = Services::open().await?;
                    let merchant = service::get_merchant(&services.ctx(), &id).await?;
                    Ok(respond::ok_json(&merchant))
                }
                Route::ResetCredentials { id } => {
                    reset_credentials(&parts, body, &id, request_id).await
                }
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

/// `POST /v1/admin/merchants/{id}/credentials/reset`: admin token, then the reset under a
/// sealed idempotent reply in the admin scope (the answer holds the new secrets). Under
/// an Idempotency-Key the secrets derive from the key's operation seed, so a retry
/// resumes a reset that failed or died part-way and answers the same secrets.
async fn reset_credentials<B>(
    parts: &http::request::Parts,
    body: B,
    merchant_id: &str,
    request_id: &str,
) -> Result<HttpResponse, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    component::require_admin(&parts.headers).await?;
    let services = Services::open().await?;
    keyed_write(
        &services,
        ADMIN_SCOPE,
        Seal::Yes,
        parts,
        body,
        request_id,
        async |req: ResetCredentialsRequest, keyed| {
            let (ctx, seed) = (services.ctx(), keyed.map(|k| k.seed));
            let reset = req.validate()?;
            service::reset_merchant_credentials(&ctx, &mut OsEntropy, merchant_id, reset, seed)
                .await
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
            let caller = Some(merchant.api_key_hash.as_str());
            service::update_merchant(&services.ctx(), &merchant.id, caller, req.validate()?).await
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
                Some(&merchant.api_key_hash),
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
            let caller = Some(merchant.api_key_hash.as_str());
            service::rotate_secret_key(&ctx, &mut OsEntropy, &merchant.id, caller, grace, seed)
                .await
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
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    CreateMerchant,
    GetMerchant { id: String },
    ResetCredentials { id: String },
    Account,
    UpdateAccount,
    RotateSecret,
    RotateKey,
}

/// POST to the merchants path, GET to one merchant, POST to its reset; GET or POST to the
/// account path, POST to its rotations. Any other path is 404 (the component serves all
/// of `/v1/admin/...` but the routes other components take).
fn route(parts: &http::request::Parts) -> Result<Route, RouteMiss> {
    if let Some(rest) = parts.uri.path().strip_prefix(MERCHANTS_PATH)
        && let Some(rest) = rest.strip_prefix('/')
    {
        return merchant_route(&parts.method, rest);
    }
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

/// `{id}` or `{id}/credentials/reset`, below the merchants path. The id is checked by the
/// core (a malformed one is `resource_missing`, as for every object id).
fn merchant_route(method: &Method, rest: &str) -> Result<Route, RouteMiss> {
    let (id, tail) = match rest.split_once('/') {
        Some((id, tail)) => (id, Some(tail)),
        None => (rest, None),
    };
    if id.is_empty() {
        return Err(RouteMiss::NotFound);
    }
    let id = id.to_string();
    match tail {
        None if method == Method::GET => Ok(Route::GetMerchant { id }),
        None => Err(RouteMiss::MethodNotAllowed { allow: "GET" }),
        Some(RESET_SUFFIX) if method == Method::POST => Ok(Route::ResetCredentials { id }),
        Some(RESET_SUFFIX) => Err(RouteMiss::MethodNotAllowed { allow: "POST" }),
        Some(_) => Err(RouteMiss::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, path: &str) -> http::request::Parts {
        let req = http::Request::builder().method(method).uri(path);
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn each_path_is_served_with_its_methods_and_405_names_them() {
        // Proves the onboarding, account and rotation routes, and 405 with the path's
        // methods in Allow for any other method.
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
        assert_eq!(route(&parts("POST", ROTATE_PATH)), Ok(Route::RotateSecret));
        assert_eq!(route(&parts("POST", ROTATE_KEY_PATH)), Ok(Route::RotateKey));
        assert_eq!(
            route(&parts("GET", ROTATE_PATH)),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
    }

    #[test]
    fn one_merchant_is_read_with_get_and_reset_with_post_under_the_merchants_path() {
        // Proves GET /v1/admin/merchants/{id} and POST …/{id}/credentials/reset route with
        // the id taken from the path (any id: the core answers resource_missing for a
        // malformed one), and other methods answer 405 naming the one they take.
        let id = "mch_aaaaaaaaaaaaaaaaaaaaaaaaaa";
        let one = format!("{MERCHANTS_PATH}/{id}");
        let reset = format!("{one}/credentials/reset");
        let get = Route::GetMerchant { id: id.into() };
        assert_eq!(route(&parts("GET", &one)), Ok(get));
        let reset_route = Route::ResetCredentials { id: id.into() };
        assert_eq!(route(&parts("POST", &reset)), Ok(reset_route));
        let malformed = Route::GetMerchant { id: "x".into() };
        assert_eq!(route(&parts("GET", "/v1/admin/merchants/x")), Ok(malformed));
        for method in ["POST", "PUT", "DELETE"] {
            assert_eq!(
                route(&parts(method, &one)),
                Err(RouteMiss::MethodNotAllowed { allow: "GET" }),
                "{method}"
            );
        }
        for method in ["GET", "PUT", "DELETE"] {
            assert_eq!(
                route(&parts(method, &reset)),
                Err(RouteMiss::MethodNotAllowed { allow: "POST" }),
                "{method}"
            );
        }
    }

    #[test]
    fn an_unknown_admin_path_is_not_found() {
        // Proves every path under /v1/admin/ the component has no route for answers 404
        // route_not_found (an empty id, an unknown action, a trailing slash, another
        // admin area), whatever the method.
        for path in [
            "/v1/admin/merchants/",
            "/v1/admin/merchants//credentials/reset",
            "/v1/admin/merchants/mch_x/credentials",
            "/v1/admin/merchants/mch_x/credentials/reset/",
            "/v1/admin/merchants/mch_x/",
            "/v1/admin/merchants/mch_x/secret-key/rotate",
            "/v1/admin/merchants/mch_x/disable",
            "/v1/admin/merchantsx",
            "/v1/admin/other",
            "/v1/admin",
        ] {
            for method in ["GET", "POST"] {
                let miss = route(&parts(method, path));
                assert_eq!(miss, Err(RouteMiss::NotFound), "{method} {path}");
            }
        }
    }
}
