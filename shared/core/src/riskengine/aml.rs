//! AML report records: pure constructors, the per-day record they are appended to, and a
//! CSV rendering. Reports are kept per merchant and report day in one record
//! (`risk/{mid}/aml/{yyyy-mm-dd}`, via [`super::counters::key`]) so a day is listed with
//! one read; at most one report per kind and payer per day.

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};

use super::config::EngineConfig;
use super::counters::{CounterRecord, Dimension, Key, key};
use super::eval::{EngineInput, RefundFacts, is_near_threshold};

/// Most reports in one merchant-day.
pub const AML_REPORTS_PER_DAY_MAX: usize = 5_000;

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmlKind {
    /// The payer reached the large-value level within 24 h.
    LargeValue,
    /// Several payments just under a threshold within 24 h.
    Structuring,
    /// Repeated refunds soon after their payments.
    RapidRefund,
}

impl AmlKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AmlKind::LargeValue => "large_value",
            AmlKind::Structuring => "structuring",
            AmlKind::RapidRefund => "rapid_refund",
        }
    }
}

/// One AML report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmlReport {
    /// Kind.
    pub kind: AmlKind,
    /// Merchant.
    pub merchant_id: String,
    /// Report day (`yyyy-mm-dd` at the configured UTC offset).
    pub day: String,
    /// The payer's salted hash (no raw identifier in reports).
    pub payer_hash: String,
    /// The payment or refund that triggered it.
    pub event_id: String,
    /// When.
    pub at_ms: i64,
    /// The triggering amount (0 for a refund).
    pub amount_minor: i64,
    /// Currency of the amounts.
    pub currency: Currency,
    /// The payer's 24 h total including this event.
    pub total_24h_minor: i64,
    /// The count that triggered (payments, near-threshold payments or rapid refunds).
    pub count_24h: u64,
    /// The configuration version.
    pub rules_version: u64,
}

/// A merchant-day of reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmlDay {
    /// Merchant.
    pub merchant_id: String,
    /// Day.
    pub day: String,
    /// Reports, in append order.
    pub reports: Vec<AmlReport>,
}

/// A day's record is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AML report day {day} is full ({AML_REPORTS_PER_DAY_MAX} reports)")]
pub struct AmlDayFull {
    /// The day.
    pub day: String,
}

/// The key of a merchant-day's reports.
pub fn aml_day_key(merchant_id: &str, day: &str) -> String {
    key(Key::AmlDay { merchant_id, day })
}

/// The report day of an instant at a UTC offset, `yyyy-mm-dd`.
pub fn report_day(at_ms: i64, utc_offset_minutes: i32) -> String {
    let local_ms = at_ms.saturating_add(i64::from(utc_offset_minutes) * 60_000);
    let (y, m, d) = civil_from_days(local_ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl AmlDay {
    /// An empty day.
    pub fn new(merchant_id: &str, day: &str) -> AmlDay {
        AmlDay {
            merchant_id: merchant_id.into(),
            day: day.into(),
            reports: Vec::new(),
        }
    }

    /// Appends a report; `Ok(None)` when this kind was already reported for this payer
    /// today (so retries and races add nothing).
    pub fn append(mut self, report: AmlReport) -> Result<Option<AmlDay>, AmlDayFull> {
        assert_eq!(report.day, self.day, "report appended to its own day");
        let dup = self
            .reports
            .iter()
            .any(|r| r.kind == report.kind && r.payer_hash == report.payer_hash);
        if dup {
            return Ok(None);
        }
        if self.reports.len() >= AML_REPORTS_PER_DAY_MAX {
            return Err(AmlDayFull { day: self.day });
        }
        self.reports.push(report);
        Ok(Some(self))
    }
}

/// The reports a payment's counting calls for, from the payer's record *after* the
/// payment was counted (state-based, so a retry after a failure between counting and
/// filing still files them; [`AmlDay::append`] keeps one per kind, payer and day).
pub fn payment_reports(
    config: &EngineConfig,
    input: &EngineInput,
    after: &CounterRecord,
    now_ms: i64,
) -> Vec<AmlReport> {
    let mut out = Vec::new();
    let (Some(payer), true) = (
        input.subject.hash(Dimension::Payer),
        input.facts.currency == config.currency,
    ) else {
        return out;
    };
    let f = &input.facts;
    let sum = |field: fn(&super::counters::Bucket) -> i64| after.sum_24h(now_ms, field);
    let total = sum(|b| b.amount_minor);
    let count = sum(|b| b.count as i64) as u64;
    let day = report_day(now_ms, config.aml.day_utc_offset_minutes);
    let report = |kind, count_24h| AmlReport {
        kind,
        merchant_id: f.merchant_id.clone(),
        day: day.clone(),
        payer_hash: payer.to_string(),
        event_id: f.payment_id.clone(),
        at_ms: now_ms,
        amount_minor: f.amount_minor,
        currency: config.currency,
        total_24h_minor: total,
        count_24h,
        rules_version: config.version,
    };
    if total >= config.aml.large_value_daily_minor {
        out.push(report(AmlKind::LargeValue, count));
    }
    if let Some(s) = &config.aml.structuring
        && is_near_threshold(config, f.amount_minor)
    {
        let near = sum(|b| b.near_count as i64) as u64;
        if near >= s.min_count {
            out.push(report(AmlKind::Structuring, near));
        }
    }
    out
}

/// The report a rapid refund calls for once the payer's rapid refunds in 24 h (from the
/// record after counting) reach the configured count.
pub fn refund_reports(
    config: &EngineConfig,
    refund: &RefundFacts,
    after: &CounterRecord,
    now_ms: i64,
) -> Vec<AmlReport> {
    let Some(rr) = &config.aml.rapid_refund else {
        return Vec::new();
    };
    if now_ms.saturating_sub(refund.paid_at_ms) > rr.within_ms {
        return Vec::new();
    }
    let sum = |field: fn(&super::counters::Bucket) -> i64| after.sum_24h(now_ms, field);
    let rapid = sum(|b| b.rapid_refund_count as i64) as u64;
    if rapid < rr.min_count {
        return Vec::new();
    }
    vec![AmlReport {
        kind: AmlKind::RapidRefund,
        merchant_id: refund.merchant_id.clone(),
        day: report_day(now_ms, config.aml.day_utc_offset_minutes),
        payer_hash: refund.payer_hash.clone(),
        event_id: refund.refund_id.clone(),
        at_ms: now_ms,
        amount_minor: 0,
        currency: config.currency,
        total_24h_minor: sum(|b| b.amount_minor),
        count_24h: rapid,
        rules_version: config.version,
    }]
}

/// Renders reports as CSV (RFC 4180, header row, amounts in major units with the
/// currency's exponent).
pub fn render_csv(reports: &[AmlReport]) -> String {
    let mut out = String::from(
        "day,kind,merchant_id,payer_hash,event_id,at_ms,amount,total_24h,currency,count_24h,rules_version\r\n",
    );
    for r in reports {
        let cells = [
            csv_cell(&r.day),
            r.kind.as_str().to_string(),
            csv_cell(&r.merchant_id),
            csv_cell(&r.payer_hash),
            csv_cell(&r.event_id),
            r.at_ms.to_string(),
            major(r.amount_minor, r.currency),
            major(r.total_24h_minor, r.currency),
            r.currency.code().to_string(),
            r.count_24h.to_string(),
            r.rules_version.to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

fn major(minor: i64, c: Currency) -> String {
    let s = Money::new(minor, c).display();
    s.split(' ').next().unwrap_or(&s).to_string()
}

/// Quotes a cell when needed; a leading `=`, `+`, `-` or `@` is prefixed with `'` so a
/// spreadsheet does not run it as a formula.
fn csv_cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}
