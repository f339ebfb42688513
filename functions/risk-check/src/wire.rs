//! risk-check's own wire shapes: the internal assessment body authorize sends, the
//! assessment answer, and the rules body a merchant PUTs.

use serde::{Deserialize, Serialize};
use spinpay_core::ApiError;
use spinpay_core::model::{MethodKind, Payer, RiskAssessment};
use spinpay_core::money::Currency;
use spinpay_core::risk::{RiskConfig, RiskInput};
use spinpay_guest::inbound;

/// `POST /v1/risk/internal/assess`: the core's [`RiskInput`] without the merchant, which
/// comes from the bearer key (authorize forwards the merchant's own), so a caller can
/// only ever be assessed against its own rules.
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

impl RiskInputWire {
    /// The engine's input for `merchant_id`; amounts are checked like everywhere else.
    pub fn into_input(self, merchant_id: &str) -> Result<RiskInput, ApiError> {
        Ok(RiskInput {
            merchant_id: merchant_id.to_string(),
            amount_minor: spinpay_core::api::validate_amount(self.amount_minor, "amount_minor")?,
            currency: self.currency,
            method: self.method,
            customer_token: self.customer_token,
            payer: self.payer,
        })
    }
}

/// An assessment as the API shows it: `{"object":"risk_assessment", decision, score,
/// rules, rules_version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssessmentResponse {
    /// `"risk_assessment"`.
    pub object: &'static str,
    /// The assessment.
    #[serde(flatten)]
    pub assessment: RiskAssessment,
}

impl From<RiskAssessment> for AssessmentResponse {
    fn from(assessment: RiskAssessment) -> Self {
        AssessmentResponse {
            object: "risk_assessment",
            assessment,
        }
    }
}

/// Parses a `PUT /v1/risk/rules` body. `version` belongs to spinpay (it grows on every
/// PUT), so a body that sets it is refused rather than silently ignored.
pub fn parse_rules(body: &[u8]) -> Result<RiskConfig, ApiError> {
    let value: serde_json::Value = inbound::parse_json(body)?;
    if value.get("version").is_some() {
        return Err(ApiError::UnknownField {
            param: "version".into(),
        });
    }
    inbound::parse_json(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spinpay_core::model::RiskDecision;

    #[test]
    fn an_assessment_answer_has_the_object_field_and_the_core_fields() {
        // Proves the flattened response shape matches openapi's RiskAssessment.
        let v = serde_json::to_value(AssessmentResponse::from(RiskAssessment::allow(4))).unwrap();
        assert_eq!(v["object"], "risk_assessment");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["rules_version"], 4);
        let back: RiskAssessment = serde_json::from_value(v).unwrap();
        assert_eq!(back.decision, RiskDecision::Allow);
    }

    #[test]
    fn a_rules_body_setting_version_is_refused_naming_it() {
        // Proves the client cannot choose the configuration version.
        let mut v = serde_json::to_value(RiskConfig::default()).unwrap();
        let e = parse_rules(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.param(), Some("version"));
        v.as_object_mut().unwrap().remove("version");
        assert_eq!(
            parse_rules(v.to_string().as_bytes())
                .unwrap()
                .amount_limits
                .len(),
            7
        );
    }

    #[test]
    fn internal_bodies_with_a_bad_amount_are_refused() {
        // Proves the internal endpoint validates amounts like the public API.
        let w: RiskInputWire =
            serde_json::from_str(r#"{"amount_minor":0,"currency":"CNY","method":"nfc"}"#).unwrap();
        assert_eq!(w.into_input("mch_x").unwrap_err().code(), "amount_invalid");
    }
}
