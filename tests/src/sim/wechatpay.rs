//! The WeChat Pay API v3 side: JSON requests whose `Authorization:
//! WECHATPAY2-SHA256-RSA2048 …` header is verified with the merchant's public key,
//! answers signed with the platform key (`Wechatpay-Timestamp/Nonce/Signature/Serial`
//! over `timestamp\nnonce\nbody\n`), and callbacks whose `resource` is encrypted with
//! AEAD_AES_256_GCM under the APIv3 key.
//!
//! Magic values, besides the amounts of [`Fault::for_amount`] (which play on the
//! orders' create and refund calls, never on a reverse):
//! * a codepay whose `auth_code` starts with `WAIT` is answered `USERPAYING` and its
//!   order waits, neither paid nor closed, until [`WechatpaySim::customer_pays`] or a
//!   reverse;
//! * one starting with `WAITBUSY` waits the same way, and the first reverse of its
//!   order answers 500 `SYSTEM_ERROR` having done nothing (the next ones behave).
//!
//! Reverse (`POST …/out-trade-no/{id}/reverse`, codepay only) behaves as WeChat Pay
//! documents it: an unpaid or `USERPAYING` order is revoked, a paid one is refunded in
//! full and revoked (trade state `REVOKED` either way; [`Order::reversed_from`] keeps
//! what it was), answered 200 with the order's `appid`, `mchid` and `out_trade_no`. A
//! repeat is answered the same, whatever the order's age (WeChat Pay tells callers to
//! reverse again when unsure, so a second reverse must be harmless); an order older
//! than 7 days is refused `REVERSE_EXPIRE` ([`WechatpaySim::backdate`] ages one); no
//! order is 404 `ORDER_NOT_EXIST`. [`WechatpaySim::reverses`] counts the reverse calls
//! about an order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{
    Fault, KeyPair, PUBLIC_BASE_URL, SimRequest, SimResponse, Simulator, Webhook, listen,
    random_alnum,
};
use crate::now_unix_s;

/// The wall clock, Unix ms.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit i64")
}

/// The merchant id.
pub const MCHID: &str = "1900000109";
/// The AppID.
pub const APPID: &str = "wxd678efh567hg6787";
/// Serial of the merchant certificate (in our Authorization header).
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72";
/// The platform key id.
pub const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000001";
/// The id of the platform key being retired (configured too: a rotation in progress).
pub const RETIRING_SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000000";
/// The APIv3 key.
pub const APIV3_KEY: &str = "0123456789abcdef0123456789ABCDEF";

/// One order as WeChat Pay keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// WeChat Pay's id.
    pub transaction_id: String,
    /// `total` in fen.
    pub total: i64,
    /// `NOTPAY`, `USERPAYING`, `SUCCESS`, `CLOSED`, `REFUND`, `REVOKED` (reversed).
    pub trade_state: String,
    /// The product path (`native`, `codepay`, `h5`, `app`).
    pub product: String,
    /// Refunds: out_refund_no → (amount, status).
    pub refunds: BTreeMap<String, (i64, String)>,
    /// `time_expire` as Unix ms, if the order carried one.
    pub expires_at_ms: Option<i64>,
    /// When WeChat Pay created it (Unix ms): a reverse is refused 7 days later.
    pub created_at_ms: i64,
    /// The trade state a reverse found and revoked (`SUCCESS` or `REFUND`: the rest of
    /// its money went back to the payer); `None` until a reverse revoked it.
    pub reversed_from: Option<String>,
    /// Reverses still to be answered 500 `SYSTEM_ERROR` without effect (1 for a
    /// `WAITBUSY…` code, else 0).
    pub reverse_failures_left: u32,
}

/// How long after its creation WeChat Pay reverses a codepay (later: refund API).
pub const REVERSE_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// How a callback is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// Signed with the platform key, timestamp now.
    Genuine,
    /// Signed with a key that is not the platform's.
    Forged,
    /// Genuine but ten minutes old (outside the 5-minute window).
    Stale,
    /// Signed with the platform key being retired (its serial is configured as well).
    Retiring,
}

/// The simulator.
#[derive(Debug)]
pub struct WechatpaySim {
    ours: KeyPair,
    platform: KeyPair,
    retiring: KeyPair,
    wrong: KeyPair,
    origin: OnceLock<String>,
    webhook: Arc<Webhook>,
    orders: Mutex<BTreeMap<String, Order>>,
    /// Every call whose signature verified: `(method, path)`.
    pub calls: Mutex<Vec<(String, String)>>,
}

impl WechatpaySim {
    /// Starts the simulator; `ours` is the merchant key pair, `platform` WeChat Pay's.
    pub async fn start(
        ours: KeyPair,
        platform: KeyPair,
        webhook: Arc<Webhook>,
    ) -> Arc<WechatpaySim> {
        listen(WechatpaySim {
            ours,
            platform,
            retiring: KeyPair::generate(),
            wrong: KeyPair::generate(),
            origin: OnceLock::new(),
            webhook,
            orders: Mutex::new(BTreeMap::new()),
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
            ("wechatpay_origin".into(), self.origin().to_string()),
            ("wechatpay_mchid".into(), MCHID.into()),
            ("wechatpay_appid".into(), APPID.into()),
            ("wechatpay_serial_no".into(), MERCHANT_SERIAL.into()),
            ("wechatpay_private_key".into(), self.ours.private_pem()),
            (
                "wechatpay_platform_serial".into(),
                format!("{RETIRING_SERIAL},{PLATFORM_SERIAL}"),
            ),
            (
                "wechatpay_platform_public_key".into(),
                format!(
                    "{}{}",
                    self.retiring.public_pem(),
                    self.platform.public_pem()
                ),
            ),
            ("wechatpay_apiv3_key".into(), APIV3_KEY.into()),
        ])
    }

    /// The order for our payment id.
    pub fn order(&self, out_trade_no: &str) -> Option<Order> {
        self.orders.lock().unwrap().get(out_trade_no).cloned()
    }

    /// How many verified reverse calls named this order.
    pub fn reverses(&self, out_trade_no: &str) -> usize {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/reverse");
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(method, p)| method == "POST" && *p == path)
            .count()
    }

    /// Makes an order `by_ms` older (to reach the end of its reverse window).
    pub fn backdate(&self, out_trade_no: &str, by_ms: i64) {
        let mut orders = self.orders.lock().unwrap();
        let o = orders.get_mut(out_trade_no).expect("an order to backdate");
        o.created_at_ms -= by_ms;
    }

    /// Checks the `Authorization` header over `METHOD\nURL\nts\nnonce\nbody\n`.
    fn verify_request(&self, req: &SimRequest) -> Result<(), String> {
        let auth = req.header("authorization").ok_or("no Authorization")?;
        let params = auth
            .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
            .ok_or("wrong scheme")?;
        let mut map = BTreeMap::new();
        for part in params.split(',') {
            let (k, v) = part.split_once('=').ok_or("bad parameter")?;
            map.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
        }
        let get = |k: &str| map.get(k).cloned().ok_or(format!("no {k}"));
        if get("mchid")? != MCHID || get("serial_no")? != MERCHANT_SERIAL {
            return Err("wrong mchid or serial_no".into());
        }
        let ts: i64 = get("timestamp")?.parse().map_err(|_| "bad timestamp")?;
        if (now_unix_s() - ts).abs() > 300 {
            return Err("stale request".into());
        }
        let body = String::from_utf8_lossy(&req.body);
        let message = format!(
            "{}\n{}\n{ts}\n{}\n{body}\n",
            req.method,
            req.path,
            get("nonce_str")?
        );
        if !self.ours.verify_b64(message.as_bytes(), &get("signature")?) {
            return Err("signature does not verify".into());
        }
        Ok(())
    }

    /// Headers WeChat Pay signs a message with.
    fn signed_headers(&self, body: &[u8], signing: Signing) -> Vec<(String, String)> {
        let ts = match signing {
            Signing::Stale => now_unix_s() - 600,
            Signing::Genuine | Signing::Forged | Signing::Retiring => now_unix_s(),
        };
        let nonce = random_alnum(32);
        let mut message = format!("{ts}\n{nonce}\n").into_bytes();
        message.extend_from_slice(body);
        message.push(b'\n');
        let (signer, serial) = match signing {
            Signing::Forged => (&self.wrong, PLATFORM_SERIAL),
            Signing::Retiring => (&self.retiring, RETIRING_SERIAL),
            Signing::Genuine | Signing::Stale => (&self.platform, PLATFORM_SERIAL),
        };
        vec![
            ("wechatpay-timestamp".into(), ts.to_string()),
            ("wechatpay-nonce".into(), nonce),
            ("wechatpay-signature".into(), signer.sign_b64(&message)),
            ("wechatpay-serial".into(), serial.into()),
            (
                "wechatpay-signature-type".into(),
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
            ("content-type".into(), "application/json".into()),
        ]
    }

    /// A signed answer, or the fault.
    fn answer(&self, status: u16, body: &Value, fault: Fault) -> SimResponse {
        let text = if status == 204 {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        match fault {
            Fault::ServerError => {
                let b = json!({"code": "SYSTEM_ERROR", "message": "system busy"});
                SimResponse::new(500, "application/json", b.to_string())
            }
            Fault::Garbage => SimResponse::new(200, "text/html", "<html>upstream error</html>"),
            Fault::Unsigned => SimResponse::new(status, "application/json", text),
            Fault::BadSignature => SimResponse {
                status,
                headers: self.signed_headers(&text, Signing::Forged),
                body: text,
            },
            Fault::None | Fault::Timeout | Fault::NotifyFirst => SimResponse {
                status,
                headers: self.signed_headers(&text, Signing::Genuine),
                body: text,
            },
        }
    }

    fn error(&self, status: u16, code: &str, message: &str) -> SimResponse {
        self.answer(
            status,
            &json!({"code": code, "message": message}),
            Fault::None,
        )
    }
}

impl Simulator for WechatpaySim {
    fn origin_cell(&self) -> &OnceLock<String> {
        &self.origin
    }

    async fn handle(self: Arc<Self>, req: SimRequest) -> SimResponse {
        if let Err(e) = self.verify_request(&req) {
            return self.error(401, "SIGN_ERROR", &e);
        }
        self.calls
            .lock()
            .unwrap()
            .push((req.method.clone(), req.path.clone()));
        let path = req.path.split('?').next().unwrap_or("").to_string();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["v3", "pay", "transactions", product]) => {
                let product = (*product).to_string();
                self.prepay(&product, &body).await
            }
            ("GET", ["v3", "pay", "transactions", "out-trade-no", id]) => {
                let mchid_ok = req.path.ends_with(&format!("?mchid={MCHID}"));
                if !mchid_ok {
                    return self.error(400, "PARAM_ERROR", "mchid query parameter");
                }
                match self.order(id) {
                    Some(o) => self.answer(200, &transaction(id, &o), Fault::None),
                    None => self.error(404, "ORDER_NOT_EXIST", "order does not exist"),
                }
            }
            ("POST", ["v3", "pay", "transactions", "out-trade-no", id, "close"]) => {
                self.close(id, &body)
            }
            ("POST", ["v3", "pay", "transactions", "out-trade-no", id, "reverse"]) => {
                self.reverse(id, &body)
            }
            ("POST", ["v3", "refund", "domestic", "refunds"]) => self.refund(&body).await,
            ("GET", ["v3", "refund", "domestic", "refunds", id]) => self.refund_query(id),
            _ => self.error(404, "NOT_FOUND", "no such API"),
        }
    }
}

impl WechatpaySim {
    async fn prepay(self: &Arc<Self>, product: &str, body: &Value) -> SimResponse {
        if body["mchid"] != MCHID || body["appid"] != APPID {
            return self.error(400, "APPID_MCHID_NOT_MATCH", "appid and mchid do not match");
        }
        if product != "codepay" {
            let notify = format!("{PUBLIC_BASE_URL}/v1/webhooks/wechatpay");
            assert_eq!(body["notify_url"], json!(notify), "{body}");
        } else if !body["scene_info"]["store_info"]["out_id"].is_string()
            || !body["scene_info"]["payer_client_ip"].is_null()
        {
            // Codepay requires scene_info with the store; the till's IP is device_ip.
            return self.error(
                400,
                "PARAM_ERROR",
                "scene_info.store_info.out_id is required",
            );
        }
        let id = body["out_trade_no"].as_str().unwrap_or("").to_string();
        let total = body["amount"]["total"].as_i64().unwrap_or(0);
        let fault = Fault::for_amount(total);
        if fault == Fault::ServerError {
            return self.answer(500, &json!({}), fault);
        }
        let auth_code = body["payer"]["auth_code"].as_str().unwrap_or("");
        let waiting = auth_code.starts_with("WAIT");
        let state = match product {
            "codepay" if waiting => "USERPAYING",
            "codepay" => "SUCCESS",
            _ => "NOTPAY",
        };
        let order = Order {
            transaction_id: format!("4200{}", random_alnum(24)),
            total,
            trade_state: state.into(),
            product: product.into(),
            refunds: BTreeMap::new(),
            expires_at_ms: body["time_expire"]
                .as_str()
                .map(|t| super::beijing_unix_ms(t).unwrap_or_else(|| panic!("time_expire {t:?}"))),
            created_at_ms: now_ms(),
            reversed_from: None,
            reverse_failures_left: u32::from(auth_code.starts_with("WAITBUSY")),
        };
        self.orders
            .lock()
            .unwrap()
            .insert(id.clone(), order.clone());
        if fault == Fault::NotifyFirst {
            let (status, text) = self.customer_pays(&id).await;
            assert_eq!(status, 204, "{text}");
        }
        fault.stall().await;
        let answer = match product {
            "native" => {
                json!({"code_url": format!("weixin://wxpay/bizpayurl?pr={}", random_alnum(7))})
            }
            "h5" => json!({"h5_url": format!(
                "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx{}&package=1",
                random_alnum(20))}),
            "app" => json!({"prepay_id": format!("wx{}", random_alnum(28))}),
            _ => transaction(&id, &order),
        };
        self.answer(200, &answer, fault)
    }

    fn close(&self, id: &str, body: &Value) -> SimResponse {
        if body["mchid"] != MCHID {
            return self.error(400, "PARAM_ERROR", "mchid");
        }
        let mut orders = self.orders.lock().unwrap();
        match orders.get_mut(id) {
            Some(o) if o.trade_state == "SUCCESS" => {
                drop(orders);
                self.error(400, "ORDERPAID", "the order is paid")
            }
            Some(o) => {
                o.trade_state = "CLOSED".into();
                drop(orders);
                self.answer(204, &Value::Null, Fault::None)
            }
            None => {
                drop(orders);
                self.error(404, "ORDER_NOT_EXIST", "order does not exist")
            }
        }
    }

    /// `POST …/out-trade-no/{id}/reverse` (see the module doc).
    fn reverse(&self, id: &str, body: &Value) -> SimResponse {
        if body["mchid"] != MCHID || body["appid"] != APPID {
            return self.error(400, "PARAM_ERROR", "appid and mchid are required");
        }
        let mut orders = self.orders.lock().unwrap();
        let Some(o) = orders.get_mut(id) else {
            drop(orders);
            return self.error(404, "ORDER_NOT_EXIST", "order does not exist");
        };
        if o.product != "codepay" {
            // Not documented: the simulator's guard against reversing other products.
            drop(orders);
            return self.error(400, "INVALID_REQUEST", "only a codepay can be reversed");
        }
        if o.reverse_failures_left > 0 {
            o.reverse_failures_left -= 1;
            drop(orders);
            return self.error(500, "SYSTEM_ERROR", "system busy");
        }
        let revoked = o.trade_state == "REVOKED";
        if !revoked && now_ms() - o.created_at_ms > REVERSE_WINDOW_MS {
            drop(orders);
            return self.error(400, "REVERSE_EXPIRE", "too old to reverse: refund it");
        }
        match o.trade_state.as_str() {
            // A repeat: nothing more to do, answered as the first.
            "REVOKED" => {}
            "SUCCESS" | "REFUND" => {
                let refunded: i64 = o.refunds.values().map(|(a, _)| a).sum();
                let rest = o.total - refunded;
                o.refunds
                    .insert(format!("reverse-{id}"), (rest, "SUCCESS".into()));
                o.reversed_from = Some(o.trade_state.clone());
                o.trade_state = "REVOKED".into();
            }
            other => {
                o.reversed_from = Some(other.to_string());
                o.trade_state = "REVOKED".into();
            }
        }
        drop(orders);
        let answer = json!({"appid": APPID, "mchid": MCHID, "out_trade_no": id});
        self.answer(200, &answer, Fault::None)
    }

    async fn refund(self: &Arc<Self>, body: &Value) -> SimResponse {
        let id = body["out_trade_no"].as_str().unwrap_or("").to_string();
        let refund_no = body["out_refund_no"].as_str().unwrap_or("").to_string();
        let amount = body["amount"]["refund"].as_i64().unwrap_or(0);
        let fault = Fault::for_amount(amount);
        if fault == Fault::ServerError {
            return self.answer(500, &json!({}), fault);
        }
        let answer = {
            let mut orders = self.orders.lock().unwrap();
            let Some(o) = orders.get_mut(&id) else {
                drop(orders);
                return self.error(404, "RESOURCE_NOT_EXISTS", "order does not exist");
            };
            if !o.refunds.contains_key(&refund_no) {
                let already: i64 = o.refunds.values().map(|(a, _)| a).sum();
                if already + amount > o.total || body["amount"]["total"] != json!(o.total) {
                    drop(orders);
                    return self.error(400, "NOT_ENOUGH", "refund exceeds the order");
                }
                o.refunds
                    .insert(refund_no.clone(), (amount, "PROCESSING".into()));
                o.trade_state = "REFUND".into();
            }
            refund_json(&id, o, &refund_no)
        };
        let sim = self.clone();
        let (id2, no2) = (id.clone(), refund_no.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sim.refund_succeeds(&id2, &no2).await;
        });
        fault.stall().await;
        self.answer(200, &answer, fault)
    }

    fn refund_query(&self, refund_no: &str) -> SimResponse {
        let orders = self.orders.lock().unwrap();
        let found = orders
            .iter()
            .find(|(_, o)| o.refunds.contains_key(refund_no))
            .map(|(id, o)| refund_json(id, o, refund_no));
        drop(orders);
        match found {
            Some(r) => self.answer(200, &r, Fault::None),
            None => self.error(404, "RESOURCE_NOT_EXISTS", "refund does not exist"),
        }
    }

    /// The refund settles at WeChat Pay and a REFUND.SUCCESS callback is sent.
    async fn refund_succeeds(&self, id: &str, refund_no: &str) -> (u16, String) {
        let plain = {
            let mut orders = self.orders.lock().unwrap();
            let o = orders.get_mut(id).expect("order");
            if let Some(r) = o.refunds.get_mut(refund_no) {
                r.1 = "SUCCESS".into();
            }
            let mut r = refund_json(id, o, refund_no);
            r["refund_status"] = r["status"].clone();
            r
        };
        let (status, text, headers, body) = self
            .send_callback("REFUND.SUCCESS", "refund", &plain, Signing::Genuine)
            .await;
        if (200..300).contains(&status) {
            return (status, text);
        }
        // Not acknowledged: WeChat Pay sends the same callback again.
        self.webhook.deliver("wechatpay", &headers, body).await
    }

    /// The customer pays: the order succeeds and WeChat Pay calls back; returns the
    /// webhook's answer.
    pub async fn customer_pays(&self, out_trade_no: &str) -> (u16, String) {
        let total = {
            let mut orders = self.orders.lock().unwrap();
            let o = orders.get_mut(out_trade_no).expect("an order to pay");
            o.trade_state = "SUCCESS".into();
            o.total
        };
        let (status, text, _, _) = self
            .callback(out_trade_no, "SUCCESS", total, Signing::Genuine)
            .await;
        (status, text)
    }

    /// A TRANSACTION callback saying `trade_state` with `total`; returns the webhook's
    /// answer, the headers and the exact body sent.
    pub async fn callback(
        &self,
        out_trade_no: &str,
        trade_state: &str,
        total: i64,
        signing: Signing,
    ) -> (u16, String, Vec<(String, String)>, Vec<u8>) {
        let mut order = self.order(out_trade_no).unwrap_or(Order {
            transaction_id: format!("4200{}", random_alnum(24)),
            total,
            trade_state: trade_state.into(),
            product: "native".into(),
            refunds: BTreeMap::new(),
            expires_at_ms: None,
            created_at_ms: now_ms(),
            reversed_from: None,
            reverse_failures_left: 0,
        });
        order.trade_state = trade_state.into();
        order.total = total;
        let plain = transaction(out_trade_no, &order);
        let event = if trade_state == "SUCCESS" {
            "TRANSACTION.SUCCESS"
        } else {
            "TRANSACTION.CLOSED"
        };
        self.send_callback(event, "transaction", &plain, signing)
            .await
    }

    async fn send_callback(
        &self,
        event_type: &str,
        original_type: &str,
        plain: &Value,
        signing: Signing,
    ) -> (u16, String, Vec<(String, String)>, Vec<u8>) {
        let nonce = random_alnum(12);
        let cipher = Aes256Gcm::new_from_slice(APIV3_KEY.as_bytes()).expect("32-byte key");
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(nonce.as_bytes()),
                Payload {
                    msg: plain.to_string().as_bytes(),
                    aad: original_type.as_bytes(),
                },
            )
            .expect("AES-GCM seal");
        let envelope = json!({
            "id": format!("EV-{}", random_alnum(16)),
            "create_time": "2024-03-01T00:30:05+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "notification",
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": B64.encode(sealed),
                "associated_data": original_type,
                "nonce": nonce,
            }
        });
        let body = envelope.to_string().into_bytes();
        let headers = self.signed_headers(&body, signing);
        let (status, text) = self.post_raw(&headers, body.clone()).await;
        (status, text, headers, body)
    }

    /// Posts a callback as given (a redelivery).
    pub async fn post_raw(&self, headers: &[(String, String)], body: Vec<u8>) -> (u16, String) {
        self.webhook.post("wechatpay", headers, body).await
    }
}

fn transaction(id: &str, o: &Order) -> Value {
    json!({
        "appid": APPID, "mchid": MCHID, "out_trade_no": id,
        "transaction_id": o.transaction_id, "trade_type": o.product.to_uppercase(),
        "trade_state": o.trade_state, "trade_state_desc": "",
        "amount": {"total": o.total, "payer_total": o.total, "currency": "CNY", "payer_currency": "CNY"},
    })
}

fn refund_json(id: &str, o: &Order, refund_no: &str) -> Value {
    let (amount, status) = o
        .refunds
        .get(refund_no)
        .cloned()
        .unwrap_or((0, "CLOSED".into()));
    json!({
        "mchid": MCHID, "refund_id": format!("5030{refund_no}"), "out_refund_no": refund_no,
        "transaction_id": o.transaction_id, "out_trade_no": id, "channel": "ORIGINAL",
        "status": status,
        "amount": {"refund": amount, "total": o.total, "currency": "CNY",
                   "payer_refund": amount, "payer_total": o.total},
    })
}
