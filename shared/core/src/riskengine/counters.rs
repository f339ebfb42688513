//! Time-bucketed counters with bounded growth, and the key layout of the engine.
//!
//! **One record per counted entity.** Each payer, device, IP and payment token (hashed
//! with the merchant's salt) has one record at `risk/{mid}/c/{dim}/{hash}` holding three
//! rings of buckets, one per window:
//!
//! | window | bucket | ring | covers |
//! |---|---|---|---|
//! | `1m`  | 10 s   | 6    | the current bucket and the 5 before it (50–60 s) |
//! | `1h`  | 5 min  | 12   | 55–60 min |
//! | `24h` | 1 h    | 24   | 23–24 h |
//!
//! Bucket `i` (= `at_ms div bucket_ms`) lives in slot `i mod ring` and stores its own
//! `start_ms`. A write to a slot holding an older start overwrites it (starts from zero),
//! so a record never grows; a read counts a slot only when its start is one of the `ring`
//! newest bucket starts, so a stale slot reads as 0 without anyone having to delete it.
//! The payer's record also holds its profile (payments and amount sum for the running
//! mean, last time and place, the last few devices) and the 24 h ring carries the PBOC
//! tier sums and the AML counts.
//!
//! **Why compare-and-swap records, not `increment`.** A bucket's start and its sums must
//! change together when a slot is reused; one atomic `increment` cannot reset a stale slot
//! without a race (two writers would both subtract the stale value). So each record is
//! updated with [`crate::repo::Repository::put_if_version`] in a bounded retry loop, and
//! each record remembers the last [`APPLIED_IDS_MAX`] event ids it applied, so a retried
//! update (or a CAS misreported as failed) never counts twice. Reads are one `get_many`
//! of at most [`KEYS_PER_ASSESSMENT_MAX`] keys.

use serde::{Deserialize, Serialize};

use super::geo::GeoPoint;

/// Keys one assessment reads (payer, device, IP, token), in one `get_many`.
pub const KEYS_PER_ASSESSMENT_MAX: usize = 4;
/// Event ids a record remembers to make updates idempotent.
pub const APPLIED_IDS_MAX: usize = 32;
/// Devices remembered per payer (oldest forgotten first).
pub const KNOWN_DEVICES_MAX: usize = 8;
/// Longest event id.
pub const EVENT_ID_BYTES_MAX: usize = 128;

/// A counted entity kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The merchant's payer id.
    Payer,
    /// The device fingerprint.
    Device,
    /// The IP address.
    Ip,
    /// The payment token / auth code / phone used to pay.
    Token,
}

impl Dimension {
    /// Every dimension, in key order.
    pub const ALL: [Dimension; 4] = [
        Dimension::Payer,
        Dimension::Device,
        Dimension::Ip,
        Dimension::Token,
    ];

    /// The wire and key name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Payer => "payer",
            Dimension::Device => "device",
            Dimension::Ip => "ip",
            Dimension::Token => "token",
        }
    }

    /// Position in [`Dimension::ALL`].
    pub fn index(self) -> usize {
        match self {
            Dimension::Payer => 0,
            Dimension::Device => 1,
            Dimension::Ip => 2,
            Dimension::Token => 3,
        }
    }
}

/// A velocity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Window {
    /// One minute.
    #[serde(rename = "1m")]
    M1,
    /// One hour.
    #[serde(rename = "1h")]
    H1,
    /// Twenty-four hours.
    #[serde(rename = "24h")]
    H24,
}

impl Window {
    /// Every window.
    pub const ALL: [Window; 3] = [Window::M1, Window::H1, Window::H24];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::M1 => "1m",
            Window::H1 => "1h",
            Window::H24 => "24h",
        }
    }

    /// Length of one bucket.
    pub fn bucket_ms(self) -> i64 {
        match self {
            Window::M1 => 10_000,
            Window::H1 => 300_000,
            Window::H24 => 3_600_000,
        }
    }

    /// Buckets in the ring (the window is `ring × bucket_ms`).
    pub fn ring(self) -> i64 {
        match self {
            Window::M1 => 6,
            Window::H1 => 12,
            Window::H24 => 24,
        }
    }

    /// The bucket index of an instant.
    pub fn bucket_of(self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.bucket_ms())
    }

    /// Whether a bucket starting at `start_ms` counts in the window ending at `now_ms`.
    pub fn counts(self, start_ms: i64, now_ms: i64) -> bool {
        let b = self.bucket_of(now_ms);
        let i = self.bucket_of(start_ms);
        start_ms.rem_euclid(self.bucket_ms()) == 0 && i <= b && i > b - self.ring()
    }
}

/// PBOC barcode tier of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Static code.
    Static,
    /// Dynamic code, fewer than two authentication factors.
    DynamicLowAuth,
    /// Dynamic code, two or more factors.
    DynamicHighAuth,
}

impl Tier {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Static => "static",
            Tier::DynamicLowAuth => "dynamic_low_auth",
            Tier::DynamicHighAuth => "dynamic_high_auth",
        }
    }
}

/// One bucket of a ring. Stored compactly as an array of integers
/// `[start_ms, count, amount_minor, static_minor, dynamic_low_minor, dynamic_high_minor,
/// near_count, refund_count, rapid_refund_count]` with trailing zeros left out (a record
/// holds 42 buckets; field names would triple its size and its decode time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<i64>", try_from = "Vec<i64>")]
pub struct Bucket {
    /// Start of the bucket (a multiple of the window's bucket length).
    pub start_ms: i64,
    /// Payments.
    pub count: u64,
    /// Amount of those payments in the configuration currency.
    pub amount_minor: i64,
    /// Static-code amount (payer, 24 h ring).
    pub static_minor: i64,
    /// Dynamic low-auth amount (payer, 24 h ring).
    pub dynamic_low_minor: i64,
    /// Dynamic high-auth amount (payer, 24 h ring).
    pub dynamic_high_minor: i64,
    /// Payments just under the structuring threshold (payer, 24 h ring).
    pub near_count: u64,
    /// Refunds (payer, 24 h ring).
    pub refund_count: u64,
    /// Refunds soon after their payment (payer, 24 h ring).
    pub rapid_refund_count: u64,
}

/// Fields of a stored bucket array.
const BUCKET_FIELDS: usize = 9;

impl From<Bucket> for Vec<i64> {
    fn from(b: Bucket) -> Vec<i64> {
        // Counts are bounded far below i64::MAX by the checked sums that build them.
        let c = |v: u64| i64::try_from(v).expect("count fits i64");
        let mut v = vec![
            b.start_ms,
            c(b.count),
            b.amount_minor,
            b.static_minor,
            b.dynamic_low_minor,
            b.dynamic_high_minor,
            c(b.near_count),
            c(b.refund_count),
            c(b.rapid_refund_count),
        ];
        while v.len() > 1 && v.last() == Some(&0) {
            v.pop();
        }
        v
    }
}

impl TryFrom<Vec<i64>> for Bucket {
    type Error = String;

    fn try_from(v: Vec<i64>) -> Result<Bucket, String> {
        if v.is_empty() || v.len() > BUCKET_FIELDS {
            return Err(format!("a bucket has 1..={BUCKET_FIELDS} numbers"));
        }
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let count = |i: usize| u64::try_from(at(i)).map_err(|_| "negative count".to_string());
        Ok(Bucket {
            start_ms: at(0),
            count: count(1)?,
            amount_minor: at(2),
            static_minor: at(3),
            dynamic_low_minor: at(4),
            dynamic_high_minor: at(5),
            near_count: count(6)?,
            refund_count: count(7)?,
            rapid_refund_count: count(8)?,
        })
    }
}

/// What the engine remembers about a payer beyond the windows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Payments ever counted in the configuration currency (running mean's count).
    #[serde(default)]
    pub payments: u64,
    /// Their amount sum (running mean's numerator).
    #[serde(default)]
    pub sum_minor: i64,
    /// When the last payment that said where it was (a country or a location) was
    /// recorded, or the last payment while none has said so (set once the payer is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at_ms: Option<i64>,
    /// Its country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_country: Option<String>,
    /// Its coarse location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_location: Option<GeoPoint>,
    /// Device hashes seen, newest last.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// The stored record of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterRecord {
    /// 1-minute ring.
    pub m1: Vec<Bucket>,
    /// 1-hour ring.
    pub h1: Vec<Bucket>,
    /// 24-hour ring.
    pub h24: Vec<Bucket>,
    /// Payer profile (empty for other dimensions).
    #[serde(default)]
    pub profile: Profile,
    /// The last event ids applied, oldest first.
    #[serde(default)]
    pub applied: Vec<String>,
}

/// Sums over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Payments.
    pub count: u64,
    /// Amount.
    pub amount_minor: i64,
}

/// A record failed to decode or broke an invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// The stored bytes are not a counter record.
    #[error("counter record {key} is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A sum would overflow.
    #[error("counter overflow in {key}")]
    Overflow {
        /// The key.
        key: String,
    },
}

impl Default for CounterRecord {
    fn default() -> Self {
        CounterRecord::new()
    }
}

impl CounterRecord {
    /// An empty record (every slot stale).
    pub fn new() -> CounterRecord {
        let ring = |w: Window| vec![Bucket::default(); w.ring() as usize];
        CounterRecord {
            m1: ring(Window::M1),
            h1: ring(Window::H1),
            h24: ring(Window::H24),
            profile: Profile::default(),
            applied: Vec::new(),
        }
    }

    /// Decodes stored bytes and checks the shape invariants.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<CounterRecord, CounterError> {
        let corrupt = |reason: String| CounterError::Corrupt {
            key: key.to_string(),
            reason,
        };
        let r: CounterRecord = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        r.check().map_err(|e| corrupt(e.into()))?;
        Ok(r)
    }

    /// Encodes for storage, asserting the invariants first.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.check().is_ok(), "counter record invariant");
        serde_json::to_vec(self).expect("counter record serializes")
    }

    fn check(&self) -> Result<(), &'static str> {
        for w in Window::ALL {
            if self.ring(w).len() != w.ring() as usize {
                return Err("ring length");
            }
            for b in self.ring(w) {
                if b.start_ms.rem_euclid(w.bucket_ms()) != 0 || b.amount_minor < 0 {
                    return Err("bucket start or amount");
                }
            }
        }
        if self.applied.len() > APPLIED_IDS_MAX || self.profile.devices.len() > KNOWN_DEVICES_MAX {
            return Err("bounded lists too long");
        }
        Ok(())
    }

    /// The ring of one window.
    pub fn ring(&self, w: Window) -> &[Bucket] {
        match w {
            Window::M1 => &self.m1,
            Window::H1 => &self.h1,
            Window::H24 => &self.h24,
        }
    }

    fn ring_mut(&mut self, w: Window) -> &mut Vec<Bucket> {
        match w {
            Window::M1 => &mut self.m1,
            Window::H1 => &mut self.h1,
            Window::H24 => &mut self.h24,
        }
    }

    /// The buckets of `w` that count at `now_ms`.
    pub fn live(&self, w: Window, now_ms: i64) -> impl Iterator<Item = &Bucket> {
        self.ring(w)
            .iter()
            .filter(move |b| w.counts(b.start_ms, now_ms) && *b != &Bucket::default())
    }

    /// Payments and amount in `w` at `now_ms`.
    pub fn totals(&self, w: Window, now_ms: i64) -> Totals {
        self.live(w, now_ms).fold(Totals::default(), |t, b| Totals {
            count: t.count.saturating_add(b.count),
            amount_minor: t.amount_minor.saturating_add(b.amount_minor),
        })
    }

    /// Sum of one field over the 24 h ring at `now_ms`.
    pub fn sum_24h(&self, now_ms: i64, field: impl Fn(&Bucket) -> i64) -> i64 {
        self.live(Window::H24, now_ms)
            .fold(0i64, |s, b| s.saturating_add(field(b)))
    }

    /// Applies one delta; `Ok(None)` when this event was already applied.
    pub fn apply(
        mut self,
        key: &str,
        delta: &CounterDelta,
    ) -> Result<Option<CounterRecord>, CounterError> {
        if self.applied.iter().any(|id| id == &delta.event_id) {
            return Ok(None);
        }
        let overflow = || CounterError::Overflow {
            key: key.to_string(),
        };
        for w in Window::ALL {
            let idx = w.bucket_of(delta.at_ms);
            let start = idx.checked_mul(w.bucket_ms()).ok_or_else(overflow)?;
            let slot = idx.rem_euclid(w.ring()) as usize;
            let b = &mut self.ring_mut(w)[slot];
            if b.start_ms > start {
                continue; // a late event whose bucket was already reused: too old to count
            }
            if b.start_ms < start || *b == Bucket::default() {
                *b = Bucket {
                    start_ms: start,
                    ..Bucket::default()
                };
            }
            add_to_bucket(b, delta, w == Window::H24).ok_or_else(overflow)?;
        }
        if let Some(p) = &delta.profile {
            apply_profile(&mut self.profile, p, delta.at_ms).ok_or_else(overflow)?;
        }
        if self.applied.len() == APPLIED_IDS_MAX {
            self.applied.remove(0);
        }
        self.applied.push(delta.event_id.clone());
        Ok(Some(self))
    }
}

fn add_to_bucket(b: &mut Bucket, d: &CounterDelta, day_ring: bool) -> Option<()> {
    b.count = b.count.checked_add(d.count)?;
    b.amount_minor = b.amount_minor.checked_add(d.amount_minor)?;
    if !day_ring {
        return Some(());
    }
    match d.tier {
        Some(Tier::Static) => b.static_minor = b.static_minor.checked_add(d.amount_minor)?,
        Some(Tier::DynamicLowAuth) => {
            b.dynamic_low_minor = b.dynamic_low_minor.checked_add(d.amount_minor)?
        }
        Some(Tier::DynamicHighAuth) => {
            b.dynamic_high_minor = b.dynamic_high_minor.checked_add(d.amount_minor)?
        }
        None => {}
    }
    b.near_count = b.near_count.checked_add(u64::from(d.near))?;
    b.refund_count = b.refund_count.checked_add(u64::from(d.refund))?;
    b.rapid_refund_count = b
        .rapid_refund_count
        .checked_add(u64::from(d.rapid_refund))?;
    Some(())
}

fn apply_profile(p: &mut Profile, u: &ProfileUpdate, at_ms: i64) -> Option<()> {
    if u.counts_in_mean {
        p.payments = p.payments.checked_add(1)?;
        p.sum_minor = p.sum_minor.checked_add(u.amount_minor)?;
    }
    // A payment that does not say where it is leaves the last place, and its time, as
    // they were: one in between two others neither hides a country change nor makes an
    // old place look recent.
    let placed = u.country.is_some() || u.location.is_some();
    let had_place = p.last_country.is_some() || p.last_location.is_some();
    if p.last_at_ms.is_none_or(|last| last <= at_ms) && (placed || !had_place) {
        p.last_at_ms = Some(at_ms);
        p.last_country.clone_from(&u.country);
        p.last_location = u.location;
    }
    if let Some(d) = &u.device_hash {
        p.devices.retain(|x| x != d);
        if p.devices.len() == KNOWN_DEVICES_MAX {
            p.devices.remove(0);
        }
        p.devices.push(d.clone());
    }
    Some(())
}

/// What one event adds to one entity's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDelta {
    /// Unique event id (payment id, or `refund id`): applying it twice is a no-op.
    pub event_id: String,
    /// When it happened.
    pub at_ms: i64,
    /// Payments added (1 for a payment, 0 for a refund).
    pub count: u64,
    /// Amount added (0 when the payment is in another currency).
    pub amount_minor: i64,
    /// PBOC tier (payer only).
    pub tier: Option<Tier>,
    /// Just under the structuring threshold (payer only).
    pub near: bool,
    /// A refund (payer only).
    pub refund: bool,
    /// A rapid refund (payer only).
    pub rapid_refund: bool,
    /// Profile changes (payer only).
    pub profile: Option<ProfileUpdate>,
}

/// Profile changes carried by a payer's payment delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUpdate {
    /// Whether the amount joins the running mean (configuration currency only).
    pub counts_in_mean: bool,
    /// The amount.
    pub amount_minor: i64,
    /// Country.
    pub country: Option<String>,
    /// Coarse location.
    pub location: Option<GeoPoint>,
    /// Device hash.
    pub device_hash: Option<String>,
}

/// One record update to apply after an accepted payment or a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterUpdate {
    /// The record's key (from [`key`]).
    pub key: String,
    /// What to add.
    pub delta: CounterDelta,
}

/// Every key the engine writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// One entity's counters: `risk/{mid}/c/{dim}/{hash}`.
    Counter {
        /// Merchant.
        merchant_id: &'a str,
        /// Dimension.
        dimension: Dimension,
        /// Salted hash of the entity (64 hex).
        hash: &'a str,
    },
    /// One day's AML reports: `risk/{mid}/aml/{yyyy-mm-dd}`.
    AmlDay {
        /// Merchant.
        merchant_id: &'a str,
        /// The report day.
        day: &'a str,
    },
    /// The merchant's identifier salt, sealed: `risk/{mid}/salt`.
    Salt {
        /// Merchant.
        merchant_id: &'a str,
    },
}

/// The one function that names engine keys.
pub fn key(k: Key<'_>) -> String {
    match k {
        Key::Counter {
            merchant_id,
            dimension,
            hash,
        } => format!("risk/{merchant_id}/c/{}/{hash}", dimension.as_str()),
        Key::AmlDay { merchant_id, day } => format!("risk/{merchant_id}/aml/{day}"),
        Key::Salt { merchant_id } => format!("risk/{merchant_id}/salt"),
    }
}
