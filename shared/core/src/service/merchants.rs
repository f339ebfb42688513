//! Merchants: creation (secret key returned once, stored as a sha256 hash, indexed by
//! that hash), bearer authentication, the admin token check. (Risk configuration lives in
//! [`crate::riskengine::store`].)

use super::{Ctx, insert, internal, read};
use crate::api::{MerchantCreatedResponse, MerchantResponse, MerchantUpdate, NewMerchant};
use crate::crypto::{Secret, constant_time_eq, open, seal, sha256_hex};
use crate::error::ApiError;
use crate::ids::{IdKind, is_valid_id, make_id};
use crate::keys;
use crate::model::Merchant;
use crate::repo::Repository;
use crate::rng::Entropy;

/// `POST /v1/admin/merchants` (after [`check_admin_token`]).
pub async fn create_merchant<R: Repository, E: Entropy>(
    ctx: &Ctx<'_, R>,
    rng: &mut E,
    req: NewMerchant,
) -> Result<MerchantCreatedResponse, ApiError> {
    let id = make_id(IdKind::Merchant, &rng.bytes::<16>());
    let secret_key = make_id(IdKind::SecretKey, &rng.bytes::<32>());
    let webhook_secret = make_id(IdKind::WebhookSecret, &rng.bytes::<32>());
    let api_key_hash = sha256_hex(secret_key.as_bytes());
    let merchant = Merchant {
        id: id.clone(),
        name: req.name,
        notify_url: req.notify_url,
        default_capture: req.default_capture,
        api_key_hash: api_key_hash.clone(),
        webhook_secret_sealed: seal(
            ctx.keys,
            rng.bytes(),
            webhook_secret.as_bytes(),
            id.as_bytes(),
        ),
        created_at_ms: ctx.now_ms,
    };
    // The merchant record first: an index entry must never point at nothing.
    if !insert(ctx.repo, &keys::merchant(&id), &merchant).await? {
        return Err(internal("merchant id collision"));
    }
    if !insert(ctx.repo, &keys::api_key(&api_key_hash), &id).await? {
        return Err(internal("api key collision"));
    }
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
    if !constant_time_eq(merchant.api_key_hash.as_bytes(), hash.as_bytes()) {
        return Err(ApiError::ApiKeyInvalid);
    }
    Ok(merchant)
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

/// Checks the admin bearer token against the configured one (constant time). No
/// configured token → the endpoint is disabled (fails closed).
pub fn check_admin_token(
    authorization: Option<&str>,
    configured: Option<&str>,
) -> Result<(), ApiError> {
    let configured = configured
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::NotConfigured {
            what: "admin_token",
        })?;
    let given = bearer(authorization)?;
    if constant_time_eq(given.as_bytes(), configured.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::AdminTokenInvalid)
    }
}

/// The merchant's webhook signing secret, unsealed.
pub fn webhook_secret<R>(
    ctx: &Ctx<'_, R>,
    merchant: &Merchant,
) -> Result<Secret<String>, ApiError> {
    let bytes = open(
        ctx.keys,
        &merchant.webhook_secret_sealed,
        merchant.id.as_bytes(),
    )
    .map_err(internal)?;
    Ok(Secret::new(String::from_utf8(bytes).map_err(internal)?))
}

/// Changes a merchant's settings (name, notify URL, default capture mode).
pub async fn update_merchant<R: Repository>(
    ctx: &Ctx<'_, R>,
    merchant_id: &str,
    update: MerchantUpdate,
) -> Result<MerchantResponse, ApiError> {
    let apply = |cur: &Merchant| -> Result<Option<Merchant>, ApiError> {
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
