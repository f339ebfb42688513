//! Identifiers: a type prefix plus lower-case base32 (RFC 4648 alphabet, no padding) of
//! random bytes the caller supplies. The core never draws randomness itself.

/// Lower-case RFC 4648 base32 alphabet.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Random bytes behind an object id (128 bits).
pub const OBJECT_ID_BYTES: usize = 16;
/// Random bytes behind a secret key or webhook secret (256 bits).
pub const SECRET_ID_BYTES: usize = 32;
/// Longest id accepted from a client, in bytes (guards key lengths).
pub const ID_LEN_MAX: usize = 64;

/// The kinds of identifiers spinpay issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A payment, `pay_…`.
    Payment,
    /// A refund, `re_…`.
    Refund,
    /// A merchant, `mch_…`.
    Merchant,
    /// An event, `evt_…`.
    Event,
    /// A merchant's secret API key, `sk_…`.
    SecretKey,
    /// A merchant's webhook signing secret, `whsec_…`.
    WebhookSecret,
}

impl IdKind {
    /// The prefix including the underscore.
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Payment => "pay_",
            IdKind::Refund => "re_",
            IdKind::Merchant => "mch_",
            IdKind::Event => "evt_",
            IdKind::SecretKey => "sk_",
            IdKind::WebhookSecret => "whsec_",
        }
    }

    /// How many random bytes the id encodes.
    pub fn random_bytes(self) -> usize {
        match self {
            IdKind::Payment | IdKind::Refund | IdKind::Merchant | IdKind::Event => OBJECT_ID_BYTES,
            IdKind::SecretKey | IdKind::WebhookSecret => SECRET_ID_BYTES,
        }
    }

    /// Length of the base32 body for this kind.
    pub fn body_len(self) -> usize {
        (self.random_bytes() * 8).div_ceil(5)
    }
}

/// Makes an id of `kind` from caller-supplied random bytes.
///
/// Panics if `random` is shorter than the kind needs (a programming error, not input).
pub fn make_id(kind: IdKind, random: &[u8]) -> String {
    let needed = kind.random_bytes();
    assert!(random.len() >= needed, "id needs {needed} random bytes");
    format!("{}{}", kind.prefix(), base32(&random[..needed]))
}

/// Checks an id received from a client: right prefix, right length, base32 body.
pub fn is_valid_id(kind: IdKind, id: &str) -> bool {
    let Some(body) = id.strip_prefix(kind.prefix()) else {
        return false;
    };
    body.len() == kind.body_len() && body.bytes().all(|b| ALPHABET.contains(&b))
}

/// Lower-case base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_validate_and_have_the_documented_shape() {
        // Proves every kind's generated id passes its own validation and no other kind's.
        let kinds = [
            IdKind::Payment,
            IdKind::Refund,
            IdKind::Merchant,
            IdKind::Event,
            IdKind::SecretKey,
            IdKind::WebhookSecret,
        ];
        for kind in kinds {
            let id = make_id(kind, &[0xA5; 32]);
            assert!(id.starts_with(kind.prefix()));
            assert!(is_valid_id(kind, &id), "{id}");
            assert!(id.len() <= ID_LEN_MAX);
        }
        assert!(!is_valid_id(
            IdKind::Refund,
            &make_id(IdKind::Payment, &[1; 16])
        ));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        // Proves wrong prefix, wrong length, upper case and foreign characters all fail.
        let good = make_id(IdKind::Payment, &[7; 16]);
        assert!(!is_valid_id(IdKind::Payment, &good[..good.len() - 1]));
        assert!(!is_valid_id(IdKind::Payment, &good.to_uppercase()));
        assert!(!is_valid_id(IdKind::Payment, "pay_../../etc/passwd"));
        assert!(!is_valid_id(IdKind::Payment, ""));
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        // Proves the encoder against RFC 4648 test vectors (lower-cased, unpadded).
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
    }
}
