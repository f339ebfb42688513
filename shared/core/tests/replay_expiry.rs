//! Channel notification replay keys are deleted once their retention has passed: the
//! sweep of every merchant finds them through each channel's expiry queue (no scan),
//! deletes only the expired ones, keeps a key claimed again since, stays within its
//! budget, and leaves them alone in a one-merchant sweep.

mod common;

use common::hooked::{Hooked, Hooks, Op};
use common::*;
use futures::executor::block_on;
use spinpay_core::model::Channel;
use spinpay_core::repo::RepoError;
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const RETENTION: i64 = REPLAY_KEY_RETENTION_MS;
const HOUR: i64 = 3_600_000;
const T0: i64 = 1_800_000_000_000;

fn replay_key(channel: Channel, n: u32) -> String {
    format!("replay/{}/{n:064x}", channel.as_str())
}

fn claim(repo: &impl spinpay_core::repo::Repository, channel: Channel, key: &str, now_ms: i64) {
    let keys = keyring();
    block_on(claim_replay_key(&ctx(repo, &keys, now_ms), channel, key)).unwrap();
}

fn claimed(repo: &MemoryRepository, key: &str) -> bool {
    let keys = keyring();
    block_on(replay_key_claimed(&ctx(repo, &keys, T0), key)).unwrap()
}

/// Expiry-queue slots of `channel` still stored (the head aside).
fn slots(repo: &MemoryRepository, channel: Channel) -> usize {
    repo.keys_with_prefix(&format!("replay/{}/exp/0", channel.as_str()))
        .len()
}

/// A sweep of every merchant on the wall clock `wall_ms`.
fn sweep_wall(repo: &MemoryRepository, wall_ms: i64) -> SweepReport {
    block_on(sweep_at(repo, wall_ms, wall_ms)).unwrap()
}

#[test]
fn the_sweep_deletes_replay_keys_and_their_slots_once_their_retention_has_passed() {
    // Proves only keys past the retention go, per channel, with their queue slots; a
    // younger key stays claimed until its own time; a schedule clock far ahead of the
    // wall clock deletes nothing.
    let repo = MemoryRepository::new();
    let (old, young) = (
        replay_key(Channel::Wechatpay, 1),
        replay_key(Channel::Wechatpay, 2),
    );
    let other = replay_key(Channel::Alipay, 3);
    claim(&repo, Channel::Wechatpay, &old, T0);
    claim(&repo, Channel::Alipay, &other, T0 + HOUR);
    claim(&repo, Channel::Wechatpay, &young, T0 + 3 * 24 * HOUR);
    assert_eq!(slots(&repo, Channel::Wechatpay), 2);

    let ahead = block_on(sweep_at(&repo, T0 + 30 * RETENTION, T0)).unwrap();
    assert_eq!(ahead.replay_keys_expired, 0, "{ahead:?}");

    let at_retention = sweep_wall(&repo, T0 + RETENTION);
    assert_eq!(at_retention.replay_keys_expired, 0, "not past it yet");
    let report = sweep_wall(&repo, T0 + RETENTION + 2 * HOUR);
    assert_eq!(report.replay_keys_expired, 2, "{report:?}");
    assert!(!report.has_more);
    assert!(!claimed(&repo, &old) && !claimed(&repo, &other));
    assert!(claimed(&repo, &young));
    assert_eq!(
        slots(&repo, Channel::Wechatpay),
        1,
        "the young key's slot stays"
    );
    assert_eq!(slots(&repo, Channel::Alipay), 0);

    let later = sweep_wall(&repo, T0 + 3 * 24 * HOUR + RETENTION + HOUR);
    assert_eq!(later.replay_keys_expired, 1);
    assert!(!claimed(&repo, &young));
    assert_eq!(slots(&repo, Channel::Wechatpay), 0);
    assert_eq!(
        sweep_wall(&repo, T0 + 100 * RETENTION).replay_keys_expired,
        0
    );
}

/// Fails the create of one replay key, like a crash between the slot and the claim.
struct LoseClaimOf(String);

impl Hooks for LoseClaimOf {
    fn before(&self, op: Op, key: &str) -> Result<(), RepoError> {
        if op == Op::Put && key == self.0 {
            return Err(RepoError::Unavailable("crashed before the claim".into()));
        }
        Ok(())
    }
}

#[test]
fn a_key_claimed_after_an_older_slot_is_kept_until_its_own_retention() {
    // Proves the slot-before-claim order: a claim that died after its slot leaves a slot
    // naming no key (harmless), and when a redelivery claims the key days later, the old
    // slot coming due does not delete that newer claim; its own slot does, later.
    let repo = MemoryRepository::new();
    let key = replay_key(Channel::Unionpay, 7);
    let lost = Hooked {
        inner: &repo,
        hooks: LoseClaimOf(key.clone()),
    };
    let keys = keyring();
    let died = block_on(claim_replay_key(
        &ctx(&lost, &keys, T0),
        Channel::Unionpay,
        &key,
    ));
    assert!(died.is_err());
    assert!(!claimed(&repo, &key));
    assert_eq!(slots(&repo, Channel::Unionpay), 1, "the slot came first");

    let reclaimed_at = T0 + 5 * 24 * HOUR;
    claim(&repo, Channel::Unionpay, &key, reclaimed_at);
    let report = sweep_wall(&repo, T0 + RETENTION + HOUR);
    assert_eq!(report.replay_keys_expired, 0, "{report:?}");
    assert!(claimed(&repo, &key), "the newer claim is kept");
    assert_eq!(slots(&repo, Channel::Unionpay), 1, "the old slot is done");

    let report = sweep_wall(&repo, reclaimed_at + RETENTION + HOUR);
    assert_eq!(report.replay_keys_expired, 1);
    assert!(!claimed(&repo, &key));
    assert_eq!(slots(&repo, Channel::Unionpay), 0);
}

#[test]
fn a_backlog_beyond_the_budget_drains_over_several_sweeps() {
    // Proves one sweep deletes at most EXPIRY_SWEEP_MAX keys in all and asks for another
    // call, which finishes the job.
    let repo = MemoryRepository::new();
    let total = EXPIRY_SWEEP_MAX + 40;
    for n in 0..total {
        let channel = if n % 2 == 0 {
            Channel::Alipay
        } else {
            Channel::Wechatpay
        };
        claim(&repo, channel, &replay_key(channel, n), T0 + i64::from(n));
    }
    let wall = T0 + RETENTION + HOUR;
    let first = sweep_wall(&repo, wall);
    assert_eq!(first.replay_keys_expired, EXPIRY_SWEEP_MAX);
    assert!(first.has_more);
    let second = sweep_wall(&repo, wall);
    assert_eq!(second.replay_keys_expired, 40);
    assert!(!second.has_more);
    assert!(repo.keys_with_prefix("replay/alipay/0").is_empty());
    assert!(repo.keys_with_prefix("replay/wechatpay/0").is_empty());
    assert_eq!(
        slots(&repo, Channel::Alipay) + slots(&repo, Channel::Wechatpay),
        0
    );
}

#[test]
fn a_one_merchant_sweep_leaves_replay_keys_alone() {
    // Proves replay keys (which belong to no merchant) are only expired by a sweep of
    // every merchant.
    let repo = MemoryRepository::new();
    let keys = keyring();
    let (m, _) = block_on(merchant(&ctx(&repo, &keys, T0), &mut SplitMix64::new(7)));
    let key = replay_key(Channel::Alipay, 9);
    claim(&repo, Channel::Alipay, &key, T0);
    let wall = T0 + RETENTION + HOUR;
    let req = SweepRequest {
        merchant_id: Some(m.id.clone()),
        wall_clock_ms: Some(wall),
        ..SweepRequest::default()
    };
    let one = block_on(sweep(&ctx(&repo, &keys, wall), &NoEndpoint, &req)).unwrap();
    assert_eq!(one.replay_keys_expired, 0);
    assert!(claimed(&repo, &key));
    assert_eq!(sweep_wall(&repo, wall).replay_keys_expired, 1);
    assert!(!claimed(&repo, &key));
}
