//! Helpers shared by the Alipay, WeChat Pay and UnionPay transformers: RSA keys
//! (SHA256withRSA, PKCS#1 v1.5), AES-256-GCM, constant-time comparison, replay
//! protection (timestamp window, replay keys), form encoding and the Beijing wall clock
//! the Chinese channels put in their messages. Pure: time and randomness come from the
//! caller.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::rand_core::CryptoRngCore;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

/// Smallest RSA modulus accepted for any key, in bits (the channels all use 2048).
pub const RSA_BITS_MIN: u32 = 2048;
/// Default window for signed timestamps, seconds (WeChat Pay's own SDKs use 5 minutes).
pub const TIMESTAMP_WINDOW_S: i64 = 300;
/// How long a claimed replay key must be kept: past the window, a replay fails anyway.
pub const REPLAY_KEY_TTL_S: i64 = 2 * TIMESTAMP_WINDOW_S;
/// Longest PEM or base64 key text accepted.
pub const KEY_TEXT_BYTES_MAX: usize = 16 * 1024;

/// Why a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not PEM (PKCS#8 / PKCS#1 / SPKI) nor bare base64 DER of one.
    #[error("key is not a PEM or base64 DER RSA key")]
    Malformed,
    /// The modulus is too small.
    #[error("RSA key of {0} bits is below the {RSA_BITS_MIN}-bit minimum")]
    TooSmall(u32),
}

/// Our RSA private key (merchant / app key). `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(RsaPrivateKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// Loads a key from PEM (`BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`) or from bare
    /// base64 DER of either (the form Alipay's key tool prints).
    pub fn from_text(text: &str) -> Result<SigningKey, KeyError> {
        let text = bounded(text)?;
        let key = if text.contains("-----BEGIN") {
            RsaPrivateKey::from_pkcs8_pem(text)
                .or_else(|_| RsaPrivateKey::from_pkcs1_pem(text))
                .map_err(|_| KeyError::Malformed)?
        } else {
            let der = decode_b64_lenient(text).ok_or(KeyError::Malformed)?;
            RsaPrivateKey::from_pkcs8_der(&der)
                .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
                .map_err(|_| KeyError::Malformed)?
        };
        SigningKey::from_rsa(key)
    }

    /// Wraps an `rsa` key (checked for size).
    pub fn from_rsa(key: RsaPrivateKey) -> Result<SigningKey, KeyError> {
        check_bits(key.size())?;
        Ok(SigningKey(key))
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.to_public_key())
    }

    /// SHA256withRSA (PKCS#1 v1.5) of `message`, with RSA blinding driven by `rng`
    /// (see SECURITY.md: RUSTSEC-2023-0071).
    pub fn sign_sha256(&self, rng: &mut impl CryptoRngCore, message: &[u8]) -> Vec<u8> {
        let digest = Sha256::digest(message);
        self.0
            .sign_with_rng(rng, Pkcs1v15Sign::new::<Sha256>(), &digest)
            .expect("PKCS#1 v1.5 signing of a SHA-256 digest with a >= 2048-bit key")
    }

    /// [`SigningKey::sign_sha256`], base64 (standard alphabet, padded).
    pub fn sign_sha256_b64(&self, rng: &mut impl CryptoRngCore, message: &[u8]) -> String {
        B64.encode(self.sign_sha256(rng, message))
    }
}

/// A peer's RSA public key (Alipay, WeChat Pay platform, UnionPay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey(RsaPublicKey);

impl VerifyingKey {
    /// Loads a key from PEM (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`) or bare base64
    /// DER of either (Alipay prints its public key that way). X.509 certificates are not
    /// parsed: extract the key with `openssl x509 -pubkey -noout`.
    pub fn from_text(text: &str) -> Result<VerifyingKey, KeyError> {
        let text = bounded(text)?;
        let key = if text.contains("-----BEGIN") {
            RsaPublicKey::from_public_key_pem(text)
                .or_else(|_| RsaPublicKey::from_pkcs1_pem(text))
                .map_err(|_| KeyError::Malformed)?
        } else {
            let der = decode_b64_lenient(text).ok_or(KeyError::Malformed)?;
            RsaPublicKey::from_public_key_der(&der)
                .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
                .map_err(|_| KeyError::Malformed)?
        };
        VerifyingKey::from_rsa(key)
    }

    /// Wraps an `rsa` key (checked for size).
    pub fn from_rsa(key: RsaPublicKey) -> Result<VerifyingKey, KeyError> {
        check_bits(key.size())?;
        Ok(VerifyingKey(key))
    }

    /// True if `signature` is a SHA256withRSA (PKCS#1 v1.5) signature of `message`.
    pub fn verify_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        let digest = Sha256::digest(message);
        self.0
            .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, signature)
            .is_ok()
    }

    /// [`VerifyingKey::verify_sha256`] with a base64 signature (whitespace tolerated).
    pub fn verify_sha256_b64(&self, message: &[u8], signature_b64: &str) -> bool {
        match decode_b64_lenient(signature_b64) {
            Some(sig) => self.verify_sha256(message, &sig),
            None => false,
        }
    }
}

fn bounded(text: &str) -> Result<&str, KeyError> {
    if text.len() > KEY_TEXT_BYTES_MAX {
        return Err(KeyError::Malformed);
    }
    Ok(text.trim())
}

fn check_bits(size_bytes: usize) -> Result<(), KeyError> {
    let bits = u32::try_from(size_bytes.saturating_mul(8)).unwrap_or(u32::MAX);
    if bits < RSA_BITS_MIN {
        return Err(KeyError::TooSmall(bits));
    }
    Ok(())
}

/// Why a request could not be built (a bad input, not a channel answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The channel has no product for this payment method.
    #[error("payment method {0:?} is not supported by this channel")]
    MethodUnsupported(&'static str),
    /// The channel has no separate authorization and capture for this product.
    #[error("manual capture is not supported by this channel")]
    ManualCaptureUnsupported,
    /// The currency is not accepted by this channel.
    #[error("currency {0} is not supported by this channel")]
    CurrencyUnsupported(&'static str),
    /// An amount that cannot be sent (negative, zero or too large).
    #[error("amount_minor {0} cannot be sent to the channel")]
    Amount(i64),
    /// A field the channel requires is missing or invalid.
    #[error("field {field} is required by this channel: {reason}")]
    Field {
        /// The field (e.g. `payer.ip`).
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// Why a notification was refused. The webhook answers the channel's failure format
/// (4xx) so that a genuine sender retries; nothing is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationRejected {
    /// Missing, unknown-key, forged or wrong-type signature.
    #[error("signature refused: {0}")]
    Signature(String),
    /// The signed timestamp is outside the replay window.
    #[error("timestamp outside the {TIMESTAMP_WINDOW_S} s window")]
    Stale,
    /// Signed, but for another merchant / app.
    #[error("notification is for another merchant: {0}")]
    WrongMerchant(String),
    /// Signed but not understood (missing field, bad encoding, undecryptable resource).
    #[error("malformed notification: {0}")]
    Malformed(String),
}

/// The RNG that drives RSA blinding in production: SHA-256 in counter mode over a
/// 32-byte seed the wiring draws from the host's CSPRNG (`wasi:random`) per call. The
/// transformers take any `CryptoRngCore`; this one exists so the guest needs no
/// `getrandom` plumbing inside `rsa`.
pub struct BlindingRng {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl std::fmt::Debug for BlindingRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlindingRng(***)")
    }
}

impl BlindingRng {
    /// An RNG from 32 bytes of real randomness (never a constant in production).
    pub fn from_seed(seed: [u8; 32]) -> BlindingRng {
        BlindingRng {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn refill(&mut self) {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(self.counter.to_le_bytes());
        self.block = h.finalize().into();
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }
}

impl rsa::rand_core::RngCore for BlindingRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0_u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0_u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest.iter_mut() {
            if self.used == self.block.len() {
                self.refill();
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for BlindingRng {}

/// Standard base64, ignoring ASCII whitespace (keys and signatures arrive wrapped).
pub fn decode_b64_lenient(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(compact.as_bytes()).ok()
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// AES-256-GCM decryption (16-byte tag appended to the ciphertext). `None` on a wrong
/// key, nonce, associated data or a tampered ciphertext.
pub fn aes256gcm_open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    associated_data: &[u8],
    ciphertext_and_tag: &[u8],
) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new(key.into());
    let payload = Payload {
        msg: ciphertext_and_tag,
        aad: associated_data,
    };
    cipher.decrypt(Nonce::from_slice(nonce), payload).ok()
}

/// AES-256-GCM encryption (what a channel does to a callback `resource`; used by
/// simulators and tests).
pub fn aes256gcm_seal(
    key: &[u8; 32],
    nonce: &[u8; 12],
    associated_data: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let payload = Payload {
        msg: plaintext,
        aad: associated_data,
    };
    cipher
        .encrypt(Nonce::from_slice(nonce), payload)
        .expect("AES-GCM encryption of a bounded message")
}

/// Constant-time equality (for values of public length: the length is not hidden).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// True if the signed timestamp `ts_s` is within `window_s` of `now_s`, either way.
pub fn within_window(ts_s: i64, now_s: i64, window_s: i64) -> bool {
    match now_s.checked_sub(ts_s) {
        Some(skew) => skew.checked_abs().is_some_and(|a| a <= window_s),
        None => false,
    }
}

/// The key-value key the webhook claims (create-if-absent, kept for
/// [`REPLAY_KEY_TTL_S`] or longer) to recognise a message delivered twice:
/// `replay/<channel>/<sha256 hex of the message id>`. Hashing bounds the length and
/// charset whatever the channel sends. A second claim of the same key means the same
/// message again: acknowledge it without applying it a second time.
pub fn replay_key(channel: &str, message_id: &str) -> String {
    format!("replay/{channel}/{}", sha256_hex(message_id.as_bytes()))
}

/// `k1=v1&k2=v2…` of the pairs in byte order of the keys, skipping empty values and
/// the keys in `exclude`: the string Alipay and UnionPay sign a *request* over (their
/// SDKs drop blank parameters before signing). Their own messages are verified over
/// [`verification_strings`], which keeps empty values.
pub fn canonical_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    exclude: &[&str],
) -> String {
    sorted_pairs(pairs.into_iter().filter(|(_, v)| !v.is_empty()), exclude)
}

/// `k1=v1&k2=v2…` of every pair, empty values included (`k=`), in byte order of the
/// keys, skipping the keys in `exclude`: the string a channel signs its own messages
/// over (UnionPay's SDK `coverMap2String`, Alipay's Java SDK `getSignCheckContentV1`,
/// python-alipay-sdk's `verify`).
pub fn canonical_pairs_with_empty<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    exclude: &[&str],
) -> String {
    sorted_pairs(pairs, exclude)
}

/// The strings a channel's message (a notification, an answer) may be signed over, to
/// try in turn: every field but the keys in `exclude`, empty ones included
/// ([`canonical_pairs_with_empty`], what the channels' SDKs verify); and, only when the
/// message carries an empty field, the same without its empty fields
/// ([`canonical_pairs`], how some of their demos verify). Both cover every non-empty
/// field the message carries, so a caller that reads an empty field as absent reads the
/// same message whichever string verifies.
pub fn verification_strings(fields: &[(String, String)], exclude: &[&str]) -> Vec<String> {
    let pairs = || fields.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut strings = vec![canonical_pairs_with_empty(pairs(), exclude)];
    if pairs().any(|(k, v)| v.is_empty() && !exclude.contains(&k)) {
        strings.push(canonical_pairs(pairs(), exclude));
    }
    strings
}

/// `k1=v1&k2=v2…` of the pairs but the keys in `exclude`, in byte order of the keys.
fn sorted_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    exclude: &[&str],
) -> String {
    let mut kept: Vec<(&str, &str)> = pairs
        .into_iter()
        .filter(|(k, _)| !exclude.contains(k))
        .collect();
    kept.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Percent-encodes for `application/x-www-form-urlencoded` (space as `+`, only
/// `A-Z a-z 0-9 - . _ *` left as they are, like Java's `URLEncoder` and Python's
/// `quote_plus` minus `~`).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Encodes pairs as a form body / query string, in the given order.
pub fn form_body(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Why a form body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8.
    #[error("malformed form encoding in field {0:?}")]
    Encoding(String),
    /// The same field twice (ambiguous: which one was signed?).
    #[error("field {0:?} appears twice")]
    Duplicate(String),
    /// More fields than [`FORM_FIELDS_MAX`].
    #[error("more than {FORM_FIELDS_MAX} fields")]
    TooMany,
}

/// Most fields accepted in one form body.
pub const FORM_FIELDS_MAX: usize = 128;

/// Decodes an `application/x-www-form-urlencoded` body (UTF-8) into pairs, refusing
/// duplicates.
pub fn form_decode(body: &str) -> Result<Vec<(String, String)>, FormError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in body.split('&').filter(|p| !p.is_empty()) {
        if out.len() >= FORM_FIELDS_MAX {
            return Err(FormError::TooMany);
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key = percent_decode(k).ok_or_else(|| FormError::Encoding(k.to_string()))?;
        let value = percent_decode(v).ok_or_else(|| FormError::Encoding(key.clone()))?;
        if out.iter().any(|(existing, _)| *existing == key) {
            return Err(FormError::Duplicate(key));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = char::from(*bytes.get(i + 1)?).to_digit(16)?;
                let lo = char::from(*bytes.get(i + 2)?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of `name` among decoded form pairs.
pub fn form_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Seconds east of UTC of China Standard Time (no daylight saving since 1991).
const BEIJING_OFFSET_S: i64 = 8 * 3600;

/// Broken-down Beijing wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeijingTime {
    /// Year.
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// 0–23.
    pub hour: u32,
    /// 0–59.
    pub minute: u32,
    /// 0–59.
    pub second: u32,
}

impl BeijingTime {
    /// The Beijing wall clock at Unix time `unix_s`.
    pub fn from_unix_s(unix_s: i64) -> BeijingTime {
        let local = unix_s.saturating_add(BEIJING_OFFSET_S);
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let secs = u32::try_from(secs).expect("rem_euclid(86400) fits u32");
        BeijingTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }

    /// The Beijing wall clock at Unix time `unix_ms`, to the second below.
    pub fn from_unix_ms(unix_ms: i64) -> BeijingTime {
        BeijingTime::from_unix_s(unix_ms.div_euclid(1000))
    }

    /// `yyyy-MM-ddTHH:mm:ss+08:00` (RFC 3339 with Beijing's offset: WeChat Pay's times).
    pub fn rfc3339(self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+08:00",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `yyyy-MM-dd HH:mm:ss` (Alipay's `timestamp`).
    pub fn dashed(self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `yyyyMMddHHmmss` (UnionPay's `txnTime`).
    pub fn compact(self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).expect("month 1..=12"),
        u32::try_from(day).expect("day 1..=31"),
    )
}

/// Throwaway RSA keys for unit tests, generated once per seed from a seeded RNG.
#[cfg(test)]
pub(crate) fn test_key(seed: u64) -> SigningKey {
    use rsa::rand_core::SeedableRng;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<u64, SigningKey>>> = OnceLock::new();
    let map = KEYS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().expect("test key cache");
    map.entry(seed)
        .or_insert_with(|| {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let key = RsaPrivateKey::new(&mut rng, 2048).expect("keygen");
            SigningKey::from_rsa(key).expect("2048 bits")
        })
        .clone()
}

/// The SPKI PEM of [`test_key`]`(seed)`'s public half.
#[cfg(test)]
pub(crate) fn test_public_pem(seed: u64) -> String {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    test_key(seed)
        .0
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("SPKI encoding")
}

/// A deterministic RNG for blinding in unit tests.
#[cfg(test)]
pub(crate) fn test_rng() -> rand_chacha::ChaCha20Rng {
    use rsa::rand_core::SeedableRng;
    rand_chacha::ChaCha20Rng::seed_from_u64(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_signatures_round_trip_and_keys_load_from_every_accepted_form() {
        // Proves sign→verify, that blinding RNGs do not change PKCS#1 v1.5 output, that
        // PKCS#8/PKCS#1 PEM and bare base64 DER load, and that small keys are refused.
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = test_key(1);
        let public = key.verifying_key();
        let a = key.sign_sha256(&mut test_rng(), b"message");
        let b = key.sign_sha256(&mut BlindingRng::from_seed([9; 32]), b"message");
        assert_eq!(a, b);
        assert!(public.verify_sha256(b"message", &a));
        assert!(!public.verify_sha256(b"messagE", &a));
        assert!(!public.verify_sha256_b64(b"message", "not base64!"));
        let pkcs8 = key.0.to_pkcs8_pem(LineEnding::LF).unwrap();
        let pkcs1 = key.0.to_pkcs1_pem(LineEnding::LF).unwrap();
        let der_b64 = b64(key.0.to_pkcs8_der().unwrap().as_bytes());
        for text in [pkcs8.as_str(), pkcs1.as_str(), der_b64.as_str()] {
            let k = SigningKey::from_text(text).unwrap();
            assert!(public.verify_sha256(b"x", &k.sign_sha256(&mut test_rng(), b"x")));
        }
        let spki = public.0.to_public_key_pem(LineEnding::LF).unwrap();
        let spki_b64 = b64(public.0.to_public_key_der().unwrap().as_bytes());
        let rsa_pub = public.0.to_pkcs1_pem(LineEnding::LF).unwrap();
        for text in [spki.as_str(), spki_b64.as_str(), rsa_pub.as_str()] {
            assert_eq!(VerifyingKey::from_text(text).unwrap(), public);
        }
        assert_eq!(
            SigningKey::from_text("garbage").err(),
            Some(KeyError::Malformed)
        );
        let mut rng = test_rng();
        let small = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        assert_eq!(
            SigningKey::from_rsa(small).err(),
            Some(KeyError::TooSmall(1024))
        );
        assert_eq!(format!("{key:?}"), "SigningKey(***)");
    }

    #[test]
    fn beijing_time_is_utc_plus_eight_across_a_date_line() {
        // Proves 2024-02-29 16:30:05 UTC is 2024-03-01 00:30:05 in Beijing (leap day).
        let t = BeijingTime::from_unix_s(1_709_224_205);
        assert_eq!(t.dashed(), "2024-03-01 00:30:05");
        assert_eq!(t.compact(), "20240301003005");
        assert_eq!(BeijingTime::from_unix_s(0).dashed(), "1970-01-01 08:00:00");
        assert_eq!(
            BeijingTime::from_unix_ms(1_709_224_205_999).rfc3339(),
            "2024-03-01T00:30:05+08:00"
        );
        assert_eq!(
            BeijingTime::from_unix_ms(-1).compact(),
            "19700101075959",
            "milliseconds round down, also before the epoch"
        );
    }

    #[test]
    fn canonical_pairs_sort_by_bytes_and_drop_empty_and_excluded_keys() {
        // Proves the canonical string is byte-sorted, skips empty values and the excluded keys.
        let s = canonical_pairs(
            [
                ("b", "2"),
                ("a", "1"),
                ("sign", "x"),
                ("B", "up"),
                ("e", ""),
            ],
            &["sign"],
        );
        assert_eq!(s, "B=up&a=1&b=2");
    }

    #[test]
    fn verification_strings_keep_empty_fields_and_add_the_string_without_them_only_if_any() {
        // Proves a message is verified first over every field but the excluded ones, empty
        // ones as `k=`, byte-sorted; the string without empty fields is a second candidate
        // only when the message has an empty field (an empty excluded one does not count).
        let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let with_empty = fields(&[("b", "2"), ("sign", "x"), ("e", ""), ("a", "1")]);
        assert_eq!(
            verification_strings(&with_empty, &["sign"]),
            vec!["a=1&b=2&e=".to_string(), "a=1&b=2".to_string()]
        );
        let pairs = with_empty.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        assert_eq!(canonical_pairs_with_empty(pairs, &["sign"]), "a=1&b=2&e=");
        let none_empty = fields(&[("b", "2"), ("sign", ""), ("a", "1")]);
        assert_eq!(
            verification_strings(&none_empty, &["sign"]),
            vec!["a=1&b=2".to_string()]
        );
    }

    #[test]
    fn form_encoding_round_trips_and_rejects_bad_escapes_and_duplicates() {
        // Proves encode→decode is the identity and malformed bodies are refused, not guessed.
        let pairs = vec![
            ("k".to_string(), "a b&c=d/é+".to_string()),
            ("z".to_string(), String::new()),
        ];
        let body = form_body(&pairs);
        assert_eq!(body, "k=a+b%26c%3Dd%2F%C3%A9%2B&z=");
        assert_eq!(form_decode(&body).unwrap(), pairs);
        assert!(matches!(form_decode("a=%G1"), Err(FormError::Encoding(_))));
        assert!(matches!(
            form_decode("a=1&a=2"),
            Err(FormError::Duplicate(_))
        ));
    }

    #[test]
    fn constant_time_compare_and_window_checks_are_exact() {
        // Proves equality needs equal bytes and length, and the window is inclusive both ways.
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(within_window(1000, 1300, 300));
        assert!(within_window(1300, 1000, 300));
        assert!(!within_window(1000, 1301, 300));
        assert!(!within_window(i64::MIN, i64::MAX, 300));
    }

    #[test]
    fn aes_gcm_opens_what_it_seals_only_with_the_same_associated_data() {
        // Proves the AEAD round trip and that changed associated data is refused.
        let key = [7_u8; 32];
        let nonce = *b"0123456789ab";
        let ct = aes256gcm_seal(&key, &nonce, b"transaction", b"{\"a\":1}");
        assert_eq!(
            aes256gcm_open(&key, &nonce, b"transaction", &ct).unwrap(),
            b"{\"a\":1}"
        );
        assert!(aes256gcm_open(&key, &nonce, b"refund", &ct).is_none());
    }

    #[test]
    fn replay_keys_are_bounded_and_channel_scoped() {
        // Proves the key is channel-prefixed, fixed-length and distinct per channel.
        let a = replay_key("wechatpay", "nonce-1");
        assert!(a.starts_with("replay/wechatpay/"));
        assert_eq!(a.len(), "replay/wechatpay/".len() + 64);
        assert_ne!(a, replay_key("alipay", "nonce-1"));
    }
}
