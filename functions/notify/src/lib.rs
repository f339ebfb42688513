//! # notify: delivering events to merchants
//!
//! A thin Spin component over `spinpay-core`'s delivery use cases:
//!
//! | method + path | auth | what |
//! |---|---|---|
//! | POST /v1/admin/notifications/sweep | admin token | publish what crashed writers left, make the due delivery attempts, delete expired idempotency records (`{"limit"?, "merchant_id"?, "now_ms"?}`) |
//! | POST /v1/events/{id}/redeliver | secret key | start a new delivery round for one event and attempt it now |
//!
//! Both take their fields from the body only: once the caller is authenticated, a query
//! string is refused (400 `unknown_field` naming its first parameter) before anything
//! is stored.
//!
//! A scheduler (cron, a Kubernetes CronJob) calls the sweep every few seconds; each call
//! is bounded (`limit` attempts, default 20). Deliveries are signed POSTs of the event
//! JSON with `Spinpay-Signature: t=<unix>,v1=<hex>` (see docs/notifications.md). This is
//! the only component with outbound HTTP to merchant URLs (`allowed_outbound_hosts`).
//!
//! The sweep also deletes idempotency records past their 24 h retention (see
//! `spinpay_core::service::retention`).
//!
//! `now_ms` moves the sweep's schedule clock forward (tests of a retry schedule);
//! signatures, which secrets sign and idempotency expiry always use the wall
//! clock.

mod routes;

use spin_sdk::http::Request;
use spinpay_core::ApiError;
use spinpay_core::api::{AdminSweepBody, BODY_BYTES_MAX, parse_body};
use spinpay_core::idempotency::ADMIN_SCOPE;
use spinpay_core::service::{self, Ctx, Notifier};
use spinpay_guest::component::{self, Keyed, Services};
use spinpay_guest::env;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::outbound::{self, OutboundRequest};
use spinpay_guest::respond;

use routes::{RedeliverBody, Route};

/// Deadline of one POST to a merchant, until its answer's status arrives (a sweep makes
/// its attempts one after another). Only the status counts: the body is never read.
const NOTIFY_TIMEOUT_MS: u64 = 5_000;

#[spin_sdk::http_service]
async fn handle(req: Request) -> HttpResponse {
    let (parts, body) = req.into_parts();
    respond::handle_path(&parts, routes::route, async |route, request_id| {
        let body = inbound::read_body(&parts.headers, body, BODY_BYTES_MAX).await?;
        match route {
            Route::Sweep => sweep(&parts, &body, request_id).await,
            Route::Redeliver { id } => redeliver(&parts, &body, &id, request_id).await,
        }
    })
    .await
}

/// `POST /v1/admin/notifications/sweep`.
async fn sweep(
    parts: &http::request::Parts,
    body: &[u8],
    request_id: &str,
) -> Result<HttpResponse, ApiError> {
    component::require_admin(&parts.headers).await?;
    inbound::no_query(parts.uri.query())?;
    let services = Services::open().await?;
    let call = Keyed::new(ADMIN_SCOPE, parts, body);
    services
        .idempotent(call, request_id, async || {
            let req = parse_body::<AdminSweepBody>(body, BODY_BYTES_MAX)?;
            let wall_ms = env::now_ms();
            let call = req.validate(wall_ms, service::SWEEP_LIMIT_MAX)?;
            let sweep = service::SweepRequest {
                limit: call.limit,
                merchant_id: call.merchant_id,
                wall_clock_ms: Some(wall_ms),
            };
            let ctx = Ctx {
                now_ms: call.now_ms,
                ..services.ctx()
            };
            let report = service::sweep(&ctx, &HttpNotifier, &sweep).await?;
            component::log_passed_over(&report.merchants_failed, request_id);
            Ok(report)
        })
        .await
}

/// `POST /v1/events/{id}/redeliver`: a new round, attempted at once; answers the
/// delivery as it stands after that attempt.
async fn redeliver(
    parts: &http::request::Parts,
    body: &[u8],
    event_id: &str,
    request_id: &str,
) -> Result<HttpResponse, ApiError> {
    let (services, merchant) = Services::authenticated(&parts.headers).await?;
    inbound::no_query(parts.uri.query())?;
    let call = Keyed::new(&merchant.id, parts, body);
    services
        .idempotent(call, request_id, async || {
            parse_body::<RedeliverBody>(body, BODY_BYTES_MAX)?;
            let ctx = services.ctx();
            let queued = service::redeliver_event(&ctx, &merchant, event_id).await?;
            service::attempt(&ctx, &HttpNotifier, &merchant, event_id).await?;
            let now = service::event_delivery(&ctx, &merchant.id, event_id).await?;
            Ok(now.unwrap_or(queued))
        })
        .await
}

/// Deliveries over Spin's outbound HTTP (limited by `allowed_outbound_hosts`).
struct HttpNotifier;

impl Notifier for HttpNotifier {
    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<u16, String> {
        let req = OutboundRequest {
            method: http::Method::POST,
            url: url.to_string(),
            headers: headers.to_vec(),
            body: body.to_vec(),
        };
        match outbound::send_for_status(&req, NOTIFY_TIMEOUT_MS).await {
            Ok(status) => Ok(status),
            Err(e) => {
                // The origin only: the URL's user-info, path or query may hold credentials.
                let origin = outbound::loggable_origin(url);
                eprintln!("delivery to {origin} failed: {e}");
                Err(e.to_string())
            }
        }
    }

    fn now_unix_s(&self) -> i64 {
        env::now_unix_s()
    }

    fn now_unix_ms(&self) -> i64 {
        env::now_ms()
    }
}
