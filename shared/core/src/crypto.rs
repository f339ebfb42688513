//! Secrets at rest and signatures on the wire.
//!
//! * [`seal`] / [`open`]: AES-256-GCM envelopes `v1.<key_version>.<b64 nonce>.<b64 ct>`
//!   for stored secrets (payer phone, device tokens, webhook secrets). The nonce comes
//!   from the caller (the core draws no randomness); the key version in the envelope
//!   names the key that opens it ([`Keyring::with_old_key`] keeps older ones), but the
//!   components configure one key only, so `encryption_key` cannot be rotated yet (a
//!   changed key is refused, see `service::check_encryption_key`). Associated
//!   data binds a ciphertext to its record (a sealed phone cannot be moved to another
//!   payment).
//! * [`sign_header`] / [`verify_header`]: `Spinpay-Signature: t=<unix>,v1=<hex>` where the
//!   hex is HMAC-SHA256(secret, "t.body"); several `v1` values are accepted (secret
//!   rotation), the timestamp must be inside a tolerance window, comparisons are
//!   constant-time.
//! * [`Secret`]: a wrapper whose `Debug` prints `***`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Bytes of an AES-GCM nonce.
pub const NONCE_BYTES: usize = 12;
/// Default tolerance for signature timestamps, seconds.
pub const SIGNATURE_TOLERANCE_S: i64 = 300;
/// Most `v1=` values accepted in one signature header.
pub const SIGNATURES_PER_HEADER_MAX: usize = 8;

/// A secret value; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The secret itself; call sites are easy to audit.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Crypto failures (never reveal which part failed beyond this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Not a `v1.` envelope.
    #[error("malformed envelope")]
    Malformed,
    /// The key version is not in the keyring.
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
    /// Authentication failed (wrong key, tampered, wrong associated data).
    #[error("decryption failed")]
    Decrypt,
    /// A key is not 32 bytes of hex.
    #[error("key must be 64 hex characters")]
    BadKey,
}

/// Encryption keys by version; the current one seals, all of them open.
#[derive(Clone, Debug)]
pub struct Keyring {
    current_version: u32,
    keys: Vec<(u32, Secret<[u8; 32]>)>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(version: u32, key: [u8; 32]) -> Keyring {
        Keyring {
            current_version: version,
            keys: vec![(version, Secret::new(key))],
        }
    }

    /// A keyring from a hex key (the secret Spin variable); fails closed on a bad key.
    pub fn from_hex(version: u32, hex_key: &str) -> Result<Keyring, CryptoError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Keyring::new(version, key))
    }

    /// Adds an older key that can still open envelopes.
    pub fn with_old_key(mut self, version: u32, key: [u8; 32]) -> Keyring {
        self.keys.push((version, Secret::new(key)));
        self
    }

    /// The version new envelopes use.
    pub fn current_version(&self) -> u32 {
        self.current_version
    }

    fn key(&self, version: u32) -> Option<&[u8; 32]> {
        self.keys
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, k)| k.expose())
    }

    /// HMAC-SHA256 under the current key (for keyed hashes such as OTPs).
    pub fn keyed_hash_hex(&self, data: &[u8]) -> String {
        let key = self.key(self.current_version).expect("current key present");
        hmac_hex(key, data)
    }
}

/// Seals `plaintext` under the current key with the caller's nonce.
pub fn seal(keys: &Keyring, nonce: [u8; NONCE_BYTES], plaintext: &[u8], aad: &[u8]) -> String {
    let version = keys.current_version();
    let key = keys.key(version).expect("current key present");
    let cipher = Aes256Gcm::new(key.into());
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), payload)
        .expect("AES-GCM encryption of bounded input cannot fail");
    format!("v1.{version}.{}.{}", B64.encode(nonce), B64.encode(ct))
}

/// Opens an envelope made by [`seal`] (any key version still in the keyring).
pub fn open(keys: &Keyring, envelope: &str, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut parts = envelope.split('.');
    let (Some("v1"), Some(v), Some(n), Some(c), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(CryptoError::Malformed);
    };
    let version: u32 = v.parse().map_err(|_| CryptoError::Malformed)?;
    let nonce = B64.decode(n).map_err(|_| CryptoError::Malformed)?;
    let ct = B64.decode(c).map_err(|_| CryptoError::Malformed)?;
    if nonce.len() != NONCE_BYTES {
        return Err(CryptoError::Malformed);
    }
    let key = keys
        .key(version)
        .ok_or(CryptoError::UnknownKeyVersion(version))?;
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad })
        .map_err(|_| CryptoError::Decrypt)
}

/// sha256 as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HMAC-SHA256 as lower-case hex.
pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time equality (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Spinpay-Signature` value for `body` at `t_unix_s`.
pub fn sign_header(secret: &[u8], t_unix_s: i64, body: &[u8]) -> String {
    format!("t={t_unix_s},v1={}", signature_hex(secret, t_unix_s, body))
}

fn signature_hex(secret: &[u8], t_unix_s: i64, body: &[u8]) -> String {
    let mut signed = format!("{t_unix_s}.").into_bytes();
    signed.extend_from_slice(body);
    hmac_hex(secret, &signed)
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No secret configured: fail closed.
    #[error("no signing secret configured")]
    NoSecret,
    /// Header not `t=…,v1=…`.
    #[error("malformed signature header")]
    Malformed,
    /// Timestamp outside the tolerance window.
    #[error("timestamp outside tolerance")]
    Stale,
    /// No `v1` matched any secret.
    #[error("no matching signature")]
    Mismatch,
}

/// Verifies a `Spinpay-Signature` header against any of `secrets` (rotation).
pub fn verify_header(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now_unix_s: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    if secrets.is_empty() || secrets.iter().any(|s| s.is_empty()) {
        return Err(SignatureError::NoSecret);
    }
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) if sigs.len() < SIGNATURES_PER_HEADER_MAX => sigs.push(v),
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_unix_s.abs_diff(t) > tolerance_s.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let matched = secrets.iter().any(|secret| {
        let expected = signature_hex(secret, t, body);
        sigs.iter()
            .any(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()))
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(1, [7; 32])
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_associated_data() {
        // Proves round trip, tamper detection, AAD binding and the envelope format.
        let env = seal(&ring(), [1; 12], b"+8613812345678", b"pay_x");
        assert!(env.starts_with("v1.1."));
        assert!(!env.contains("8613812345678"));
        assert_eq!(open(&ring(), &env, b"pay_x").unwrap(), b"+8613812345678");
        assert_eq!(open(&ring(), &env, b"pay_y"), Err(CryptoError::Decrypt));
        let other = Keyring::new(1, [8; 32]);
        assert_eq!(open(&other, &env, b"pay_x"), Err(CryptoError::Decrypt));
        assert_eq!(open(&ring(), "v2.1.a.b", b""), Err(CryptoError::Malformed));
    }

    #[test]
    fn old_envelopes_open_after_key_rotation() {
        // Proves the key version in the envelope selects the old key.
        let env = seal(&ring(), [2; 12], b"tok", b"");
        let rotated = Keyring::new(2, [9; 32]).with_old_key(1, [7; 32]);
        assert_eq!(open(&rotated, &env, b"").unwrap(), b"tok");
        assert!(seal(&rotated, [2; 12], b"tok", b"").starts_with("v1.2."));
        assert_eq!(
            open(&Keyring::new(2, [9; 32]), &env, b""),
            Err(CryptoError::UnknownKeyVersion(1))
        );
    }

    #[test]
    fn signatures_verify_within_tolerance_with_any_rotated_secret() {
        // Proves sign/verify, several v1 values, staleness and tampering.
        let header = sign_header(b"whsec_new", 1_700_000_000, b"{}");
        let old_sig = signature_hex(b"whsec_old", 1_700_000_000, b"{}");
        let both = format!("{header},v1={old_sig}");
        assert_eq!(
            verify_header(&both, b"{}", &[b"whsec_old"], 1_700_000_010, 300),
            Ok(())
        );
        assert_eq!(
            verify_header(&header, b"{}", &[b"whsec_new"], 1_700_000_000, 300),
            Ok(())
        );
        assert_eq!(
            verify_header(&header, b"{ }", &[b"whsec_new"], 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_header(&header, b"{}", &[b"whsec_new"], 1_700_000_301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_header(&header, b"{}", &[], 1_700_000_000, 300),
            Err(SignatureError::NoSecret)
        );
        assert_eq!(
            verify_header("garbage", b"{}", &[b"k"], 0, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // Proves HMAC-SHA256 against RFC 4231's "Jefe" vector.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secrets_print_as_stars() {
        // Proves Debug of a Secret never shows the value.
        assert_eq!(format!("{:?}", Secret::new("sk_live")), "***");
    }
}
