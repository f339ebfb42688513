//! The operator's way back after a takeover (`POST /v1/admin/merchants/{id}/credentials/
//! reset`): a merchant's current secret key leaked, someone rotated it first, changed the
//! notify URL and the webhook secret. The reset must stop every old key at once (no
//! grace), replace the webhook secret (no rotated-out one signing), set or clear the
//! notify URL, answer the same secrets to a retry under its Idempotency-Key, and leave no
//! old key working whichever storage operation it dies or fails at once its retry
//! completes.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;

use common::hooked::{at_every_blip, at_every_crash_point, blip_repo, dies_after, world};
use common::*;
use futures::executor::block_on;
use spinpay_core::api::{
    BODY_BYTES_MAX, CredentialsReset, MerchantCredentialsResponse, MerchantResponse,
    MerchantUpdate, NewMerchant, ResetCredentialsRequest, parse_body,
};
use spinpay_core::crypto::{sha256_hex, verify_header};
use spinpay_core::error::ApiError;
use spinpay_core::idempotency::{ADMIN_SCOPE, IDEMPOTENCY_LOCK_TTL_MS};
use spinpay_core::model::{CaptureMode, Merchant};
use spinpay_core::repo::memory::MemoryRepository;
use spinpay_core::repo::{RepoError, Repository, Versioned};
use spinpay_core::rng::SplitMix64;
use spinpay_core::service::*;

const SHOP_URL: &str = "https://shop.test/hooks/spinpay";
const TAKER_URL: &str = "https://taker.test/x";
const QR: &str = r#"{"type":"qr_merchant"}"#;
/// The body of the keyed reset in these tests.
const RESET_BODY: &[u8] = br#"{"notify_url":"https://shop.test/hooks/spinpay"}"#;
/// When the takeover and the reset happen.
const T0_MS: i64 = 1_000_000;
/// The grace period the taker gives the leaked key: long past every check below, so a
/// key refused here is refused because it was revoked, not because it expired.
const TAKER_GRACE_S: i64 = 7 * 86_400;

/// A merchant after a takeover by its leaked key.
struct Takeover {
    merchant_id: String,
    /// The merchant's own key, which leaked (now rotated out, within its grace period).
    leaked_key: String,
    /// The key the taker rotated to (the current one).
    taker_key: String,
    /// The merchant's own webhook secret (rotated out, still signing for an hour).
    shop_secret: String,
    /// The webhook secret the taker rotated to.
    taker_secret: String,
}

/// Onboards a merchant notified at [`SHOP_URL`], then does what the taker of its leaked
/// key does: rotates the key, points the notify URL at itself, rotates the webhook secret.
async fn taken_over<R: Repository>(c: &Ctx<'_, R>, rng: &mut SplitMix64) -> Takeover {
    let new = NewMerchant {
        name: "Corner Coffee".into(),
        notify_url: Some(SHOP_URL.into()),
        default_capture: CaptureMode::Automatic,
    };
    let created = create_merchant(c, rng, new).await.unwrap();
    let id = created.id.clone();
    let grace = Some(TAKER_GRACE_S);
    let rotated = rotate_secret_key(c, rng, &id, None, grace, None)
        .await
        .unwrap();
    let to_taker = MerchantUpdate {
        notify_url: Some(Some(TAKER_URL.into())),
        ..MerchantUpdate::default()
    };
    update_merchant(c, &id, None, to_taker).await.unwrap();
    let secret = rotate_webhook_secret(c, rng, &id, None, Some(3_600), None)
        .await
        .unwrap();
    Takeover {
        merchant_id: id,
        leaked_key: created.secret_key,
        taker_key: rotated.secret_key,
        shop_secret: created.webhook_secret,
        taker_secret: secret.webhook_secret,
    }
}

/// The merchant `key` authenticates as, at `c`'s time.
async fn auth<R: Repository>(c: &Ctx<'_, R>, key: &str) -> Result<String, ApiError> {
    let header = format!("Bearer {key}");
    authenticate(c, Some(&header)).await.map(|m| m.id)
}

/// The reset that points the notify URL back at the shop.
fn back_to_the_shop() -> CredentialsReset {
    CredentialsReset {
        notify_url: Some(Some(SHOP_URL.into())),
    }
}

async fn stored_merchant(repo: &MemoryRepository, id: &str) -> Merchant {
    let v = repo.get(&format!("mch/{id}")).await.unwrap().unwrap();
    serde_json::from_slice(&v.value).unwrap()
}

async fn present(repo: &MemoryRepository, key: &str) -> bool {
    repo.get(key).await.unwrap().is_some()
}

/// Everything a completed reset leaves: both old keys refused (the leaked one inside its
/// grace period) and their index entries gone, the answered key current and working,
/// the answered webhook secret current and no rotated-out one kept, the notify URL the
/// shop's.
async fn assert_reset_complete(
    c: &Ctx<'_, MemoryRepository>,
    t: &Takeover,
    made: &MerchantCredentialsResponse,
    at: &str,
) {
    let id = &t.merchant_id;
    for old in [&t.leaked_key, &t.taker_key] {
        assert_eq!(auth(c, old).await, Err(ApiError::ApiKeyInvalid), "{at}");
        let entry = format!("apikey/{}", sha256_hex(old.as_bytes()));
        assert!(!present(c.repo, &entry).await, "{at}: {entry} left behind");
    }
    assert_eq!(auth(c, &made.secret_key).await.as_ref(), Ok(id), "{at}");
    let m = stored_merchant(c.repo, id).await;
    let header = format!("Bearer {}", made.secret_key);
    assert!(by_current_key(&m, Some(&header)), "{at}");
    assert_eq!(m.previous_api_key, None, "{at}: no grace for any old key");
    let secret = webhook_secret(c, &m).unwrap();
    assert_eq!(secret.expose(), &made.webhook_secret, "{at}");
    let previous = format!("mch/{id}/whsec/prev");
    assert!(
        !present(c.repo, &previous).await,
        "{at}: a rotated-out secret kept"
    );
    assert_eq!(m.notify_url.as_deref(), Some(SHOP_URL), "{at}");
    assert_eq!(made.notify_url.as_deref(), Some(SHOP_URL), "{at}");
}

/// The path of the reset of `merchant_id`.
fn reset_path(merchant_id: &str) -> String {
    format!("/v1/admin/merchants/{merchant_id}/credentials/reset")
}

/// Begins a keyed admin POST that must run (a fresh key, or a crashed attempt's lock
/// taken over) and returns its operation seed.
async fn begin_reset(c: &Ctx<'_, MemoryRepository>, key: &str, merchant_id: &str) -> [u8; 16] {
    let path = reset_path(merchant_id);
    let begun = idempotency_begin(c, ADMIN_SCOPE, Some(key), "POST", &path, RESET_BODY);
    match begun.await.unwrap() {
        Started::Run(Some(t)) => t.keyed_run().seed,
        other => panic!("{key} at {} ms does not run: {other:?}", c.now_ms),
    }
}

/// What a keyed reset of world `seed`'s taken-over merchant answers when nothing fails.
fn reference_reset(seed: u64) -> MerchantCredentialsResponse {
    let (repo, keys, _, mut rng) = world(seed);
    block_on(async {
        let c = ctx(&repo, &keys, T0_MS);
        let t = taken_over(&c, &mut rng).await;
        let op = begin_reset(&c, "reset-1", &t.merchant_id).await;
        reset_merchant_credentials(&c, &mut rng, &t.merchant_id, back_to_the_shop(), Some(op))
            .await
            .unwrap()
    })
}

#[test]
fn a_reset_after_a_takeover_refuses_both_old_keys_at_once_and_only_the_new_credentials_work() {
    // Proves the reset of a taken-over merchant: before it the leaked key (in its grace
    // period) and the taker's both authenticate; after it both answer api_key_invalid at
    // the same instant, their apikey/ entries are gone, the new key authenticates as the
    // current one, the webhook secret is the answered one (neither the taker's nor the
    // shop's old one), no rotated-out secret is kept, the notify URL is the one the reset
    // set; name, capture mode and creation time are kept, and another merchant is
    // untouched.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keyring(), SplitMix64::new(31));
    block_on(async {
        let c = ctx(&repo, &keys, T0_MS);
        let t = taken_over(&c, &mut rng).await;
        let (other, other_key) = merchant(&c, &mut rng).await;
        let id = &t.merchant_id;
        assert_eq!(auth(&c, &t.leaked_key).await.as_ref(), Ok(id));
        assert_eq!(auth(&c, &t.taker_key).await.as_ref(), Ok(id));
        let before = get_merchant(&c, id).await.unwrap();
        assert_eq!(before.notify_url.as_deref(), Some(TAKER_URL));

        let made = reset_merchant_credentials(&c, &mut rng, id, back_to_the_shop(), None)
            .await
            .unwrap();
        assert_eq!(made.object, "merchant_credentials");
        assert_eq!(&made.merchant_id, id);
        assert!(made.secret_key.starts_with("sk_"), "{made:?}");
        assert!(made.webhook_secret.starts_with("whsec_"), "{made:?}");
        for old in [&t.shop_secret, &t.taker_secret] {
            assert_ne!(&made.webhook_secret, old);
        }
        assert_reset_complete(&c, &t, &made, "after the reset").await;

        let after = get_merchant(&c, id).await.unwrap();
        let kept = MerchantResponse {
            notify_url: Some(SHOP_URL.into()),
            ..before
        };
        assert_eq!(after, kept, "only the notify URL changed");
        assert_eq!(auth(&c, &other_key).await, Ok(other.id));
    });
}

/// One POST: URL, headers, body.
type Post = (String, BTreeMap<String, String>, Vec<u8>);

/// A merchant endpoint that answers 200 and records every POST.
#[derive(Default)]
struct Endpoint {
    posts: RefCell<Vec<Post>>,
}

impl Notifier for Endpoint {
    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<u16, String> {
        let headers = headers.iter().cloned().collect();
        let post = (url.to_string(), headers, body.to_vec());
        self.posts.borrow_mut().push(post);
        Ok(200)
    }
    fn now_unix_s(&self) -> i64 {
        1_700_000_000
    }
}

/// Redelivers `event_id` and sweeps: the URL and the signature header of the POST made.
async fn delivered(
    c: &Ctx<'_, MemoryRepository>,
    endpoint: &Endpoint,
    id: &str,
    event_id: &str,
) -> (String, String, Vec<u8>) {
    let m = stored_merchant(c.repo, id).await;
    redeliver_event(c, &m, event_id).await.unwrap();
    let req = SweepRequest {
        limit: None,
        merchant_id: Some(id.to_string()),
        wall_clock_ms: Some(c.now_ms),
    };
    let report = sweep(c, endpoint, &req).await.unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");
    let (url, headers, body) = endpoint.posts.borrow().last().unwrap().clone();
    (url, headers["spinpay-signature"].clone(), body)
}

#[test]
fn after_a_reset_deliveries_go_to_the_reset_url_signed_by_the_new_secret_alone() {
    // Proves the webhook secrets are replaced with no grace: before the reset a delivery
    // goes to the taker's URL signed by the taker's secret and the shop's rotated-out one
    // (two v1=); after it the same event goes to the shop's URL with one v1= that only the
    // reset's secret verifies.
    let (repo, keys, ch, mut rng) = world(32);
    block_on(async {
        let c = ctx(&repo, &keys, T0_MS);
        let t = taken_over(&c, &mut rng).await;
        let m = stored_merchant(&repo, &t.merchant_id).await;
        pay(&c, &ch, &mut rng, &m, 1250, QR).await.unwrap();
        let event_id: String = {
            let slot = repo.keys_with_prefix(&format!("mch/{}/evt/", m.id))[0].clone();
            let v = repo.get(&slot).await.unwrap().unwrap();
            serde_json::from_slice(&v.value).unwrap()
        };
        let endpoint = Endpoint::default();
        // What the payment published goes out first; each check below redelivers one.
        let flush = SweepRequest {
            limit: None,
            merchant_id: Some(m.id.clone()),
            wall_clock_ms: Some(T0_MS),
        };
        sweep(&c, &endpoint, &flush).await.unwrap();
        let verifies = |sig: &str, body: &[u8], secret: &str| {
            verify_header(sig, body, &[secret.as_bytes()], 1_700_000_000, 300).is_ok()
        };
        let (url, sig, body) = delivered(&c, &endpoint, &m.id, &event_id).await;
        assert_eq!(url, TAKER_URL);
        assert_eq!(sig.matches("v1=").count(), 2, "{sig}");
        assert!(verifies(&sig, &body, &t.taker_secret) && verifies(&sig, &body, &t.shop_secret));

        let made = reset_merchant_credentials(&c, &mut rng, &m.id, back_to_the_shop(), None)
            .await
            .unwrap();
        let (url, sig, body) = delivered(&c, &endpoint, &m.id, &event_id).await;
        assert_eq!(url, SHOP_URL);
        assert_eq!(sig.matches("v1=").count(), 1, "{sig}");
        assert!(verifies(&sig, &body, &made.webhook_secret));
        assert!(!verifies(&sig, &body, &t.taker_secret));
        assert!(!verifies(&sig, &body, &t.shop_secret));
    });
}

#[test]
fn a_reset_sets_clears_or_keeps_the_notify_url_as_its_body_says_and_refuses_bad_bodies() {
    // Proves the body as the endpoint parses it: {} or a null notify_url keeps the URL, a
    // URL sets it, "" clears it; a malformed URL, one with user-info, a non-string and an
    // unknown field are refused naming the field, before anything is reset.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keyring(), SplitMix64::new(33));
    block_on(async {
        let c = ctx(&repo, &keys, T0_MS);
        let t = taken_over(&c, &mut rng).await;
        let id = &t.merchant_id;
        let parse = |body: &str| {
            parse_body::<ResetCredentialsRequest>(body.as_bytes(), BODY_BYTES_MAX)?.validate()
        };
        let cases = [
            ("{}", Some(TAKER_URL)),
            ("", Some(TAKER_URL)),
            (r#"{"notify_url":null}"#, Some(TAKER_URL)),
            (
                r#"{"notify_url":"https://shop.test/new"}"#,
                Some("https://shop.test/new"),
            ),
            (r#"{"notify_url":""}"#, None),
            ("{}", None),
        ];
        for (body, url) in cases {
            let made = reset_merchant_credentials(&c, &mut rng, id, parse(body).unwrap(), None)
                .await
                .unwrap();
            assert_eq!(made.notify_url.as_deref(), url, "{body}");
            let shown = get_merchant(&c, id).await.unwrap();
            assert_eq!(shown.notify_url.as_deref(), url, "{body}");
            assert_eq!(auth(&c, &made.secret_key).await.as_ref(), Ok(id), "{body}");
        }
        let refused = [
            (
                r#"{"notify_url":"not a url"}"#,
                "parameter_invalid",
                "notify_url",
            ),
            (
                r#"{"notify_url":"https://u:p@shop.test/x"}"#,
                "parameter_invalid",
                "notify_url",
            ),
            (r#"{"notify_url":5}"#, "parameter_invalid", "notify_url"),
            (r#"{"secret_key":"sk_x"}"#, "unknown_field", "secret_key"),
        ];
        for (body, code, param) in refused {
            let e = parse(body).unwrap_err();
            assert_eq!((e.code(), e.param()), (code, Some(param)), "{body}");
        }
    });
}

#[test]
fn a_read_or_reset_of_an_unknown_or_malformed_merchant_is_resource_missing_and_writes_nothing() {
    // Proves get_merchant and reset_merchant_credentials answer 404 resource_missing
    // (param id) for an id of the right form that names no merchant, a malformed one, an
    // id of another kind and an over-long one (echoed cut to 64 characters), and store
    // nothing; a real merchant reads as GET /v1/account shows it, with no secret in it.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keyring(), SplitMix64::new(34));
    block_on(async {
        let c = ctx(&repo, &keys, T0_MS);
        let (m, _) = merchant(&c, &mut rng).await;
        let stored_keys = repo.keys_with_prefix("");
        let long = format!("mch_{}", "a".repeat(200));
        let unknown = format!("mch_{}", "a".repeat(26));
        let pay_id = format!("pay_{}", "a".repeat(26));
        for id in [unknown.as_str(), "mch_x", &pay_id, "", "../apikey", &long] {
            let read = get_merchant(&c, id).await.unwrap_err();
            let reset = reset_merchant_credentials(&c, &mut rng, id, back_to_the_shop(), None)
                .await
                .unwrap_err();
            for e in [read, reset] {
                assert_eq!(
                    (e.code(), e.status(), e.param()),
                    ("resource_missing", 404, Some("id")),
                    "{id}"
                );
                let ApiError::ResourceMissing {
                    resource,
                    id: echoed,
                } = e
                else {
                    panic!("{id}: {e:?}");
                };
                assert_eq!(resource, "merchant");
                assert_eq!(echoed, id.chars().take(64).collect::<String>());
            }
        }
        assert_eq!(repo.keys_with_prefix(""), stored_keys, "nothing written");
        let shown = get_merchant(&c, &m.id).await.unwrap();
        assert_eq!(shown, MerchantResponse::new(&m));
        let json = serde_json::to_value(&shown).unwrap();
        for secret in [
            "secret_key",
            "webhook_secret",
            "api_key_hash",
            "webhook_secret_sealed",
        ] {
            assert!(json.get(secret).is_none(), "{json}");
        }
    });
}

#[test]
fn a_reset_retried_under_its_idempotency_key_answers_the_same_secrets_and_resets_once() {
    // Proves a keyed reset run again with its operation seed answers the same key and
    // secret and writes nothing; once the merchant has rotated the reset key, the retry
    // still answers it and does not reset over the newer key; another seed makes other
    // secrets and does reset.
    let (repo, keys, mut rng) = (MemoryRepository::new(), keyring(), SplitMix64::new(35));
    block_on(async {
        let c = ctx(&repo, &keys, T0_MS);
        let t = taken_over(&c, &mut rng).await;
        let id = &t.merchant_id;
        let seed = [9_u8; 16];
        let first = reset_merchant_credentials(&c, &mut rng, id, back_to_the_shop(), Some(seed))
            .await
            .unwrap();
        let version = async |repo: &MemoryRepository| {
            let v = repo.get(&format!("mch/{id}")).await.unwrap();
            v.unwrap().version
        };
        let written = version(&repo).await;
        let again = reset_merchant_credentials(&c, &mut rng, id, back_to_the_shop(), Some(seed))
            .await
            .unwrap();
        assert_eq!(again, first, "the same secrets");
        assert_eq!(version(&repo).await, written, "reset once");
        assert_reset_complete(&c, &t, &first, "after the retry").await;

        let rotated = rotate_secret_key(&c, &mut rng, id, None, None, None)
            .await
            .unwrap();
        let late = reset_merchant_credentials(&c, &mut rng, id, back_to_the_shop(), Some(seed))
            .await
            .unwrap();
        assert_eq!(late, first);
        let m = stored_merchant(&repo, id).await;
        let newest = format!("Bearer {}", rotated.secret_key);
        assert!(
            by_current_key(&m, Some(&newest)),
            "not reset over the newer key"
        );
        assert_eq!(
            auth(&c, &first.secret_key).await.as_ref(),
            Ok(id),
            "in its grace"
        );

        let other =
            reset_merchant_credentials(&c, &mut rng, id, back_to_the_shop(), Some([10; 16]))
                .await
                .unwrap();
        assert_ne!(other.secret_key, first.secret_key);
        assert_ne!(other.webhook_secret, first.webhook_secret);
        for old in [&first.secret_key, &rotated.secret_key] {
            assert_eq!(auth(&c, old).await, Err(ApiError::ApiKeyInvalid));
        }
    });
}

#[test]
fn a_reset_that_dies_after_any_storage_operation_leaves_no_old_key_working_once_its_retry_completes()
 {
    // Proves that whichever storage operation a keyed reset dies after: at the crash, a
    // record already naming the new key lets no old key in; the retry that takes over the
    // lock after the TTL gets the attempt's seed, answers exactly what an undisturbed
    // reset answers, and leaves both old keys refused (inside the leaked key's grace
    // period) with no index entry, the new key and secret current, no rotated-out secret.
    let keys = keyring();
    let reference = reference_reset(41);
    let steps = at_every_crash_point(|steps| {
        let (repo, _, ch, mut rng) = world(41);
        block_on(async {
            let c = ctx(&repo, &keys, T0_MS);
            let t = taken_over(&c, &mut rng).await;
            let id = t.merchant_id.clone();
            let seed = begin_reset(&c, "reset-1", &id).await;
            let finished = dies_after(steps, &repo, &ch, async |crash, _| {
                let cc = ctx(crash, &keys, T0_MS);
                reset_merchant_credentials(&cc, &mut rng, &id, back_to_the_shop(), Some(seed)).await
            })
            .await;
            let at = format!("crash after {steps} storage operations");
            let m = stored_merchant(&repo, &id).await;
            if m.api_key_hash == sha256_hex(reference.secret_key.as_bytes()) {
                for old in [&t.leaked_key, &t.taker_key] {
                    assert_eq!(auth(&c, old).await, Err(ApiError::ApiKeyInvalid), "{at}");
                }
            }
            let late = ctx(&repo, &keys, T0_MS + IDEMPOTENCY_LOCK_TTL_MS + 1);
            let retry_seed = begin_reset(&late, "reset-1", &id).await;
            assert_eq!(retry_seed, seed, "{at}: the retry resumes the attempt");
            let made =
                reset_merchant_credentials(&late, &mut rng, &id, back_to_the_shop(), Some(seed))
                    .await
                    .unwrap_or_else(|e| panic!("{at}: {e:?}"));
            assert_eq!(made, reference, "{at}");
            assert_reset_complete(&late, &t, &made, &at).await;
            finished
        })
    });
    assert!(
        steps >= 6,
        "the reset has several storage operations ({steps})"
    );
}

#[test]
fn a_reset_failed_by_a_storage_blip_at_any_step_is_finished_by_the_immediate_retry() {
    // Proves that whichever storage operation of a keyed reset answers "unavailable"
    // (without effect, or after its write landed), the reset either answers what an
    // undisturbed one does or fails, and then the same reset retried at once answers that
    // and leaves no old key working.
    let keys = keyring();
    let reference = reference_reset(42);
    for committed in [false, true] {
        let blips = at_every_blip(|at| {
            let (repo, _, _, mut rng) = world(42);
            block_on(async {
                let c = ctx(&repo, &keys, T0_MS);
                let t = taken_over(&c, &mut rng).await;
                let id = t.merchant_id.clone();
                let seed = begin_reset(&c, "reset-1", &id).await;
                let blip = blip_repo(&repo, at, committed);
                let bc = ctx(&blip, &keys, T0_MS);
                let first =
                    reset_merchant_credentials(&bc, &mut rng, &id, back_to_the_shop(), Some(seed))
                        .await;
                let at = format!("blip at operation {at} (landed: {committed}): {first:?}");
                let made = match first {
                    Ok(made) => made,
                    Err(e) => {
                        assert_eq!(e, ApiError::StorageUnavailable, "{at}");
                        reset_merchant_credentials(
                            &c,
                            &mut rng,
                            &id,
                            back_to_the_shop(),
                            Some(seed),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("{at}: retry: {e:?}"))
                    }
                };
                assert_eq!(made, reference, "{at}");
                assert_reset_complete(&c, &t, &made, &at).await;
                blip.hooks.hit.get()
            })
        });
        assert!(
            blips >= 6,
            "the reset has several storage operations ({blips})"
        );
    }
}

/// The memory repository with `race` run once, just before the first compare-and-swap of
/// `key` reaches the store: a write landing between the caller's read and its write.
struct RaceBefore<'a, F> {
    inner: &'a MemoryRepository,
    key: String,
    race: RefCell<Option<F>>,
}

impl<F: AsyncFnOnce(&MemoryRepository)> Repository for RaceBefore<'_, F> {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RepoError> {
        self.inner.get(key).await
    }
    async fn put_if_version(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<u64, RepoError> {
        let race = if key == self.key {
            self.race.borrow_mut().take()
        } else {
            None
        };
        if let Some(race) = race {
            race(self.inner).await;
        }
        self.inner.put_if_version(key, expected, value).await
    }
    async fn put_fresh(&self, key: &str, value: Vec<u8>) -> Result<(), RepoError> {
        self.inner.put_fresh(key, value).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, RepoError> {
        self.inner.increment(key, delta).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, RepoError> {
        self.inner.get_many(keys).await
    }
    async fn delete(&self, key: &str) -> Result<(), RepoError> {
        self.inner.delete(key).await
    }
}

#[test]
fn a_rotation_that_lands_while_a_reset_is_between_its_read_and_its_write_is_revoked_too() {
    // Proves the reset's compare-and-swap: the taker's rotation (and notify URL change)
    // landing after the reset read the record and revoked the keys it named makes the
    // reset read again and revoke the key that rotation made as well, so the leaked key,
    // the taker's and the one it rotated to meanwhile are all refused, and the notify
    // URL is the reset's.
    let (repo, keys) = (MemoryRepository::new(), keyring());
    let mut rng = SplitMix64::new(36);
    block_on(async {
        let c = ctx(&repo, &keys, T0_MS);
        let t = taken_over(&c, &mut rng).await;
        let id = t.merchant_id.clone();
        let made_meanwhile = RefCell::new(String::new());
        let race = async |store: &MemoryRepository| {
            let sc = ctx(store, &keys, T0_MS);
            let mut taker_rng = SplitMix64::new(99);
            let rotated =
                rotate_secret_key(&sc, &mut taker_rng, &id, None, Some(TAKER_GRACE_S), None)
                    .await
                    .unwrap();
            let to_taker = MerchantUpdate {
                notify_url: Some(Some(TAKER_URL.into())),
                ..MerchantUpdate::default()
            };
            update_merchant(&sc, &id, None, to_taker).await.unwrap();
            *made_meanwhile.borrow_mut() = rotated.secret_key;
        };
        let racing = RaceBefore {
            inner: &repo,
            key: format!("mch/{id}"),
            race: RefCell::new(Some(race)),
        };
        let rc = ctx(&racing, &keys, T0_MS);
        let made = reset_merchant_credentials(&rc, &mut rng, &id, back_to_the_shop(), None)
            .await
            .unwrap();
        let meanwhile = made_meanwhile.borrow().clone();
        assert!(meanwhile.starts_with("sk_"), "the race ran");
        assert_reset_complete(&c, &t, &made, "after the race").await;
        assert_eq!(auth(&c, &meanwhile).await, Err(ApiError::ApiKeyInvalid));
    });
}

#[test]
fn an_account_write_authenticated_before_the_reset_cannot_land_after_it() {
    // Proves a taker's request that authenticated just before the operator's reset and
    // writes after it (a rotation, a notify URL change, a webhook secret rotation) is
    // refused inside its compare-and-swap (401 api_key_invalid: its key is gone) and
    // changes nothing: the reset's key stays current and its notify URL stays set.
    let (repo, keys) = (MemoryRepository::new(), keyring());
    let mut rng = SplitMix64::new(41);
    block_on(async {
        let c = ctx(&repo, &keys, T0_MS);
        let t = taken_over(&c, &mut rng).await;
        let id = t.merchant_id.clone();
        let taker = sha256_hex(t.taker_key.as_bytes());
        let made = reset_merchant_credentials(&c, &mut rng, &id, back_to_the_shop(), None)
            .await
            .unwrap();
        let rotated = rotate_secret_key(&c, &mut rng, &id, Some(&taker), None, None).await;
        assert_eq!(rotated.unwrap_err(), ApiError::ApiKeyInvalid);
        let to_taker = MerchantUpdate {
            notify_url: Some(Some(TAKER_URL.into())),
            ..MerchantUpdate::default()
        };
        let updated = update_merchant(&c, &id, Some(&taker), to_taker).await;
        assert_eq!(updated.unwrap_err(), ApiError::ApiKeyInvalid);
        let secret = rotate_webhook_secret(&c, &mut rng, &id, Some(&taker), Some(0), None).await;
        assert_eq!(secret.unwrap_err(), ApiError::ApiKeyInvalid);
        assert_eq!(auth(&c, &made.secret_key).await, Ok(id.clone()));
        let shown = get_merchant(&c, &id).await.unwrap();
        assert_eq!(shown.notify_url.as_deref(), Some(SHOP_URL));
        // The merchant's own writes with the reset's key go through.
        let own = sha256_hex(made.secret_key.as_bytes());
        let back = MerchantUpdate {
            name: Some("Corner Coffee Co".into()),
            ..MerchantUpdate::default()
        };
        assert!(update_merchant(&c, &id, Some(&own), back).await.is_ok());
    });
}
