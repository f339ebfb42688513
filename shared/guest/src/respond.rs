//! The shape of every component's handler, written once: take a request id, route,
//! serve, turn a failure into its response, and put the request id on every answer.
//! Plus the standard answers: 404 `route_not_found`, 405 `method_not_allowed` with
//! `Allow`, and 200 JSON.

use spinpay_core::ApiError;

use crate::env;
use crate::inbound::{self, HttpResponse, REQUEST_ID_HEADER};

/// A request no route of the component serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    /// 404 `route_not_found`.
    NotFound,
    /// 405 `method_not_allowed` with the `Allow` header.
    MethodNotAllowed {
        /// The methods the path takes (`"GET, POST"`).
        allow: &'static str,
    },
}

/// A failure that knows its own response (the request id is added by [`handle`]).
pub trait ErrorResponse {
    /// The response; an internal error's detail is logged here, once.
    fn response(&self, request_id: &str) -> HttpResponse;
}

impl ErrorResponse for ApiError {
    fn response(&self, request_id: &str) -> HttpResponse {
        inbound::error_response(self, request_id)
    }
}

impl ErrorResponse for RouteMiss {
    fn response(&self, request_id: &str) -> HttpResponse {
        match self {
            RouteMiss::NotFound => inbound::error_response(&ApiError::RouteNotFound, request_id),
            RouteMiss::MethodNotAllowed { allow } => inbound::with_header(
                inbound::error_response(&ApiError::MethodNotAllowed, request_id),
                "allow",
                allow,
            ),
        }
    }
}

/// Serves one request: the request id (the caller's `x-request-id` when plain, else a
/// fresh one), then `route` (a miss is 404 / 405), then `serve` with the route and the
/// request id; a failure becomes its response, and every answer carries the
/// `request-id` header.
pub async fn handle<R, E: ErrorResponse>(
    parts: &http::request::Parts,
    route: impl FnOnce(&http::request::Parts) -> Result<R, RouteMiss>,
    serve: impl AsyncFnOnce(R, &str) -> Result<HttpResponse, E>,
) -> HttpResponse {
    let request_id = inbound::request_id(&parts.headers, env::random_bytes());
    let resp = match route(parts) {
        Err(miss) => miss.response(&request_id),
        Ok(route) => match serve(route, &request_id).await {
            Ok(resp) => resp,
            Err(e) => e.response(&request_id),
        },
    };
    inbound::with_header(resp, REQUEST_ID_HEADER, &request_id)
}

/// [`handle`] with a router over the method and the request's full path (never Spin's
/// route headers, so a request forwarded through service chaining routes the same).
pub async fn handle_path<R, E: ErrorResponse>(
    parts: &http::request::Parts,
    route: impl FnOnce(&http::Method, &str) -> Result<R, RouteMiss>,
    serve: impl AsyncFnOnce(R, &str) -> Result<HttpResponse, E>,
) -> HttpResponse {
    handle(parts, |p| route(&p.method, p.uri.path()), serve).await
}

/// 200 with `value` as JSON.
pub fn ok_json(value: &impl serde::Serialize) -> HttpResponse {
    inbound::json_response(200, value)
}

/// A JSON body already serialized (a stored idempotent reply).
pub fn json_text(status: u16, body: String) -> HttpResponse {
    inbound::bytes_response(status, "application/json", body.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn parts(method: &str, path: &str) -> http::request::Parts {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-request-id", "req_t")
            .body(())
            .unwrap();
        req.into_parts().0
    }

    fn only_get(p: &http::request::Parts) -> Result<&'static str, RouteMiss> {
        match (p.uri.path(), p.method.as_str()) {
            ("/x", "GET") => Ok("x"),
            ("/x", _) => Err(RouteMiss::MethodNotAllowed { allow: "GET" }),
            _ => Err(RouteMiss::NotFound),
        }
    }

    #[test]
    fn a_route_miss_is_404_or_405_with_allow_and_the_request_id() {
        // Proves misses never reach `serve` and answer their status, Allow and request id.
        let never =
            async |_: &str, _: &str| -> Result<HttpResponse, ApiError> { panic!("served a miss") };
        let resp = block_on(handle(&parts("POST", "/x"), only_get, never));
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET");
        assert_eq!(resp.headers()[REQUEST_ID_HEADER], "req_t");
        let resp = block_on(handle(&parts("GET", "/y"), only_get, never));
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[REQUEST_ID_HEADER], "req_t");
        let on_path = |_: &http::Method, path: &str| match path {
            "/y" => Ok("y"),
            _ => Err(RouteMiss::NotFound),
        };
        let resp = block_on(handle_path(&parts("GET", "/x?q=/y"), on_path, never));
        assert_eq!(resp.status(), 404);
    }

    #[test]
    fn a_served_answer_or_error_carries_the_request_id() {
        // Proves `serve` gets the route and the request id, and both an answer and an
        // error come back with the request-id header.
        let ok = async |route: &str, id: &str| -> Result<HttpResponse, ApiError> {
            Ok(ok_json(&(route, id)))
        };
        let resp = block_on(handle(&parts("GET", "/x"), only_get, ok));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[REQUEST_ID_HEADER], "req_t");
        let failing = async |_: &str, _: &str| -> Result<HttpResponse, ApiError> {
            Err(ApiError::StorageUnavailable)
        };
        let resp = block_on(handle(&parts("GET", "/x"), only_get, failing));
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[REQUEST_ID_HEADER], "req_t");
    }

    #[test]
    fn a_stored_reply_keeps_its_status_and_body() {
        // Proves json_text answers the stored status with a JSON content type.
        let resp = json_text(402, "{\"a\":1}".into());
        assert_eq!(resp.status(), 402);
        assert_eq!(resp.headers()["content-type"], "application/json");
    }
}
