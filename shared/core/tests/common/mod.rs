//! Test harness: a simulated channel with the sandbox's magic amounts, and helpers.
#![allow(dead_code)]

pub mod hooked;

use std::cell::RefCell;
use std::collections::BTreeSet;

use spinpay_core::api::{
    BODY_BYTES_MAX, CreatePaymentRequest, NewPayment, NewRefund, PaymentResponse, parse_body,
};
use spinpay_core::crypto::Keyring;
use spinpay_core::error::ApiError;
use spinpay_core::model::{
    CancellationReason, CaptureMode, Merchant, NextAction, Payment, PaymentMethod, Refund,
};
use spinpay_core::repo::Repository;
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::{
    ActionOutcome, CLOSED_UNPAID_CODE, ChannelClient, ChannelOutcome, ChannelReport, Ctx,
    LocalRisk, Notifier, RefundOutcome, SweepReport, SweepRequest, authenticate, create_merchant,
    create_payment, sweep,
};

/// A channel that behaves like the sandbox: 666 declined, 777 timeout, 888 pending,
/// 999 garbage; qr_merchant / h5 / app wait for the customer; refunds of 666 fail and
/// of 888 stay pending.
#[derive(Default)]
pub struct SimChannel {
    /// Payments the "customer" has paid (query answers succeeded).
    pub paid: RefCell<BTreeSet<String>>,
    /// Refunds the channel has finished.
    pub refunds_done: RefCell<BTreeSet<String>>,
    /// SMS sent: (phone, text).
    pub sms: RefCell<Vec<(String, String)>>,
    /// Payments the channel has closed (a second close is refused, as Alipay does).
    pub closed: RefCell<BTreeSet<String>>,
    /// Closes (cancels) still to be left unanswered, as a timeout would: each call takes
    /// one, and the channel does nothing.
    pub cancels_unanswered: RefCell<u32>,
    /// Creates whose answer is still to be lost: each call takes one, the channel creates
    /// the order, and the answer is unknown.
    pub authorizes_unanswered: RefCell<u32>,
    /// Closes (cancels) still to be made but left unanswered, as a timeout after the
    /// channel acted would: each call takes one, the channel closes the payment, and the
    /// answer is unknown.
    pub closes_unanswered: RefCell<u32>,
    /// The code a query answers a closed payment with (`None`: [`CLOSED_UNPAID_CODE`]);
    /// WeChat Pay names a reversed code payment `trade_revoked`.
    pub closed_code: RefCell<Option<String>>,
    /// Every call to cancel (close), answered or not.
    pub cancel_calls: RefCell<u32>,
    /// Every call to query a payment.
    pub query_calls: RefCell<u32>,
    /// When set, SMS sending fails.
    pub sms_down: RefCell<bool>,
    /// The refund id of every call to refund, in order.
    pub refunded_ids: RefCell<Vec<String>>,
    /// The payment id of every call to authorize, in order. A real channel charges a
    /// payment id once however often it is asked (it deduplicates by it), and so does
    /// this one: its answer depends on the payment alone.
    pub authorized_ids: RefCell<Vec<String>>,
    /// [`Payment::engaged_at_ms`] of every payment asked to authorize, in order.
    pub authorized_dates: RefCell<Vec<i64>>,
    /// Every call to query a refund.
    pub refund_queries: RefCell<u32>,
    /// How long each query and close takes on [`sim_wall_clock`] (0: no time).
    pub call_ms: RefCell<i64>,
    /// When set, a query of an unpaid order that waits for its customer repeats what the
    /// customer is to do, as the sandbox's does (real channels' queries do not).
    pub queries_repeat_next_action: RefCell<bool>,
}

thread_local! {
    static SIM_WALL_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// The wall clock of this thread's [`SimChannel`]s: each query and close moves it on by
/// the channel's `call_ms` (a slow channel), nothing else does.
pub fn sim_wall_clock() -> i64 {
    SIM_WALL_MS.with(std::cell::Cell::get)
}

impl SimChannel {
    /// Moves [`sim_wall_clock`] on by one call's time.
    fn spend_call(&self) {
        let ms = *self.call_ms.borrow();
        SIM_WALL_MS.with(|t| t.set(t.get() + ms));
    }

    /// How many times the channel was asked to authorize (charge).
    pub fn authorizations(&self) -> usize {
        self.authorized_ids.borrow().len()
    }

    /// The distinct payment ids the channel was asked to authorize: the charges made.
    pub fn charged(&self) -> BTreeSet<String> {
        self.authorized_ids.borrow().iter().cloned().collect()
    }

    /// The answer to a payment: by its amount (the magic ones), else by its method.
    fn decide(p: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        let channel_ref = Some(format!("ch_{}", p.id));
        match p.state.amount_minor {
            666 => {
                return ChannelOutcome::Declined {
                    code: "insufficient_funds".into(),
                    message: "Insufficient funds".into(),
                };
            }
            777 => {
                return ChannelOutcome::Unknown {
                    detail: "timeout".into(),
                };
            }
            999 => {
                return ChannelOutcome::Unknown {
                    detail: "garbage".into(),
                };
            }
            888 => {
                return ChannelOutcome::Pending {
                    channel_ref,
                    next_action: None,
                };
            }
            _ => {}
        }
        Self::by_method(p, method)
    }

    /// The answer to a payment whose amount is not a magic one: by its method.
    fn by_method(p: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        let channel_ref = Some(format!("ch_{}", p.id));
        let next_action = match method {
            PaymentMethod::QrMerchant => Some(NextAction::DisplayQr {
                qr_payload: format!("sandbox://pay/{}", p.id),
            }),
            PaymentMethod::H5 { .. } => Some(NextAction::Redirect {
                url: format!("http://127.0.0.1/sandbox/h5/{}", p.id),
            }),
            PaymentMethod::App => Some(NextAction::AppOrder {
                order_string: format!("order={}", p.id),
            }),
            _ => None,
        };
        if next_action.is_some() {
            return ChannelOutcome::Pending {
                channel_ref,
                next_action,
            };
        }
        match p.capture {
            CaptureMode::Automatic => ChannelOutcome::Succeeded { channel_ref },
            CaptureMode::Manual => ChannelOutcome::Authorized { channel_ref },
        }
    }

    /// The answer to a refund: by its amount (the magic ones), else succeeded.
    fn refund_answer(r: &Refund) -> RefundOutcome {
        match r.amount_minor {
            666 => RefundOutcome::Failed {
                code: "refund_refused".into(),
                message: "no".into(),
            },
            888 => RefundOutcome::Pending { channel_ref: None },
            777 => RefundOutcome::Unknown {
                detail: "timeout".into(),
            },
            _ => RefundOutcome::Succeeded {
                channel_ref: Some(format!("rf_{}", r.id)),
            },
        }
    }

    pub fn last_otp(&self) -> String {
        let sms = self.sms.borrow();
        let (_, text) = sms.last().expect("an SMS was sent");
        text.rsplit(' ').next().unwrap().to_string()
    }
}

impl ChannelClient for SimChannel {
    async fn authorize(&self, p: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        self.authorized_ids.borrow_mut().push(p.id.clone());
        self.authorized_dates.borrow_mut().push(p.engaged_at_ms());
        let mut unanswered = self.authorizes_unanswered.borrow_mut();
        if *unanswered > 0 {
            *unanswered -= 1;
            return ChannelOutcome::Unknown {
                detail: "timed out".into(),
            };
        }
        Self::decide(p, method)
    }

    async fn capture(&self, _p: &Payment, _amount_minor: i64) -> ActionOutcome {
        ActionOutcome::Done
    }

    async fn cancel(&self, p: &Payment) -> ActionOutcome {
        self.spend_call();
        *self.cancel_calls.borrow_mut() += 1;
        let mut unanswered = self.cancels_unanswered.borrow_mut();
        if *unanswered > 0 {
            *unanswered -= 1;
            return ActionOutcome::Unknown {
                detail: "timed out".into(),
            };
        }
        drop(unanswered);
        if self.paid.borrow().contains(&p.id) {
            return ActionOutcome::Declined {
                code: "already_paid".into(),
                message: "paid".into(),
            };
        }
        if !self.closed.borrow_mut().insert(p.id.clone()) {
            return ActionOutcome::Declined {
                code: "trade_status_error".into(),
                message: "the trade cannot be closed".into(),
            };
        }
        let mut lost = self.closes_unanswered.borrow_mut();
        if *lost > 0 {
            *lost -= 1;
            return ActionOutcome::Unknown {
                detail: "timed out after closing".into(),
            };
        }
        ActionOutcome::Done
    }

    async fn query(&self, p: &Payment) -> ChannelReport {
        self.spend_call();
        *self.query_calls.borrow_mut() += 1;
        let seen = self.authorized_ids.borrow().contains(&p.id);
        let outcome = if !seen {
            // As the sandbox: `payment_not_found` may mean a create still in flight.
            ChannelOutcome::Unknown {
                detail: "payment_not_found".into(),
            }
        } else if self.paid.borrow().contains(&p.id) {
            ChannelOutcome::Succeeded { channel_ref: None }
        } else if self.closed.borrow().contains(&p.id) {
            let code = self.closed_code.borrow().clone();
            ChannelOutcome::Declined {
                code: code.unwrap_or_else(|| CLOSED_UNPAID_CODE.into()),
                message: "closed".into(),
            }
        } else {
            // What it answered when asked (the masked method has the kind), except that
            // an answer lost on the way (timeout, garbage) is a payment still pending, and
            // that, as a real channel's query (WeChat Pay `NOTPAY`, Alipay
            // `WAIT_BUYER_PAY`), it says an unpaid order is pending without repeating
            // what the customer is to do.
            match Self::decide(p, &p.method) {
                ChannelOutcome::Unknown { .. } | ChannelOutcome::Pending { .. }
                    if *self.queries_repeat_next_action.borrow() =>
                {
                    Self::by_method(p, &p.method)
                }
                ChannelOutcome::Unknown { .. } | ChannelOutcome::Pending { .. } => {
                    ChannelOutcome::Pending {
                        channel_ref: None,
                        next_action: None,
                    }
                }
                known => known,
            }
        };
        ChannelReport {
            outcome,
            amount_minor: Some(p.state.amount_minor),
            currency: Some(p.currency.code().to_string()),
        }
    }

    async fn refund(&self, _p: &Payment, r: &Refund) -> RefundOutcome {
        self.refunded_ids.borrow_mut().push(r.id.clone());
        Self::refund_answer(r)
    }

    async fn query_refund(&self, _p: &Payment, r: &Refund) -> RefundOutcome {
        self.spend_call();
        *self.refund_queries.borrow_mut() += 1;
        if !self.refunded_ids.borrow().contains(&r.id) {
            // As the sandbox: `refund_not_found`.
            return RefundOutcome::Unknown {
                detail: "refund_not_found".into(),
            };
        }
        if self.refunds_done.borrow().contains(&r.id) {
            return RefundOutcome::Succeeded { channel_ref: None };
        }
        // What it answered when asked, an answer lost on the way being still pending.
        match Self::refund_answer(r) {
            RefundOutcome::Unknown { .. } => RefundOutcome::Pending { channel_ref: None },
            known => known,
        }
    }

    async fn send_sms(&self, phone: &str, text: &str) -> Result<(), String> {
        if *self.sms_down.borrow() {
            return Err("sms provider down".into());
        }
        self.sms.borrow_mut().push((phone.into(), text.into()));
        Ok(())
    }
}

/// The reason a merchant's own cancel gives.
pub const BY_MERCHANT: CancellationReason = CancellationReason::RequestedByMerchant;

pub fn keyring() -> Keyring {
    Keyring::new(1, [42; 32])
}

/// A context over `repo` (the memory repository or a wrapper around it) at `now_ms`.
pub fn ctx<'a, R: Repository>(repo: &'a R, keys: &'a Keyring, now_ms: i64) -> Ctx<'a, R> {
    Ctx { repo, keys, now_ms }
}

/// Creates a merchant and returns it with its secret key.
pub async fn merchant<R: Repository>(c: &Ctx<'_, R>, rng: &mut SplitMix64) -> (Merchant, String) {
    let req = spinpay_core::api::NewMerchant {
        name: "Coffee".into(),
        notify_url: None,
        default_capture: CaptureMode::Automatic,
    };
    let created = create_merchant(c, rng, req).await.unwrap();
    let header = format!("Bearer {}", created.secret_key);
    let m = authenticate(c, Some(&header)).await.unwrap();
    (m, created.secret_key)
}

/// Parses and validates a create-payment body.
pub fn new_payment(body: &str) -> NewPayment {
    parse_body::<CreatePaymentRequest>(body.as_bytes(), BODY_BYTES_MAX)
        .unwrap()
        .validate(CaptureMode::Automatic)
        .unwrap()
}

/// A body with the given amount, method JSON and extra fields.
pub fn body(amount_minor: i64, method: &str, extra: &str) -> String {
    format!(
        r#"{{"amount_minor":{amount_minor},"currency":"CNY","channel":"sandbox","method":{method}{extra}}}"#
    )
}

/// Creates a payment from a create-payment `body` for `m`, with the local risk engine.
pub async fn pay_body<R: Repository>(
    c: &Ctx<'_, R>,
    ch: &SimChannel,
    rng: &mut SplitMix64,
    m: &Merchant,
    body: &str,
) -> Result<PaymentResponse, ApiError> {
    create_payment(c, ch, &LocalRisk::default(), rng, m, new_payment(body)).await
}

/// Creates a CNY sandbox payment of `amount_minor` by `method` (JSON) for `m`.
pub async fn pay<R: Repository>(
    c: &Ctx<'_, R>,
    ch: &SimChannel,
    rng: &mut SplitMix64,
    m: &Merchant,
    amount_minor: i64,
    method: &str,
) -> Result<PaymentResponse, ApiError> {
    pay_body(c, ch, rng, m, &body(amount_minor, method, "")).await
}

/// A refund request of `amount_minor` without reason or merchant refund id.
pub fn refund_of(amount_minor: i64) -> NewRefund {
    NewRefund {
        amount_minor: Some(amount_minor),
        reason: None,
        merchant_refund_id: None,
    }
}

/// A notifier that is never called: for sweeps of merchants without a notify URL.
pub struct NoEndpoint;

impl Notifier for NoEndpoint {
    async fn post(&self, url: &str, _: &[(String, String)], _: &[u8]) -> Result<u16, String> {
        panic!("unexpected notification to {url}")
    }
    fn now_unix_s(&self) -> i64 {
        0
    }
}

/// One sweep of every merchant whose schedule clock is `schedule_ms` and wall clock
/// `wall_ms`, with no notify URL anywhere.
pub async fn sweep_at<R: Repository>(
    repo: &R,
    schedule_ms: i64,
    wall_ms: i64,
) -> Result<SweepReport, ApiError> {
    let keys = keyring();
    let c = ctx(repo, &keys, schedule_ms);
    let req = SweepRequest {
        wall_clock_ms: Some(wall_ms),
        ..SweepRequest::default()
    };
    sweep(&c, &NoEndpoint, &req).await
}
