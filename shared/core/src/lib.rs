//! # spinpay-core: the pure payment domain
//!
//! Everything spinpay decides lives here; the Spin components are thin wrappers that
//! parse HTTP, call this crate and map the result to a response.
//!
//! **Pure and deterministic.** The crate never reads the clock, draws random numbers or
//! touches storage or the network. The time (`now_ms`), randomness ([`rng::Entropy`]),
//! storage ([`repo::Repository`]) and the outside world ([`service::ChannelClient`],
//! [`service::RiskClient`]) come in as arguments, so a test can drive the whole service
//! layer from one seed and replay any failure (the TigerBeetle simulator idea).
//!
//! **Layers, one type per boundary.**
//! * [`money`], [`ids`], [`model`]: closed enums and validated domain types.
//! * [`api`]: wire requests (strict) and responses (DESIGN.md names), explicit validation
//!   into domain values; [`error::ApiError`] is the one error type, with status, type,
//!   stable code, message and param.
//! * [`machine`]: payment and refund state machines as transition tables; the only code
//!   that changes a status or a money field. Invariants (`refunded + pending ≤ captured ≤
//!   authorized ≤ amount`) are asserted before every write and after every read.
//! * [`idempotency`], [`riskengine`], [`crypto`]: pure helpers (the risk and AML engine
//!   with its storage use cases in [`riskengine::store`]).
//! * [`service`]: the use cases (create, capture, cancel, confirm, refund, query, lists,
//!   notifications, merchants), written against the traits above. Every write of money
//!   state is a compare-and-swap in a bounded retry loop; every change appends an event.
//! * [`keys`]: the storage key layout. [`repo::memory`]: an in-memory repository with
//!   seeded fault injection for tests.
//! * `wit/spinpay.wit` mirrors the public types; a test keeps the two from drifting.
#![deny(missing_docs)]

pub mod api;
pub mod crypto;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod keys;
pub mod machine;
pub mod model;
pub mod money;
pub mod repo;
pub mod riskengine;
pub mod rng;
pub mod service;

pub use error::ApiError;

/// How the deployment template's placeholder values begin (`REPLACE_ME…` in
/// infra/k8s/secrets.template.yaml and spinapp.yaml, public in this repository): a secret
/// or required setting still holding one counts as not configured.
pub const PLACEHOLDER_PREFIX: &str = "REPLACE_ME";
