//! The outside world a component hands to the pure core: the wall clock, randomness and
//! Spin variables. Secrets come back wrapped in [`Secret`] (its `Debug` prints `***`);
//! a missing or empty secret is an error, never a default (fail closed).

pub use spinpay_core::crypto::Secret;
use spinpay_core::rng::Entropy;

/// Why a variable could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A required secret is not set (or empty): the feature fails closed.
    #[error("secret variable {0:?} is not configured")]
    SecretMissing(String),
    /// The variable name is not valid or not declared for this component.
    #[error("variable {name:?}: {detail}")]
    Variable {
        /// The name.
        name: String,
        /// The host's answer.
        detail: String,
    },
}

/// Milliseconds since the Unix epoch (wall clock).
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch (for signature timestamps).
pub fn now_unix_s() -> i64 {
    now_ms() / 1000
}

/// `N` cryptographically secure random bytes.
///
/// # Panics
/// When the host has no randomness; nothing safe can be done without it.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0_u8; N];
    getrandom::getrandom(&mut out).expect("the host provides randomness");
    out
}

/// The core's [`Entropy`] backed by the host's secure randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        getrandom::getrandom(out).expect("the host provides randomness");
    }
}

/// A variable's value; `Ok(None)` when it is declared but has no value.
pub async fn variable(name: &str) -> Result<Option<String>, EnvError> {
    match spin_sdk::variables::get(name).await {
        Ok(value) => Ok(Some(value)),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(EnvError::Variable {
            name: name.to_string(),
            detail: format!("{e:?}"),
        }),
    }
}

/// A required secret variable; missing, undefined or empty → [`EnvError::SecretMissing`].
pub async fn secret(name: &str) -> Result<Secret<String>, EnvError> {
    let value = variable(name).await.map_err(|e| match e {
        EnvError::Variable { .. } | EnvError::SecretMissing(_) => {
            EnvError::SecretMissing(name.to_string())
        }
    })?;
    require_secret(name, value)
}

/// The pure rule behind [`secret`]: only a non-empty value is a secret, and not the
/// deployment template's placeholder (`REPLACE_ME…` in infra/k8s/secrets.template.yaml,
/// public in this repository: a sandbox secret left at it would let anyone sign sandbox
/// notifications).
pub fn require_secret(name: &str, value: Option<String>) -> Result<Secret<String>, EnvError> {
    match value {
        Some(v) if !v.trim().is_empty() && !v.starts_with(PLACEHOLDER_PREFIX) => Ok(Secret::new(v)),
        Some(_) | None => Err(EnvError::SecretMissing(name.to_string())),
    }
}

pub use spinpay_core::PLACEHOLDER_PREFIX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_missing_or_placeholder_secret_fails_closed() {
        // Proves neither an absent nor a blank value, nor the deployment template's
        // placeholder, is ever used as a secret.
        assert_eq!(
            require_secret("sandbox_secret", None).unwrap_err(),
            EnvError::SecretMissing("sandbox_secret".into())
        );
        assert!(require_secret("s", Some("  ".into())).is_err());
        assert_eq!(
            require_secret("sandbox_secret", Some("REPLACE_ME_sandbox_secret".into())).unwrap_err(),
            EnvError::SecretMissing("sandbox_secret".into())
        );
        assert_eq!(require_secret("s", Some("k".into())).unwrap().expose(), "k");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        // Proves Debug of a secret prints *** and not the value.
        let s = require_secret("s", Some("hunter2".into())).unwrap();
        assert_eq!(format!("{s:?}"), "***");
    }

    #[test]
    fn the_clock_and_randomness_work_natively() {
        // Proves now_ms is after 2020 and two random draws differ.
        assert!(now_ms() > 1_577_836_800_000);
        assert_ne!(random_bytes::<16>(), random_bytes::<16>());
    }
}
