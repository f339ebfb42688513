//! The storage contract the domain is written against.
//!
//! Records are stored as versioned envelopes; every write of money state goes through
//! [`Repository::put_if_version`] (compare-and-swap on the whole record) inside a bounded
//! retry loop; only write-once index entries take the unconditional
//! [`Repository::put_fresh`]. Implementations: the guest's key-value repository (Spin
//! `spin:key-value` + `wasi:keyvalue/atomics`) and
//! [`crate::repo::memory::MemoryRepository`] for tests, which can inject conflicts and
//! failures.

/// A stored record with its version (0 = absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Monotonic version; the first write of a key is version 1.
    pub version: u64,
    /// The record's bytes (JSON of the stored type).
    pub value: Vec<u8>,
}

/// Storage failures the domain can see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    /// Someone else wrote the key since it was read: re-read and retry.
    #[error("version conflict on {key}")]
    Conflict {
        /// The key.
        key: String,
    },
    /// The store failed (I/O, unavailable); the write may or may not have happened only
    /// where the implementation says so.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-swap whose outcome cannot be known: the write may or may not have
    /// committed (e.g. the store misreports swaps and more writers landed on the key
    /// since than its write-id history remembers). Only a caller whose change is
    /// idempotent (re-applying it to a record that already holds it changes nothing) may
    /// re-read and retry; any other caller must treat it as [`RepoError::Unavailable`].
    #[error("outcome of the write to {key} is unknown")]
    OutcomeUnknown {
        /// The key.
        key: String,
    },
}

/// Key-value storage with optimistic concurrency.
///
/// `put_if_version(key, expected, value)`: writes `value` as version `expected + 1` iff the
/// stored version is still `expected` (0 = key absent). An implementation over a store whose
/// compare-and-swap may misreport a committed write as failed (Spin's Redis store does) must
/// tag each write with a unique write id and, after a failed swap, re-read: if the record
/// carries its own write id the write committed and `Ok` is returned — never applied twice.
#[allow(async_fn_in_trait)]
pub trait Repository {
    /// Read a record.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RepoError>;
    /// Read a record the caller is about to [`Repository::put_if_version`] (a
    /// read-modify-write step). Same answer as [`Repository::get`]; an implementation
    /// whose compare-and-swap reads the key itself may keep what this read for the
    /// `put_if_version` of the same key that follows, instead of reading it twice (the
    /// swap still fails if the key changed since this read).
    async fn get_for_update(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        self.get(key).await
    }
    /// Compare-and-swap on the record's version; returns the new version.
    async fn put_if_version(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<u64, RepoError>;
    /// Write `value` as version 1 of a key no other write names with another value: an
    /// index slot named by a counter draw (only the request that drew it writes it), or
    /// one every writer writes with the same value. No compare-and-swap, so one store
    /// call instead of a read and a swap (on Spin's Redis store each swap also opens a
    /// connection of its own). Never for money state, nor for a key that another write
    /// may hold with a different value: that write would be lost.
    async fn put_fresh(&self, key: &str, value: Vec<u8>) -> Result<(), RepoError>;
    /// Atomically add `delta` to a counter (absent = 0), returning the new value. Counter
    /// keys are touched only through this method.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, RepoError>;
    /// Read many records at once (absent → `None`), in order.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, RepoError>;
    /// Delete a record that is not money state (expired idempotency keys, OTP challenges).
    async fn delete(&self, key: &str) -> Result<(), RepoError>;
}

pub mod memory;
