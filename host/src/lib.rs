//! spinpay-host: runs the Wasm components of a `spin.toml` on wasmtime, with Spin 4.1's
//! semantics (routes, request headers, outbound allow-list, service chaining, key-value,
//! variables), so the app works on a machine that has only rustup and cargo and every
//! integration test drives the real `.wasm` files.
//!
//! Start with [`app::start`] (library) or `spinpay-host up` (CLI).
//!
//! How a request flows: [`server`]'s acceptor thread hands the connection to the least
//! busy serving thread (one per core, each a single-threaded runtime with its own
//! [`app::Dispatcher`] and instances), which reads the request (body capped at
//! [`server::REQUEST_BODY_BYTES_MAX`]); its dispatcher routes it with
//! [`routes::Router`], sets Spin's `spin-*` headers and hands it to the component's
//! `wasmtime_wasi_http::handler::ProxyHandler`, which reuses instances the way Spin 4.1
//! and `wasmtime serve` do. Each instance lives in a store made by [`state::new_store`]
//! (memory, table and resource limits, epoch yielding for the request deadline) on the
//! process-wide [`engine::engine`] (pooling allocator, compiled-component cache). Guests
//! reach key-value stores and variables through [`kv_host`] (bindings in [`bindings`],
//! from the vendored WIT in `wit/deps`) and the network through [`outbound_http`]
//! (allow-list, in-process service chaining, timeouts).
//!
//! Tests: build the guests (`cargo build --target wasm32-wasip2 --release -p guest-probe`),
//! then `cargo test -p spinpay-host --test runtime`.

pub mod blocked_networks;
pub mod kv;
pub mod manifest;
pub mod outbound;
pub mod routes;
pub mod runtime_config;
pub mod variables;

pub mod app;
pub mod bindings;
pub mod engine;
pub mod kv_host;
pub mod logging;
pub mod outbound_http;
pub mod outbound_network;
pub mod server;
pub mod state;
