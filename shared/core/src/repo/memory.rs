//! An in-memory [`Repository`] for tests and simulations, with seeded fault injection:
//! spurious version conflicts, unavailability, and yields at every operation so that
//! futures polled together (`join_all`) really interleave between a read and its
//! compare-and-swap.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use super::{RepoError, Repository, Versioned};
use crate::rng::SplitMix64;

/// Fault rates, in per-mille of operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// `put_if_version` reports a conflict without writing.
    pub conflict_per_mille: u32,
    /// Any operation fails with `Unavailable` without effect.
    pub unavailable_per_mille: u32,
    /// An operation yields to other futures before running.
    pub yield_per_mille: u32,
    /// `put_if_version` on an existing record (expected version ≥ 1) reports
    /// [`RepoError::OutcomeUnknown`]; the write committed or not, with even odds. (A real
    /// store loses track only of a key that many writers keep changing, never of a create.)
    pub unknown_outcome_per_mille: u32,
}

/// Operation counts, for assertions on I/O budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// `get` calls (each key of `get_many` counts one).
    pub gets: u64,
    /// `put_if_version` calls (compare-and-swaps).
    pub puts: u64,
    /// `put_fresh` calls (unconditional writes).
    pub fresh_puts: u64,
    /// `increment` calls.
    pub increments: u64,
    /// Injected conflicts.
    pub injected_conflicts: u64,
    /// Injected failures.
    pub injected_failures: u64,
    /// Injected unknown outcomes (committed or not).
    pub injected_unknown_outcomes: u64,
}

#[derive(Debug)]
struct Inner {
    records: BTreeMap<String, Versioned>,
    counters: BTreeMap<String, i64>,
    rng: SplitMix64,
    faults: Faults,
    counts: OpCounts,
}

/// The in-memory repository.
#[derive(Debug)]
pub struct MemoryRepository {
    inner: Mutex<Inner>,
}

impl Default for MemoryRepository {
    fn default() -> Self {
        MemoryRepository::new()
    }
}

impl MemoryRepository {
    /// No faults.
    pub fn new() -> MemoryRepository {
        MemoryRepository::with_faults(0, Faults::default())
    }

    /// Faults drawn from a seeded generator (print the seed in tests).
    pub fn with_faults(seed: u64, faults: Faults) -> MemoryRepository {
        MemoryRepository {
            inner: Mutex::new(Inner {
                records: BTreeMap::new(),
                counters: BTreeMap::new(),
                rng: SplitMix64::new(seed),
                faults,
                counts: OpCounts::default(),
            }),
        }
    }

    /// Changes the fault rates (e.g. none while setting up, some during the test).
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Operation counts so far.
    pub fn counts(&self) -> OpCounts {
        self.lock().counts
    }

    /// Every record key with `prefix` (test inspection only; the domain never scans).
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .records
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Draws the faults for one operation: (yield first, fail).
    fn draw(&self) -> (bool, bool) {
        let mut inner = self.lock();
        let faults = inner.faults;
        let y = faults.yield_per_mille > 0 && inner.rng.chance(faults.yield_per_mille);
        let f = faults.unavailable_per_mille > 0 && inner.rng.chance(faults.unavailable_per_mille);
        if f {
            inner.counts.injected_failures += 1;
        }
        (y, f)
    }

    async fn before_op(&self) -> Result<(), RepoError> {
        let (y, f) = self.draw();
        if y {
            YieldOnce(false).await;
        }
        if f {
            return Err(RepoError::Unavailable("injected failure".into()));
        }
        Ok(())
    }
}

impl Repository for MemoryRepository {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        self.before_op().await?;
        let mut inner = self.lock();
        inner.counts.gets += 1;
        Ok(inner.records.get(key).cloned())
    }

    async fn put_if_version(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<u64, RepoError> {
        self.before_op().await?;
        let mut inner = self.lock();
        inner.counts.puts += 1;
        let faults = inner.faults;
        if faults.conflict_per_mille > 0 && inner.rng.chance(faults.conflict_per_mille) {
            inner.counts.injected_conflicts += 1;
            return Err(RepoError::Conflict { key: key.into() });
        }
        let current = inner.records.get(key).map_or(0, |v| v.version);
        if current != expected {
            return Err(RepoError::Conflict { key: key.into() });
        }
        let version = expected + 1;
        let unknown = faults.unknown_outcome_per_mille > 0
            && expected > 0
            && inner.rng.chance(faults.unknown_outcome_per_mille);
        if unknown {
            inner.counts.injected_unknown_outcomes += 1;
            if inner.rng.chance(500) {
                return Err(RepoError::OutcomeUnknown { key: key.into() });
            }
        }
        inner
            .records
            .insert(key.to_string(), Versioned { version, value });
        if unknown {
            return Err(RepoError::OutcomeUnknown { key: key.into() });
        }
        Ok(version)
    }

    /// Panics when the key holds another value: that is a caller breaking the contract
    /// (the write would be lost in a real store), which the tests must see.
    async fn put_fresh(&self, key: &str, value: Vec<u8>) -> Result<(), RepoError> {
        self.before_op().await?;
        let mut inner = self.lock();
        inner.counts.fresh_puts += 1;
        match inner.records.get(key) {
            Some(held) => assert!(
                held.value == value,
                "put_fresh over another value at {key}: {:?} -> {:?}",
                String::from_utf8_lossy(&held.value),
                String::from_utf8_lossy(&value)
            ),
            None => {
                let record = Versioned { version: 1, value };
                inner.records.insert(key.to_string(), record);
            }
        }
        Ok(())
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, RepoError> {
        self.before_op().await?;
        let mut inner = self.lock();
        inner.counts.increments += 1;
        let counter = inner.counters.entry(key.to_string()).or_insert(0);
        *counter = counter
            .checked_add(delta)
            .ok_or_else(|| RepoError::Unavailable("counter overflow".into()))?;
        Ok(*counter)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, RepoError> {
        self.before_op().await?;
        let mut inner = self.lock();
        inner.counts.gets += keys.len() as u64;
        Ok(keys.iter().map(|k| inner.records.get(k).cloned()).collect())
    }

    async fn delete(&self, key: &str) -> Result<(), RepoError> {
        self.before_op().await?;
        self.lock().records.remove(key);
        Ok(())
    }
}

/// Returns `Pending` once (waking itself), so other futures run in between.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn compare_and_swap_succeeds_only_on_the_expected_version() {
        // Proves create-if-absent (expected 0), update on match, conflict on mismatch.
        let r = MemoryRepository::new();
        block_on(async {
            assert_eq!(r.put_if_version("k", 0, b"a".to_vec()).await, Ok(1));
            assert!(matches!(
                r.put_if_version("k", 0, b"b".to_vec()).await,
                Err(RepoError::Conflict { .. })
            ));
            assert_eq!(r.put_if_version("k", 1, b"c".to_vec()).await, Ok(2));
            assert_eq!(r.get("k").await.unwrap().unwrap().value, b"c");
            assert_eq!(r.increment("n", 5).await, Ok(5));
            assert_eq!(r.increment("n", 0).await, Ok(5));
            r.delete("k").await.unwrap();
            assert_eq!(r.get("k").await, Ok(None));
        });
    }

    #[test]
    fn injected_conflicts_never_write() {
        // Proves a spurious conflict leaves the stored value untouched.
        let r = MemoryRepository::with_faults(
            1,
            Faults {
                conflict_per_mille: 1000,
                ..Faults::default()
            },
        );
        block_on(async {
            assert!(r.put_if_version("k", 0, b"a".to_vec()).await.is_err());
            assert_eq!(r.get("k").await, Ok(None));
        });
        assert_eq!(r.counts().injected_conflicts, 1);
    }

    #[test]
    fn an_injected_unknown_outcome_sometimes_committed() {
        // Proves an unknown outcome is reported, for updates only, both for writes that
        // landed and for writes that did not, so callers are tested against both.
        let r = MemoryRepository::with_faults(
            3,
            Faults {
                unknown_outcome_per_mille: 1000,
                ..Faults::default()
            },
        );
        let (mut landed, mut lost) = (0, 0);
        block_on(async {
            for i in 0..40 {
                let key = format!("k{i}");
                assert_eq!(r.put_if_version(&key, 0, b"a".to_vec()).await, Ok(1));
                let got = r.put_if_version(&key, 1, b"b".to_vec()).await;
                assert_eq!(got, Err(RepoError::OutcomeUnknown { key: key.clone() }));
                match r.get(&key).await.unwrap() {
                    Some(v) if v.version == 2 => {
                        assert_eq!(v.value, b"b".to_vec());
                        landed += 1;
                    }
                    _ => lost += 1,
                }
            }
        });
        assert!(landed > 0 && lost > 0, "landed {landed}, lost {lost}");
        assert_eq!(r.counts().injected_unknown_outcomes, 40);
    }

    #[test]
    fn a_fresh_write_creates_version_one_and_a_same_value_rewrite_changes_nothing() {
        // Proves put_fresh's contract on the memory store: absent → version 1; the same
        // value again (a republish) leaves the record, version included, as it was.
        let r = MemoryRepository::new();
        block_on(r.put_fresh("k", b"\"evt_1\"".to_vec())).unwrap();
        let stored = block_on(r.get("k")).unwrap().unwrap();
        assert_eq!(stored.version, 1);
        block_on(r.put_if_version("k", 1, b"\"evt_1\"".to_vec())).unwrap();
        block_on(r.put_fresh("k", b"\"evt_1\"".to_vec())).unwrap();
        assert_eq!(block_on(r.get("k")).unwrap().unwrap().version, 2);
        assert_eq!(r.counts().fresh_puts, 2);
    }

    #[test]
    #[should_panic(expected = "put_fresh over another value at k")]
    fn a_fresh_write_over_another_value_is_a_caller_bug_the_tests_see() {
        // Proves a caller that breaks the contract (the key was not fresh) fails loudly
        // here, where a real store would silently lose the earlier value.
        let r = MemoryRepository::new();
        block_on(r.put_fresh("k", b"1".to_vec())).unwrap();
        let _ = block_on(r.put_fresh("k", b"2".to_vec()));
    }
}
