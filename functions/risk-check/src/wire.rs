//! risk-check's own wire shapes: the assessment answer and the rules body a merchant
//! PUTs (the internal assessment body authorize sends is the core's
//! `api::RiskInputWire`).

use serde::Serialize;
use spinpay_core::ApiError;
use spinpay_core::model::RiskAssessment;
use spinpay_core::risk::RiskConfig;
use spinpay_guest::inbound;

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
}
