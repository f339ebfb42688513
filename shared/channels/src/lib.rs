//! # spinpay-channels: payment channel adapters
//!
//! Each channel is two parts (the Hyperswitch connector shape): pure `transformers`
//! that build signed requests and parse answers and notifications into the core's
//! outcomes (unit-tested without HTTP), and thin wiring that implements the core's
//! `ChannelClient` with `spinpay-guest`'s outbound helper. An answer that cannot be
//! trusted or understood is an *unknown* outcome: the payment stays `processing` until a
//! query or a notification decides, never guessed.
//!
//! Channels: [`sandbox`] (the simulated provider served by the `sandbox` component),
//! [`alipay`] (RSA2), [`wechatpay`] (API v3) and [`unionpay`] (ACP 5.1.0), the protocol
//! halves verified against the channels' own SDKs in `tests/interop.rs`. Each real
//! channel is configured from Spin variables ([`wiring`]); [`dispatch::Channels`] hands
//! every call to the adapter of the payment's channel, and one-time codes to the SMS
//! provider `sms_provider` names ([`twilio`], or the sandbox's inbox).
#![deny(missing_docs)]

pub mod alipay;
mod crypto;
pub mod dispatch;
pub mod sandbox;
pub mod twilio;
pub mod unionpay;
pub mod wechatpay;
pub mod wiring;
