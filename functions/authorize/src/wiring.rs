//! The outside world authorize talks to besides the channels: risk-check over service
//! chaining (a [`RiskClient`]), and the query component, to which `GET /v1/payments` is
//! handed unchanged.

use spinpay_core::ApiError;
use spinpay_core::api::RiskInputWire;
use spinpay_core::crypto::Keyring;
use spinpay_core::model::RiskAssessment;
use spinpay_core::riskengine::store::internal_mac;
use spinpay_core::riskengine::{INTERNAL_MAC_HEADER, INTERNAL_MERCHANT_HEADER, RiskInput};
use spinpay_core::service::RiskClient;
use spinpay_guest::component::{KEY_VERSION, VAR_ENCRYPTION_KEY};
use spinpay_guest::env;
use spinpay_guest::inbound::{self, HttpResponse};
use spinpay_guest::outbound::{self, OutboundRequest};

/// risk-check's internal assessment path (also what its MAC covers).
pub const RISK_PATH: &str = "/v1/risk/internal/assess";
/// risk-check over service chaining.
pub const RISK_URL: &str = "http://risk-check.spin.internal/v1/risk/internal/assess";
const _: () = assert!(RISK_URL.len() > RISK_PATH.len());
/// Deadline for a risk assessment (the payment fails closed after it).
pub const RISK_TIMEOUT_MS: u64 = 2_000;
/// Largest risk-check answer.
pub const RISK_RESPONSE_BYTES_MAX: u64 = 64 * 1024;
/// query over service chaining.
pub const QUERY_URL: &str = "http://query.spin.internal";
/// Deadline for a forwarded list request.
pub const QUERY_TIMEOUT_MS: u64 = 10_000;
/// Largest forwarded list answer: a page's items stay within
/// `LIST_PAGE_BYTES_MAX`, well below this.
pub const QUERY_RESPONSE_BYTES_MAX: u64 = 4 * 1024 * 1024;
const _: () =
    assert!(spinpay_core::service::LIST_PAGE_BYTES_MAX as u64 * 2 <= QUERY_RESPONSE_BYTES_MAX);

/// Asks risk-check through `http://risk-check.spin.internal` for the merchant authorize
/// has authenticated (`spinpay-merchant-id`), proving the call comes from spinpay with
/// `spinpay-internal-mac` (HMAC under the shared `encryption_key` over path, merchant id
/// and body; risk-check answers 404 to a call without it and does not authenticate the
/// merchant a second time).
pub struct ChainedRisk {
    merchant_id: String,
}

impl ChainedRisk {
    /// A client acting for the authenticated merchant `merchant_id`.
    pub fn new(merchant_id: &str) -> ChainedRisk {
        ChainedRisk {
            merchant_id: merchant_id.to_string(),
        }
    }
}

impl RiskClient for ChainedRisk {
    async fn assess(&self, input: &RiskInput) -> Result<RiskAssessment, String> {
        let body = serde_json::to_vec(&RiskInputWire::from(input)).map_err(|e| e.to_string())?;
        let hex_key = env::secret(VAR_ENCRYPTION_KEY)
            .await
            .map_err(|e| format!("{VAR_ENCRYPTION_KEY}: {e}"))?;
        let keys = Keyring::from_hex(KEY_VERSION, hex_key.expose())
            .map_err(|e| format!("{VAR_ENCRYPTION_KEY}: {e}"))?;
        let mac = internal_mac(&keys, RISK_PATH, &self.merchant_id, &body);
        let req = OutboundRequest::post_json(RISK_URL, body)
            .header(INTERNAL_MERCHANT_HEADER, &self.merchant_id)
            .header(INTERNAL_MAC_HEADER, &mac);
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
}
