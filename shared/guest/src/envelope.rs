//! The stored form of a versioned record, and the pure decisions of a compare-and-swap.
//!
//! A record is stored as a JSON envelope:
//!
//! ```json
//! {"version": 3, "write_ids": ["<id of v3>", "<id of v2>", "<id of v1>"], "json": {...}}
//! ```
//!
//! `json` embeds the value verbatim when it is JSON (it always is for spinpay's records,
//! which keeps the store readable with any key-value browser); any other bytes go in
//! `b64` (standard base64). `write_ids` lists the unique ids of the last
//! [`WRITE_IDS_KEPT_MAX`] writes, newest first: `write_ids[i]` wrote version
//! `version - i`.
//!
//! Why the history: Spin's Redis store reports `cas-failed` for swaps that did commit.
//! After a failed swap the repository re-reads the key; if the write id it just used is
//! at the position of version `expected + 1`, the write committed (and must not be
//! applied again), even when other writers have already written on top of it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How many write ids a record remembers (its own and its predecessors').
pub const WRITE_IDS_KEPT_MAX: u64 = 16;
/// Bytes of randomness in a write id (hex-encoded in the envelope).
pub const WRITE_ID_BYTES: usize = 12;

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Version of the record (≥ 1).
    pub version: u64,
    /// Write ids, newest first: `write_ids[i]` wrote version `version - i`.
    pub write_ids: Vec<String>,
    /// The record's bytes.
    pub value: Vec<u8>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    version: u64,
    write_ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    json: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn {
    version: u64,
    write_ids: Vec<String>,
    #[serde(default)]
    json: Option<Box<RawValue>>,
    #[serde(default)]
    b64: Option<String>,
}

/// Why stored bytes are not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record envelope: {0}")]
pub struct EnvelopeCorrupt(pub String);

/// Encodes an envelope.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    assert!(envelope.version >= 1, "envelope version starts at 1");
    assert!(
        !envelope.write_ids.is_empty(),
        "an envelope names its writer"
    );
    let raw: Option<&RawValue> = std::str::from_utf8(&envelope.value)
        .ok()
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
        // Only embed when the raw value is the whole input, so decoding is byte-exact.
        .filter(|raw| raw.get().len() == envelope.value.len());
    let out = EnvelopeOut {
        version: envelope.version,
        write_ids: &envelope.write_ids,
        b64: match raw {
            Some(_) => None,
            None => Some(B64.encode(&envelope.value)),
        },
        json: raw,
    };
    serde_json::to_vec(&out).expect("an envelope always serializes")
}

/// Decodes stored bytes into an envelope.
pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeCorrupt> {
    let parsed: EnvelopeIn =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeCorrupt(e.to_string()))?;
    let value = match (parsed.json, parsed.b64) {
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(b64)) => B64
            .decode(b64.as_bytes())
            .map_err(|e| EnvelopeCorrupt(format!("b64: {e}")))?,
        (Some(_), Some(_)) | (None, None) => {
            return Err(EnvelopeCorrupt("exactly one of json/b64 expected".into()));
        }
    };
    if parsed.version == 0 || parsed.write_ids.is_empty() {
        return Err(EnvelopeCorrupt("version 0 or no write id".into()));
    }
    let kept = u64::try_from(parsed.write_ids.len()).unwrap_or(u64::MAX);
    if kept > WRITE_IDS_KEPT_MAX || kept > parsed.version {
        return Err(EnvelopeCorrupt(
            "write id history longer than allowed".into(),
        ));
    }
    Ok(Envelope {
        version: parsed.version,
        write_ids: parsed.write_ids,
        value,
    })
}

/// A write ready to be swapped in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWrite {
    /// The version the record will have.
    pub new_version: u64,
    /// The envelope bytes to store.
    pub bytes: Vec<u8>,
}

/// Why a write cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanRefused {
    /// The stored version is not the expected one.
    Conflict,
    /// The stored bytes are not an envelope.
    Corrupt(EnvelopeCorrupt),
}

/// Plans `put_if_version`: checks the current stored bytes against `expected` (0 =
/// absent) and builds the next envelope, carrying the write-id history forward.
pub fn plan_put(
    current: Option<&[u8]>,
    expected: u64,
    write_id: &str,
    value: Vec<u8>,
) -> Result<PlannedWrite, PlanRefused> {
    let previous = match current {
        None => None,
        Some(bytes) => Some(decode(bytes).map_err(PlanRefused::Corrupt)?),
    };
    let current_version = previous.as_ref().map_or(0, |e| e.version);
    if current_version != expected {
        return Err(PlanRefused::Conflict);
    }
    let new_version = expected.checked_add(1).ok_or(PlanRefused::Conflict)?;
    let keep = usize::try_from(WRITE_IDS_KEPT_MAX).expect("small constant");
    let mut write_ids = Vec::with_capacity(keep);
    write_ids.push(write_id.to_string());
    if let Some(prev) = previous {
        write_ids.extend(prev.write_ids.into_iter().take(keep - 1));
    }
    let envelope = Envelope {
        version: new_version,
        write_ids,
        value,
    };
    Ok(PlannedWrite {
        new_version,
        bytes: encode(&envelope),
    })
}

/// What a re-read after a failed (or errored) swap says about our write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapVerdict {
    /// Our write is in the store as `version`: it committed; report success.
    Committed {
        /// The version our write created.
        version: u64,
    },
    /// Our write is not in the store: a genuine conflict (re-read and retry is safe).
    NotCommitted,
    /// Too many writes landed since: the history no longer tells. Retrying could apply
    /// the change twice, so the caller must treat the outcome as unknown.
    Unknown,
}

/// Decides, from the bytes re-read after a failed swap, whether the write with
/// `write_id` (which would have created version `expected + 1`) committed.
pub fn verdict_after_failed_swap(
    reread: Option<&[u8]>,
    expected: u64,
    write_id: &str,
) -> SwapVerdict {
    let Some(bytes) = reread else {
        return SwapVerdict::NotCommitted;
    };
    let Ok(stored) = decode(bytes) else {
        return SwapVerdict::Unknown;
    };
    let Some(ours) = expected.checked_add(1) else {
        return SwapVerdict::NotCommitted;
    };
    if stored.version < ours {
        return SwapVerdict::NotCommitted;
    }
    let back = stored.version - ours;
    match usize::try_from(back)
        .ok()
        .and_then(|i| stored.write_ids.get(i))
    {
        Some(id) if id == write_id => SwapVerdict::Committed { version: ours },
        Some(_) => SwapVerdict::NotCommitted,
        None => SwapVerdict::Unknown,
    }
}

/// A fresh write id (hex of [`WRITE_ID_BYTES`] random bytes).
pub fn write_id_from(random: [u8; WRITE_ID_BYTES]) -> String {
    hex::encode(random)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope_at(version: u64, ids: &[&str], value: &[u8]) -> Vec<u8> {
        encode(&Envelope {
            version,
            write_ids: ids.iter().map(|s| s.to_string()).collect(),
            value: value.to_vec(),
        })
    }

    #[test]
    fn json_values_are_embedded_verbatim_and_round_trip_exactly() {
        // Proves a JSON value is stored readable (not base64) and decodes to the same bytes.
        let value = br#"{"b": 1, "a":[true,null]}"#.to_vec();
        let bytes = envelope_at(4, &["w4", "w3"], &value);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(r#""json":{"b": 1, "a":[true,null]}"#),
            "{text}"
        );
        let back = decode(&bytes).unwrap();
        assert_eq!(back.value, value);
        assert_eq!(back.version, 4);
        assert_eq!(back.write_ids, vec!["w4", "w3"]);
    }

    #[test]
    fn binary_values_are_stored_as_base64_and_round_trip() {
        // Proves non-JSON bytes survive the envelope through the b64 field.
        let value = vec![0, 159, 146, 150, 255];
        let bytes = envelope_at(1, &["w1"], &value);
        assert!(String::from_utf8_lossy(&bytes).contains("\"b64\""));
        assert_eq!(decode(&bytes).unwrap().value, value);
    }

    #[test]
    fn malformed_envelopes_are_reported_corrupt() {
        // Proves garbage, version 0, both payload fields and an over-long history are refused.
        assert!(decode(b"not json").is_err());
        assert!(decode(br#"{"version":0,"write_ids":["a"],"json":1}"#).is_err());
        assert!(decode(br#"{"version":1,"write_ids":["a"],"json":1,"b64":"AA=="}"#).is_err());
        assert!(decode(br#"{"version":1,"write_ids":["a","b"],"json":1}"#).is_err());
        assert!(decode(br#"{"version":1,"write_ids":[],"json":1}"#).is_err());
    }

    #[test]
    fn first_write_expects_version_zero_and_creates_version_one() {
        // Proves put on an absent key succeeds only with expected = 0.
        let plan = plan_put(None, 0, "w1", b"{}".to_vec()).unwrap();
        assert_eq!(plan.new_version, 1);
        assert_eq!(
            plan_put(None, 3, "w1", b"{}".to_vec()),
            Err(PlanRefused::Conflict)
        );
    }

    #[test]
    fn a_stale_expected_version_is_a_conflict() {
        // Proves the version check refuses any expected version but the stored one.
        let stored = envelope_at(5, &["a", "b", "c", "d", "e"], b"1");
        assert_eq!(
            plan_put(Some(&stored), 4, "w", b"2".to_vec()),
            Err(PlanRefused::Conflict)
        );
        assert_eq!(
            plan_put(Some(&stored), 0, "w", b"2".to_vec()),
            Err(PlanRefused::Conflict)
        );
        let plan = plan_put(Some(&stored), 5, "w", b"2".to_vec()).unwrap();
        assert_eq!(plan.new_version, 6);
    }

    #[test]
    fn write_id_history_is_carried_forward_and_capped() {
        // Proves each write prepends its id and the history never exceeds the cap.
        let mut bytes = plan_put(None, 0, "w1", b"0".to_vec()).unwrap().bytes;
        for v in 1..40_u64 {
            bytes = plan_put(Some(&bytes), v, &format!("w{}", v + 1), b"0".to_vec())
                .unwrap()
                .bytes;
        }
        let env = decode(&bytes).unwrap();
        assert_eq!(env.version, 40);
        assert_eq!(env.write_ids.len() as u64, WRITE_IDS_KEPT_MAX);
        assert_eq!(env.write_ids[0], "w40");
        assert_eq!(env.write_ids[15], "w25");
    }

    #[test]
    fn a_swap_misreported_as_failed_is_recognised_as_committed() {
        // Proves the Redis fault (commit reported as cas-failed) yields Committed, so the
        // caller never applies the same change twice.
        let ours = plan_put(None, 0, "ours", b"{\"n\":300}".to_vec()).unwrap();
        assert_eq!(
            verdict_after_failed_swap(Some(&ours.bytes), 0, "ours"),
            SwapVerdict::Committed { version: 1 }
        );
    }

    #[test]
    fn our_commit_is_found_even_after_others_wrote_on_top() {
        // Proves a commit followed by another writer's commit is still recognised as ours.
        let stored = envelope_at(9, &["theirs2", "theirs1", "ours", "old"], b"1");
        assert_eq!(
            verdict_after_failed_swap(Some(&stored), 6, "ours"),
            SwapVerdict::Committed { version: 7 }
        );
    }

    #[test]
    fn someone_elses_write_is_a_genuine_conflict() {
        // Proves a failed swap whose slot holds another id is NotCommitted (safe to retry).
        let stored = envelope_at(7, &["theirs", "old"], b"1");
        assert_eq!(
            verdict_after_failed_swap(Some(&stored), 6, "ours"),
            SwapVerdict::NotCommitted
        );
        let unchanged = envelope_at(6, &["old"], b"1");
        assert_eq!(
            verdict_after_failed_swap(Some(&unchanged), 6, "ours"),
            SwapVerdict::NotCommitted
        );
        assert_eq!(
            verdict_after_failed_swap(None, 6, "ours"),
            SwapVerdict::NotCommitted
        );
    }

    #[test]
    fn a_history_that_no_longer_reaches_our_version_is_unknown() {
        // Proves that when too many writes landed the verdict is Unknown, never a guess.
        let mut bytes = plan_put(None, 0, "w1", b"0".to_vec()).unwrap().bytes;
        for v in 1..30_u64 {
            bytes = plan_put(Some(&bytes), v, &format!("w{}", v + 1), b"0".to_vec())
                .unwrap()
                .bytes;
        }
        assert_eq!(
            verdict_after_failed_swap(Some(&bytes), 2, "w3"),
            SwapVerdict::Unknown
        );
        assert_eq!(
            verdict_after_failed_swap(Some(&bytes), 20, "w21"),
            SwapVerdict::Committed { version: 21 }
        );
    }
}
