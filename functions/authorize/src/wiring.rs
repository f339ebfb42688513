//! The outside world authorize talks to: the channel (the sandbox adapter, configured
//! from variables), risk-check over service chaining (a [`RiskClient`]), and the query
//! component, to which `GET /v1/payments` is handed unchanged.

use serde::{Deserialize, Serialize};
use spinpay_channels::sandbox::{NOTIFY_URL_DEFAULT, SandboxClient};
use spinpay_core::ApiError;
use spinpay_core::crypto::Secret;
use spinpay_core::model::{Channel, MethodKind, Payer, RiskAssessment};
use spinpay_core::money::Currency;
use spinpay_core::risk::RiskInput;
use spinpay_core::service::RiskClient;
use spinpay_guest::env;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::outbound::{self, OutboundRequest};

/// Secret variable: the HMAC key shared with the sandbox channel.
pub const VAR_SANDBOX_SECRET: &str = "sandbox_secret";
/// Variable: the sandbox channel's host (base URL `http://{host}`).
pub const VAR_SANDBOX_HOST: &str = "sandbox_host";
/// Where the sandbox lives when `sandbox_host` is unset: in-process.
pub const SANDBOX_HOST_DEFAULT: &str = "sandbox.spin.internal";
/// risk-check over service chaining.
pub const RISK_URL: &str = "http://risk-check.spin.internal/v1/risk/internal/assess";
/// Deadline for a risk assessment (the payment fails closed after it).
pub const RISK_TIMEOUT_MS: u64 = 2_000;
/// Largest risk-check answer.
pub const RISK_RESPONSE_BYTES_MAX: u64 = 64 * 1024;
/// query over service chaining.
pub const QUERY_URL: &str = "http://query.spin.internal";
/// Deadline for a forwarded list request.
pub const QUERY_TIMEOUT_MS: u64 = 10_000;
/// Largest forwarded list answer (100 payments with refunds fit easily).
pub const QUERY_RESPONSE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The channels this component can reach (the channels issue adds more adapters).
pub fn ensure_channel_available(channel: Channel) -> Result<(), ApiError> {
    match channel {
        Channel::Sandbox => Ok(()),
        Channel::Alipay | Channel::Wechatpay | Channel::Unionpay => {
            Err(ApiError::ChannelUnsupported {
                value: channel.as_str().to_string(),
            })
        }
    }
}

/// The sandbox adapter from the component's variables; a missing secret fails closed.
pub async fn channel() -> Result<SandboxClient, ApiError> {
    let secret = env::secret(VAR_SANDBOX_SECRET)
        .await
        .map_err(|_| ApiError::NotConfigured {
            what: VAR_SANDBOX_SECRET,
        })?;
    let host = env::variable(VAR_SANDBOX_HOST)
        .await
        .ok()
        .flatten()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| SANDBOX_HOST_DEFAULT.to_string());
    let base_url = format!("http://{}", host.trim());
    Ok(SandboxClient::new(&base_url, secret, NOTIFY_URL_DEFAULT))
}

/// The body of risk-check's internal endpoint: the core's [`RiskInput`] without the
/// merchant, which risk-check takes from the bearer key instead (so one merchant can
/// never assess, or read the rules of, another).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskInputWire {
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Method kind.
    pub method: MethodKind,
    /// Customer-presented token or auth code, if any.
    #[serde(default)]
    pub customer_token: Option<String>,
    /// Payer.
    #[serde(default)]
    pub payer: Payer,
}

impl From<&RiskInput> for RiskInputWire {
    fn from(i: &RiskInput) -> Self {
        RiskInputWire {
            amount_minor: i.amount_minor,
            currency: i.currency,
            method: i.method,
            customer_token: i.customer_token.clone(),
            payer: i.payer.clone(),
        }
    }
}

/// Asks risk-check through `http://risk-check.spin.internal`, forwarding the
/// merchant's own `Authorization` header.
pub struct ChainedRisk {
    authorization: Secret<String>,
}

impl ChainedRisk {
    /// A client acting with the merchant's `Authorization` header value.
    pub fn new(authorization: &str) -> ChainedRisk {
        ChainedRisk {
            authorization: Secret::new(authorization.to_string()),
        }
    }
}

impl RiskClient for ChainedRisk {
    async fn assess(&self, input: &RiskInput) -> Result<RiskAssessment, String> {
        let body = serde_json::to_vec(&RiskInputWire::from(input)).map_err(|e| e.to_string())?;
        let req = OutboundRequest::post_json(RISK_URL, body)
            .header("authorization", self.authorization.expose().as_str());
        let resp = outbound::send(&req, RISK_TIMEOUT_MS, RISK_RESPONSE_BYTES_MAX)
            .await
            .map_err(|e| format!("risk-check: {e}"))?;
        if resp.status != 200 {
            let detail = String::from_utf8_lossy(&resp.body);
            let detail: String = detail.chars().take(200).collect();
            eprintln!("risk-check answered {}: {detail}", resp.status);
            return Err(format!("risk-check answered {}", resp.status));
        }
        serde_json::from_slice(&resp.body).map_err(|e| format!("risk-check answer: {e}"))
    }
}

/// Request headers not forwarded to query: hop-by-hop ones, the body framing, and
/// Spin's routing headers (the runtime sets its own for the chained request).
fn forwardable(name: &str) -> bool {
    const DROPPED: [&str; 9] = [
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "x-request-id",
    ];
    !DROPPED.contains(&name) && !name.starts_with("spin-") && !name.starts_with("proxy-")
}

/// `GET /v1/payments[?…]`: handed to the query component with the same path, query
/// string and headers; its answer is returned unchanged.
pub async fn forward_to_query(parts: &http::request::Parts, request_id: &str) -> HttpResponse {
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/v1/payments", |p| p.as_str());
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| forwardable(name.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    headers.push(("x-request-id".into(), request_id.to_string()));
    let req = OutboundRequest {
        method: http::Method::GET,
        url: format!("{QUERY_URL}{path_and_query}"),
        headers,
        body: Vec::new(),
    };
    match outbound::send(&req, QUERY_TIMEOUT_MS, QUERY_RESPONSE_BYTES_MAX).await {
        Ok(resp) => {
            let content_type = resp
                .header("content-type")
                .unwrap_or("application/json")
                .to_string();
            let mut out = inbound::bytes_response(resp.status, &content_type, resp.body);
            for (name, value) in &resp.headers {
                // content-type is set above; everything else passes as it came.
                let keep = (forwardable(name) || name == "x-request-id") && name != "content-type";
                let name = http::HeaderName::from_bytes(name.as_bytes());
                let value = http::HeaderValue::from_str(value);
                if let (true, Ok(name), Ok(value)) = (keep, name, value) {
                    out.headers_mut().append(name, value);
                }
            }
            out
        }
        Err(e) => {
            let detail = format!("forwarding to query: {e}");
            inbound::error_response(&ApiError::Internal { detail }, request_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spinpay_core::model::RiskDecision;

    #[test]
    fn risk_input_round_trips_through_the_internal_wire_shape() {
        // Proves authorize's wire body carries every RiskInput field but the merchant.
        let input = RiskInput {
            merchant_id: "mch_x".into(),
            amount_minor: 1250,
            currency: Currency::Cny,
            method: MethodKind::QrCustomer,
            customer_token: Some("283000000000000001".into()),
            payer: Payer {
                device_id: Some("d-9".into()),
                ..Payer::default()
            },
        };
        let json = serde_json::to_value(RiskInputWire::from(&input)).unwrap();
        assert!(json.get("merchant_id").is_none());
        assert_eq!(json["method"], "qr_customer");
        assert_eq!(json["currency"], "CNY");
        let back: RiskInputWire = serde_json::from_value(json).unwrap();
        assert_eq!(back.customer_token, input.customer_token);
        assert_eq!(back.payer, input.payer);
    }

    #[test]
    fn a_public_assessment_body_parses_as_the_core_assessment() {
        // Proves risk-check's answer (with its "object" field) decodes into RiskAssessment.
        let body = r#"{"object":"risk_assessment","decision":"challenge","score":40,
            "rules":[{"rule":"r","contribution":40,"detail":"d"}],"rules_version":3}"#;
        let a: RiskAssessment = serde_json::from_str(body).unwrap();
        assert_eq!(a.decision, RiskDecision::Challenge);
        assert_eq!(a.rules_version, 3);
    }

    #[test]
    fn spin_and_hop_by_hop_headers_are_not_forwarded() {
        // Proves routing and framing headers are dropped while auth and accept pass.
        assert!(forwardable("authorization"));
        assert!(forwardable("accept"));
        assert!(!forwardable("spin-path-info"));
        assert!(!forwardable("content-length"));
        assert!(!forwardable("host"));
    }

    #[test]
    fn only_the_sandbox_channel_is_reachable_for_now() {
        // Proves payments on channels without an adapter are refused up front.
        assert!(ensure_channel_available(Channel::Sandbox).is_ok());
        let e = ensure_channel_available(Channel::Alipay).unwrap_err();
        assert_eq!(e.code(), "channel_unsupported");
    }
}
