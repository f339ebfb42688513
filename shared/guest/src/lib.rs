//! # spinpay-guest: the plumbing every spinpay Spin component shares
//!
//! The core (`spinpay-core`) is pure: it never touches storage, the clock, randomness
//! or the network. This crate is the other side of those seams, for components built
//! with spin-sdk 7 (`#[http_service]`, WASIp3) for `wasm32-wasip2`:
//!
//! * [`kv::KvRepository`]: the core's `Repository` over Spin key-value, correct even on
//!   a store whose compare-and-swap misreports commits (see [`envelope`]).
//! * [`inbound`]: bounded body reads, JSON/error responses, auth, idempotency and
//!   routing headers, query strings.
//! * [`outbound`]: HTTP calls with a deadline whose timeout is distinguishable from a
//!   transport error and from an answer.
//! * [`env`]: clock, randomness and variables (secrets fail closed).
//! * [`component`]: the request context of a merchant-API component (store, keyring,
//!   bearer auth) and the Idempotency-Key protocol around a POST.
//! * [`respond`]: the handler shape (request id, route miss 404/405, error → response)
//!   and the standard answers, so a component's `lib.rs` is parse → core → response.
//!
//! The decision logic (envelopes, header parsing, ...) is pure and unit-tested natively;
//! the thin wrappers over WASI imports compile natively but only run inside a component.
#![deny(missing_docs)]

pub mod component;
pub mod env;
pub mod envelope;
pub mod inbound;
pub mod kv;
pub mod outbound;
pub mod respond;
