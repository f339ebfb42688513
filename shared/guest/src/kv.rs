//! [`KvRepository`]: the core's [`Repository`] over Spin key-value.
//!
//! Plain reads, fresh writes ([`Repository::put_fresh`]) and deletes go through
//! `spin:key-value@3.0.0`; compare-and-swap, increment and batch reads through
//! `wasi:keyvalue@0.2.0-draft2` (Spin serves both over the same data for a label), except
//! where a store refuses batches: then `spin:key-value` reads, one per key.
//! Versioned records are [`crate::envelope`]s; counters are touched only through
//! `increment`, never `set`, because their stored form differs per backend
//! (little-endian i64 in SQLite, decimal text in Redis).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::envelope::{self, PlanRefused, SwapVerdict, WRITE_ID_BYTES};
use spin_sdk::experimental::wasi::keyvalue::{atomics, batch, store};
use spinpay_core::repo::{RepoError, Repository, Versioned};

/// Most keys read in one `get_many` call (one batch request to the store).
pub const GET_MANY_KEYS_MAX: u32 = 256;

/// Set once the store refused a batch read: this instance then reads key by key from the
/// start instead of asking for a batch that fails every time (Spin 4.1's Redis store).
static BATCH_REFUSED: AtomicBool = AtomicBool::new(false);

/// A repository over one Spin key-value store label.
pub struct KvRepository {
    label: String,
    store: spin_sdk::key_value::Store,
    bucket: store::Bucket,
    /// The compare-and-swap handle the last [`Repository::get_for_update`] opened, kept
    /// for the `put_if_version` of its key that follows (one at a time: a later read for
    /// update replaces it, and with it drops the handle, which on Spin's Redis store holds
    /// a connection).
    held: RefCell<Option<Held>>,
}

/// An open compare-and-swap handle and what its `current()` read.
struct Held {
    key: String,
    cas: atomics::Cas,
    current: Option<Vec<u8>>,
}

impl std::fmt::Debug for KvRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvRepository")
            .field("label", &self.label)
            .finish()
    }
}

impl KvRepository {
    /// Opens the store `label` through both interfaces. The label must be listed in the
    /// component's `key_value_stores`.
    pub async fn open(label: &str) -> Result<KvRepository, RepoError> {
        let store = spin_sdk::key_value::Store::open(label)
            .await
            .map_err(|e| unavailable(label, "open (spin:key-value)", format!("{e:?}")))?;
        let bucket = store::open(label)
            .map_err(|e| unavailable(label, "open (wasi:keyvalue)", format!("{e:?}")))?;
        Ok(KvRepository {
            label: label.to_string(),
            store,
            bucket,
            held: RefCell::new(None),
        })
    }

    /// The store label.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn err(&self, op: &str, detail: impl std::fmt::Debug) -> RepoError {
        unavailable(&self.label, op, format!("{detail:?}"))
    }

    /// The stored bytes at `key` (`spin:key-value` get).
    async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, RepoError> {
        self.store
            .get(key)
            .await
            .map_err(|e| self.err(&format!("get {key}"), e))
    }

    /// Opens a compare-and-swap handle on `key` and reads it through the handle.
    fn open_cas(&self, key: &str) -> Result<(atomics::Cas, Option<Vec<u8>>), RepoError> {
        let cas = atomics::Cas::new(&self.bucket, key)
            .map_err(|e| self.err(&format!("cas new {key}"), e))?;
        let current = cas
            .current()
            .map_err(|e| self.err(&format!("cas current {key}"), e))?;
        Ok((cas, current))
    }

    /// The handle a read for update left on `key`, if the last one was on `key`.
    fn take_held(&self, key: &str) -> Option<(atomics::Cas, Option<Vec<u8>>)> {
        let mut held = self.held.borrow_mut();
        match held.take() {
            Some(h) if h.key == key => Some((h.cas, h.current)),
            other => {
                *held = other;
                None
            }
        }
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<Versioned, RepoError> {
        let env = envelope::decode(bytes).map_err(|e| self.err(&format!("decode {key}"), e))?;
        Ok(Versioned {
            version: env.version,
            value: env.value,
        })
    }

    /// Re-reads `key` after a swap that failed or errored and decides whether our
    /// write committed.
    fn settle_failed_swap(
        &self,
        key: &str,
        expected: u64,
        write_id: &str,
    ) -> Result<u64, RepoError> {
        let reread = self
            .bucket
            .get(key)
            .map_err(|e| self.err(&format!("re-read {key} after failed swap"), e))?;
        match envelope::verdict_after_failed_swap(reread.as_deref(), expected, write_id) {
            SwapVerdict::Committed { version } => Ok(version),
            SwapVerdict::NotCommitted => Err(RepoError::Conflict {
                key: key.to_string(),
            }),
            SwapVerdict::Unknown => {
                eprintln!(
                    "storage: key-value store {:?}: put {key}: write outcome unknown \
                     (more writes landed since than the write-id history keeps)",
                    self.label
                );
                Err(RepoError::OutcomeUnknown {
                    key: key.to_string(),
                })
            }
        }
    }
}

/// A store failure; logged here (the component's stderr), because the client only ever
/// sees a generic `storage_unavailable`.
fn unavailable(label: &str, op: &str, detail: String) -> RepoError {
    let message = format!("key-value store {label:?}: {op}: {detail}");
    eprintln!("storage error: {message}");
    RepoError::Unavailable(message)
}

fn fresh_write_id() -> Result<String, RepoError> {
    let mut random = [0_u8; WRITE_ID_BYTES];
    getrandom::getrandom(&mut random)
        .map_err(|e| RepoError::Unavailable(format!("random write id: {e}")))?;
    Ok(envelope::write_id_from(random))
}

impl Repository for KvRepository {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        // Any other call on a held key starts that read-modify-write over (here and in
        // get_many, put_fresh and delete): the handle's read may be stale by then.
        drop(self.take_held(key));
        let bytes = self.get_raw(key).await?;
        bytes.map(|b| self.decode(key, &b)).transpose()
    }

    /// Reads through a compare-and-swap handle and keeps it: the `put_if_version` of
    /// `key` that follows swaps on it instead of opening another and reading the key
    /// again (one store round trip less per read-modify-write). The swap compares with
    /// what this read, so a write in between still makes it fail.
    async fn get_for_update(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        // Dropped first: at most one handle (and Redis connection) open per repository.
        self.held.borrow_mut().take();
        let (cas, current) = self.open_cas(key)?;
        let decoded = current
            .as_deref()
            .map(|b| self.decode(key, b))
            .transpose()?;
        *self.held.borrow_mut() = Some(Held {
            key: key.to_string(),
            cas,
            current,
        });
        Ok(decoded)
    }

    async fn put_if_version(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<u64, RepoError> {
        let write_id = fresh_write_id()?;
        let (cas, current) = match self.take_held(key) {
            Some(held) => held,
            None => self.open_cas(key)?,
        };
        let plan = match envelope::plan_put(current.as_deref(), expected, &write_id, value) {
            Ok(plan) => plan,
            Err(PlanRefused::Conflict) => {
                return Err(RepoError::Conflict {
                    key: key.to_string(),
                });
            }
            Err(PlanRefused::Corrupt(e)) => return Err(self.err(&format!("decode {key}"), e)),
        };
        match atomics::swap(cas, &plan.bytes) {
            Ok(()) => Ok(plan.new_version),
            // Both a reported conflict and a store error may hide a committed write
            // (Spin's Redis store reports every swap as failed): the re-read decides.
            Err(atomics::CasError::CasFailed(_)) | Err(atomics::CasError::StoreError(_)) => {
                self.settle_failed_swap(key, expected, &write_id)
            }
        }
    }

    async fn put_fresh(&self, key: &str, value: Vec<u8>) -> Result<(), RepoError> {
        drop(self.take_held(key));
        let envelope = envelope::Envelope {
            version: 1,
            write_ids: vec![fresh_write_id()?],
            value,
        };
        self.store
            .set(key, &envelope::encode(&envelope))
            .await
            .map_err(|e| self.err(&format!("set {key}"), e))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, RepoError> {
        atomics::increment(&self.bucket, key, delta)
            .map_err(|e| self.err(&format!("increment {key}"), e))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, RepoError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        for key in keys {
            drop(self.take_held(key));
        }
        let mut out = Vec::with_capacity(keys.len());
        let chunk = usize::try_from(GET_MANY_KEYS_MAX).expect("small constant");
        for part in keys.chunks(chunk) {
            // Spin 4.1's Redis store sends `get-many` as `KEYS k1 k2 …`: an error for two
            // keys or more, and a host panic for one key that exists. So one key is always
            // a plain `get`, and a batch the store refuses is read key by key (all at once).
            // Spin's SQLite store answers only the keys it has, in its own order: the
            // answer is looked up by key, never zipped.
            let batch = match part {
                [_] => None,
                _ if BATCH_REFUSED.load(Ordering::Relaxed) => None,
                _ => batch::get_many(&self.bucket, part)
                    .inspect_err(|_| BATCH_REFUSED.store(true, Ordering::Relaxed))
                    .ok(),
            };
            let found: std::collections::HashMap<String, Option<Vec<u8>>> = match batch {
                Some(pairs) => pairs.into_iter().collect(),
                None => {
                    let reads = part
                        .iter()
                        .map(|key| async move { Ok((key.clone(), self.get_raw(key).await?)) });
                    futures::future::try_join_all(reads)
                        .await?
                        .into_iter()
                        .collect()
                }
            };
            for key in part {
                match found.get(key).and_then(|v| v.as_deref()) {
                    Some(bytes) => out.push(Some(self.decode(key, bytes)?)),
                    None => out.push(None),
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), RepoError> {
        drop(self.take_held(key));
        self.store
            .delete(key)
            .await
            .map_err(|e| self.err(&format!("delete {key}"), e))
    }
}
