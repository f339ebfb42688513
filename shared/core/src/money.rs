//! Currencies (ISO 4217, a closed set) and money as checked `i64` minor units.
//!
//! No floats: an amount is a count of the currency's minor unit (fen, cent, yen, fils).
//! Every arithmetic operation is checked and refuses to mix currencies.

use serde::{Deserialize, Serialize};

/// Largest amount a single payment or refund may carry, in minor units (10^12: ten
/// billion CNY, far above any barcode limit, far below `i64::MAX` so sums of many
/// amounts cannot overflow).
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000;

const _: () = assert!(AMOUNT_MINOR_MAX < i64::MAX / 1024);

/// A supported ISO 4217 currency. Closed: an unknown code is rejected at the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    /// Chinese yuan renminbi (2).
    #[serde(rename = "CNY")]
    Cny,
    /// Hong Kong dollar (2).
    #[serde(rename = "HKD")]
    Hkd,
    /// US dollar (2).
    #[serde(rename = "USD")]
    Usd,
    /// Euro (2).
    #[serde(rename = "EUR")]
    Eur,
    /// Japanese yen (0).
    #[serde(rename = "JPY")]
    Jpy,
    /// Kuwaiti dinar (3).
    #[serde(rename = "KWD")]
    Kwd,
    /// Pound sterling (2).
    #[serde(rename = "GBP")]
    Gbp,
    /// Singapore dollar (2).
    #[serde(rename = "SGD")]
    Sgd,
}

impl Currency {
    /// Every supported currency.
    pub const ALL: [Currency; 8] = [
        Currency::Cny,
        Currency::Hkd,
        Currency::Usd,
        Currency::Eur,
        Currency::Jpy,
        Currency::Kwd,
        Currency::Gbp,
        Currency::Sgd,
    ];

    /// The ISO 4217 alphabetic code, e.g. `"CNY"`.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
            Currency::Hkd => "HKD",
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
            Currency::Jpy => "JPY",
            Currency::Kwd => "KWD",
            Currency::Gbp => "GBP",
            Currency::Sgd => "SGD",
        }
    }

    /// The ISO 4217 exponent: digits after the decimal point of the major unit.
    pub fn exponent(self) -> u8 {
        match self {
            Currency::Jpy => 0,
            Currency::Cny
            | Currency::Hkd
            | Currency::Usd
            | Currency::Eur
            | Currency::Gbp
            | Currency::Sgd => 2,
            Currency::Kwd => 3,
        }
    }

    /// Parses an exact upper-case ISO code; anything else is `None`.
    pub fn parse(code: &str) -> Option<Currency> {
        Currency::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Minor units per major unit (10^exponent).
    pub fn minor_per_major(self) -> i64 {
        10_i64.pow(u32::from(self.exponent()))
    }
}

/// Money arithmetic failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The result does not fit in `i64` minor units.
    #[error("amount overflow")]
    Overflow,
    /// The operands have different currencies.
    #[error("currency mismatch: {0:?} vs {1:?}")]
    CurrencyMismatch(Currency, Currency),
}

/// An amount of one currency in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The amount in the currency's minor unit.
    pub amount_minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Builds a money value.
    pub fn new(amount_minor: i64, currency: Currency) -> Money {
        Money {
            amount_minor,
            currency,
        }
    }

    /// Zero of a currency.
    pub fn zero(currency: Currency) -> Money {
        Money::new(0, currency)
    }

    /// Checked addition; same currency only.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let sum = self.amount_minor.checked_add(other.amount_minor);
        Ok(Money::new(sum.ok_or(MoneyError::Overflow)?, self.currency))
    }

    /// Checked subtraction; same currency only.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let diff = self.amount_minor.checked_sub(other.amount_minor);
        Ok(Money::new(diff.ok_or(MoneyError::Overflow)?, self.currency))
    }

    /// Applies a rate in basis points (1/10,000), rounding half away from zero.
    pub fn checked_mul_bps(self, bps: i64) -> Result<Money, MoneyError> {
        let product = i128::from(self.amount_minor) * i128::from(bps);
        let half = if product >= 0 { 5_000 } else { -5_000 };
        let rounded = (product + half) / 10_000;
        let amount = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// Formats as a decimal major-unit string, e.g. `12.50 CNY` (for logs and SMS text).
    pub fn display(self) -> String {
        let exp = u32::from(self.currency.exponent());
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        if exp == 0 {
            return format!("{sign}{abs} {}", self.currency.code());
        }
        let div = 10_u64.pow(exp);
        let width = exp as usize;
        format!(
            "{sign}{}.{:0width$} {}",
            abs / div,
            abs % div,
            self.currency.code()
        )
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_follow_iso_4217() {
        // Proves the exponent table matches ISO 4217 for the zero, two and three digit cases.
        assert_eq!(Currency::Jpy.exponent(), 0);
        assert_eq!(Currency::Cny.exponent(), 2);
        assert_eq!(Currency::Kwd.exponent(), 3);
        assert_eq!(Currency::Kwd.minor_per_major(), 1000);
    }

    #[test]
    fn currency_codes_round_trip_and_unknown_codes_are_rejected() {
        // Proves parse(code()) is the identity and lower-case or unknown codes fail.
        for c in Currency::ALL {
            assert_eq!(Currency::parse(c.code()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.code()));
        }
        assert_eq!(Currency::parse("cny"), None);
        assert_eq!(Currency::parse("XXX"), None);
    }

    #[test]
    fn arithmetic_is_checked_and_refuses_mixed_currencies() {
        // Proves overflow and currency mismatch are errors, not wraps or silent conversions.
        let a = Money::new(i64::MAX, Currency::Usd);
        assert_eq!(
            a.checked_add(Money::new(1, Currency::Usd)),
            Err(MoneyError::Overflow)
        );
        let b = Money::new(1, Currency::Eur);
        assert!(matches!(
            Money::new(1, Currency::Usd).checked_add(b),
            Err(MoneyError::CurrencyMismatch(..))
        ));
        assert_eq!(
            Money::new(1250, Currency::Cny)
                .checked_sub(Money::new(250, Currency::Cny))
                .unwrap()
                .amount_minor,
            1000
        );
    }

    #[test]
    fn basis_points_round_half_away_from_zero() {
        // Proves a 0.6% fee of 1.25 CNY rounds 0.75 fen up to 1 fen.
        let fee = Money::new(125, Currency::Cny).checked_mul_bps(60).unwrap();
        assert_eq!(fee.amount_minor, 1);
    }

    #[test]
    fn display_uses_the_currency_exponent() {
        // Proves minor units render with the right number of decimals per currency.
        assert_eq!(Money::new(1250, Currency::Cny).display(), "12.50 CNY");
        assert_eq!(Money::new(1250, Currency::Jpy).display(), "1250 JPY");
        assert_eq!(Money::new(5, Currency::Kwd).display(), "0.005 KWD");
    }
}
