//! A key-value wrap for the tests that race requests: it makes contention certain and
//! shows that the requests really overlapped on the server (through
//! [`spinpay_host::kv::KvWrap`]).
//!
//! A held key-value call stalls its whole instance (the host's key-value calls take the
//! instance's store) and every request that instance serves, so two tools:
//! - **A swap gate** ([`Contention::hold_swaps`]): the first compare-and-swaps on one key
//!   are held until `n` of them wait at once, then let go together. They were all planned
//!   against the same value (none could commit while held), so exactly one commits and the
//!   others are refused. Only swaps from different instances can wait at once, so the gate
//!   filling up proves the requests overlapped; a host serving one request at a time never
//!   fills it, and the gate opens by its time limit instead ([`Report::filled`]).
//! - **A valve** ([`Contention::close`]): every call on keys under a prefix waits until
//!   the test opens it, e.g. the sandbox channel's records, so a request stays in flight
//!   (its own instance free, waiting on the channel) while the test watches what the
//!   others get meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spinpay_host::kv::{KvBackend, KvResult, KvWrap};
use tokio::sync::watch;

/// How long held swaps wait for the others before the gate opens anyway (well under the
/// host's 30 s request deadline).
pub const SWAP_HOLD_MAX: Duration = Duration::from_secs(10);
/// How long a closed valve holds a call before letting it go anyway (so a failing test
/// does not hang; under the host's 30 s request deadline).
pub const VALVE_HOLD_MAX: Duration = Duration::from_secs(20);

/// What a [`Contention`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Compare-and-swaps on the gated key.
    pub swaps: u64,
    /// Of those, the ones the store refused (someone else wrote first).
    pub refused: u64,
    /// The most swaps held at once by the gate.
    pub most_held: usize,
    /// Whether the gate's `n` swaps waited at once (false: it opened by its time limit, or
    /// fewer swaps came).
    pub filled: bool,
    /// Calls the closed valve held.
    pub valve_held: u64,
}

#[derive(Debug, Default)]
struct SwapGate {
    key: Option<String>,
    hold: usize,
    waiting: usize,
    most_held: usize,
    open: bool,
    filled: bool,
}

/// See the module docs.
pub struct Contention {
    gate: Mutex<SwapGate>,
    gate_opened: watch::Sender<bool>,
    swaps: AtomicU64,
    refused: AtomicU64,
    valve_prefix: Mutex<Option<String>>,
    valve_open: watch::Sender<bool>,
    valve_held: AtomicU64,
    /// Reads and compare-and-swaps per key (see [`Contention::calls_on`]).
    calls: Mutex<HashMap<String, Calls>>,
}

/// The store calls made on one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// Reads: `get`, `exists` and each key of a `get_many` (a compare-and-swap handle
    /// reads its key through `get`).
    pub reads: u64,
    /// Compare-and-swaps.
    pub swaps: u64,
}

impl Contention {
    /// Nothing held or counted yet.
    pub fn new() -> Arc<Contention> {
        Arc::new(Contention {
            gate: Mutex::new(SwapGate::default()),
            gate_opened: watch::Sender::new(false),
            swaps: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            valve_prefix: Mutex::new(None),
            valve_open: watch::Sender::new(true),
            valve_held: AtomicU64::new(0),
            calls: Mutex::new(HashMap::new()),
        })
    }

    /// The wrap to start the app with ([`crate::TestApp::start_wrapped`]).
    pub fn wrap(self: &Arc<Contention>) -> KvWrap {
        let contention = self.clone();
        Arc::new(move |_label, inner| {
            Arc::new(Contended {
                inner,
                contention: contention.clone(),
            })
        })
    }

    /// Holds the first swaps on `key` until `n` wait at once (once per app).
    pub fn hold_swaps(&self, key: &str, n: usize) {
        assert!(n >= 2, "{n} swap(s) held at once prove no overlap");
        let mut g = self.gate.lock().unwrap();
        assert!(
            g.key.is_none(),
            "the gate already holds swaps on {:?}",
            g.key
        );
        g.key = Some(key.to_string());
        g.hold = n;
    }

    /// Holds every call on keys starting with `prefix` until [`Contention::open`].
    pub fn close(&self, prefix: &str) {
        *self.valve_prefix.lock().unwrap() = Some(prefix.to_string());
        self.valve_open.send_replace(false);
    }

    /// Lets the calls the valve holds go on, and every later one.
    pub fn open(&self) {
        self.valve_open.send_replace(true);
    }

    /// What happened so far.
    pub fn report(&self) -> Report {
        let (most_held, filled) = {
            let g = self.gate.lock().unwrap();
            (g.most_held, g.filled)
        };
        Report {
            swaps: self.swaps.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            most_held,
            filled,
            valve_held: self.valve_held.load(Ordering::SeqCst),
        }
    }

    /// The reads and compare-and-swaps made on `key` so far.
    pub fn calls_on(&self, key: &str) -> Calls {
        self.calls
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or_default()
    }

    fn count(&self, key: &str, f: impl FnOnce(&mut Calls)) {
        f(self
            .calls
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default());
    }

    /// Waits while the valve is closed over `key`.
    async fn through_valve(&self, key: &str) {
        let held = match self.valve_prefix.lock().unwrap().as_deref() {
            Some(prefix) => key.starts_with(prefix),
            None => false,
        };
        if !held || *self.valve_open.borrow() {
            return;
        }
        self.valve_held.fetch_add(1, Ordering::SeqCst);
        let mut open = self.valve_open.subscribe();
        // Past the limit the call goes on: the test reports what it waited for.
        let _ = tokio::time::timeout(VALVE_HOLD_MAX, open.wait_for(|o| *o)).await;
    }

    /// Holds a swap on the gated key while the gate is closed: until its `n` swaps wait
    /// or [`SWAP_HOLD_MAX`] has passed.
    async fn through_gate(&self) {
        let must_wait = {
            let mut g = self.gate.lock().unwrap();
            if g.open {
                false
            } else {
                g.waiting += 1;
                g.most_held = g.most_held.max(g.waiting);
                if g.waiting >= g.hold {
                    g.open = true;
                    g.filled = true;
                    self.gate_opened.send_replace(true);
                    false
                } else {
                    true
                }
            }
        };
        if must_wait {
            let mut opened = self.gate_opened.subscribe();
            let waited = tokio::time::timeout(SWAP_HOLD_MAX, opened.wait_for(|o| *o)).await;
            if waited.is_err() {
                self.gate.lock().unwrap().open = true;
                self.gate_opened.send_replace(true);
            }
        }
    }

    fn gates(&self, key: &str) -> bool {
        self.gate.lock().unwrap().key.as_deref() == Some(key)
    }
}

struct Contended {
    inner: Arc<dyn KvBackend>,
    contention: Arc<Contention>,
}

impl Contended {
    async fn through_valve_all(&self, keys: impl Iterator<Item = &str>) {
        for key in keys {
            self.contention.through_valve(key).await;
        }
    }
}

#[async_trait::async_trait]
impl KvBackend for Contended {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.contention.count(key, |c| c.reads += 1);
        self.contention.through_valve(key).await;
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> KvResult<()> {
        self.contention.through_valve(key).await;
        self.inner.set(key, value).await
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.contention.through_valve(key).await;
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        self.contention.count(key, |c| c.reads += 1);
        self.contention.through_valve(key).await;
        self.inner.exists(key).await
    }

    async fn get_keys(&self) -> KvResult<Vec<String>> {
        self.inner.get_keys().await
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        for key in &keys {
            self.contention.count(key, |c| c.reads += 1);
        }
        self.through_valve_all(keys.iter().map(String::as_str))
            .await;
        self.inner.get_many(keys).await
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        self.through_valve_all(entries.iter().map(|(k, _)| k.as_str()))
            .await;
        self.inner.set_many(entries).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        self.through_valve_all(keys.iter().map(String::as_str))
            .await;
        self.inner.delete_many(keys).await
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.contention.through_valve(key).await;
        self.inner.increment(key, delta).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvResult<bool> {
        self.contention.count(key, |c| c.swaps += 1);
        self.contention.through_valve(key).await;
        if !self.contention.gates(key) {
            return self.inner.compare_and_swap(key, expected, new).await;
        }
        self.contention.swaps.fetch_add(1, Ordering::SeqCst);
        self.contention.through_gate().await;
        let swapped = self.inner.compare_and_swap(key, expected, new).await?;
        if !swapped {
            self.contention.refused.fetch_add(1, Ordering::SeqCst);
        }
        Ok(swapped)
    }
}
