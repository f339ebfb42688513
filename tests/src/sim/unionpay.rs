//! The UnionPay ACP 5.1.0 side: form posts signed `signMethod=01` (SHA-256 hex digest of
//! the sorted `k=v&…`, then SHA256withRSA over that hex, `certId` naming the merchant's
//! key), answered like the real gateway with a raw signed `k=v&…` string (not a form:
//! base64 keeps its `+`, `/` and `=`, text is raw UTF-8); back-notifications posted as
//! signed forms to `backUrl`. As in 5.1.0, UnionPay's own messages carry its signing
//! certificate in `signPubKeyCert` and no `certId`, and are signed over every field but
//! `signature`, empty ones included.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{
    Fault, KeyPair, PUBLIC_BASE_URL, SimRequest, SimResponse, Simulator, Webhook, field,
    form_decode, form_encode, listen, random_alnum, sorted_string,
};

/// The merchant id.
pub const MER_ID: &str = "777290058110048";
/// Our signing certificate's id.
pub const CERT_ID: &str = "68759663125";
/// UnionPay's verification certificate's id.
pub const VERIFY_CERT_ID: &str = "69042905377";

/// The certificate text UnionPay's messages carry in `signPubKeyCert` (PEM with CRLF line
/// ends, as UnionPay sends it). spinpay pins UnionPay's key and treats this as signed
/// data only, so its content is not a certificate of the simulator's key.
pub const SIGN_PUB_KEY_CERT: &str = "-----BEGIN CERTIFICATE-----\r\n\
    MIIEQzCCAyugAwIBAgIFEBJJZVgwDQYJKoZIhvcNAQEFBQAwWDELMAkGA1UEBhMC\r\n\
    -----END CERTIFICATE-----";

/// One order (consume or refund) as UnionPay keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// `txnType`: `01` consume, `04` refund.
    pub txn_type: String,
    /// `txnAmt` in minor units.
    pub txn_amt: i64,
    /// `txnTime` as sent.
    pub txn_time: String,
    /// UnionPay's id.
    pub query_id: String,
    /// `00` paid / refunded, `05` in progress.
    pub orig_resp_code: String,
    /// `payTimeout` as Unix ms, if the order carried one.
    pub expires_at_ms: Option<i64>,
}

/// The simulator.
#[derive(Debug)]
pub struct UnionpaySim {
    ours: KeyPair,
    theirs: KeyPair,
    wrong: KeyPair,
    origin: OnceLock<String>,
    webhook: Arc<Webhook>,
    orders: Mutex<BTreeMap<String, Order>>,
    /// The webhook's last answer to a back-notification UnionPay sent on its own
    /// initiative (a customer code paid, a refund done), by `orderId`.
    own_notified: Mutex<BTreeMap<String, (u16, String)>>,
}

fn digest_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The string UnionPay signs: every field but `signature`, empty ones included,
/// byte-sorted (the ACP SDKs' `coverMap2String`).
fn acp_signed_string(fields: &[(String, String)]) -> String {
    let mut kept: Vec<&(String, String)> =
        fields.iter().filter(|(k, _)| k != "signature").collect();
    kept.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let pairs: Vec<String> = kept.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// A synchronous answer's body as the gateway sends it: raw `k=v&…`, nothing encoded.
fn raw_body(fields: &[(String, String)]) -> String {
    let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// The content type of back-notifications (form POSTs).
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded;charset=UTF-8";
/// The content type of synchronous answers (spinpay does not look at it).
const ANSWER_CONTENT_TYPE: &str = "text/plain;charset=UTF-8";
/// `respMsg` of a success, as the gateway words it.
const SUCCESS_MSG: &str = "成功[0000000]";

/// The headers of a back-notification.
fn notify_headers() -> [(String, String); 1] {
    [("content-type".to_string(), FORM_CONTENT_TYPE.to_string())]
}

/// A request's `txnAmt` (0 when unreadable) and the fault it selects.
fn amount_fault(form: &[(String, String)]) -> (i64, Fault) {
    let amount: i64 = field(form, "txnAmt").unwrap_or("").parse().unwrap_or(0);
    (amount, Fault::for_amount(amount))
}

/// Our object id as a UnionPay `orderId`.
pub fn order_id(our_id: &str) -> String {
    our_id.replace('_', "")
}

impl UnionpaySim {
    /// Starts the simulator; `ours` is the merchant key pair, `theirs` UnionPay's.
    pub async fn start(ours: KeyPair, theirs: KeyPair, webhook: Arc<Webhook>) -> Arc<UnionpaySim> {
        listen(UnionpaySim {
            ours,
            theirs,
            wrong: KeyPair::generate(),
            origin: OnceLock::new(),
            webhook,
            orders: Mutex::new(BTreeMap::new()),
            own_notified: Mutex::new(BTreeMap::new()),
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
            ("unionpay_origin".into(), self.origin().to_string()),
            ("unionpay_mer_id".into(), MER_ID.into()),
            ("unionpay_cert_id".into(), CERT_ID.into()),
            ("unionpay_private_key".into(), self.ours.private_pem()),
            ("unionpay_verify_cert_id".into(), VERIFY_CERT_ID.into()),
            ("unionpay_public_key".into(), self.theirs.public_pem()),
        ])
    }

    /// The order for our payment or refund id.
    pub fn order(&self, our_id: &str) -> Option<Order> {
        self.orders.lock().unwrap().get(&order_id(our_id)).cloned()
    }

    /// Signs `fields` as UnionPay does (with a wrong key when `forged`).
    fn sign(&self, mut fields: Vec<(String, String)>, forged: bool) -> Vec<(String, String)> {
        fields.push(("signPubKeyCert".into(), SIGN_PUB_KEY_CERT.into()));
        fields.push(("signMethod".into(), "01".into()));
        let hex = digest_hex(&acp_signed_string(&fields));
        let signer = if forged { &self.wrong } else { &self.theirs };
        fields.push(("signature".into(), signer.sign_b64(hex.as_bytes())));
        fields
    }

    fn answer(&self, fields: Vec<(String, String)>, fault: Fault) -> SimResponse {
        match fault {
            Fault::ServerError => SimResponse::new(500, "text/html", "<html>500</html>"),
            Fault::Garbage => SimResponse::new(200, "text/html", "<html>maintenance</html>"),
            _ => {
                let signed = self.sign(fields, fault == Fault::BadSignature);
                SimResponse::new(200, ANSWER_CONTENT_TYPE, raw_body(&signed))
            }
        }
    }
}

impl Simulator for UnionpaySim {
    fn origin_cell(&self) -> &OnceLock<String> {
        &self.origin
    }

    async fn handle(self: Arc<Self>, req: SimRequest) -> SimResponse {
        let form = form_decode(&req.body);
        let get = |k: &str| field(&form, k).unwrap_or("").to_string();
        let hex = digest_hex(&sorted_string(&form, &["signature"]));
        let verified = get("certId") == CERT_ID
            && get("signMethod") == "01"
            && self.ours.verify_b64(hex.as_bytes(), &get("signature"));
        let base = |code: &str, msg: &str| -> Vec<(String, String)> {
            [
                ("version", get("version")),
                ("encoding", "UTF-8".to_string()),
                ("txnType", get("txnType")),
                ("txnSubType", get("txnSubType")),
                ("bizType", get("bizType")),
                ("accessType", "0".to_string()),
                ("merId", get("merId")),
                ("orderId", get("orderId")),
                ("txnTime", get("txnTime")),
                ("respCode", code.to_string()),
                ("respMsg", msg.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        };
        if !verified {
            return self.answer(base("11", "verify signature failed"), Fault::None);
        }
        if get("merId") != MER_ID {
            return self.answer(base("10", "merId error"), Fault::None);
        }
        let expected_back = format!("{PUBLIC_BASE_URL}/v1/webhooks/unionpay");
        match (req.path.as_str(), get("txnType").as_str()) {
            ("/gateway/api/backTransReq.do" | "/gateway/api/appTransReq.do", "01") => {
                assert_eq!(get("backUrl"), expected_back);
                self.consume(&req.path, &form, base("00", SUCCESS_MSG))
                    .await
            }
            ("/gateway/api/backTransReq.do", "04") => {
                assert_eq!(get("backUrl"), expected_back);
                self.refund(&form, base("00", SUCCESS_MSG)).await
            }
            ("/gateway/api/queryTrans.do", "00") => {
                // UnionPay finds an order by its orderId and the txnTime it was sent with.
                let order = self.orders.lock().unwrap().get(&get("orderId")).cloned();
                match order.filter(|o| o.txn_time == get("txnTime")) {
                    Some(o) => {
                        let mut fields = base("00", SUCCESS_MSG);
                        fields.push(("origRespCode".into(), o.orig_resp_code.clone()));
                        fields.push(("origRespMsg".into(), SUCCESS_MSG.into()));
                        fields.push(("queryId".into(), o.query_id.clone()));
                        fields.push(("txnAmt".into(), o.txn_amt.to_string()));
                        fields.push(("currencyCode".into(), "156".into()));
                        self.answer(fields, Fault::None)
                    }
                    None => self.answer(base("34", "no such transaction"), Fault::None),
                }
            }
            _ => self.answer(base("12", "unsupported transaction"), Fault::None),
        }
    }
}

impl UnionpaySim {
    async fn consume(
        self: &Arc<Self>,
        path: &str,
        form: &[(String, String)],
        mut fields: Vec<(String, String)>,
    ) -> SimResponse {
        let get = |k: &str| field(form, k).unwrap_or("").to_string();
        let (amount, fault) = amount_fault(form);
        if fault == Fault::ServerError {
            return self.answer(Vec::new(), fault);
        }
        let order = Order {
            txn_type: "01".into(),
            txn_amt: amount,
            txn_time: get("txnTime"),
            query_id: random_alnum(21),
            orig_resp_code: "05".into(),
            expires_at_ms: field(form, "payTimeout")
                .map(|t| super::beijing_unix_ms(t).unwrap_or_else(|| panic!("payTimeout {t:?}"))),
        };
        let id = get("orderId");
        self.orders.lock().unwrap().insert(id.clone(), order);
        let sub = get("txnSubType");
        if path.ends_with("appTransReq.do") {
            fields.push(("tn".into(), format!("7{}", random_alnum(20))));
        } else if sub == "07" {
            fields.push((
                "qrCode".into(),
                format!("https://qr.95516.com/00010000/{}", random_alnum(20)),
            ));
        } else {
            // Customer-presented code: the result follows by back-notification.
            let sim = self.clone();
            let id2 = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                sim.pay_order_retrying(&id2).await;
            });
        }
        if fault == Fault::NotifyFirst {
            let (status, _) = self.pay_order(&id).await;
            assert_eq!(status, 200);
        }
        fault.stall().await;
        self.answer(fields, fault)
    }

    async fn refund(
        self: &Arc<Self>,
        form: &[(String, String)],
        fields: Vec<(String, String)>,
    ) -> SimResponse {
        let get = |k: &str| field(form, k).unwrap_or("").to_string();
        let (amount, fault) = amount_fault(form);
        if fault == Fault::ServerError {
            return self.answer(Vec::new(), fault);
        }
        let paid = self
            .orders
            .lock()
            .unwrap()
            .values()
            .any(|o| o.query_id == get("origQryId") && o.orig_resp_code == "00");
        if !paid {
            let mut refused = fields;
            refused.retain(|(k, _)| k != "respCode" && k != "respMsg");
            refused.push(("respCode".into(), "31".into()));
            refused.push(("respMsg".into(), "original transaction not found".into()));
            return self.answer(refused, Fault::None);
        }
        let id = get("orderId");
        let order = Order {
            txn_type: "04".into(),
            txn_amt: amount,
            txn_time: get("txnTime"),
            query_id: random_alnum(21),
            orig_resp_code: "05".into(),
            expires_at_ms: None,
        };
        self.orders
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_insert(order);
        let sim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sim.pay_order_retrying(&id).await;
        });
        fault.stall().await;
        self.answer(fields, fault)
    }

    /// The order (by UnionPay orderId) completes and UnionPay notifies.
    async fn pay_order(&self, order: &str) -> (u16, String) {
        let (txn_type, amount) = {
            let mut orders = self.orders.lock().unwrap();
            let o = orders.get_mut(order).expect("an order");
            o.orig_resp_code = "00".into();
            (o.txn_type.clone(), o.txn_amt)
        };
        let (status, text, _) = self
            .notify_order(order, &txn_type, "00", amount, false)
            .await;
        (status, text)
    }

    /// [`UnionpaySim::pay_order`] on UnionPay's own initiative: the notification is
    /// re-sent while the webhook does not answer 200.
    async fn pay_order_retrying(&self, order: &str) {
        let mut answer = self.pay_order(order).await;
        if answer.0 != 200 {
            let (txn_type, amount) = {
                let orders = self.orders.lock().unwrap();
                let o = orders.get(order).expect("an order");
                (o.txn_type.clone(), o.txn_amt)
            };
            let (_, _, body) = self
                .notify_order(order, &txn_type, "00", amount, false)
                .await;
            answer = self
                .webhook
                .deliver("unionpay", &notify_headers(), body)
                .await;
        }
        self.own_notified
            .lock()
            .unwrap()
            .insert(order.to_string(), answer);
    }

    /// Waits (at most [`crate::POLL_ATTEMPTS_MAX`] polls) until UnionPay has notified
    /// about our payment or refund id on its own initiative; the webhook's last answer.
    pub async fn own_notification_answer(&self, our_id: &str) -> (u16, String) {
        let order = order_id(our_id);
        for _ in 0..crate::POLL_ATTEMPTS_MAX {
            if let Some(answer) = self.own_notified.lock().unwrap().get(&order).cloned() {
                return answer;
            }
            tokio::time::sleep(crate::POLL_INTERVAL).await;
        }
        panic!("UnionPay never notified about {our_id} on its own");
    }

    /// The customer pays but UnionPay's notification never arrives: only a query can
    /// tell.
    pub fn pay_silently(&self, our_id: &str) {
        let mut orders = self.orders.lock().unwrap();
        let o = orders.get_mut(&order_id(our_id)).expect("an order");
        o.orig_resp_code = "00".into();
    }

    /// The customer pays a QR or app order: UnionPay notifies; the webhook's answer.
    pub async fn customer_pays(&self, our_id: &str) -> (u16, String) {
        self.pay_order(&order_id(our_id)).await
    }

    /// A consume back-notification about our payment id saying `resp_code` for
    /// `txn_amt`; returns the webhook's answer and the exact body sent.
    pub async fn notify(
        &self,
        our_id: &str,
        resp_code: &str,
        txn_amt: i64,
        forged: bool,
    ) -> (u16, String, Vec<u8>) {
        self.notify_order(&order_id(our_id), "01", resp_code, txn_amt, forged)
            .await
    }

    async fn notify_order(
        &self,
        order: &str,
        txn_type: &str,
        resp_code: &str,
        txn_amt: i64,
        forged: bool,
    ) -> (u16, String, Vec<u8>) {
        let known = self.orders.lock().unwrap().get(order).cloned();
        let (query_id, txn_time) = known
            .map(|o| (o.query_id, o.txn_time))
            .unwrap_or_else(|| (random_alnum(21), "20240301003005".into()));
        let fields: Vec<(String, String)> = [
            ("version", "5.1.0".to_string()),
            ("encoding", "UTF-8".to_string()),
            ("txnType", txn_type.to_string()),
            ("txnSubType", "00".to_string()),
            ("bizType", "000000".to_string()),
            ("accessType", "0".to_string()),
            ("merId", MER_ID.to_string()),
            ("orderId", order.to_string()),
            ("txnTime", txn_time),
            ("txnAmt", txn_amt.to_string()),
            ("currencyCode", "156".to_string()),
            ("queryId", query_id),
            ("respCode", resp_code.to_string()),
            ("respMsg", "success".to_string()),
            ("traceNo", random_alnum(6)),
            ("settleDate", "0301".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let body = form_encode(&self.sign(fields, forged)).into_bytes();
        let (status, text) = self.post_raw(body.clone()).await;
        (status, text, body)
    }

    /// Posts `body` as a back-notification (a redelivery).
    pub async fn post_raw(&self, body: Vec<u8>) -> (u16, String) {
        self.webhook.post("unionpay", &notify_headers(), body).await
    }
}
