//! A key-value store that behaves like Spin 4.1's Redis store (`crates/key-value-redis`),
//! wrapped around the test app's own through [`spinpay_host::kv::KvWrap`]: the suite runs
//! flows on it to show the components work on SpinKube's store where it differs from ours.
//!
//! What it reproduces (read in Spin's source, `RedisStore` and its `CompareAndSwap`):
//! - `get-many` is sent as `KEYS k1 k2 …`, which Redis refuses for two keys or more; with
//!   one key that exists the reply cannot be parsed and the host panics. Here every batch
//!   read fails, and a one-key batch is counted (the components must never send one).
//! - `swap` always ends with `UNWATCH <key>`, which Redis refuses, so every swap, committed
//!   or not, is reported as `cas-failed`. Here a swap commits (or not) exactly as the
//!   wrapped store decides, and is reported failed either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use spinpay_host::kv::{KvBackend, KvError, KvResult, KvWrap};

/// What the components asked of a [`SpinRedisLike`] store that it refused or misreported.
#[derive(Debug, Default)]
pub struct SpinRedisStats {
    /// `get-many` calls of two keys or more (refused).
    pub batches_refused: AtomicU64,
    /// `get-many` calls of one key (Spin's host panics on these when the key exists).
    pub single_key_batches: AtomicU64,
    /// Swaps that committed and were reported as failed.
    pub commits_reported_failed: AtomicU64,
}

impl SpinRedisStats {
    /// `(batches refused, one-key batches, commits reported failed)`.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.batches_refused.load(Ordering::Relaxed),
            self.single_key_batches.load(Ordering::Relaxed),
            self.commits_reported_failed.load(Ordering::Relaxed),
        )
    }
}

/// A wrap that makes every store of an app a [`SpinRedisLike`] reporting to `stats`.
pub fn spin_redis_like(stats: Arc<SpinRedisStats>) -> KvWrap {
    Arc::new(move |_label, inner| {
        Arc::new(SpinRedisLike {
            inner,
            stats: stats.clone(),
        })
    })
}

/// See the module docs.
pub struct SpinRedisLike {
    inner: Arc<dyn KvBackend>,
    stats: Arc<SpinRedisStats>,
}

#[async_trait::async_trait]
impl KvBackend for SpinRedisLike {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> KvResult<()> {
        self.inner.set(key, value).await
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        self.inner.exists(key).await
    }

    async fn get_keys(&self) -> KvResult<Vec<String>> {
        self.inner.get_keys().await
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let counter = match keys.len() {
            1 => &self.stats.single_key_batches,
            _ => &self.stats.batches_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Err(KvError::Other(
            "ERR wrong number of arguments for 'keys' command".into(),
        ))
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        self.inner.set_many(entries).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        self.inner.delete_many(keys).await
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.inner.increment(key, delta).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvResult<bool> {
        if self.inner.compare_and_swap(key, expected, new).await? {
            self.stats
                .commits_reported_failed
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(false)
    }
}
