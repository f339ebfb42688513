//! A [`MemoryRepository`] seen through hooks, for tests that interfere with chosen
//! operations (fail them, or act on the store right after a write) and pass every other
//! call straight through.

use std::cell::Cell;

use spinpay_core::model::{Payment, PaymentMethod, Refund};
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::repo::{RepoError, Repository, Versioned};
use spinpay_core::service::{
    ActionOutcome, ChannelClient, ChannelOutcome, ChannelReport, RefundOutcome,
};

use super::SimChannel;

/// Which operation a hook sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    /// A read for a read-modify-write ([`Repository::get_for_update`]).
    GetForUpdate,
    Put,
    Increment,
    GetMany,
    Delete,
}

/// What a test changes; every method defaults to passing the call through.
#[allow(async_fn_in_trait)]
pub trait Hooks {
    /// Before any operation (`key`: the key, or the first of a `get_many`): an error is
    /// the operation's answer and it never reaches the store.
    fn before(&self, _op: Op, _key: &str) -> Result<(), RepoError> {
        Ok(())
    }

    /// After a compare-and-swap reached the store with `value` (`written` is what the
    /// store answered): may act on the store and change the answer.
    async fn after_put(
        &self,
        _store: &MemoryRepository,
        _key: &str,
        _expected: u64,
        _value: &[u8],
        written: Result<u64, RepoError>,
    ) -> Result<u64, RepoError> {
        written
    }

    /// After a plain write (`put_fresh`, `increment`, `delete`) reached the store: an
    /// error replaces the store's answer (the write stays).
    fn landed(&self, _op: Op) -> Result<(), RepoError> {
        Ok(())
    }
}

/// The memory repository with `hooks`.
pub struct Hooked<'a, H> {
    pub inner: &'a MemoryRepository,
    pub hooks: H,
}

impl<H: Hooks> Repository for Hooked<'_, H> {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        self.hooks.before(Op::Get, key)?;
        self.inner.get(key).await
    }
    async fn get_for_update(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        self.hooks.before(Op::GetForUpdate, key)?;
        self.inner.get_for_update(key).await
    }
    async fn put_if_version(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<u64, RepoError> {
        self.hooks.before(Op::Put, key)?;
        let written = self
            .inner
            .put_if_version(key, expected, value.clone())
            .await;
        self.hooks
            .after_put(self.inner, key, expected, &value, written)
            .await
    }
    /// Hooked as a put (`before` only: there is no swap to report on).
    async fn put_fresh(&self, key: &str, value: Vec<u8>) -> Result<(), RepoError> {
        self.hooks.before(Op::Put, key)?;
        self.inner.put_fresh(key, value).await?;
        self.hooks.landed(Op::Put)
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, RepoError> {
        self.hooks.before(Op::Increment, key)?;
        let n = self.inner.increment(key, delta).await?;
        self.hooks.landed(Op::Increment).map(|()| n)
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, RepoError> {
        let first = keys.first().map_or("", String::as_str);
        self.hooks.before(Op::GetMany, first)?;
        self.inner.get_many(keys).await
    }
    async fn delete(&self, key: &str) -> Result<(), RepoError> {
        self.hooks.before(Op::Delete, key)?;
        self.inner.delete(key).await?;
        self.hooks.landed(Op::Delete)
    }
}

/// A repository that "crashes" after `budget` operations: every later call fails, as if
/// the process died there (nothing after the crash point reaches storage).
pub struct Crash {
    pub budget: Cell<u64>,
    /// Operations attempted, the failed ones included.
    pub used: Cell<u64>,
}

impl Hooks for Crash {
    fn before(&self, _op: Op, _key: &str) -> Result<(), RepoError> {
        self.used.set(self.used.get() + 1);
        match self.budget.get() {
            0 => Err(RepoError::Unavailable("crashed".into())),
            n => {
                self.budget.set(n - 1);
                Ok(())
            }
        }
    }
}

/// `inner`, crashing after `budget` operations.
pub fn crash_repo(inner: &MemoryRepository, budget: u64) -> Hooked<'_, Crash> {
    Hooked {
        inner,
        hooks: Crash {
            budget: Cell::new(budget),
            used: Cell::new(0),
        },
    }
}

/// A channel seen from a process that crashes with `crash`: once the repository's
/// budget is spent (the process "died" after its last storage operation), no call
/// reaches `inner` any more, as none would leave a dead process.
pub struct CrashChannel<'a> {
    pub inner: &'a SimChannel,
    pub crash: &'a Crash,
}

impl CrashChannel<'_> {
    fn dead(&self) -> bool {
        self.crash.budget.get() == 0
    }
}

fn lost() -> String {
    "the process died before the call".to_string()
}

impl ChannelClient for CrashChannel<'_> {
    async fn authorize(&self, p: &Payment, method: &PaymentMethod) -> ChannelOutcome {
        if self.dead() {
            return ChannelOutcome::Unknown { detail: lost() };
        }
        self.inner.authorize(p, method).await
    }
    async fn capture(&self, p: &Payment, amount_minor: i64) -> ActionOutcome {
        if self.dead() {
            return ActionOutcome::Unknown { detail: lost() };
        }
        self.inner.capture(p, amount_minor).await
    }
    async fn cancel(&self, p: &Payment) -> ActionOutcome {
        if self.dead() {
            return ActionOutcome::Unknown { detail: lost() };
        }
        self.inner.cancel(p).await
    }
    async fn query(&self, p: &Payment) -> ChannelReport {
        if self.dead() {
            return ChannelReport {
                outcome: ChannelOutcome::Unknown { detail: lost() },
                amount_minor: None,
                currency: None,
            };
        }
        self.inner.query(p).await
    }
    async fn refund(&self, p: &Payment, r: &Refund) -> RefundOutcome {
        if self.dead() {
            return RefundOutcome::Unknown { detail: lost() };
        }
        self.inner.refund(p, r).await
    }
    async fn query_refund(&self, p: &Payment, r: &Refund) -> RefundOutcome {
        if self.dead() {
            return RefundOutcome::Unknown { detail: lost() };
        }
        self.inner.query_refund(p, r).await
    }
    async fn send_sms(&self, phone: &str, text: &str) -> Result<(), String> {
        if self.dead() {
            return Err(lost());
        }
        self.inner.send_sms(phone, text).await
    }
}

/// Runs `op` as a process that dies after `steps` storage operations: its storage is
/// `repo` behind [`crash_repo`], its channel `ch` behind a [`CrashChannel`]. Returns
/// whether `op` finished before its crash point.
pub async fn dies_after<T, E>(
    steps: u64,
    repo: &MemoryRepository,
    ch: &SimChannel,
    op: impl AsyncFnOnce(&Hooked<'_, Crash>, &CrashChannel<'_>) -> Result<T, E>,
) -> bool {
    let crash = crash_repo(repo, steps);
    let dying = CrashChannel {
        inner: ch,
        crash: &crash.hooks,
    };
    let first = op(&crash, &dying).await;
    first.is_ok() && crash.hooks.used.get() <= steps
}

/// A fresh repository, keyring, simulated channel and seeded rng.
pub fn world(
    seed: u64,
) -> (
    MemoryRepository,
    spinpay_core::crypto::Keyring,
    SimChannel,
    spinpay_core::rng::SplitMix64,
) {
    (
        MemoryRepository::new(),
        super::keyring(),
        SimChannel::default(),
        spinpay_core::rng::SplitMix64::new(seed),
    )
}

/// Runs `attempt(steps)` for steps = 0, 1, 2, … (the storage operations allowed before
/// the crash) until it reports that the operation finished before its crash point;
/// returns that step count.
pub fn at_every_crash_point(mut attempt: impl FnMut(u64) -> bool) -> u64 {
    let mut steps = 0;
    while !attempt(steps) {
        steps += 1;
    }
    steps
}

/// A storage blip at one operation: the `at`-th operation (0-based, every kind counted)
/// answers `Unavailable`, every other passes through. With `committed`, a write at that
/// point reaches the store first (the write landed, but the answer was lost: a swap
/// whose re-read failed too); a read still fails without effect.
pub struct Blip {
    at: u64,
    committed: bool,
    used: Cell<u64>,
    /// Whether the blip happened (the operation ran far enough to reach it).
    pub hit: Cell<bool>,
}

impl Blip {
    fn blip(&self) -> bool {
        let n = self.used.get();
        self.used.set(n + 1);
        let hit = n == self.at;
        if hit {
            self.hit.set(true);
        }
        hit
    }
}

fn blipped() -> RepoError {
    RepoError::Unavailable("storage blip".into())
}

impl Hooks for Blip {
    fn before(&self, op: Op, _key: &str) -> Result<(), RepoError> {
        // A committed write blips once it landed; a read blips before it runs.
        let landing = self.committed && matches!(op, Op::Put | Op::Increment | Op::Delete);
        if landing || !self.blip() {
            return Ok(());
        }
        Err(blipped())
    }

    fn landed(&self, _op: Op) -> Result<(), RepoError> {
        if self.committed && self.blip() {
            return Err(blipped());
        }
        Ok(())
    }

    async fn after_put(
        &self,
        _store: &MemoryRepository,
        _key: &str,
        _expected: u64,
        _value: &[u8],
        written: Result<u64, RepoError>,
    ) -> Result<u64, RepoError> {
        if self.committed && self.blip() {
            return Err(blipped());
        }
        written
    }
}

/// Runs `attempt(at)` for at = 0, 1, 2, … (the storage operation that blips, see
/// [`blip_repo`]) until it reports that its operation never reached the blip; returns how
/// many operations blipped.
pub fn at_every_blip(mut attempt: impl FnMut(u64) -> bool) -> u64 {
    let mut at = 0;
    while attempt(at) {
        at += 1;
    }
    at
}

/// `inner` with one storage blip at operation `at` (see [`Blip`]).
pub fn blip_repo(inner: &MemoryRepository, at: u64, committed: bool) -> Hooked<'_, Blip> {
    Hooked {
        inner,
        hooks: Blip {
            at,
            committed,
            used: Cell::new(0),
            hit: Cell::new(false),
        },
    }
}
