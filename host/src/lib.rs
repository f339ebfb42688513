//! spinpay-host
