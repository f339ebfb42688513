//! Key-value backends behind Spin's `spin:key-value@3.0.0` and `wasi:keyvalue@0.2.0-draft2`.
//!
//! OWNER: host-config helper. Signatures here are the contract the runtime codes against.
//!
//! Backends: [`sqlite::SqliteStore`] (`type = "spin"`, Spin's file and schema) and
//! [`redis::RedisStore`] (`type = "redis"`). Both pass the same conformance suite
//! (`host/tests/kv_conformance.rs`).

use std::sync::Arc;

pub mod redis;
pub mod sqlite;

/// An error from a backend (I/O, a value that is not a counter, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Implementation-specific failure, surfaced to the guest as `error::other(message)`.
    #[error("{0}")]
    Other(String),
}

/// Result alias for backend calls.
pub type KvResult<T> = Result<T, KvError>;

/// One key-value store (one label of the manifest), as a backend serves it.
///
/// Counters written by `increment` are stored in the backend's native counter format
/// (SQLite: 8-byte little-endian i64; Redis: ASCII decimal), exactly like Spin 4.1.
#[async_trait::async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// The value at `key`, or `None` when absent.
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>>;
    /// Overwrite `key` with `value`.
    async fn set(&self, key: &str, value: Vec<u8>) -> KvResult<()>;
    /// Remove `key`; absent keys are not an error.
    async fn delete(&self, key: &str) -> KvResult<()>;
    /// Whether `key` exists.
    async fn exists(&self, key: &str) -> KvResult<bool>;
    /// Every key of the store (any order).
    async fn get_keys(&self) -> KvResult<Vec<String>>;
    /// Values of many keys; `None` for absent ones, in the order asked.
    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>>;
    /// Set many keys (not atomic as a whole).
    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> KvResult<()>;
    /// Delete many keys (not atomic as a whole).
    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()>;
    /// Atomically add `delta` to the counter at `key` (absent = 0) and return the new value.
    /// A value that is not a counter is an error, never a panic.
    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64>;
    /// Atomically replace `key`'s value with `new` iff its current value equals `expected`
    /// (`None` = the key is absent). `Ok(true)` = swapped, `Ok(false)` = someone else wrote
    /// first. Reports the truth: never `false` for a write that committed.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvResult<bool>;
}

/// Wraps each store an app opens (its label, the store) in another backend: a library
/// hook for tests that must see how the guests cope with a store that behaves like
/// another host's (e.g. Spin 4.1's Redis store, see `tests/src/spin_stores.rs`). Nothing
/// in a manifest, runtime config or command line reaches it.
pub type KvWrap = Arc<dyn Fn(&str, Arc<dyn KvBackend>) -> Arc<dyn KvBackend> + Send + Sync>;

/// The stores of one app, by label.
#[derive(Clone, Default)]
pub struct KvStores {
    stores: std::collections::BTreeMap<String, Arc<dyn KvBackend>>,
}

impl std::fmt::Debug for KvStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.stores.keys()).finish()
    }
}

impl KvStores {
    /// Register `backend` under `label`.
    pub fn insert(&mut self, label: &str, backend: Arc<dyn KvBackend>) {
        self.stores.insert(label.to_string(), backend);
    }
    /// The store for `label`, if configured.
    pub fn get(&self, label: &str) -> Option<Arc<dyn KvBackend>> {
        self.stores.get(label).cloned()
    }
    /// Every store with its label.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<dyn KvBackend>)> {
        self.stores
            .iter()
            .map(|(label, store)| (label.as_str(), store))
    }
    /// Labels configured.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }
    /// Every store wrapped by `wrap`.
    pub fn wrapped(self, wrap: &KvWrap) -> KvStores {
        let stores = self
            .stores
            .into_iter()
            .map(|(label, store)| {
                let wrapped = wrap(&label, store);
                (label, wrapped)
            })
            .collect();
        KvStores { stores }
    }
}
