//! # authorize: take payments
//!
//! A thin Spin component over `spinpay-core`: it routes, reads a bounded body, parses it
//! with the core's wire types, calls the core's service and maps the result.
//!
//! | method + path | core |
//! |---|---|
//! | POST /v1/payments | `create_payment` (risk-check by service chaining, then the channel) |
//! | GET /v1/payments | forwarded unchanged to the query component |
//! | POST /v1/payments/{id}/capture | `capture_payment` `{"amount_minor"?}` |
//! | POST /v1/payments/{id}/cancel | `cancel_payment` `{}` |
//! | POST /v1/payments/{id}/confirm | `confirm_payment` `{"otp"}` |
//! | POST /v1/payments/{id}/review | `review_payment` `{"decision": "approve" \| "decline"}` |
//!
//! Every POST is authenticated by the merchant's secret key and runs under the
//! Idempotency-Key protocol.

mod web;
mod wiring;

use spin_sdk::http::{Method, Request};
use spinpay_core::ApiError;
use spinpay_core::api::{
    self, BODY_BYTES_MAX, CancelRequest, CaptureRequest, ConfirmRequest, CreatePaymentRequest,
    NewPayment, PaymentResponse, ReviewRequest,
};
use spinpay_core::model::Merchant;
use spinpay_core::service::{self, Ctx};
use spinpay_guest::env::{self, OsEntropy};
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::kv::KvRepository;

use web::{Env, Keyed};

/// The collection route.
const PAYMENTS_PATH: &str = "/v1/payments";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// `/v1/payments`.
    Payments,
    /// `/v1/payments/{id}/{action}`.
    Action(String, Action),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Capture,
    Cancel,
    Confirm,
    Review,
}

/// A parsed, validated POST.
enum Command {
    Create(Box<NewPayment>),
    Capture(String, Option<i64>),
    Cancel(String),
    Confirm(String, String),
    Review(String, bool),
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let request_id = inbound::request_id(&parts.headers, env::random_bytes());
    let Some(route) = route(parts.uri.path(), &parts.headers) else {
        return web::error(&ApiError::RouteNotFound, &request_id);
    };
    match (&route, &parts.method) {
        (Route::Payments, &Method::GET) => {
            return wiring::forward_to_query(&parts, &request_id).await;
        }
        (_, &Method::POST) => {}
        (Route::Payments, _) => return web::method_not_allowed("GET, POST", &request_id),
        (Route::Action(..), _) => return web::method_not_allowed("POST", &request_id),
    };
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
    let body = match inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) => return web::error(&e, &request_id),
    };
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
    let authorization = authorization.unwrap_or_default();
    web::idempotent(&ctx, keyed, &request_id, async || {
        let command = parse(&route, &body, &merchant)?;
        run(&ctx, &merchant, command, authorization).await
    })
    .await
}

/// Maps a path to a route; the payment id comes from Spin's `spin-path-match-id`
/// header, or from the path itself when the request arrived without it.
fn route(path: &str, headers: &http::HeaderMap) -> Option<Route> {
    if path == PAYMENTS_PATH {
        return Some(Route::Payments);
    }
    let rest = path.strip_prefix(PAYMENTS_PATH)?.strip_prefix('/')?;
    let (id, action) = rest.split_once('/')?;
    let action = match action {
        "capture" => Action::Capture,
        "cancel" => Action::Cancel,
        "confirm" => Action::Confirm,
        "review" => Action::Review,
        _other => return None,
    };
    let id = inbound::path_match(headers, "id").unwrap_or_else(|| id.to_string());
    if id.is_empty() {
        return None;
    }
    Some(Route::Action(id, action))
}

/// Parses and validates the body for `route` (before any channel is configured, so a
/// bad request is a 4xx whatever the deployment).
fn parse(route: &Route, body: &[u8], merchant: &Merchant) -> Result<Command, ApiError> {
    let command = match route {
        Route::Payments => {
            let req: CreatePaymentRequest = api::parse_body(body, BODY_BYTES_MAX)?;
            let new = req.validate(merchant.default_capture)?;
            wiring::ensure_channel_available(new.channel)?;
            Command::Create(Box::new(new))
        }
        Route::Action(id, Action::Capture) => {
            let req: CaptureRequest = api::parse_body(body, BODY_BYTES_MAX)?;
            let amount = req
                .amount_minor
                .map(|a| api::validate_amount(a, "amount_minor"))
                .transpose()?;
            Command::Capture(id.clone(), amount)
        }
        Route::Action(id, Action::Cancel) => {
            let _: CancelRequest = api::parse_body(body, BODY_BYTES_MAX)?;
            Command::Cancel(id.clone())
        }
        Route::Action(id, Action::Confirm) => {
            let req: ConfirmRequest = api::parse_body(body, BODY_BYTES_MAX)?;
            Command::Confirm(id.clone(), req.validate()?.to_string())
        }
        Route::Action(id, Action::Review) => {
            let req: ReviewRequest = api::parse_body(body, BODY_BYTES_MAX)?;
            Command::Review(id.clone(), req.validate()?)
        }
    };
    Ok(command)
}

/// Runs a command against the core with the sandbox channel and chained risk-check.
async fn run(
    ctx: &Ctx<'_, KvRepository>,
    merchant: &Merchant,
    command: Command,
    authorization: &str,
) -> Result<PaymentResponse, ApiError> {
    let channel = wiring::channel().await?;
    let rng = &mut OsEntropy;
    let m = merchant.id.as_str();
    match command {
        Command::Create(new) => {
            let risk = wiring::ChainedRisk::new(authorization);
            service::create_payment(ctx, &channel, &risk, rng, merchant, *new).await
        }
        Command::Capture(id, amount) => {
            service::capture_payment(ctx, &channel, rng, m, &id, amount).await
        }
        Command::Cancel(id) => service::cancel_payment(ctx, &channel, rng, m, &id).await,
        Command::Confirm(id, otp) => {
            service::confirm_payment(ctx, &channel, rng, m, &id, &otp).await
        }
        Command::Review(id, approve) => {
            service::review_payment(ctx, &channel, rng, m, &id, approve).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn payment_paths_map_to_their_routes() {
        // Proves the collection, each action and the spin-path-match-id header are routed.
        let none = http::HeaderMap::new();
        assert_eq!(route("/v1/payments", &none), Some(Route::Payments));
        assert_eq!(
            route("/v1/payments/pay_1/capture", &none),
            Some(Route::Action("pay_1".into(), Action::Capture))
        );
        let h = headers(&[("spin-path-match-id", "pay_2")]);
        assert_eq!(
            route("/v1/payments/pay_2/review", &h),
            Some(Route::Action("pay_2".into(), Action::Review))
        );
    }

    #[test]
    fn unknown_payment_paths_have_no_route() {
        // Proves other shapes under /v1/payments are 404s here, not guesses.
        let none = http::HeaderMap::new();
        for p in [
            "/v1/payments/",
            "/v1/payments/pay_1",
            "/v1/payments/pay_1/refund",
            "/v1/payments//cancel",
            "/v1/paymentsx",
            "/v1/payments/pay_1/cancel/x",
        ] {
            assert_eq!(route(p, &none), None, "{p}");
        }
    }
}
