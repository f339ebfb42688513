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

use spin_sdk::http::{Method, Request};
use spinpay_core::ApiError;
use spinpay_core::api::{self, BODY_BYTES_MAX, CreateMerchantRequest};
use spinpay_core::service;
use spinpay_guest::component::{self, Keyed, Services};
use spinpay_guest::env::{self, OsEntropy};
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::respond::{self, RouteMiss};

/// The secret variable holding the admin bearer token.
const VAR_ADMIN_TOKEN: &str = "admin_token";
/// The one route.
const MERCHANTS_PATH: &str = "/v1/admin/merchants";
/// Idempotency scope of admin calls (not a merchant id, so never one's keys).
const ADMIN_SCOPE: &str = "admin";

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle(
        &parts,
        route,
        async |(), request_id| -> Result<HttpResponse, ApiError> {
            let configured = env::secret(VAR_ADMIN_TOKEN).await.ok();
            let configured = configured.as_ref().map(|s| s.expose().as_str());
            service::check_admin_token(component::authorization(&parts.headers), configured)?;
            let services = Services::open().await?;
            let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
            // The answer holds the merchant's secret key: its replay is stored sealed.
            let call = Keyed::new(ADMIN_SCOPE, &parts, &body).sealed();
            services
                .idempotent(call, request_id, async || {
                    let req: CreateMerchantRequest = api::parse_body(&body, BODY_BYTES_MAX)?;
                    service::create_merchant(&services.ctx(), &mut OsEntropy, req.validate()?).await
                })
                .await
        },
    )
    .await
}

/// The one route takes POST.
fn route(parts: &http::request::Parts) -> Result<(), RouteMiss> {
    if parts.uri.path() != MERCHANTS_PATH {
        return Err(RouteMiss::NotFound);
    }
    if parts.method != Method::POST {
        return Err(RouteMiss::MethodNotAllowed { allow: "POST" });
    }
    Ok(())
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
        assert_eq!(route(&parts("POST", MERCHANTS_PATH)), Ok(()));
        assert_eq!(
            route(&parts("GET", MERCHANTS_PATH)),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route(&parts("POST", "/v1/admin/merchants/x")),
            Err(RouteMiss::NotFound)
        );
    }
}
