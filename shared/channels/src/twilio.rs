//! One-time codes by SMS through Twilio's Messages API (`POST
//! /2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP Basic with the account SID and
//! auth token, a form body of `To`, `From` or `MessagingServiceSid`, `Body` and
//! `ValidityPeriod`).
//!
//! Pure halves ([`message_request`], [`parse_message`]) are unit-tested here; the
//! [`TwilioSms`] wiring sends what they build. Which provider sends the codes is chosen by
//! the `sms_provider` variable ([`crate::dispatch::Channels`]).
//!
//! A code is sent with a validity period equal to the code's own lifetime
//! ([`OTP_TTL_MS`]): Twilio drops a message still queued after that, so a payer never gets
//! a code that has already expired. Nothing about the payer (phone, text) is logged or put
//! into an error detail: a refusal reads as Twilio's status and error code only.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use spinpay_core::crypto::Secret;
use spinpay_core::service::OTP_TTL_MS;
use spinpay_guest::outbound::{
    self, CHANNEL_TIMEOUT_MS_DEFAULT, OutboundRequest, OutboundResponse, RESPONSE_BYTES_MAX_DEFAULT,
};

use crate::crypto::form_body;
use crate::wiring::{required, required_url, unusable};

/// Variable: the account SID (`AC` + 32 hex digits).
pub const VAR_ACCOUNT_SID: &str = "twilio_account_sid";
/// Variable (secret): the account's auth token.
pub const VAR_AUTH_TOKEN: &str = "twilio_auth_token";
/// Variable: the sender — an E.164 number, an alphanumeric sender id, or a Messaging
/// Service SID (`MG` + 32 hex digits).
pub const VAR_FROM: &str = "twilio_from";
/// Variable: the API's origin (`https://api.twilio.com`).
pub const VAR_API_URL: &str = "twilio_api_url";

/// How a message names its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// `From`: a phone number or an alphanumeric sender id.
    From(String),
    /// `MessagingServiceSid`: Twilio picks the number from the service's pool.
    MessagingService(String),
}

impl Sender {
    /// `MG…` (a Messaging Service SID) or anything else as `From`.
    pub fn parse(v: &str) -> Sender {
        if is_sid(v, "MG") {
            Sender::MessagingService(v.to_string())
        } else {
            Sender::From(v.to_string())
        }
    }
}

/// What the adapter needs to send through one Twilio account.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `AC…`.
    pub account_sid: String,
    /// The auth token.
    pub auth_token: Secret<String>,
    /// Who the message is from.
    pub sender: Sender,
    /// `https://api.twilio.com`, without a trailing slash.
    pub api_url: String,
}

/// True for `prefix` followed by 32 lower-case or upper-case hex digits (a Twilio SID).
fn is_sid(v: &str, prefix: &str) -> bool {
    v.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The request that sends `text` to `phone` (E.164).
pub fn message_request(cfg: &TwilioConfig, phone: &str, text: &str) -> OutboundRequest {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        cfg.api_url, cfg.account_sid
    );
    let mut fields = vec![("To".to_string(), phone.to_string())];
    fields.push(match &cfg.sender {
        Sender::From(v) => ("From".to_string(), v.clone()),
        Sender::MessagingService(v) => ("MessagingServiceSid".to_string(), v.clone()),
    });
    fields.push(("Body".to_string(), text.to_string()));
    fields.push((
        "ValidityPeriod".to_string(),
        (OTP_TTL_MS / 1000).to_string(),
    ));
    let credentials = format!("{}:{}", cfg.account_sid, cfg.auth_token.expose());
    OutboundRequest {
        method: http::Method::POST,
        url,
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("accept".into(), "application/json".into()),
            (
                "authorization".into(),
                format!("Basic {}", B64.encode(credentials)),
            ),
        ],
        body: form_body(&fields).into_bytes(),
    }
}

/// A Message resource, as much of it as is read.
#[derive(Debug, Deserialize)]
struct Message {
    sid: Option<String>,
    status: Option<String>,
    error_code: Option<i64>,
}

/// Twilio's error body.
#[derive(Debug, Deserialize)]
struct TwilioError {
    code: Option<i64>,
}

/// Message statuses that say the message will not be delivered.
const DEAD_STATUSES: [&str; 3] = ["failed", "undelivered", "canceled"];

/// The answer to [`message_request`]: the message's SID when Twilio took it, or why
/// not (its HTTP status and error code; never its message, which quotes the phone).
pub fn parse_message(resp: &OutboundResponse) -> Result<String, String> {
    if !(200..300).contains(&resp.status) {
        let code = serde_json::from_slice::<TwilioError>(&resp.body)
            .ok()
            .and_then(|e| e.code);
        return Err(match code {
            Some(code) => format!(
                "Twilio refused the message: HTTP {}, code {code}",
                resp.status
            ),
            None => format!("Twilio refused the message: HTTP {}", resp.status),
        });
    }
    let m: Message = serde_json::from_slice(&resp.body)
        .map_err(|_| format!("Twilio answered HTTP {} without a message", resp.status))?;
    let status = m.status.as_deref().unwrap_or("");
    if DEAD_STATUSES.contains(&status) {
        let code = m
            .error_code
            .map_or(String::new(), |c| format!(", code {c}"));
        return Err(format!("Twilio took the message as {status}{code}"));
    }
    match m.sid {
        Some(sid) if is_sid(&sid, "SM") || is_sid(&sid, "MM") => Ok(sid),
        _ => Err("Twilio's answer names no message SID".to_string()),
    }
}

/// Sends one-time codes through one Twilio account.
#[derive(Debug, Clone)]
pub struct TwilioSms {
    config: TwilioConfig,
    timeout_ms: u64,
}

impl TwilioSms {
    /// A sender for `config`.
    pub fn new(config: TwilioConfig) -> TwilioSms {
        TwilioSms {
            config,
            timeout_ms: CHANNEL_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Reads the Twilio variables; `Err` names the first missing or unusable one.
    pub async fn load() -> Result<TwilioSms, &'static str> {
        let account_sid = required(VAR_ACCOUNT_SID).await?;
        if !is_sid(&account_sid, "AC") {
            return Err(unusable(
                VAR_ACCOUNT_SID,
                &"not AC followed by 32 hex digits",
            ));
        }
        let auth_token = Secret::new(required(VAR_AUTH_TOKEN).await?);
        let sender = Sender::parse(&required(VAR_FROM).await?);
        let api_url = required_url(VAR_API_URL).await?;
        Ok(TwilioSms::new(TwilioConfig {
            account_sid,
            auth_token,
            sender,
            api_url,
        }))
    }

    /// Sends `text` to `phone`; `Err` says why it did not go (no answer in time, or
    /// Twilio's refusal).
    pub async fn send(&self, phone: &str, text: &str) -> Result<(), String> {
        let req = message_request(&self.config, phone, text);
        let resp = outbound::send(&req, self.timeout_ms, RESPONSE_BYTES_MAX_DEFAULT)
            .await
            .map_err(|e| format!("Twilio: {e}"))?;
        parse_message(&resp).map(|_sid| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    fn config(sender: &str) -> TwilioConfig {
        TwilioConfig {
            account_sid: SID.into(),
            auth_token: Secret::new("tok3n".into()),
            sender: Sender::parse(sender),
            api_url: "https://api.twilio.com".into(),
        }
    }

    fn answer(status: u16, body: &str) -> OutboundResponse {
        OutboundResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_message_is_a_basic_authenticated_form_post_to_the_accounts_messages() {
        // Proves the URL, the Basic credentials (SID:token), and the form fields with
        // the phone's `+` and the text's spaces encoded, valid for the code's lifetime.
        let req = message_request(&config("+15017122661"), "+8613800000000", "Code 123456");
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(
            req.url,
            format!("https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json")
        );
        let auth = req
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(
            auth,
            format!("Basic {}", B64.encode(format!("{SID}:tok3n")))
        );
        assert_eq!(
            String::from_utf8(req.body).unwrap(),
            "To=%2B8613800000000&From=%2B15017122661&Body=Code+123456&ValidityPeriod=300"
        );
    }

    #[test]
    fn a_messaging_service_sid_is_sent_as_the_service_not_as_from() {
        // Proves `MG` + 32 hex is MessagingServiceSid, and an alphanumeric sender id or
        // an `MG` lookalike stays `From`.
        let mg = "MG0123456789abcdef0123456789abcdef";
        let body = String::from_utf8(message_request(&config(mg), "+12025550123", "x").body);
        assert!(
            body.unwrap()
                .contains(&format!("&MessagingServiceSid={mg}&")),
            "service sid"
        );
        assert_eq!(Sender::parse("SpinPay"), Sender::From("SpinPay".into()));
        assert_eq!(Sender::parse("MG123"), Sender::From("MG123".into()));
    }

    #[test]
    fn a_queued_message_is_sent_and_its_sid_read() {
        // Proves 201 with an SM SID and a live status is success, for each live status.
        for status in ["queued", "accepted", "scheduled", "sending", "sent"] {
            let body = format!(
                r#"{{"sid":"SM0123456789abcdef0123456789abcdef","status":"{status}","error_code":null,"to":"+12025550123"}}"#
            );
            assert_eq!(
                parse_message(&answer(201, &body)),
                Ok("SM0123456789abcdef0123456789abcdef".into()),
                "{status}"
            );
        }
    }

    #[test]
    fn a_refusal_names_status_and_code_but_never_the_phone() {
        // Proves a 400 with Twilio's error body reads as its code, without the message
        // (which quotes the payer's number); a body without a code gives the status.
        let body = r#"{"code":21211,"message":"The 'To' number +8613800000000 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        let err = parse_message(&answer(400, body)).unwrap_err();
        assert_eq!(err, "Twilio refused the message: HTTP 400, code 21211");
        assert!(!err.contains("138"), "{err}");
        assert_eq!(
            parse_message(&answer(503, "<html>busy</html>")).unwrap_err(),
            "Twilio refused the message: HTTP 503"
        );
    }

    #[test]
    fn a_dead_status_garbage_or_a_missing_sid_is_not_sent() {
        // Proves a 2xx that says failed/undelivered, a body that is not a message, and a
        // message without an SM/MM SID are all failures.
        let failed =
            r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"failed","error_code":30007}"#;
        assert_eq!(
            parse_message(&answer(201, failed)).unwrap_err(),
            "Twilio took the message as failed, code 30007"
        );
        assert!(parse_message(&answer(200, "not json")).is_err());
        assert!(parse_message(&answer(201, r#"{"status":"queued"}"#)).is_err());
        assert!(parse_message(&answer(201, r#"{"sid":"XX1","status":"queued"}"#)).is_err());
    }

    #[test]
    fn only_well_formed_sids_are_sids() {
        // Proves the prefix and the 32 hex digits are both required.
        assert!(is_sid(SID, "AC"));
        assert!(!is_sid(SID, "MG"));
        assert!(!is_sid("AC0123", "AC"));
        assert!(!is_sid("AC0123456789abcdef0123456789abcdeg", "AC"));
    }
}
