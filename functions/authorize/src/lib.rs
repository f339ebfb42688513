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
//! Every POST is authenticated by the merchant's secret key, refuses a query string (400
//! `unknown_field` naming its first parameter) and runs under the Idempotency-Key
//! protocol.

mod wiring;

use spin_sdk::http::{Method, Request};
use spinpay_channels::dispatch::Channels;
use spinpay_core::ApiError;
use spinpay_core::api::{
    self, BODY_BYTES_MAX, CancelRequest, CaptureRequest, ConfirmRequest, CreatePaymentRequest,
    NewPayment, PaymentResponse, ReviewRequest,
};
use spinpay_core::model::{CancellationReason, Merchant};
use spinpay_core::service::{self, Ctx, KeyedRun};
use spinpay_guest::component::{Keyed, Services};
use spinpay_guest::env::OsEntropy;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::kv::KvRepository;
use spinpay_guest::respond::{self, RouteMiss};

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

/// What the component does with a routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Served {
    /// `GET /v1/payments`: handed to query.
    List,
    /// A POST on `route`.
    Post(Route),
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
    respond::handle(
        &parts,
        served,
        async |served, request_id| -> Result<HttpResponse, ApiError> {
            let route = match served {
                Served::List => return Ok(wiring::forward_to_query(&parts, request_id).await),
                Served::Post(route) => route,
            };
            let (services, merchant) = Services::authenticated(&parts.headers).await?;
            // Fields come from the body only: a query parameter is refused before
            // anything is read or an Idempotency-Key is touched.
            inbound::no_query(parts.uri.query())?;
            let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
            let call = Keyed::new(&merchant.id, &parts, &body);
            services
                .idempotent_seeded(call, request_id, async |keyed| {
                    let command = parse(&route, &body, &merchant)?;
                    run(&services.ctx(), &merchant, command, keyed).await
                })
                .await
        },
    )
    .await
}

/// Routes a request: `GET /v1/payments` is forwarded, every other route takes POST.
fn served(parts: &http::request::Parts) -> Result<Served, RouteMiss> {
    let route = route(parts.uri.path()).ok_or(RouteMiss::NotFound)?;
    match (&route, &parts.method) {
        (Route::Payments, &Method::GET) => Ok(Served::List),
        (_, &Method::POST) => Ok(Served::Post(route)),
        (Route::Payments, _) => Err(RouteMiss::MethodNotAllowed { allow: "GET, POST" }),
        (Route::Action(..), _) => Err(RouteMiss::MethodNotAllowed { allow: "POST" }),
    }
}

/// Maps a path to a route, the payment id taken from the path itself. Never from Spin's
/// `spin-path-match-id` header: Spin passes a client's own `spin-*` headers on ahead of
/// the ones it sets, so that header can name another payment than the path does.
fn route(path: &str) -> Option<Route> {
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
    if id.is_empty() {
        return None;
    }
    Some(Route::Action(id.to_string(), action))
}

/// Parses and validates the body for `route` (before any channel is configured, so a
/// bad request is a 4xx whatever the deployment).
fn parse(route: &Route, body: &[u8], merchant: &Merchant) -> Result<Command, ApiError> {
    let command = match route {
        Route::Payments => {
            let req: CreatePaymentRequest = api::parse_body(body, BODY_BYTES_MAX)?;
            let new = req.validate(merchant.default_capture)?;
            Channels::ensure_available(new.channel)?;
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

/// Runs a command against the core with the channel adapters and chained risk-check;
/// `keyed` tells a keyed request's seed and whether it resumes a crashed attempt.
async fn run(
    ctx: &Ctx<'_, KvRepository>,
    merchant: &Merchant,
    command: Command,
    keyed: Option<KeyedRun>,
) -> Result<PaymentResponse, ApiError> {
    let channel = Channels::from_variables().await?;
    let rng = &mut OsEntropy;
    let m = merchant.id.as_str();
    let (seed, resumes) = (keyed.map(|k| k.seed), keyed.is_some_and(|k| k.resumes));
    match command {
        Command::Create(new) => {
            channel.check_new_payment(&new).await?;
            let risk = wiring::ChainedRisk::new(m);
            service::create_payment_seeded(ctx, &channel, &risk, rng, merchant, *new, seed).await
        }
        Command::Capture(id, amount) => {
            service::capture_payment(ctx, &channel, rng, m, &id, amount, resumes).await
        }
        Command::Cancel(id) => {
            let reason = CancellationReason::RequestedByMerchant;
            service::cancel_payment(ctx, &channel, rng, m, &id, reason).await
        }
        Command::Confirm(id, otp) => {
            service::confirm_payment(ctx, &channel, rng, m, &id, &otp, resumes).await
        }
        Command::Review(id, approve) => {
            service::review_payment(ctx, &channel, rng, m, &id, approve, resumes).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_paths_map_to_their_routes() {
        // Proves the collection and each action are routed, the id taken from the path.
        assert_eq!(route("/v1/payments"), Some(Route::Payments));
        assert_eq!(
            route("/v1/payments/pay_1/capture"),
            Some(Route::Action("pay_1".into(), Action::Capture))
        );
        assert_eq!(
            route("/v1/payments/pay_2/review"),
            Some(Route::Action("pay_2".into(), Action::Review))
        );
    }

    #[test]
    fn unknown_payment_paths_have_no_route() {
        // Proves other shapes under /v1/payments are 404s here, not guesses.
        for p in [
            "/v1/payments/",
            "/v1/payments/pay_1",
            "/v1/payments/pay_1/refund",
            "/v1/payments//cancel",
            "/v1/paymentsx",
            "/v1/payments/pay_1/cancel/x",
        ] {
            assert_eq!(route(p), None, "{p}");
        }
    }

    #[test]
    fn the_collection_takes_get_and_post_and_actions_only_post() {
        // Proves GET /v1/payments is forwarded, POSTs are served, and other methods get
        // 405 naming what the path takes.
        let parts = |method: &str, path: &str| {
            let req = http::Request::builder().method(method).uri(path);
            req.body(()).unwrap().into_parts().0
        };
        assert_eq!(served(&parts("GET", "/v1/payments")), Ok(Served::List));
        assert_eq!(
            served(&parts("POST", "/v1/payments")),
            Ok(Served::Post(Route::Payments))
        );
        assert_eq!(
            served(&parts("DELETE", "/v1/payments")),
            Err(RouteMiss::MethodNotAllowed { allow: "GET, POST" })
        );
        assert_eq!(
            served(&parts("GET", "/v1/payments/pay_1/cancel")),
            Err(RouteMiss::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            served(&parts("POST", "/v1/payments/pay_1")),
            Err(RouteMiss::NotFound)
        );
    }
}
