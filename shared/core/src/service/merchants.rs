//! Merchants: creation (secret key returned once, stored as a sha256 hash, indexed by
//! that hash), bearer authentication, secret key rotation, the operator's read and
//! credentials reset, the admin token check. (Risk configuration lives in
//! [`crate::riskengine::store`].)

use super::{CAS_RETRIES_MAX, Ctx, insert, internal, read, read_for_update, to_bytes};
use crate::api::{
    CredentialsReset, MerchantCreatedResponse, MerchantCredentialsResponse, MerchantResponse,
    MerchantUpdate, NewMerchant,
};
use crate::crypto::{Secret, constant_time_eq, open, seal, sha256_hex};
use crate::error::ApiError;
use crate::ids::{ID_LEN_MAX, IdKind, is_valid_id, make_id};
use crate::keys;
use crate::model::{Merchant, PreviousApiKey};
use crate::repo::{RepoError, Repository};
use crate::rng::Entropy;

/// `POST /v1/admin/merchants` (after [`check_admin_token`]).
pub async fn create_merchant<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    req: NewMerchant,
) -> Result<MerchantCreatedResponse, ApiError> {
    create_merchant_seeded(ctx, rng, req, None).await
}

/// [`create_merchant`] under an Idempotency-Key: the merchant id, its secret key and its
/// webhook signing secret derive from the key's operation seed under the encryption key
/// (nobody without it can guess them), so a retry that resumes an attempt which failed
/// or died part-way finds that attempt's merchant and answers with its credentials,
/// instead of onboarding a second merchant whose first twin nobody can use.
pub async fn create_merchant_seeded<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    req: NewMerchant,
    seed: Option<[u8; 16]>,
) -> Result<MerchantCreatedResponse, ApiError> {
    let mut entropy = |what: &str| seeded_or_random(ctx, rng, seed, &format!("merchant {what}"));
    let id = make_id(IdKind::Merchant, &entropy("id")[..16]);
    let secret_key = make_id(IdKind::SecretKey, &entropy("secret key"));
    let webhook_secret = make_id(IdKind::WebhookSecret, &entropy("webhook secret"));
    let api_key_hash = sha256_hex(secret_key.as_bytes());
    let merchant = Merchant {
        id: id.clone(),
        name: req.name,
        notify_url: req.notify_url,
        default_capture: req.default_capture,
        api_key_hash: api_key_hash.clone(),
        previous_api_key: None,
        webhook_secret_sealed: seal(
            ctx.keys,
            rng.bytes(),
            webhook_secret.as_bytes(),
            id.as_bytes(),
        ),
        created_at_ms: ctx.now_ms,
    };
    // The merchant record first: an index entry must never point at nothing.
    let merchant = if insert(ctx.repo, &keys::merchant(&id), &merchant).await? {
        merchant
    } else {
        // Stored by the attempt this one resumes (its seed, so its very key).
        match read::<Merchant, R>(ctx.repo, &keys::merchant(&id)).await? {
            Some((earlier, _)) if seed.is_some() && earlier.api_key_hash == api_key_hash => earlier,
            Some(_) | None => return Err(internal("merchant id collision")),
        }
    };
    index_api_key(ctx, &api_key_hash, &id).await?;
    Ok(MerchantCreatedResponse {
        id,
        object: "merchant".into(),
        name: merchant.name,
        secret_key,
        webhook_secret,
        notify_url: merchant.notify_url,
        default_capture: merchant.default_capture,
        created_at_ms: merchant.created_at_ms,
    })
}

/// Resolves `Authorization: Bearer sk_…` to its merchant.
pub async fn authenticate<R: Repository>(
    ctx: &Ctx<'_, R>,
    authorization: Option<&str>,
) -> Result<Merchant, ApiError> {
    let key = bearer(authorization)?;
    if !is_valid_id(IdKind::SecretKey, key) {
        return Err(ApiError::ApiKeyInvalid);
    }
    let hash = sha256_hex(key.as_bytes());
    let (merchant_id, _) = read::<String, R>(ctx.repo, &keys::api_key(&hash))
        .await?
        .ok_or(ApiError::ApiKeyInvalid)?;
    let (merchant, _) = read::<Merchant, R>(ctx.repo, &keys::merchant(&merchant_id))
        .await?
        .ok_or(ApiError::ApiKeyInvalid)?;
    let current = constant_time_eq(merchant.api_key_hash.as_bytes(), hash.as_bytes());
    let previous = merchant.previous_api_key.as_ref().is_some_and(|p| {
        ctx.now_ms < p.expires_at_ms && constant_time_eq(p.hash.as_bytes(), hash.as_bytes())
    });
    if !(current || previous) {
        return Err(ApiError::ApiKeyInvalid);
    }
    Ok(merchant)
}

/// Whether `authorization` carries `merchant`'s current secret key (not the rotated-out
/// one still in its grace period). Only the current key may change the account (its
/// settings, secret key or webhook secret): a key rotated out because it leaked must not
/// be able to rotate again and keep the account. The one exception is the rotation that
/// retired it, retried under its Idempotency-Key to get the new key
/// ([`rotation_landed`]).
pub fn by_current_key(merchant: &Merchant, authorization: Option<&str>) -> bool {
    bearer(authorization).is_ok_and(|key| {
        let hash = sha256_hex(key.as_bytes());
        constant_time_eq(merchant.api_key_hash.as_bytes(), hash.as_bytes())
    })
}

/// Whether `merchant`'s current secret key is the one the rotation under operation seed
/// `seed` makes: that rotation landed, and a retry of it may be answered (with the key
/// it already made) whichever key the retry comes with.
pub fn rotation_landed<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant: &Merchant,
    seed: [u8; 16],
) -> bool {
    let made = make_id(
        IdKind::SecretKey,
        &derived_key_bytes(ctx, &merchant.id, seed),
    );
    let hash = sha256_hex(made.as_bytes());
    constant_time_eq(merchant.api_key_hash.as_bytes(), hash.as_bytes())
}

/// Checks, inside an account write's compare-and-swap, that the key its caller
/// authenticated with (`caller_key_hash`, the key's hash) is still `merchant`'s current
/// one, so a write authenticated just before the key was rotated or reset (the
/// operator's reset of a leaked key, [`reset_merchant_credentials`]) cannot land after
/// it: 401 `api_key_retiring` or `api_key_invalid`, as the key now is. `None`: no caller
/// key to check.
pub(crate) fn caller_still_current(
    merchant: &Merchant,
    caller_key_hash: Option<&str>,
) -> Result<(), ApiError> {
    match caller_key_hash {
        Some(hash) if !constant_time_eq(merchant.api_key_hash.as_bytes(), hash.as_bytes()) => {
            let retiring = merchant
                .previous_api_key
                .as_ref()
                .is_some_and(|p| constant_time_eq(p.hash.as_bytes(), hash.as_bytes()));
            Err(if retiring {
                ApiError::ApiKeyRetiring
            } else {
                ApiError::ApiKeyInvalid
            })
        }
        _ => Ok(()),
    }
}

/// Shortest time, and the default, for which a rotated-out secret key keeps working:
/// long enough for a rotation whose answer was lost (or whose request crashed) to be
/// retried with the old key under its Idempotency-Key, answering the same new key.
pub const SECRET_KEY_GRACE_S_MIN: i64 = 300;
/// Longest time a rotated-out secret key keeps working.
pub const SECRET_KEY_GRACE_S_MAX: i64 = 7 * 86_400;

/// The answer to a secret key rotation: the new key, shown once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecretKeyRotated {
    /// `"secret_key"`.
    pub object: String,
    /// The new secret key (`sk_…`).
    pub secret_key: String,
    /// Until when the old key also works.
    pub previous_key_expires_at_ms: i64,
}

/// `POST /v1/account/secret-key/rotate`: a new secret key for `merchant_id`; the old one
/// keeps working for `grace_s` seconds ([`SECRET_KEY_GRACE_S_MIN`] to
/// [`SECRET_KEY_GRACE_S_MAX`], the minimum by default), then is refused. Only one old key
/// is kept: a key two rotations old stops working at once. Under an Idempotency-Key
/// (`seed`) the new key derives from the key's operation seed under the encryption key,
/// so a retry of the same rotation answers the same new key, and nobody without the
/// encryption key can guess it.
pub async fn rotate_secret_key<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    merchant_id: &str,
    caller_key_hash: Option<&str>,
    grace_s: Option<i64>,
    seed: Option<[u8; 16]>,
) -> Result<SecretKeyRotated, ApiError> {
    let grace_s = grace_s.unwrap_or(SECRET_KEY_GRACE_S_MIN);
    if !(SECRET_KEY_GRACE_S_MIN..=SECRET_KEY_GRACE_S_MAX).contains(&grace_s) {
        return Err(ApiError::ParameterInvalid {
            param: "grace_period_s".into(),
            reason: format!("must be {SECRET_KEY_GRACE_S_MIN}..={SECRET_KEY_GRACE_S_MAX}"),
        });
    }
    let entropy = match seed {
        Some(seed) => derived_key_bytes(ctx, merchant_id, seed),
        None => rng.bytes::<32>(),
    };
    let secret_key = make_id(IdKind::SecretKey, &entropy);
    let new_hash = sha256_hex(secret_key.as_bytes());
    // The index entry first: the merchant record must never name a key nothing finds.
    index_api_key(ctx, &new_hash, merchant_id).await?;
    let expires_at_ms = ctx.now_ms.saturating_add(grace_s.saturating_mul(1000));
    let rotate = |cur: &Merchant| -> Result<Option<Merchant>, ApiError> {
        let superseded = cur
            .previous_api_key
            .as_ref()
            .is_some_and(|p| p.hash == new_hash);
        if cur.api_key_hash == new_hash || superseded {
            // An earlier attempt of this rotation got this far (and, superseded, another
            // rotation has replaced its key since): never rotate back to it, which would
            // drop the newer key's index and lock the merchant out.
            return Ok(None);
        }
        caller_still_current(cur, caller_key_hash)?;
        Ok(Some(Merchant {
            previous_api_key: Some(PreviousApiKey {
                hash: cur.api_key_hash.clone(),
                expires_at_ms,
            }),
            api_key_hash: new_hash.clone(),
            ..cur.clone()
        }))
    };
    let u = super::update(ctx.repo, &keys::merchant(merchant_id), rotate, |_| {}).await?;
    let in_use = |hash: &str| {
        u.after.api_key_hash == hash
            || u.after
                .previous_api_key
                .as_ref()
                .is_some_and(|p| p.hash == hash)
    };
    if u.changed
        && let Some(dropped) = &u.before.previous_api_key
        && !in_use(&dropped.hash)
    {
        // Best effort: authentication refuses it anyway, the record no longer naming it.
        let _ = ctx.repo.delete(&keys::api_key(&dropped.hash)).await;
    }
    Ok(SecretKeyRotated {
        object: "secret_key".into(),
        secret_key,
        previous_key_expires_at_ms: u
            .after
            .previous_api_key
            .map_or(expires_at_ms, |p| p.expires_at_ms),
    })
}

/// `apikey/{key_hash}` → `merchant_id`, unless it is there already (written by the
/// attempt this one resumes); naming another merchant is a collision (internal).
async fn index_api_key<R: Repository>(
    ctx: &Ctx<'_, R>,
    key_hash: &str,
    merchant_id: &str,
) -> Result<(), ApiError> {
    let key = keys::api_key(key_hash);
    if !insert(ctx.repo, &key, &merchant_id.to_string()).await? {
        let owner = read::<String, R>(ctx.repo, &key).await?;
        if owner.is_none_or(|(owner, _)| owner != merchant_id) {
            return Err(internal("api key collision"));
        }
    }
    Ok(())
}

/// 32 bytes for `what`: under an Idempotency-Key (`seed`) derived from its operation seed
/// ([`derived_bytes`]), so every attempt of the operation makes the same; without one,
/// random.
pub(crate) fn seeded_or_random<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    seed: Option<[u8; 16]>,
    what: &str,
) -> [u8; 32] {
    match seed {
        Some(seed) => derived_bytes(ctx, what, seed),
        None => rng.bytes::<32>(),
    }
}

/// 32 bytes for a rotation's new key: a keyed hash (the encryption key) of the merchant
/// and the Idempotency-Key's operation seed.
fn derived_key_bytes<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    seed: [u8; 16],
) -> [u8; 32] {
    derived_bytes(ctx, &format!("secret key rotation\n{merchant_id}"), seed)
}

/// 32 bytes for `what` under an Idempotency-Key: a keyed hash (the encryption key) of
/// `what` and the key's operation seed.
pub(super) fn derived_bytes<R: Repository>(
    ctx: &Ctx<'_, R>,
    what: &str,
    seed: [u8; 16],
) -> [u8; 32] {
    let mut data = format!("spinpay {what}\n").into_bytes();
    data.extend_from_slice(&seed);
    let digest = hex::decode(ctx.keys.keyed_hash_hex(&data)).expect("a hex digest");
    digest.try_into().expect("a 32-byte digest")
}

fn bearer(authorization: Option<&str>) -> Result<&str, ApiError> {
    let value = authorization.ok_or(ApiError::AuthenticationRequired)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(ApiError::AuthenticationRequired)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::AuthenticationRequired);
    }
    Ok(token.trim())
}

/// Fewest characters of a configured admin token: anything shorter could be guessed
/// (the dev script makes 38, `admin_` and 32 hex digits).
pub const ADMIN_TOKEN_CHARS_MIN: usize = 20;

/// `not_configured`'s `what` with no admin token set (or an empty one).
const ADMIN_TOKEN_MISSING: &str = "admin_token";
/// `not_configured`'s `what` with a token shorter than [`ADMIN_TOKEN_CHARS_MIN`] (a test
/// keeps the number in step).
const ADMIN_TOKEN_TOO_SHORT: &str =
    "a usable admin_token (the one set is shorter than 20 characters)";
/// `not_configured`'s `what` with the deployment template's placeholder left in place.
const ADMIN_TOKEN_PLACEHOLDER: &str =
    "a usable admin_token (the one set is still the template's REPLACE_ME placeholder)";

/// Checks the admin bearer token against the configured one (constant time). No
/// configured token → the endpoint is disabled (fails closed), and so does a weak one:
/// shorter than `ADMIN_TOKEN_CHARS_MIN`, or the deployment template's placeholder
/// (`REPLACE_ME…`, public in this repository) left in place. The 503 says which, so an
/// operator who did set a token is not told it is missing; that tells a caller nothing
/// it could use, since every admin call is refused either way. A missing
/// `Authorization` header is `authentication_required` naming the admin token.
pub fn check_admin_token(
    authorization: Option<&str>,
    configured: Option<&str>,
) -> Result<(), ApiError> {
    let unusable = |what| ApiError::NotConfigured { what };
    let configured = match configured {
        None | Some("") => return Err(unusable(ADMIN_TOKEN_MISSING)),
        Some(t) if t.starts_with(crate::PLACEHOLDER_PREFIX) => {
            return Err(unusable(ADMIN_TOKEN_PLACEHOLDER));
        }
        Some(t) if t.chars().count() < ADMIN_TOKEN_CHARS_MIN => {
            return Err(unusable(ADMIN_TOKEN_TOO_SHORT));
        }
        Some(t) => t,
    };
    let given = bearer(authorization).map_err(|e| match e {
        ApiError::AuthenticationRequired => ApiError::AdminTokenRequired,
        other => other,
    })?;
    // Digests of equal length are compared, so the time taken tells nothing about the
    // configured token's length either (constant_time_eq returns early on a length
    // mismatch).
    let digest = |t: &str| crate::crypto::sha256_hex(t.as_bytes());
    if constant_time_eq(digest(given).as_bytes(), digest(configured).as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::AdminTokenInvalid)
    }
}

/// What [`check_encryption_key`] seals, and its associated data.
const KEY_CHECK_TEXT: &[u8] = b"spinpay encryption key check";

/// Whether `ctx.keys` is the key the store's data is sealed with: the first call on a
/// store seals a known text under it (`sys/keycheck`, with `nonce`), every later one
/// opens that. On a store that already holds data (written before this check existed)
/// the first call first makes sure the key opens the webhook secrets of the first
/// registered merchants. A changed `encryption_key` would otherwise fail in misleading ways, some
/// for good: every right one-time code refused (its hash was made under the old key),
/// every retried Idempotency-Key answered `idempotency_key_reused`, every payment refused
/// by risk as `risk_unavailable`. Now every request answers 503 `not_configured` instead,
/// and nothing is changed, until the key the data was sealed with is configured again.
pub async fn check_encryption_key<R: Repository>(
    ctx: &Ctx<'_, R>,
    nonce: [u8; 12],
) -> Result<(), ApiError> {
    let key = keys::key_check();
    let changed = || ApiError::NotConfigured {
        what: "an encryption_key that opens the stored data (the key was changed)",
    };
    let sealed = match read::<String, R>(ctx.repo, key).await? {
        Some((sealed, _)) => sealed,
        None => {
            // A store written before the check existed: the key must open what is there
            // before the check is sealed under it.
            if !opens_stored_secrets(ctx).await? {
                return Err(changed());
            }
            let sealed = seal(ctx.keys, nonce, KEY_CHECK_TEXT, KEY_CHECK_TEXT);
            if insert(ctx.repo, key, &sealed).await? {
                return Ok(());
            }
            read::<String, R>(ctx.repo, key)
                .await?
                .ok_or_else(|| internal("the key check record vanished"))?
                .0
        }
    };
    match open(ctx.keys, &sealed, KEY_CHECK_TEXT) {
        Ok(text) if text == KEY_CHECK_TEXT => Ok(()),
        _ => Err(changed()),
    }
}

/// Merchants whose sealed webhook secret [`check_encryption_key`] tries on a store that has
/// data but no check record yet.
const KEY_CHECK_MERCHANTS: i64 = 3;

/// Whether `ctx.keys` opens the webhook secrets of the first merchants in the
/// notification registry (any merchant that ever wrote a payment, a refund or a keyed
/// request); true when there are none.
async fn opens_stored_secrets<R: Repository>(ctx: &Ctx<'_, R>) -> Result<bool, ApiError> {
    let registered = ctx.repo.increment(keys::notify_registry_seq(), 0).await?;
    for seq in 1..=registered.min(KEY_CHECK_MERCHANTS) {
        let Some((merchant_id, _)) =
            read::<String, R>(ctx.repo, &keys::notify_registry(seq)).await?
        else {
            continue;
        };
        let Some((merchant, _)) =
            read::<Merchant, R>(ctx.repo, &keys::merchant(&merchant_id)).await?
        else {
            continue;
        };
        if webhook_secret(ctx, &merchant).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The merchant's webhook signing secret, unsealed.
pub fn webhook_secret<R>(
    ctx: &Ctx<'_, R>,
    merchant: &Merchant,
) -> Result<Secret<String>, ApiError> {
    open_webhook_secret(ctx, &merchant.id, &merchant.webhook_secret_sealed).map(Secret::new)
}

/// A webhook secret of `merchant_id` sealed as `sealed` (the current one, or one rotated
/// out), unsealed.
pub(super) fn open_webhook_secret<R>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    sealed: &str,
) -> Result<String, ApiError> {
    let bytes = open(ctx.keys, sealed, merchant_id.as_bytes()).map_err(internal)?;
    String::from_utf8(bytes).map_err(internal)
}

/// Changes a merchant's settings (name, notify URL, default capture mode), if the
/// caller's key is still the current one ([`caller_still_current`]).
pub async fn update_merchant<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    caller_key_hash: Option<&str>,
    update: MerchantUpdate,
) -> Result<MerchantResponse, ApiError> {
    let apply = |cur: &Merchant| -> Result<Option<Merchant>, ApiError> {
        caller_still_current(cur, caller_key_hash)?;
        let mut next = cur.clone();
        if let Some(name) = &update.name {
            next.name = name.clone();
        }
        if let Some(url) = &update.notify_url {
            next.notify_url = url.clone();
        }
        if let Some(capture) = update.default_capture {
            next.default_capture = capture;
        }
        Ok((next != *cur).then_some(next))
    };
    let u = super::update(ctx.repo, &keys::merchant(merchant_id), apply, |_| {}).await?;
    Ok(MerchantResponse::new(&u.after))
}

/// `GET /v1/admin/merchants/{id}` (after [`check_admin_token`]): the merchant as
/// `GET /v1/account` shows it, never its keys.
pub async fn get_merchant<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
) -> Result<MerchantResponse, ApiError> {
    Ok(MerchantResponse::new(
        &load_merchant(ctx, merchant_id).await?,
    ))
}

/// `POST /v1/admin/merchants/{id}/credentials/reset` (after [`check_admin_token`]): the
/// operator's way back for a merchant whose current secret key leaked and was rotated by
/// someone else first (who then holds the only key that may change the account, while
/// the merchant's own is retiring). A new secret key and a new webhook signing secret
/// replace every earlier one with no grace period: the current key and a rotated-out one
/// stop working at once, rotated-out webhook secrets stop signing, and `notify_url` is set
/// or cleared when `reset` says so, in the one compare-and-swap of the merchant record
/// that installs the new credentials. Under an Idempotency-Key (`seed`) both secrets
/// derive from the key's operation seed under the encryption key (as
/// [`create_merchant_seeded`]'s do), so a retry after a lost answer or a crash resumes the
/// reset and answers the same secrets.
///
/// The writes, in order, and what a crash after each leaves:
/// 1. the new key's `apikey/` entry (the record must never name a key nothing finds):
///    nothing works differently yet;
/// 2. `revoke_credentials` of the record about to be replaced: each old key is refused
///    from the moment its entry is gone, since authentication needs both the entry and
///    the record naming the key; a crash here leaves the merchant without a working key
///    until the retry, which finds the same old keys in the unchanged record and
///    finishes;
/// 3. the merchant record with the new key and secret (a write that won the race sends
///    the loop back to 2 with the record it wrote). A retry finds the new key named in
///    the record (`reset_landed`) and only answers: every old entry was gone before
///    this write.
pub async fn reset_merchant_credentials<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    merchant_id: &str,
    reset: CredentialsReset,
    seed: Option<[u8; 16]>,
) -> Result<MerchantCredentialsResponse, ApiError> {
    load_merchant(ctx, merchant_id).await?;
    let mut entropy = |what: &str| {
        let what = format!("credentials reset {what}\n{merchant_id}");
        seeded_or_random(ctx, rng, seed, &what)
    };
    let secret_key = make_id(IdKind::SecretKey, &entropy("secret key"));
    let webhook_secret = make_id(IdKind::WebhookSecret, &entropy("webhook secret"));
    let new_hash = sha256_hex(secret_key.as_bytes());
    let answer = |m: &Merchant| MerchantCredentialsResponse {
        object: "merchant_credentials".into(),
        merchant_id: m.id.clone(),
        secret_key: secret_key.clone(),
        webhook_secret: webhook_secret.clone(),
        notify_url: m.notify_url.clone(),
    };
    index_api_key(ctx, &new_hash, merchant_id).await?;
    let sealed = seal(
        ctx.keys,
        rng.bytes(),
        webhook_secret.as_bytes(),
        merchant_id.as_bytes(),
    );
    let key = keys::merchant(merchant_id);
    for _attempt in 0..CAS_RETRIES_MAX {
        let (cur, version) = read_for_update::<Merchant, R>(ctx.repo, &key)
            .await?
            .ok_or_else(|| internal(format!("merchant {merchant_id} vanished")))?;
        if reset_landed(&cur, &new_hash) {
            return Ok(answer(&cur));
        }
        revoke_credentials(ctx, &cur).await?;
        let next = Merchant {
            api_key_hash: new_hash.clone(),
            previous_api_key: None,
            webhook_secret_sealed: sealed.clone(),
            notify_url: reset
                .notify_url
                .clone()
                .unwrap_or_else(|| cur.notify_url.clone()),
            ..cur
        };
        assert!(reset_landed(&next, &new_hash), "reset of {merchant_id}");
        match ctx
            .repo
            .put_if_version(&key, version, to_bytes(&next))
            .await
        {
            Ok(_) => return Ok(answer(&next)),
            // Re-read: a write that landed unseen is found by `reset_landed`.
            Err(RepoError::Conflict { .. } | RepoError::OutcomeUnknown { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::ConcurrentModification)
}

/// Whether the reset whose new key hashes to `new_hash` already landed on `merchant`: the
/// key is its current one, or its rotated-out one (the merchant rotated since; resetting
/// again would take the newer key away).
fn reset_landed(merchant: &Merchant, new_hash: &str) -> bool {
    merchant.api_key_hash == new_hash
        || merchant
            .previous_api_key
            .as_ref()
            .is_some_and(|p| p.hash == new_hash)
}

/// Deletes what, besides the merchant record, lets `merchant`'s credentials work: the
/// `apikey/` entries of its current key (first: in a takeover it is the taker's) and of
/// its rotated-out one, and its rotated-out webhook secrets. Every deletion must land
/// (an error stops the reset before the record changes, so its retry does them again).
async fn revoke_credentials<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant: &Merchant,
) -> Result<(), ApiError> {
    let previous = merchant.previous_api_key.as_ref().map(|p| &p.hash);
    for hash in std::iter::once(&merchant.api_key_hash).chain(previous) {
        ctx.repo.delete(&keys::api_key(hash)).await?;
    }
    ctx.repo
        .delete(&keys::webhook_secret_previous(&merchant.id))
        .await?;
    Ok(())
}

/// The merchant `merchant_id` names, from a request: a malformed id (checked before it
/// becomes part of a key) or an unknown one is `resource_missing`.
async fn load_merchant<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
) -> Result<Merchant, ApiError> {
    let missing = || ApiError::ResourceMissing {
        resource: "merchant",
        id: merchant_id.chars().take(ID_LEN_MAX).collect(),
    };
    if !is_valid_id(IdKind::Merchant, merchant_id) {
        return Err(missing());
    }
    read::<Merchant, R>(ctx.repo, &keys::merchant(merchant_id))
        .await?
        .map(|(merchant, _)| merchant)
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "admin_9f2c4e7a1b3d5f60a8c2";

    #[test]
    fn an_admin_route_without_credentials_asks_for_the_admin_token() {
        // Proves a missing or non-Bearer Authorization on an admin route answers 401
        // authentication_required naming the admin token, while a merchant route's
        // missing header still names the secret key.
        for authorization in [None, Some("Basic abc"), Some("Bearer ")] {
            let e = check_admin_token(authorization, Some(TOKEN)).unwrap_err();
            assert_eq!((e.code(), e.status()), ("authentication_required", 401));
            assert_eq!(
                e.message(),
                "an Authorization: Bearer <admin token> header is required"
            );
        }
        let merchant = bearer(None).unwrap_err();
        assert_eq!(merchant.code(), "authentication_required");
        assert_eq!(
            merchant.message(),
            "an Authorization: Bearer <secret key> header is required"
        );
        assert!(check_admin_token(Some(&format!("Bearer {TOKEN}")), Some(TOKEN)).is_ok());
        assert_eq!(
            check_admin_token(Some("Bearer sk_x"), Some(TOKEN)),
            Err(ApiError::AdminTokenInvalid)
        );
    }

    #[test]
    fn an_unusable_admin_token_says_what_is_wrong_with_it() {
        // Proves a missing, too short or placeholder admin_token each answer 503
        // not_configured (whatever the caller sends) with a message naming the fault,
        // and that the message's minimum is ADMIN_TOKEN_CHARS_MIN.
        let short = "a".repeat(ADMIN_TOKEN_CHARS_MIN - 1);
        let cases = [
            (None, "admin_token is not configured"),
            (Some(""), "admin_token is not configured"),
            (Some(short.as_str()), "shorter than 20 characters"),
            (
                Some("REPLACE_ME_admin_token_long_enough"),
                "REPLACE_ME placeholder",
            ),
            (Some("REPLACE_ME"), "REPLACE_ME placeholder"),
        ];
        for (configured, says) in cases {
            for sent in [None, Some("Bearer x")] {
                let e = check_admin_token(sent, configured).unwrap_err();
                assert_eq!((e.code(), e.status()), ("not_configured", 503));
                assert!(
                    e.message().contains(says),
                    "{configured:?}: {}",
                    e.message()
                );
            }
        }
        let min = format!("shorter than {ADMIN_TOKEN_CHARS_MIN} characters");
        assert!(ADMIN_TOKEN_TOO_SHORT.contains(&min));
        let just_long_enough = "a".repeat(ADMIN_TOKEN_CHARS_MIN);
        let sent = format!("Bearer {just_long_enough}");
        assert!(check_admin_token(Some(&sent), Some(&just_long_enough)).is_ok());
    }
}
