//! risk-check's own wire shapes: the assessment answer, the rules document a merchant
//! GETs and PUTs (decoded with errors that name the exact field), and the AML listing
//! (JSON and CSV). The internal assessment body authorize sends is the core's
//! `api::RiskInputWire`.

use serde::Serialize;
use serde_json::{Map, Value};
use spinpay_core::model::RiskAssessment;
use spinpay_core::riskengine::{AmlReport, EngineConfig, hash_identifier};
use spinpay_core::{ApiError, api};

/// Raw phones or tokens accepted in one PUT list (hashed before storage).
pub const RAW_ENTRIES_MAX: usize = 10_000;
/// Longest raw phone or token.
pub const RAW_ENTRY_BYTES_MAX: usize = 256;

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

/// The rules document: `{"object":"risk_rules", "version", …the configuration}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesResponse {
    /// `"risk_rules"`.
    pub object: &'static str,
    /// The configuration.
    #[serde(flatten)]
    pub config: EngineConfig,
}

impl From<EngineConfig> for RulesResponse {
    fn from(config: EngineConfig) -> Self {
        RulesResponse {
            object: "risk_rules",
            config,
        }
    }
}

/// One day's AML reports: `{"object":"list","day","data":[…],"has_more":false}` (a day
/// is one record, so it is never paged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmlListResponse {
    /// `"list"`.
    pub object: &'static str,
    /// The report day.
    pub day: String,
    /// The reports, oldest first.
    pub data: Vec<AmlReportView>,
    /// Always false.
    pub has_more: bool,
}

/// One report as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmlReportView {
    /// `"aml_report"`.
    pub object: &'static str,
    /// The report.
    #[serde(flatten)]
    pub report: AmlReport,
}

impl AmlListResponse {
    /// The listing of `day`.
    pub fn new(day: String, reports: Vec<AmlReport>) -> AmlListResponse {
        let data = reports
            .into_iter()
            .map(|report| AmlReportView {
                object: "aml_report",
                report,
            })
            .collect();
        AmlListResponse {
            object: "list",
            day,
            data,
            has_more: false,
        }
    }
}

/// How the AML listing is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// `application/json`.
    Json,
    /// `text/csv` (RFC 4180).
    Csv,
}

/// `format=json|csv` wins; else `Accept: text/csv` asks for CSV; else JSON.
pub fn list_format(format: Option<&str>, accept: Option<&str>) -> Result<ListFormat, ApiError> {
    match format {
        Some("json") => Ok(ListFormat::Json),
        Some("csv") => Ok(ListFormat::Csv),
        Some(_) => Err(ApiError::ParameterInvalid {
            param: "format".into(),
            reason: "must be json or csv".into(),
        }),
        None => {
            let wants_csv = accept.is_some_and(|a| {
                a.split(',')
                    .any(|m| m.split(';').next().unwrap_or("").trim() == "text/csv")
            });
            Ok(if wants_csv {
                ListFormat::Csv
            } else {
                ListFormat::Json
            })
        }
    }
}

/// A parsed `PUT /v1/risk/rules` body, before the raw phones and tokens are hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesInput {
    /// The configuration (version 0: spinpay sets it).
    pub config: EngineConfig,
    /// Raw `{block,allow}list.{phones,tokens}` entries to hash with the merchant's salt.
    raw: Vec<(&'static str, &'static str, String)>,
}

impl RulesInput {
    /// The configuration with the raw phones and tokens added as salted hashes.
    pub fn into_config(self, salt: &[u8]) -> EngineConfig {
        let mut c = self.config;
        for (list, kind, value) in self.raw {
            let lists = if list == "blocklist" {
                &mut c.blocklist
            } else {
                &mut c.allowlist
            };
            let h = hash_identifier(salt, kind, &value);
            if kind == "phone" {
                lists.phone_hashes.insert(h);
            } else {
                lists.token_hashes.insert(h);
            }
        }
        c
    }
}

fn invalid(param: impl Into<String>, reason: impl Into<String>) -> ApiError {
    ApiError::ParameterInvalid {
        param: param.into(),
        reason: reason.into(),
    }
}

/// Parses a `PUT /v1/risk/rules` body. A top-level section left out takes its default;
/// inside a section every field is strict. `version` belongs to spinpay (it grows on
/// every PUT), so a body that sets it is refused. `blocklist.phones`, `blocklist.tokens`
/// (and the allow-list twins) take raw values that are stored only as salted hashes.
/// Every error names the exact field (`velocity[2].window`, `aml.structuring.below_bp`).
pub fn parse_rules(body: &[u8]) -> Result<RulesInput, ApiError> {
    let value = spinpay_guest::inbound::parse_json_value(body)?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::JsonInvalid {
            detail: "the body must be a JSON object".into(),
        });
    };
    if obj.contains_key("version") {
        return Err(ApiError::UnknownField {
            param: "version".into(),
        });
    }
    let mut raw = Vec::new();
    for list in ["blocklist", "allowlist"] {
        if let Some(Value::Object(l)) = obj.get_mut(list) {
            take_raw(l, list, "phones", "phone", &mut raw)?;
            take_raw(l, list, "tokens", "token", &mut raw)?;
        }
    }
    let template = match serde_json::to_value(EngineConfig::default()) {
        Ok(Value::Object(t)) => t,
        Ok(_) | Err(_) => unreachable!("the default configuration serializes to an object"),
    };
    for (k, v) in &template {
        if k != "version" && !obj.contains_key(k) {
            obj.insert(k.clone(), v.clone());
        }
    }
    let mut config = decode_config(Value::Object(obj), &Value::Object(template))?;
    config.version = 0;
    Ok(RulesInput { config, raw })
}

fn take_raw(
    l: &mut Map<String, Value>,
    list: &'static str,
    field: &str,
    kind: &'static str,
    out: &mut Vec<(&'static str, &'static str, String)>,
) -> Result<(), ApiError> {
    let Some(v) = l.remove(field) else {
        return Ok(());
    };
    let Value::Array(items) = v else {
        return Err(invalid(
            format!("{list}.{field}"),
            "must be an array of strings",
        ));
    };
    if items.len() > RAW_ENTRIES_MAX {
        return Err(invalid(format!("{list}.{field}"), "at most 10000 entries"));
    }
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::String(s) if !s.is_empty() && s.len() <= RAW_ENTRY_BYTES_MAX => {
                // Hashed as given, so an entry in another form than the API takes (a phone
                // without its +country code, spaces) could never match: refused, named.
                let param = format!("{list}.{field}[{i}]");
                match kind {
                    "phone" => api::validate_phone(&s, &param)?,
                    _ => api::validate_token(&s, &param)?,
                }
                out.push((list, kind, s));
            }
            Value::String(_) => {
                return Err(invalid(
                    format!("{list}.{field}[{i}]"),
                    "must be 1..=256 bytes",
                ));
            }
            _ => return Err(invalid(format!("{list}.{field}[{i}]"), "must be a string")),
        }
    }
    Ok(())
}

/// One step of a JSON path.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Decodes the configuration; on failure, finds the innermost field whose value alone
/// makes a known-good configuration fail, and names it.
fn decode_config(value: Value, template: &Value) -> Result<EngineConfig, ApiError> {
    let err = match serde_json::from_value::<EngineConfig>(value.clone()) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let mut path = Vec::new();
    let mut probe = template.clone();
    if let Value::Object(top) = &value {
        for (k, child) in top {
            path.push(Seg::Key(k.clone()));
            if let Some(e) = locate(&mut probe, &mut path, std::slice::from_ref(k), child) {
                return Err(e);
            }
            path.pop();
        }
    }
    Err(to_api_error(&err, &[]))
}

/// `probe` is a valid configuration; `at` the JSON path inside it (array elements are
/// probed as element 0) and `path` the path reported to the client.
fn locate(
    probe: &mut Value,
    path: &mut Vec<Seg>,
    at: &[String],
    candidate: &Value,
) -> Option<ApiError> {
    let pointer = format!("/{}", at.join("/"));
    let original = probe.pointer(&pointer).cloned();
    let slot_missing = original.is_none();
    set(probe, at, candidate.clone());
    let fails = serde_json::from_value::<EngineConfig>(probe.clone()).err();
    let result = fails.map(|err| {
        // Narrow down: a child that fails on its own is the better answer.
        match candidate {
            Value::Object(fields) if matches!(original, Some(Value::Object(_))) => {
                set(probe, at, original.clone().expect("object"));
                for (k, child) in fields {
                    let mut sub = at.to_vec();
                    sub.push(k.clone());
                    path.push(Seg::Key(k.clone()));
                    let found = locate(probe, path, &sub, child);
                    path.pop();
                    if let Some(e) = found {
                        return e;
                    }
                }
                to_api_error(&err, path)
            }
            Value::Array(items) if matches!(&original, Some(Value::Array(a)) if !a.is_empty()) => {
                let first = match &original {
                    Some(Value::Array(a)) => a[0].clone(),
                    Some(_) | None => unreachable!("checked above"),
                };
                for (i, item) in items.iter().enumerate() {
                    set(probe, at, Value::Array(vec![first.clone()]));
                    let mut sub = at.to_vec();
                    sub.push("0".into());
                    path.push(Seg::Index(i));
                    let found = locate(probe, path, &sub, item);
                    path.pop();
                    if let Some(e) = found {
                        return e;
                    }
                }
                to_api_error(&err, path)
            }
            _ => to_api_error(&err, path),
        }
    });
    match original {
        Some(v) => set(probe, at, v),
        None if slot_missing => unset(probe, at),
        None => {}
    }
    result
}

fn set(root: &mut Value, at: &[String], v: Value) {
    let (last, parents) = at.split_last().expect("non-empty path");
    let mut cur = root;
    for p in parents {
        cur = match cur {
            Value::Object(m) => m.entry(p.clone()).or_insert(Value::Null),
            Value::Array(a) => &mut a[p.parse::<usize>().expect("index")],
            _ => return,
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), v);
        }
        Value::Array(a) => a[last.parse::<usize>().expect("index")] = v,
        _ => {}
    }
}

fn unset(root: &mut Value, at: &[String]) {
    let (last, parents) = at.split_last().expect("non-empty path");
    let pointer = if parents.is_empty() {
        String::new()
    } else {
        format!("/{}", parents.join("/"))
    };
    if let Some(Value::Object(m)) = root.pointer_mut(&pointer) {
        m.remove(last);
    }
}

fn to_api_error(e: &serde_json::Error, path: &[Seg]) -> ApiError {
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    let join = |field: &str| {
        let base = render(path);
        // An unknown field is probed at its own path: do not name it twice.
        if matches!(path.last(), Some(Seg::Key(k)) if k == field) {
            base
        } else if base.is_empty() {
            field.to_string()
        } else {
            format!("{base}.{field}")
        }
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        return ApiError::UnknownField {
            param: join(rest.split('`').next().unwrap_or_default()),
        };
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        return ApiError::ParameterMissing {
            param: join(rest.split('`').next().unwrap_or_default()),
        };
    }
    let param = render(path);
    invalid(
        if param.is_empty() {
            "body".into()
        } else {
            param
        },
        msg,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use spinpay_core::model::RiskDecision;

    #[test]
    fn a_rules_body_naming_a_key_twice_is_refused() {
        // Proves a rules PUT with a duplicated key (top level or nested) is json_invalid
        // instead of taking the last copy (a limit or list a reviewer never saw).
        for body in [
            r#"{"limits":{},"limits":{}}"#,
            r#"{"blocklist":{"phones":["+8613800000000"],"phones":[]}}"#,
        ] {
            let e = parse_rules(body.as_bytes()).unwrap_err();
            assert_eq!(e.code(), "json_invalid", "{body}: {e:?}");
        }
        assert_eq!(parse_rules(b" ").unwrap_err().code(), "json_invalid");
    }

    fn err(body: &str) -> ApiError {
        parse_rules(body.as_bytes()).unwrap_err()
    }

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
    fn a_partial_body_takes_default_sections_and_an_empty_one_is_the_default() {
        // Proves omitted top-level sections are the defaults and the version is unset.
        let r = parse_rules(br#"{"blocklist":{"device_ids":["d-1"]}}"#).unwrap();
        assert!(r.config.blocklist.device_ids.contains("d-1"));
        let d = EngineConfig {
            version: 0,
            ..EngineConfig::default()
        };
        assert_eq!(parse_rules(b"{}").unwrap().config, d);
    }

    #[test]
    fn errors_name_the_innermost_field() {
        // Proves nested type errors, unknown and missing fields carry their full path.
        let cases = [
            (r#"{"version":3}"#, "unknown_field", "version"),
            (
                r#"{"thresholds":{"challenge_at":"x","review_at":1,"deny_at":2}}"#,
                "parameter_invalid",
                "thresholds.challenge_at",
            ),
            (
                r#"{"thresholds":{"challenge_at":1,"review_at":1}}"#,
                "parameter_missing",
                "thresholds.deny_at",
            ),
            (
                r#"{"velocity":[{"dimension":"payer","window":"1m","max_count":3,"contribution":1},{"dimension":"payer","window":"2m","max_count":3,"contribution":1}]}"#,
                "parameter_invalid",
                "velocity[1].window",
            ),
            (
                r#"{"aml":{"large_value_daily_minor":1,"day_utc_offset_minutes":0,"structuring":{"threshold_minor":1,"below_bp":1,"min_count":2,"x":1}}}"#,
                "unknown_field",
                "aml.structuring.x",
            ),
            (r#"{"weights":{"nope":1}}"#, "unknown_field", "weights.nope"),
            (r#"{"nope":1}"#, "unknown_field", "nope"),
            (
                r#"{"blocklist":{"phones":[1]}}"#,
                "parameter_invalid",
                "blocklist.phones[0]",
            ),
            // Entries no payment could ever match are refused, not stored as dead hashes.
            (
                r#"{"blocklist":{"phones":["+8613900000000","13900000000"]}}"#,
                "parameter_invalid",
                "blocklist.phones[1]",
            ),
            (
                r#"{"allowlist":{"phones":["+86 139 0000 0000"]}}"#,
                "parameter_invalid",
                "allowlist.phones[0]",
            ),
            (
                r#"{"blocklist":{"tokens":["tok 1"]}}"#,
                "parameter_invalid",
                "blocklist.tokens[0]",
            ),
            (r#"{"currency":"XXX"}"#, "parameter_invalid", "currency"),
        ];
        for (body, code, param) in cases {
            let e = err(body);
            assert_eq!((e.code(), e.param()), (code, Some(param)), "{body}: {e}");
        }
    }

    #[test]
    fn raw_phones_and_tokens_are_stored_only_as_salted_hashes() {
        // Proves raw list values become hashes made with the merchant's salt.
        let r = parse_rules(br#"{"blocklist":{"phones":["+8613900000000"],"tokens":["tok-1"]}}"#)
            .unwrap();
        let c = r.into_config(b"salt");
        let phone = hash_identifier(b"salt", "phone", "+8613900000000");
        assert!(c.blocklist.phone_hashes.contains(&phone));
        assert_eq!(c.blocklist.token_hashes.len(), 1);
        assert!(
            !serde_json::to_string(&c)
                .unwrap()
                .contains("+8613900000000")
        );
    }

    #[test]
    fn the_listing_format_comes_from_the_parameter_or_accept() {
        // Proves format= wins, Accept: text/csv selects CSV, and a bad format names it.
        assert_eq!(list_format(Some("csv"), None).unwrap(), ListFormat::Csv);
        assert_eq!(
            list_format(None, Some("text/csv; q=1")).unwrap(),
            ListFormat::Csv
        );
        assert_eq!(
            list_format(Some("json"), Some("text/csv")).unwrap(),
            ListFormat::Json
        );
        assert_eq!(list_format(None, None).unwrap(), ListFormat::Json);
        assert_eq!(
            list_format(Some("xml"), None).unwrap_err().param(),
            Some("format")
        );
    }
}
