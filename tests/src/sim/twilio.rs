//! Twilio's Messages API as far as spinpay uses it: `POST
//! /2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP Basic (account SID and
//! auth token) and a form body, answered `201` with the Message resource, or Twilio's
//! error body (`{"code","message","more_info","status"}`).
//!
//! Like Twilio's test credentials, the number [`INVALID_NUMBER`] is refused with error
//! 21211 ("not a valid phone number").

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{SimRequest, SimResponse, Simulator, field, form_decode, listen};

/// The account SID the app is configured with.
pub const ACCOUNT_SID: &str = "AC5ef8732a3c49700934481addd5ce1659";
/// Its auth token.
pub const AUTH_TOKEN: &str = "f2a4c1e0b9d84a7c9e3b5d6f7a8b9c0d";
/// The sender number.
pub const FROM: &str = "+15005550006";
/// A number Twilio refuses as invalid (its magic test number).
pub const INVALID_NUMBER: &str = "+15005550001";

/// One message Twilio accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// `SM…`.
    pub sid: String,
    /// `To`.
    pub to: String,
    /// `Body`.
    pub body: String,
    /// `ValidityPeriod` as sent.
    pub validity_period: Option<String>,
}

/// The simulator.
#[derive(Debug, Default)]
pub struct TwilioSim {
    origin: OnceLock<String>,
    /// Every message accepted, in order.
    pub sent: Mutex<Vec<Sent>>,
    /// How many requests were refused for their credentials.
    pub unauthorized: Mutex<u32>,
}

impl TwilioSim {
    /// Starts the simulator.
    pub async fn start() -> std::sync::Arc<TwilioSim> {
        listen(TwilioSim::default()).await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> &str {
        self.origin.get().expect("listening")
    }

    /// The app's variables that send one-time codes through this simulator.
    pub fn app_variables(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("sms_provider".into(), "twilio".into()),
            ("twilio_origin".into(), self.origin().to_string()),
            ("twilio_account_sid".into(), ACCOUNT_SID.into()),
            ("twilio_auth_token".into(), AUTH_TOKEN.into()),
            ("twilio_from".into(), FROM.into()),
        ])
    }

    /// The messages sent to `phone`, oldest first.
    pub fn sent_to(&self, phone: &str) -> Vec<Sent> {
        let sent = self.sent.lock().unwrap();
        sent.iter().filter(|m| m.to == phone).cloned().collect()
    }

    /// The six-digit code of the last message sent to `phone`.
    pub fn last_code(&self, phone: &str) -> String {
        let sent = self.sent_to(phone);
        let text = &sent
            .last()
            .unwrap_or_else(|| panic!("no SMS to {phone}"))
            .body;
        text.split(|c: char| !c.is_ascii_digit())
            .rfind(|w| w.len() == 6)
            .unwrap_or_else(|| panic!("no 6-digit code in the SMS {text:?}"))
            .to_string()
    }

    fn answer(&self, req: &SimRequest) -> SimResponse {
        let path = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json");
        if req.method != "POST" || req.path != path {
            return error(404, 20404, "The requested resource was not found");
        }
        let basic = format!(
            "Basic {}",
            B64.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
        );
        if req.header("authorization") != Some(basic.as_str()) {
            *self.unauthorized.lock().unwrap() += 1;
            return error(401, 20003, "Authenticate");
        }
        let form_type = req.header("content-type").unwrap_or("");
        if !form_type.starts_with("application/x-www-form-urlencoded") {
            return error(400, 21601, "Request body must be form encoded");
        }
        let form = form_decode(&req.body);
        let (Some(to), Some(from), Some(body)) = (
            field(&form, "To"),
            field(&form, "From"),
            field(&form, "Body"),
        ) else {
            return error(400, 21604, "A 'To', 'From' and 'Body' are required");
        };
        if from != FROM {
            return error(
                400,
                21606,
                "The From phone number is not a valid number for your account",
            );
        }
        if to == INVALID_NUMBER {
            return error(
                400,
                21211,
                &format!("The 'To' number {to} is not a valid phone number."),
            );
        }
        let sent = Sent {
            sid: format!("SM{:032x}", rand::random::<u128>()),
            to: to.to_string(),
            body: body.to_string(),
            validity_period: field(&form, "ValidityPeriod").map(str::to_string),
        };
        let resource = json!({
            "sid": sent.sid, "account_sid": ACCOUNT_SID, "to": to, "from": from,
            "body": body, "status": "queued", "direction": "outbound-api",
            "api_version": "2010-04-01", "error_code": Value::Null, "error_message": Value::Null,
            "num_segments": "1",
        });
        self.sent.lock().unwrap().push(sent);
        SimResponse::new(201, "application/json", resource.to_string())
    }
}

/// Twilio's error body.
fn error(status: u16, code: u32, message: &str) -> SimResponse {
    let body = json!({
        "code": code, "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status,
    });
    SimResponse::new(status, "application/json", body.to_string())
}

impl Simulator for TwilioSim {
    async fn handle(self: std::sync::Arc<Self>, req: SimRequest) -> SimResponse {
        self.answer(&req)
    }

    fn origin_cell(&self) -> &OnceLock<String> {
        &self.origin
    }
}
