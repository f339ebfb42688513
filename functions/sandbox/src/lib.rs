//! # sandbox: spinpay's simulated payment provider
//!
//! A Spin component that behaves like a real payment channel, on its own paths under
//! `/sandbox/`, so spinpay runs end to end without credentials: signed requests and
//! answers (`Sandbox-Signature`), QR codes / redirect URLs / app order strings a
//! developer "pays" with one curl call (`POST /sandbox/customer/pay`), signed
//! notifications to the notify URL spinpay gave, an SMS outbox for OTP tests, and magic
//! amounts and codes that select declines, timeouts, pending and garbage answers.
//! Protocol: docs/sandbox.md and `spinpay_channels::sandbox::wire`.
//!
//! [`sim`] holds every decision (pure, unit-tested natively); `handler` (wasm only)
//! does the HTTP, the signatures and the key-value store (label `sandbox`).
#![deny(missing_docs)]

#[cfg(target_arch = "wasm32")]
mod handler;
pub mod sim;
