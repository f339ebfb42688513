//! Where an assessment's time goes, answered as a standard `Server-Timing` header:
//! `engine;dur=…` is the guest's own work (total minus the time spent waiting on the
//! key-value store), `kv;dur=…` the waiting. The repository wrapper below measures the
//! waiting around every store call, so the split needs no clock in the core.

use std::cell::Cell;
use std::time::{Duration, Instant};

use spinpay_core::ApiError;
use spinpay_core::model::RiskAssessment;
use spinpay_core::repo::{RepoError, Repository, Versioned};
use spinpay_core::riskengine::RiskInput;
use spinpay_core::riskengine::store::{self, ConfigCache, Mode};
use spinpay_core::service::Ctx;
use spinpay_guest::env::OsEntropy;
use spinpay_guest::kv::KvRepository;

/// The response header.
pub const SERVER_TIMING: &str = "server-timing";

/// A repository that adds up the time its calls wait.
struct Timed<'a> {
    inner: &'a KvRepository,
    waited: Cell<Duration>,
}

impl Timed<'_> {
    fn add(&self, since: Instant) {
        self.waited.set(self.waited.get() + since.elapsed());
    }
}

impl Repository for Timed<'_> {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.add(t);
        r
    }

    async fn get_for_update(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        let t = Instant::now();
        let r = self.inner.get_for_update(key).await;
        self.add(t);
        r
    }

    async fn put_if_version(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<u64, RepoError> {
        let t = Instant::now();
        let r = self.inner.put_if_version(key, expected, value).await;
        self.add(t);
        r
    }

    async fn put_fresh(&self, key: &str, value: Vec<u8>) -> Result<(), RepoError> {
        let t = Instant::now();
        let r = self.inner.put_fresh(key, value).await;
        self.add(t);
        r
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, RepoError> {
        let t = Instant::now();
        let r = self.inner.increment(key, delta).await;
        self.add(t);
        r
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, RepoError> {
        let t = Instant::now();
        let r = self.inner.get_many(keys).await;
        self.add(t);
        r
    }

    async fn delete(&self, key: &str) -> Result<(), RepoError> {
        let t = Instant::now();
        let r = self.inner.delete(key).await;
        self.add(t);
        r
    }
}

/// `store::assess` with its `Server-Timing` value.
pub async fn assess(
    ctx: &Ctx<'_, KvRepository>,
    input: &RiskInput,
    mode: Mode,
    cache: &ConfigCache,
) -> Result<(RiskAssessment, String), ApiError> {
    let timed = Timed {
        inner: ctx.repo,
        waited: Cell::new(Duration::ZERO),
    };
    let tctx = Ctx {
        repo: &timed,
        keys: ctx.keys,
        now_ms: ctx.now_ms,
    };
    let start = Instant::now();
    let a = store::assess(&tctx, &mut OsEntropy, input, mode, Some(cache)).await?;
    Ok((a, header_value(start.elapsed(), timed.waited.get())))
}

/// `engine;dur=<ms>;desc="guest", kv;dur=<ms>` with microsecond precision.
pub fn header_value(total: Duration, waited: Duration) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let engine = total.saturating_sub(waited);
    format!(
        "engine;dur={:.3};desc=\"guest\", kv;dur={:.3}",
        ms(engine),
        ms(waited)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_splits_guest_time_from_store_waits() {
        // Proves the engine share is total minus waiting, in ms with µs precision.
        let v = header_value(Duration::from_micros(1_500), Duration::from_micros(1_200));
        assert_eq!(v, "engine;dur=0.300;desc=\"guest\", kv;dur=1.200");
        let v = header_value(Duration::from_micros(10), Duration::from_micros(20));
        assert!(v.starts_with("engine;dur=0.000"), "{v}");
    }
}
