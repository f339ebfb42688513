//! The Alipay side of the OpenAPI gateway (RSA2): `POST /gateway.do` with a signed form,
//! answered `{"<method>_response": {...}, "sign": "…"}` with the signature over the raw
//! response object; async notifications posted as signed forms to the notify URL.
//!
//! Magic values, besides the fault amounts of [`super::Fault::for_amount`]:
//!
//! * `alipay.trade.pay` with an `auth_code` starting `WAIT` (`code("WAIT")` in the
//!   channel tests) answers `10003` and leaves the trade `WAIT_BUYER_PAY`: the payer
//!   must confirm in the wallet, so the payment stays `processing`. The customer then
//!   confirms with [`AlipaySim::customer_pays`], or the merchant revokes it. Any other
//!   code pays at once (`10000`, `TRADE_SUCCESS`); with amount 601 it pays and answers
//!   too late, which leaves the payment `processing` with the money taken.
//!
//! `alipay.trade.cancel` (which plays no fault) revokes as Alipay documents it: an unpaid
//! trade is closed (`10000`, `action` `close`), a paid one has its money returned and is
//! closed (`action` `refund`, unless it was already partly refunded:
//! `ACQ.REASON_TRADE_REFUND_FEE_ERR`); a closed trade answers `10000` again with the
//! action that closed it; no trade at all answers `10000` without `action` (Alipay's
//! "no trade found"). What a cancel did is kept in [`Trade::revoked`] and the calls in
//! [`AlipaySim::call_count`]. A closed trade takes no money afterwards: a pay or
//! precreate for it answers `ACQ.TRADE_HAS_CLOSE`, and [`AlipaySim::customer_pays`]
//! pays nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use super::{
    Fault, KeyPair, PUBLIC_BASE_URL, SimRequest, SimResponse, Simulator, Webhook, field,
    form_decode, form_encode, listen, random_alnum, sorted_string,
};

/// The app id the app is configured with.
pub const APP_ID: &str = "2021000000000001";

/// One trade as Alipay keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    /// Alipay's trade number.
    pub trade_no: String,
    /// `total_amount` as sent ("12.50").
    pub total_amount: String,
    /// `WAIT_BUYER_PAY`, `TRADE_SUCCESS`, `TRADE_CLOSED`.
    pub status: String,
    /// The API that created it.
    pub api: String,
    /// Refund amounts per `out_request_no`.
    pub refunds: BTreeMap<String, String>,
    /// `time_expire` as Unix ms, if the order carried one.
    pub expires_at_ms: Option<i64>,
    /// precreate's `qr_code_timeout_express` as sent ("14m"), if any.
    pub qr_code_timeout_express: Option<String>,
    /// Whether Alipay has created the trade. A precreate only makes a QR code: the
    /// trade exists once the customer scans it; until then query and close answer
    /// `ACQ.TRADE_NOT_EXIST`, though the code can still be paid.
    pub created: bool,
    /// What `alipay.trade.cancel` did to it, if it revoked it: `close` (closed unpaid)
    /// or `refund` (paid, the money returned, then closed).
    pub revoked: Option<String>,
}

/// `time_expire` of a `biz_content` as Unix ms (a malformed one fails the test).
fn time_expire(biz: &Value) -> Option<i64> {
    let text = biz["time_expire"].as_str()?;
    Some(super::beijing_unix_ms(text).unwrap_or_else(|| panic!("time_expire {text:?}")))
}

/// The simulator.
#[derive(Debug)]
pub struct AlipaySim {
    ours: KeyPair,
    theirs: KeyPair,
    wrong: KeyPair,
    origin: OnceLock<String>,
    webhook: Arc<Webhook>,
    trades: Mutex<BTreeMap<String, Trade>>,
    /// Every call whose signature verified: `(method, out_trade_no)`.
    pub calls: Mutex<Vec<(String, String)>>,
}

/// "12.50" → 1250 (CNY, two decimals).
pub fn minor(total_amount: &str) -> i64 {
    let (units, cents) = total_amount.split_once('.').unwrap_or((total_amount, "00"));
    let units: i64 = units.parse().unwrap_or(-1);
    let cents: i64 = format!("{cents:0<2}")[..2].parse().unwrap_or(-1);
    units * 100 + cents
}

/// 1250 → "12.50".
pub fn major(amount_minor: i64) -> String {
    format!("{}.{:02}", amount_minor / 100, amount_minor % 100)
}

impl AlipaySim {
    /// Starts the simulator; `ours` is the app's key pair, `theirs` Alipay's.
    pub async fn start(ours: KeyPair, theirs: KeyPair, webhook: Arc<Webhook>) -> Arc<AlipaySim> {
        listen(AlipaySim {
            ours,
            theirs,
            wrong: KeyPair::generate(),
            origin: OnceLock::new(),
            webhook,
            trades: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(Vec::new()),
        })
        .await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> &str {
        self.origin.get().expect("started")
    }

    /// The app's variables pointing at this simulator.
    pub fn app_variables(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("alipay_origin".into(), self.origin().to_string()),
            ("alipay_app_id".into(), APP_ID.into()),
            ("alipay_private_key".into(), self.ours.private_pem()),
            ("alipay_public_key".into(), self.theirs.public_pem()),
        ])
    }

    /// The trade for our payment id.
    pub fn trade(&self, out_trade_no: &str) -> Option<Trade> {
        self.trades.lock().unwrap().get(out_trade_no).cloned()
    }

    /// How many verified calls of `method` were about `out_trade_no`.
    pub fn call_count(&self, method: &str, out_trade_no: &str) -> usize {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(m, o)| m == method && o == out_trade_no)
            .count()
    }
}

impl Simulator for AlipaySim {
    fn origin_cell(&self) -> &OnceLock<String> {
        &self.origin
    }

    async fn handle(self: Arc<Self>, req: SimRequest) -> SimResponse {
        if req.method != "POST" || req.path != "/gateway.do" {
            return SimResponse::new(404, "text/plain", "no such gateway path");
        }
        let form = form_decode(&req.body);
        let method = field(&form, "method").unwrap_or("").to_string();
        let refused = |sub: &str, msg: &str| {
            let obj = json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": sub, "sub_msg": msg});
            self.answer(&method, &obj, Fault::None)
        };
        let sign = field(&form, "sign").unwrap_or("");
        let canonical = sorted_string(&form, &["sign"]);
        if field(&form, "sign_type") != Some("RSA2")
            || !self.ours.verify_b64(canonical.as_bytes(), sign)
        {
            return refused(
                "isv.invalid-signature",
                "signature of the request does not verify",
            );
        }
        if field(&form, "app_id") != Some(APP_ID) {
            return refused("isv.invalid-app-id", "unknown app_id");
        }
        let biz: Value = match serde_json::from_str(field(&form, "biz_content").unwrap_or("")) {
            Ok(v) => v,
            Err(_) => return refused("isv.invalid-parameter", "biz_content is not JSON"),
        };
        let out_trade_no = biz["out_trade_no"].as_str().unwrap_or("").to_string();
        self.calls
            .lock()
            .unwrap()
            .push((method.clone(), out_trade_no.clone()));
        match method.as_str() {
            "alipay.trade.precreate" | "alipay.trade.pay" => {
                let notify = field(&form, "notify_url").unwrap_or("");
                assert_eq!(notify, format!("{PUBLIC_BASE_URL}/v1/webhooks/alipay"));
                self.create(&method, &biz).await
            }
            "alipay.trade.query" => self.query(&out_trade_no),
            "alipay.trade.close" => self.close(&out_trade_no),
            "alipay.trade.cancel" => self.cancel(&out_trade_no),
            "alipay.trade.refund" => self.refund(&biz).await,
            "alipay.trade.fastpay.refund.query" => self.refund_query(&biz),
            other => refused(
                "isv.invalid-method",
                &format!("method {other} not simulated"),
            ),
        }
    }
}

impl AlipaySim {
    /// Signs and sends an answer object, or plays the fault.
    fn answer(&self, method: &str, object: &Value, fault: Fault) -> SimResponse {
        let key = format!("{}_response", method.replace('.', "_"));
        let text = serde_json::to_string(object).expect("json");
        let signer = match fault {
            Fault::BadSignature => &self.wrong,
            _ => &self.theirs,
        };
        let sign = signer.sign_b64(text.as_bytes());
        match fault {
            Fault::ServerError => SimResponse::new(500, "text/html", "<html>500</html>"),
            Fault::Garbage => SimResponse::new(200, "text/html", "<html>gateway busy</html>"),
            _ => SimResponse::new(
                200,
                "application/json;charset=utf-8",
                format!("{{\"{key}\":{text},\"sign\":\"{sign}\"}}"),
            ),
        }
    }

    async fn create(&self, method: &str, biz: &Value) -> SimResponse {
        let out_trade_no = biz["out_trade_no"].as_str().unwrap_or("").to_string();
        let total = biz["total_amount"].as_str().unwrap_or("0").to_string();
        if self
            .trade(&out_trade_no)
            .is_some_and(|t| t.status == "TRADE_CLOSED")
        {
            let obj = json!({"code": "40004", "msg": "Business Failed",
                "sub_code": "ACQ.TRADE_HAS_CLOSE", "sub_msg": "trade has been closed"});
            return self.answer(method, &obj, Fault::None);
        }
        let fault = match Fault::for_amount(minor(&total)) {
            // A server error is passing: the first call about a trade fails with nothing
            // done, a later one (spinpay asking again) is served.
            Fault::ServerError if self.call_count(method, &out_trade_no) == 1 => {
                return self.answer(method, &json!({}), Fault::ServerError);
            }
            Fault::ServerError => Fault::None,
            other => other,
        };
        let waiting = biz["auth_code"]
            .as_str()
            .is_some_and(|c| c.starts_with("WAIT"));
        let paid_now = method == "alipay.trade.pay" && !waiting;
        let trade = Trade {
            trade_no: format!("2024{}", random_alnum(20)),
            total_amount: total.clone(),
            status: if paid_now {
                "TRADE_SUCCESS"
            } else {
                "WAIT_BUYER_PAY"
            }
            .into(),
            api: method.into(),
            refunds: BTreeMap::new(),
            expires_at_ms: time_expire(biz),
            qr_code_timeout_express: biz["qr_code_timeout_express"].as_str().map(String::from),
            created: method != "alipay.trade.precreate",
            revoked: None,
        };
        self.trades
            .lock()
            .unwrap()
            .insert(out_trade_no.clone(), trade.clone());
        if fault == Fault::NotifyFirst {
            let (status, body) = self.customer_pays(&out_trade_no).await;
            assert_eq!((status, body.as_str()), (200, "success"));
        }
        fault.stall().await;
        let mut obj = json!({
            "msg": "Success", "out_trade_no": out_trade_no, "trade_no": trade.trade_no,
        });
        if method == "alipay.trade.precreate" {
            obj["code"] = json!("10000");
            obj["qr_code"] = json!(format!("https://qr.alipay.com/bax{}", trade.trade_no));
        } else if waiting {
            obj["code"] = json!("10003");
            obj["msg"] = json!("order success pay inprocess");
        } else {
            obj["code"] = json!("10000");
            obj["total_amount"] = json!(total);
        }
        self.answer(method, &obj, fault)
    }

    fn query(&self, out_trade_no: &str) -> SimResponse {
        let method = "alipay.trade.query";
        let obj = match self.trade(out_trade_no).filter(|t| t.created) {
            Some(t) => json!({
                "code": "10000", "msg": "Success", "out_trade_no": out_trade_no,
                "trade_no": t.trade_no, "trade_status": t.status, "total_amount": t.total_amount,
            }),
            None => json!({
                "code": "40004", "msg": "Business Failed",
                "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "trade does not exist",
            }),
        };
        self.answer(method, &obj, Fault::None)
    }

    fn close(&self, out_trade_no: &str) -> SimResponse {
        let method = "alipay.trade.close";
        let mut trades = self.trades.lock().unwrap();
        let obj = match trades.get_mut(out_trade_no).filter(|t| t.created) {
            Some(t) if t.status == "WAIT_BUYER_PAY" => {
                t.status = "TRADE_CLOSED".into();
                json!({"code": "10000", "msg": "Success", "out_trade_no": out_trade_no, "trade_no": t.trade_no})
            }
            Some(_) => json!({
                "code": "40004", "msg": "Business Failed",
                "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "trade status is not closable",
            }),
            None => json!({
                "code": "40004", "msg": "Business Failed",
                "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "trade does not exist",
            }),
        };
        drop(trades);
        self.answer(method, &obj, Fault::None)
    }

    /// `alipay.trade.cancel`: revokes the trade (see the module documentation).
    fn cancel(&self, out_trade_no: &str) -> SimResponse {
        let method = "alipay.trade.cancel";
        let failed = |sub: &str, msg: &str| {
            json!({"code": "40004", "msg": "Business Failed", "sub_code": sub, "sub_msg": msg,
                   "out_trade_no": out_trade_no, "retry_flag": "N"})
        };
        let mut trades = self.trades.lock().unwrap();
        let obj = match trades.get_mut(out_trade_no).filter(|t| t.created) {
            Some(t) => {
                let action = match t.status.as_str() {
                    "WAIT_BUYER_PAY" => Ok("close"),
                    "TRADE_SUCCESS" if t.refunds.is_empty() => Ok("refund"),
                    "TRADE_SUCCESS" => Err(failed(
                        "ACQ.REASON_TRADE_REFUND_FEE_ERR",
                        "trade already refunded: it cannot be canceled",
                    )),
                    "TRADE_CLOSED" => Ok(if t.revoked.as_deref() == Some("refund") {
                        "refund"
                    } else {
                        "close"
                    }),
                    _ => Err(failed("ACQ.TRADE_STATUS_ERROR", "trade status error")),
                };
                match action {
                    Ok(action) => {
                        if t.status != "TRADE_CLOSED" {
                            t.status = "TRADE_CLOSED".into();
                            t.revoked = Some(action.into());
                        }
                        json!({"code": "10000", "msg": "Success", "out_trade_no": out_trade_no,
                               "trade_no": t.trade_no, "retry_flag": "N", "action": action})
                    }
                    Err(obj) => obj,
                }
            }
            None => json!({"code": "10000", "msg": "Success", "out_trade_no": out_trade_no,
                           "retry_flag": "N"}),
        };
        drop(trades);
        self.answer(method, &obj, Fault::None)
    }

    async fn refund(&self, biz: &Value) -> SimResponse {
        let method = "alipay.trade.refund";
        let out_trade_no = biz["out_trade_no"].as_str().unwrap_or("");
        let request_no = biz["out_request_no"].as_str().unwrap_or("").to_string();
        let amount = biz["refund_amount"].as_str().unwrap_or("0").to_string();
        let fault = match Fault::for_amount(minor(&amount)) {
            // Passing, as on create: only the first refund call about the trade fails.
            Fault::ServerError if self.call_count(method, out_trade_no) == 1 => {
                return self.answer(method, &json!({}), Fault::ServerError);
            }
            Fault::ServerError => Fault::None,
            other => other,
        };
        let obj = {
            let mut trades = self.trades.lock().unwrap();
            match trades.get_mut(out_trade_no) {
                Some(t) if t.status == "TRADE_SUCCESS" => {
                    let fund_change = if t.refunds.contains_key(&request_no) {
                        "N"
                    } else {
                        "Y"
                    };
                    let already: i64 = t.refunds.values().map(|a| minor(a)).sum();
                    if fund_change == "Y" && already + minor(&amount) > minor(&t.total_amount) {
                        json!({"code": "40004", "msg": "Business Failed",
                               "sub_code": "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "sub_msg": "too much"})
                    } else {
                        t.refunds.insert(request_no.clone(), amount.clone());
                        let total: i64 = t.refunds.values().map(|a| minor(a)).sum();
                        json!({"code": "10000", "msg": "Success", "out_trade_no": out_trade_no,
                               "trade_no": t.trade_no, "fund_change": fund_change,
                               "refund_fee": major(total)})
                    }
                }
                Some(_) | None => json!({"code": "40004", "msg": "Business Failed",
                    "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "trade is not refundable"}),
            }
        };
        fault.stall().await;
        self.answer(method, &obj, fault)
    }

    fn refund_query(&self, biz: &Value) -> SimResponse {
        let method = "alipay.trade.fastpay.refund.query";
        let out_trade_no = biz["out_trade_no"].as_str().unwrap_or("");
        let request_no = biz["out_request_no"].as_str().unwrap_or("");
        let obj = match self.trade(out_trade_no).filter(|t| t.created) {
            Some(t) => match t.refunds.get(request_no) {
                Some(amount) => json!({"code": "10000", "msg": "Success",
                    "out_trade_no": out_trade_no, "out_request_no": request_no,
                    "trade_no": t.trade_no, "refund_amount": amount,
                    "refund_status": "REFUND_SUCCESS"}),
                None => json!({"code": "10000", "msg": "Success",
                    "out_trade_no": out_trade_no, "trade_no": t.trade_no}),
            },
            None => json!({"code": "40004", "msg": "Business Failed",
                "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "trade does not exist"}),
        };
        self.answer(method, &obj, Fault::None)
    }

    /// The customer scans a QR code without paying: Alipay creates the trade, waiting.
    pub fn customer_scans(&self, out_trade_no: &str) {
        let mut trades = self.trades.lock().unwrap();
        trades
            .get_mut(out_trade_no)
            .expect("a QR code to scan")
            .created = true;
    }

    /// The customer pays a QR trade (scanning it first if need be), or confirms a pay
    /// waiting in the wallet: the trade succeeds and Alipay notifies; returns the
    /// webhook's answer. A closed trade (closed or revoked) takes no money: nothing
    /// changes, nothing is posted, and the answer is `(0, "trade closed …")`.
    pub async fn customer_pays(&self, out_trade_no: &str) -> (u16, String) {
        let total = {
            let mut trades = self.trades.lock().unwrap();
            let t = trades.get_mut(out_trade_no).expect("a trade to pay");
            if t.status == "TRADE_CLOSED" {
                return (0, "trade closed at Alipay: nothing paid".into());
            }
            t.created = true;
            t.status = "TRADE_SUCCESS".into();
            t.total_amount.clone()
        };
        let (status, body, _) = self.notify(out_trade_no, "TRADE_SUCCESS", &total, "").await;
        (status, body)
    }

    /// The customer opens an H5 redirect URL or an app order string: the simulator
    /// checks OUR signature on it, creates the trade, the customer pays, Alipay
    /// notifies. Returns the webhook's answer.
    pub async fn customer_pays_order(&self, order: &str) -> (u16, String) {
        let query = order.split_once('?').map_or(order, |(_, q)| q);
        let form = form_decode(query.as_bytes());
        let canonical = sorted_string(&form, &["sign"]);
        let sign = field(&form, "sign").unwrap_or("");
        assert!(
            self.ours.verify_b64(canonical.as_bytes(), sign),
            "the order string is not signed by the app's key: {order}"
        );
        assert_eq!(field(&form, "app_id"), Some(APP_ID));
        let biz: Value =
            serde_json::from_str(field(&form, "biz_content").expect("biz_content")).expect("json");
        let out_trade_no = biz["out_trade_no"]
            .as_str()
            .expect("out_trade_no")
            .to_string();
        let trade = Trade {
            trade_no: format!("2024{}", random_alnum(20)),
            total_amount: biz["total_amount"].as_str().expect("total").to_string(),
            status: "WAIT_BUYER_PAY".into(),
            api: field(&form, "method").unwrap_or("").to_string(),
            refunds: BTreeMap::new(),
            expires_at_ms: time_expire(&biz),
            qr_code_timeout_express: None,
            created: true,
            revoked: None,
        };
        self.trades
            .lock()
            .unwrap()
            .insert(out_trade_no.clone(), trade);
        self.customer_pays(&out_trade_no).await
    }

    /// Posts a notification saying `status` with `total_amount` about `out_trade_no`
    /// (signed with Alipay's key, or with a wrong one when `forge` is "forge"); returns
    /// the webhook's answer and the exact body sent.
    pub async fn notify(
        &self,
        out_trade_no: &str,
        status: &str,
        total_amount: &str,
        forge: &str,
    ) -> (u16, String, Vec<u8>) {
        let trade_no = self
            .trade(out_trade_no)
            .map(|t| t.trade_no)
            .unwrap_or_else(|| format!("2024{}", random_alnum(20)));
        let now = "2024-03-01 00:30:05".to_string();
        let mut fields: Vec<(String, String)> = [
            ("gmt_create", now.as_str()),
            ("charset", "utf-8"),
            ("notify_type", "trade_status_sync"),
            ("notify_time", now.as_str()),
            ("version", "1.0"),
            ("app_id", APP_ID),
            ("auth_app_id", APP_ID),
            ("trade_status", status),
            ("out_trade_no", out_trade_no),
            ("trade_no", trade_no.as_str()),
            ("total_amount", total_amount),
            ("receipt_amount", total_amount),
            ("buyer_id", "2088102122524333"),
            ("seller_id", "2088101117955611"),
            ("subject", "spinpay"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        fields.push(("notify_id".into(), random_alnum(32)));
        fields.push(("sign_type".into(), "RSA2".into()));
        let canonical = sorted_string(&fields, &["sign", "sign_type"]);
        let signer = if forge == "forge" {
            &self.wrong
        } else {
            &self.theirs
        };
        fields.push(("sign".into(), signer.sign_b64(canonical.as_bytes())));
        let body = form_encode(&fields).into_bytes();
        let (status, text) = self.post_raw(body.clone()).await;
        (status, text, body)
    }

    /// Posts `body` as an Alipay notification (a redelivery).
    pub async fn post_raw(&self, body: Vec<u8>) -> (u16, String) {
        let headers = [(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        self.webhook.post("alipay", &headers, body).await
    }
}
