//! Agents' SIP credentials: the extension a desk phone registers as and its digest secret,
//! set by an admin (`PUT /api/v1/routing/agents/{agent}/sip`), stored as digest hashes only,
//! audited without the secret, and published live to the SIP gateway with the routing model.
//!
//! # Why HA1 and not argon2
//!
//! Web logins are verified by hashing the password the client *sends*, so they are stored
//! with a slow salted hash (argon2, [`crate::auth`]). SIP digest (RFC 3261 §22, RFC 7616)
//! never sends the password: the phone proves it knows `HA1 = H(user:realm:password)` by
//! hashing it with a nonce, and the registrar must compute the same value. So the registrar
//! needs HA1 itself, and a slow hash of the password would be useless to it. Storing HA1 (for
//! MD5 and for SHA-256, since phones pick either) is the standard trade-off every SIP server
//! makes (Kamailio's `ha1`/`ha1b` columns, Asterisk's `md5_cred`): the password itself is never
//! stored or logged and cannot be recovered from HA1 except by guessing, which the length rule
//! below makes expensive; but HA1 *is* a password-equivalent for digest in its realm, so it is
//! treated as a secret (never in an API response, the audit log or `Debug`). HA1 is bound to
//! its realm: it authenticates only in that realm, which is why each row stores the realm it
//! was computed for, and why changing a tenant's realm means setting the passwords again.
//!
//! # Realm and uniqueness
//!
//! Each tenant is its own digest realm, `<slug>.zentrale` ([`realm_for`]): a phone sees in the
//! challenge which tenant it is registering with, and one tenant's hashes are useless in
//! another's realm. The gateway finds the tenant of a REGISTER by the extension alone (the To
//! user part), so an extension is unique across all tenants of a node (a database constraint,
//! answered as a `409` naming `extension`).
//!
//! # Consistency
//!
//! A change runs in one transaction that first bumps `tenants.routing_version` (the same lock
//! routing changes take), checks that the agent exists in the tenant's routing model, writes
//! the row and the audit entry. After commit the complete routing update, now carrying the
//! tenant's credentials, is published like any routing change, so the gateway's registrar
//! uses the new secret for the next REGISTER.

use crate::auth::{Perm, Principal};
use crate::error::{ApiError, ApiJson, StoreError};
use crate::ids::{TenantId, uuid_v7_at};
use crate::routing::load_model;
use crate::state::{AUDIT_INSERT, AppState};
use crate::store::{Store, with_pool};
use acd_core::ids::AgentId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use utoipa::ToSchema;

/// Shortest SIP password accepted. Digest hashes can be attacked offline by anyone who sees
/// one challenge/response pair, so the length is what protects the password.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest SIP password accepted (desk phones' input fields are short anyway).
pub const MAX_PASSWORD_LEN: usize = 128;

/// The digest realm of a tenant.
pub fn realm_for(slug: &str) -> String {
    format!("{slug}.zentrale")
}

/// The digest realm used for phones whose extension belongs to no tenant.
pub const DEFAULT_REALM: &str = "zentrale";

/// HA1 of both algorithms, lower-case hex.
#[derive(Clone, PartialEq, Eq)]
pub struct Ha1 {
    /// `MD5(user:realm:password)`.
    pub md5: String,
    /// `SHA-256(user:realm:password)`.
    pub sha256: String,
}

impl std::fmt::Debug for Ha1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ha1(..)")
    }
}

impl Ha1 {
    /// HA1 of `user` in `realm` with `password` (RFC 2617 §3.2.2.2, RFC 7616 §3.4.2).
    pub fn derive(user: &str, realm: &str, password: &str) -> Ha1 {
        let input = format!("{user}:{realm}:{password}");
        Ha1 {
            md5: hex::encode(md5::Md5::digest(input.as_bytes())),
            sha256: hex::encode(Sha256::digest(input.as_bytes())),
        }
    }
}

/// One agent's stored SIP credentials (what the gateway needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipCredential {
    /// Tenant.
    pub tenant: TenantId,
    /// The routing agent.
    pub agent: String,
    /// The phone's user name.
    pub extension: String,
    /// The realm HA1 was computed for.
    pub realm: String,
    /// The hashes.
    pub ha1: Ha1,
}

/// `PUT /api/v1/routing/agents/{agent}/sip`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSipCredentials {
    /// The SIP password (8..128 printable characters); stored only as digest hashes.
    #[serde(default)]
    pub password: String,
    /// The extension the phone registers as (2-8 digits); when absent, the agent keeps its
    /// current extension, and a new agent gets its id when that is 2-8 digits.
    #[serde(default)]
    pub extension: Option<String>,
}

impl std::fmt::Debug for SetSipCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSipCredentials")
            .field("extension", &self.extension)
            .finish_non_exhaustive()
    }
}

/// What the API shows about an agent's SIP credentials (never the secret or its hashes).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SipCredentialsInfo {
    /// The routing agent.
    pub agent: String,
    /// The phone's user name.
    pub extension: String,
    /// The digest realm phones must use (shown in the phone's challenge, too).
    pub realm: String,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

fn is_extension(s: &str) -> bool {
    (2..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn validate_password(p: &str) -> Result<(), ApiError> {
    if p.is_empty() {
        return Err(ApiError::validation("password", "required"));
    }
    let n = p.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(ApiError::validation(
            "password",
            format!("at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if n > MAX_PASSWORD_LEN {
        return Err(ApiError::validation(
            "password",
            format!("at most {MAX_PASSWORD_LEN} characters"),
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "password",
            "control characters are not allowed",
        ));
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    agent: String,
    extension: String,
    realm: String,
    ha1_md5: String,
    ha1_sha256: String,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn credential(self) -> Result<SipCredential, StoreError> {
        Ok(SipCredential {
            tenant: TenantId::parse(&self.tenant_id).ok_or(StoreError::Corrupt("agent_sip"))?,
            agent: self.agent,
            extension: self.extension,
            realm: self.realm,
            ha1: Ha1 {
                md5: self.ha1_md5,
                sha256: self.ha1_sha256,
            },
        })
    }
}

const SELECT: &str = "SELECT tenant_id, agent, extension, realm, ha1_md5, ha1_sha256, updated_at \
                      FROM agent_sip";

/// Every stored credential of a tenant, ordered by agent.
pub async fn load_credentials(
    store: &Store,
    tenant: TenantId,
) -> Result<Vec<SipCredential>, StoreError> {
    let sql = format!("{SELECT} WHERE tenant_id = $1 ORDER BY agent");
    let rows = with_pool!(store, |p| {
        sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(tenant.as_text())
            .fetch_all(p)
            .await?
    });
    rows.into_iter().map(Row::credential).collect()
}

async fn load_one(store: &Store, tenant: TenantId, agent: &str) -> Result<Option<Row>, StoreError> {
    let sql = format!("{SELECT} WHERE tenant_id = $1 AND agent = $2");
    Ok(with_pool!(store, |p| {
        sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(tenant.as_text())
            .bind(agent)
            .fetch_optional(p)
            .await?
    }))
}

/// The slug of a tenant.
async fn tenant_slug(store: &Store, tenant: TenantId) -> Result<String, ApiError> {
    let row: Option<(String,)> = with_pool!(store, |p| {
        sqlx::query_as("SELECT slug FROM tenants WHERE id = $1")
            .bind(tenant.as_text())
            .fetch_optional(p)
            .await
            .map_err(StoreError::from)?
    });
    row.map(|(s,)| s).ok_or(ApiError::NotFound)
}

/// Sets (creates or replaces) an agent's SIP credentials in one audited transaction. The
/// password is validated, hashed for the tenant's realm and dropped; the extension must be
/// free on this node. Returns what the API shows.
pub async fn set_credentials(
    store: &Store,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    agent: &str,
    input: &SetSipCredentials,
) -> Result<SipCredentialsInfo, ApiError> {
    validate_password(&input.password)?;
    if let Some(e) = &input.extension
        && !is_extension(e)
    {
        return Err(ApiError::validation("extension", "2 to 8 digits"));
    }
    let realm = realm_for(&tenant_slug(store, tenant).await?);
    let model = load_model(store, tenant).await?;
    if !model.agents.contains_key(&AgentId::new(agent)) {
        return Err(ApiError::NotFound);
    }
    let before = load_one(store, tenant, agent).await?;
    let extension = match (&input.extension, &before) {
        (Some(e), _) => e.clone(),
        // A new password alone keeps the extension the agent has.
        (None, Some(b)) => b.extension.clone(),
        (None, None) if is_extension(agent) => agent.to_owned(),
        (None, None) => {
            return Err(ApiError::validation(
                "extension",
                "required: the agent's id is not 2 to 8 digits",
            ));
        }
    };
    let ha1 = Ha1::derive(&extension, &realm, &input.password);
    let action = if before.is_some() { "update" } else { "create" };
    let public =
        |ext: &str, realm: &str| json!({"extension": ext, "realm": realm, "password": "set"});
    let before_json = before.as_ref().map(|b| public(&b.extension, &b.realm));
    let after_json = public(&extension, &realm);
    with_pool!(store, |p| {
        let mut tx = p.begin().await.map_err(StoreError::from)?;
        // The routing lock: serialises with routing changes, which validate agents.
        let locked: Option<(i64,)> = sqlx::query_as(
            "UPDATE tenants SET routing_version = routing_version + 1 WHERE id = $1 RETURNING routing_version",
        )
        .bind(tenant.as_text())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if locked.is_none() {
            return Err(ApiError::NotFound);
        }
        let still_there: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM routing_objects WHERE tenant_id = $1 AND kind = 'agents' AND name = $2",
        )
        .bind(tenant.as_text())
        .bind(agent)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if still_there.is_none() {
            return Err(ApiError::NotFound);
        }
        let taken: Option<(String, String)> =
            sqlx::query_as("SELECT tenant_id, agent FROM agent_sip WHERE extension = $1")
                .bind(&extension)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        if let Some((t, a)) = taken
            && (t != tenant.as_text() || a != agent)
        {
            return Err(ApiError::Conflict {
                field: "extension".to_owned(),
                message: format!("extension {extension} is already in use on this node"),
            });
        }
        let written = sqlx::query(
            "INSERT INTO agent_sip (tenant_id, agent, extension, realm, ha1_md5, ha1_sha256, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, agent) DO UPDATE SET \
             extension = excluded.extension, realm = excluded.realm, ha1_md5 = excluded.ha1_md5, \
             ha1_sha256 = excluded.ha1_sha256, updated_at = excluded.updated_at",
        )
        .bind(tenant.as_text())
        .bind(agent)
        .bind(&extension)
        .bind(&realm)
        .bind(&ha1.md5)
        .bind(&ha1.sha256)
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(e) = written {
            // A concurrent change took the extension between our check and the write.
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation())
            {
                return Err(ApiError::Conflict {
                    field: "extension".to_owned(),
                    message: format!("extension {extension} is already in use on this node"),
                });
            }
            return Err(StoreError::from(e).into());
        }
        sqlx::query(AUDIT_INSERT)
            .bind(uuid_v7_at(now).as_hyphenated().to_string())
            .bind(tenant.as_text())
            .bind(actor)
            .bind(now)
            .bind("agent_sip")
            .bind(agent)
            .bind(action)
            .bind(before_json.map(Json))
            .bind(Some(Json(after_json)))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
    });
    Ok(SipCredentialsInfo {
        agent: agent.to_owned(),
        extension,
        realm,
        updated_at: now,
    })
}

/// Removes an agent's SIP credentials (its phones can no longer register); audited.
pub async fn delete_credentials(
    store: &Store,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    agent: &str,
) -> Result<(), ApiError> {
    let Some(before) = load_one(store, tenant, agent).await? else {
        return Err(ApiError::NotFound);
    };
    with_pool!(store, |p| {
        let mut tx = p.begin().await.map_err(StoreError::from)?;
        sqlx::query("DELETE FROM agent_sip WHERE tenant_id = $1 AND agent = $2")
            .bind(tenant.as_text())
            .bind(agent)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        sqlx::query(AUDIT_INSERT)
            .bind(uuid_v7_at(now).as_hyphenated().to_string())
            .bind(tenant.as_text())
            .bind(actor)
            .bind(now)
            .bind("agent_sip")
            .bind(agent)
            .bind("delete")
            .bind(Some(Json(
                json!({"extension": before.extension, "realm": before.realm}),
            )))
            .bind(None::<Json<serde_json::Value>>)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
    });
    Ok(())
}

/// The SIP password file of `zentrale provision --sip-passwords` (TOML, kept out of version
/// control, unlike the routing file):
///
/// ```toml
/// [agents.1001]
/// password = "a long secret"
/// extension = "1001"      # optional, as in the API
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordFile {
    /// Agent id → its SIP password (and extension).
    #[serde(default)]
    pub agents: std::collections::BTreeMap<String, SetSipCredentials>,
}

/// Applies a password file: each agent's credentials are set as by the API (validated,
/// hashed for the tenant's realm, audited as `actor`). Stops at the first bad entry with an
/// error naming `agents.<id>.<field>`; entries before it stay applied. Returns how many were
/// set.
pub async fn apply_password_file(
    store: &Store,
    tenant: TenantId,
    actor: &str,
    text: &str,
) -> Result<usize, ApiError> {
    let file: PasswordFile = toml::from_str(text).map_err(|e| {
        ApiError::validation("", format!("not a SIP password file: {}", e.message()))
    })?;
    for (agent, input) in &file.agents {
        set_credentials(store, tenant, actor, Utc::now(), agent, input)
            .await
            .map_err(|e| match e {
                ApiError::Validation { field, message } | ApiError::Conflict { field, message } => {
                    ApiError::validation(format!("agents.{agent}.{field}"), message)
                }
                ApiError::NotFound => ApiError::validation(
                    format!("agents.{agent}"),
                    "no such agent in the tenant's routing model",
                ),
                other => other,
            })?;
    }
    Ok(file.agents.len())
}

/// Service providers never see or set agents' phone credentials.
fn require_tenant_admin(who: &Principal, perm: Perm) -> Result<(), ApiError> {
    who.require(perm)?;
    if who.release.is_some() {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

/// An agent's SIP identity (extension and realm; the secret is never shown).
#[utoipa::path(get, path = "/api/v1/routing/agents/{agent}/sip", tag = "routing",
    params(("agent" = String, Path, description = "routing agent id")),
    responses((status = 200, body = SipCredentialsInfo), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_sip(
    State(state): State<AppState>,
    who: Principal,
    Path(agent): Path<String>,
) -> Result<axum::Json<SipCredentialsInfo>, ApiError> {
    require_tenant_admin(&who, Perm::RoutingRead)?;
    let row = load_one(state.store(), who.tenant, &agent)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(SipCredentialsInfo {
        agent: row.agent,
        extension: row.extension,
        realm: row.realm,
        updated_at: row.updated_at,
    }))
}

/// Sets an agent's SIP password (and extension): stored as digest HA1 for the tenant's realm,
/// audited without the secret, and live at the gateway for the next REGISTER.
#[utoipa::path(put, path = "/api/v1/routing/agents/{agent}/sip", tag = "routing",
    params(("agent" = String, Path, description = "routing agent id")),
    request_body = SetSipCredentials,
    responses((status = 200, body = SipCredentialsInfo), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_sip(
    State(state): State<AppState>,
    who: Principal,
    Path(agent): Path<String>,
    ApiJson(body): ApiJson<SetSipCredentials>,
) -> Result<axum::Json<SipCredentialsInfo>, ApiError> {
    require_tenant_admin(&who, Perm::RoutingWrite)?;
    let info = set_credentials(
        state.store(),
        who.tenant,
        &who.actor,
        state.now(),
        &agent,
        &body,
    )
    .await?;
    state.republish_routing(who.tenant).await?;
    Ok(axum::Json(info))
}

/// Removes an agent's SIP credentials; its phones can no longer register.
#[utoipa::path(delete, path = "/api/v1/routing/agents/{agent}/sip", tag = "routing",
    params(("agent" = String, Path, description = "routing agent id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_sip(
    State(state): State<AppState>,
    who: Principal,
    Path(agent): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_tenant_admin(&who, Perm::RoutingWrite)?;
    delete_credentials(state.store(), who.tenant, &who.actor, state.now(), &agent).await?;
    state.republish_routing(who.tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_the_rfc_2617_example() {
        // RFC 2617 §3.5: HA1 of Mufasa / testrealm@host.com / Circle Of Life.
        let h = Ha1::derive("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(h.md5, "939e7578ed9e3c518a452acee763bce9");
        assert_eq!(h.sha256.len(), 64);
        assert_eq!(format!("{h:?}"), "Ha1(..)");
    }

    #[test]
    fn password_and_extension_rules() {
        assert!(validate_password("demo1001").is_ok());
        assert!(validate_password("short").is_err());
        assert!(validate_password("with\nnewline").is_err());
        assert!(validate_password(&"x".repeat(129)).is_err());
        assert!(is_extension("1001") && is_extension("12") && is_extension("12345678"));
        assert!(!is_extension("1") && !is_extension("123456789") && !is_extension("10a1"));
        assert_eq!(realm_for("acme"), "acme.zentrale");
    }
}
