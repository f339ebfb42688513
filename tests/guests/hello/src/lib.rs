//! `guest-hello`: the trivial handler the host benchmark measures (no I/O, no allocation
//! beyond the response).

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(_req: Request) -> impl IntoResponse {
    "hello"
}
