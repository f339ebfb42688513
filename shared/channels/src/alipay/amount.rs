//! Exact conversion between minor units (`i64`) and Alipay's decimal major-unit
//! strings, using the currency's ISO 4217 exponent. No floats.

use spinpay_core::money::{AMOUNT_MINOR_MAX, Currency};

/// Longest decimal amount string accepted from the channel.
pub const AMOUNT_TEXT_BYTES_MAX: usize = 32;

/// `1250` CNY → `"12.50"`, `1250` JPY → `"1250"`, `5` KWD → `"0.005"`. `None` for a
/// negative amount or one above [`AMOUNT_MINOR_MAX`].
pub fn format_major(amount_minor: i64, currency: Currency) -> Option<String> {
    if !(0..=AMOUNT_MINOR_MAX).contains(&amount_minor) {
        return None;
    }
    let exp = u32::from(currency.exponent());
    let unsigned = amount_minor.unsigned_abs();
    if exp == 0 {
        return Some(unsigned.to_string());
    }
    let div = 10_u64.checked_pow(exp)?;
    let width = usize::from(currency.exponent());
    Some(format!("{}.{:0width$}", unsigned / div, unsigned % div))
}

/// `"12.50"` CNY → `1250`. Accepts fewer fraction digits than the exponent (`"12.5"`)
/// and extra ones only when they are zeros (`"12.500"`); refuses signs, exponents,
/// spaces, empty parts and anything above [`AMOUNT_MINOR_MAX`].
pub fn parse_major(text: &str, currency: Currency) -> Option<i64> {
    if text.is_empty() || text.len() > AMOUNT_TEXT_BYTES_MAX {
        return None;
    }
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return None,
        None => (text, ""),
    };
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let exp = usize::from(currency.exponent());
    let (kept, dropped) = frac_part.split_at(frac_part.len().min(exp));
    if dropped.bytes().any(|b| b != b'0') {
        return None;
    }
    let mut minor: i64 = 0;
    for b in int_part.bytes().chain(kept.bytes()) {
        minor = minor.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    for _ in kept.len()..exp {
        minor = minor.checked_mul(10)?;
    }
    (minor <= AMOUNT_MINOR_MAX).then_some(minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_format_with_the_currency_exponent() {
        // Proves zero-, two- and three-decimal currencies and edge amounts format exactly.
        assert_eq!(format_major(1250, Currency::Cny).unwrap(), "12.50");
        assert_eq!(format_major(1, Currency::Cny).unwrap(), "0.01");
        assert_eq!(format_major(0, Currency::Cny).unwrap(), "0.00");
        assert_eq!(format_major(1250, Currency::Jpy).unwrap(), "1250");
        assert_eq!(format_major(5, Currency::Kwd).unwrap(), "0.005");
        assert_eq!(format_major(12_345, Currency::Kwd).unwrap(), "12.345");
        assert_eq!(
            format_major(AMOUNT_MINOR_MAX, Currency::Cny).unwrap(),
            "10000000000.00"
        );
        assert_eq!(format_major(AMOUNT_MINOR_MAX + 1, Currency::Cny), None);
        assert_eq!(format_major(-1, Currency::Cny), None);
    }

    #[test]
    fn decimal_strings_parse_exactly_or_not_at_all() {
        // Proves parsing is exact, tolerant of short/zero-padded fractions, strict otherwise.
        assert_eq!(parse_major("12.50", Currency::Cny), Some(1250));
        assert_eq!(parse_major("12.5", Currency::Cny), Some(1250));
        assert_eq!(parse_major("12", Currency::Cny), Some(1200));
        assert_eq!(parse_major("12.500", Currency::Cny), Some(1250));
        assert_eq!(parse_major("0.005", Currency::Kwd), Some(5));
        assert_eq!(parse_major("1250", Currency::Jpy), Some(1250));
        assert_eq!(parse_major("1250.0", Currency::Jpy), Some(1250));
        assert_eq!(parse_major("12.501", Currency::Cny), None);
        assert_eq!(parse_major("1250.5", Currency::Jpy), None);
        for bad in ["", "-1.00", "+1", "1e3", " 1", "1.", ".5", "1,00", "0x10"] {
            assert_eq!(parse_major(bad, Currency::Cny), None, "{bad:?}");
        }
        assert_eq!(
            parse_major("10000000000.00", Currency::Cny),
            Some(AMOUNT_MINOR_MAX)
        );
        assert_eq!(parse_major("10000000000.01", Currency::Cny), None);
        assert_eq!(parse_major("99999999999999999999999", Currency::Cny), None);
    }

    #[test]
    fn format_then_parse_is_the_identity() {
        // Proves a round trip over many amounts in every currency loses nothing.
        for c in Currency::ALL {
            for a in [
                0_i64,
                1,
                9,
                10,
                99,
                100,
                101,
                1250,
                999_999,
                123_456_789_012,
            ] {
                let text = format_major(a, c).unwrap();
                assert_eq!(parse_major(&text, c), Some(a), "{a} {c:?} {text}");
            }
        }
    }
}
