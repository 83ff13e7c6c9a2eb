//! Who may do what: logins, sessions, API keys, roles, service providers.
//!
//! # Design
//!
//! A request is authenticated by exactly one credential: `Authorization: Bearer <token>` (a
//! session token from login, or an API key `zk_…`), else the `zentrale_session` HttpOnly cookie
//! (browser; `SameSite=Strict` keeps other sites from riding on it), else — only for the event
//! WebSocket, which browsers cannot give headers — an `access_token` query parameter. Tokens
//! are 256 random bits; only their SHA-256 is stored, so a database leak yields no usable
//! credential. Passwords are argon2id hashes, verified off the async threads.
//!
//! Rights are a fixed set of [`Perm`]s. A user's role grants a set; a service-provider user is
//! additionally limited to the functions and queues the tenant released to the provider; an API
//! key has exactly its scopes (one scope per perm). Every handler asks [`Principal::require`]
//! before touching data, and every query is filtered by the principal's tenant — an id from
//! another tenant is "not found", never "forbidden", so ids do not leak across tenants.
//!
//! Users and service providers are never deleted (the timeline and the audit log refer to
//! them): they are deactivated, which ends their logins and sessions at once. A tenant always
//! keeps at least one active admin.

use crate::error::{ApiError, ApiJson, StoreError};
use crate::ids::{ApiKeyId, ProviderId, TenantId, UserId};
use crate::state::AppState;
use crate::store::{HashCost, Store, with_pool};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use dashmap::DashMap;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use std::net::SocketAddr;
use utoipa::ToSchema;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "zentrale_session";
/// How long a login session lives.
pub const SESSION_TTL: Duration = Duration::hours(12);
/// Failed logins allowed per user and address within [`LOGIN_WINDOW`].
pub const LOGIN_MAX_FAILURES: u32 = 5;
/// The window of the login rate limit.
pub const LOGIN_WINDOW: Duration = Duration::minutes(5);

/// A user's role in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the tenant.
    Admin,
    /// Agent rights plus reading routing, reports and the audit log.
    Supervisor,
    /// Customers, tickets, own events.
    Agent,
}

impl Role {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "supervisor" => Some(Role::Supervisor),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
    /// The perms this role grants.
    pub fn grants(self, perm: Perm) -> bool {
        use Perm::*;
        match self {
            Role::Admin => true,
            Role::Supervisor => !matches!(perm, RoutingWrite | UsersAdmin),
            Role::Agent => matches!(
                perm,
                CustomersRead | CustomersWrite | TicketsRead | TicketsWrite | Events
            ),
        }
    }
}

/// One right. As an API-key scope it is written like `customers:read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Perm {
    /// Read customers, identities, timelines, custom field definitions.
    #[serde(rename = "customers:read")]
    CustomersRead,
    /// Create/change customers and timeline items.
    #[serde(rename = "customers:write")]
    CustomersWrite,
    /// Read tickets.
    #[serde(rename = "tickets:read")]
    TicketsRead,
    /// Create/change tickets.
    #[serde(rename = "tickets:write")]
    TicketsWrite,
    /// Read routing configuration.
    #[serde(rename = "routing:read")]
    RoutingRead,
    /// Change routing configuration.
    #[serde(rename = "routing:write")]
    RoutingWrite,
    /// Read queue log, CDRs.
    #[serde(rename = "reports:read")]
    ReportsRead,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Manage users, API keys, service providers, custom field definitions.
    #[serde(rename = "users:admin")]
    UsersAdmin,
    /// Receive the own event stream (screen pops).
    #[serde(rename = "events")]
    Events,
}

impl Perm {
    /// The release function a service provider needs for this perm (`None`: always allowed
    /// by role, never releasable — administrative rights stay with the tenant).
    fn provider_function(self) -> Option<&'static str> {
        match self {
            Perm::CustomersRead | Perm::CustomersWrite => Some("customers"),
            Perm::TicketsRead | Perm::TicketsWrite => Some("tickets"),
            Perm::RoutingRead => Some("routing"),
            Perm::ReportsRead => Some("reports"),
            Perm::Events => None,
            Perm::RoutingWrite | Perm::AuditRead | Perm::UsersAdmin => Some("\0never"),
        }
    }
}

/// The functions a tenant can release to a service provider.
pub const RELEASABLE_FUNCTIONS: &[&str] = &["customers", "tickets", "routing", "reports"];

/// What a service provider's users may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    /// The provider.
    pub provider: ProviderId,
    /// Queue names released to it.
    pub queues: Vec<String>,
    /// Functions released to it (see [`RELEASABLE_FUNCTIONS`]).
    pub functions: Vec<String>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Tenant every query is scoped to.
    pub tenant: TenantId,
    /// Who, for the audit log (`username` or `apikey:<name>`).
    pub actor: String,
    /// The user (absent for API keys).
    pub user: Option<UserId>,
    /// The user's role (absent for API keys).
    pub role: Option<Role>,
    /// The routing agent this user is (for screen pops).
    pub agent: Option<String>,
    /// Set for service-provider users.
    pub release: Option<Release>,
    /// Set for API keys: exactly these perms.
    pub scopes: Option<Vec<Perm>>,
    session_hash: Option<String>,
    /// When the session ends (none for API keys).
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// Whether this principal has `perm`.
    pub fn allows(&self, perm: Perm) -> bool {
        if let Some(scopes) = &self.scopes {
            return scopes.contains(&perm);
        }
        let Some(role) = self.role else { return false };
        if !role.grants(perm) {
            return false;
        }
        match (&self.release, perm.provider_function()) {
            (Some(rel), Some(f)) => rel.functions.iter().any(|x| x == f),
            _ => true,
        }
    }
    /// `Forbidden` unless [`Principal::allows`].
    pub fn require(&self, perm: Perm) -> Result<(), ApiError> {
        if self.allows(perm) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
    /// Whether data of `queue` is visible (service providers see released queues only).
    pub fn sees_queue(&self, queue: &str) -> bool {
        match &self.release {
            None => true,
            Some(r) => r.queues.iter().any(|q| q == queue),
        }
    }
}

/// SHA-256 of a token, hex: the only form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_token(prefix: &str) -> String {
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    format!("{prefix}{}", hex::encode(buf))
}

/// Hashes a password with argon2id (on a blocking thread).
pub async fn hash_password(password: &str, cost: HashCost) -> Result<String, StoreError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = match cost {
            HashCost::Standard => argon2::Params::default(),
            HashCost::Fast => {
                argon2::Params::new(8, 1, 1, None).map_err(|e| StoreError::Hash(e.to_string()))?
            }
        };
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut salt_bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut salt_bytes);
        let salt =
            SaltString::encode_b64(&salt_bytes).map_err(|e| StoreError::Hash(e.to_string()))?;
        a.hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| StoreError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| StoreError::Hash(e.to_string()))?
}

/// Verifies a password against a stored argon2 hash (parameters come from the hash).
pub async fn verify_password(password: &str, hash: &str) -> bool {
    let password = password.to_owned();
    let hash = hash.to_owned();
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        match PasswordHash::new(&hash) {
            Ok(parsed) => argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    })
    .await
    .unwrap_or(false)
}

/// Per (user, address) counter of failed logins in a fixed window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: DashMap<(String, String), (DateTime<Utc>, u32)>,
}

impl LoginLimiter {
    /// `Err(seconds to wait)` when the key is blocked at `now`.
    pub fn check(&self, key: &(String, String), now: DateTime<Utc>) -> Result<(), i64> {
        if let Some(e) = self.failures.get(key) {
            let (start, n) = *e;
            let until = start + LOGIN_WINDOW;
            if n >= LOGIN_MAX_FAILURES && now < until {
                return Err((until - now).num_seconds().max(1));
            }
        }
        Ok(())
    }
    /// Counts a failed attempt.
    pub fn failed(&self, key: (String, String), now: DateTime<Utc>) {
        let mut e = self.failures.entry(key).or_insert((now, 0));
        if now >= e.0 + LOGIN_WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
    /// Forgets the key after a successful login.
    pub fn succeeded(&self, key: &(String, String)) {
        self.failures.remove(key);
    }
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    user_id: String,
    tenant_id: String,
    username: String,
    role: String,
    agent: Option<String>,
    provider_id: Option<String>,
    released_queues: Option<Json<Vec<String>>>,
    released_functions: Option<Json<Vec<String>>>,
    expires_at: DateTime<Utc>,
}

impl PrincipalRow {
    fn into_principal(self, session_hash: Option<String>) -> Result<Principal, StoreError> {
        let bad = StoreError::Corrupt("users");
        let release = match self.provider_id {
            None => None,
            Some(p) => Some(Release {
                provider: ProviderId::parse(&p).ok_or(StoreError::Corrupt("users"))?,
                queues: self.released_queues.map(|j| j.0).unwrap_or_default(),
                functions: self.released_functions.map(|j| j.0).unwrap_or_default(),
            }),
        };
        Ok(Principal {
            tenant: TenantId::parse(&self.tenant_id).ok_or(StoreError::Corrupt("users"))?,
            actor: self.username,
            user: Some(UserId::parse(&self.user_id).ok_or(StoreError::Corrupt("users"))?),
            role: Some(Role::parse(&self.role).ok_or(bad)?),
            agent: self.agent,
            release,
            scopes: None,
            session_hash,
            expires_at: Some(self.expires_at),
        })
    }
}

const PRINCIPAL_SELECT: &str = "SELECT u.id AS user_id, u.tenant_id, u.username, u.role, u.agent, \
    u.provider_id, sp.released_queues, sp.released_functions, s.expires_at \
    FROM sessions s JOIN users u ON u.id = s.user_id \
    LEFT JOIN service_providers sp ON sp.id = u.provider_id WHERE s.token_hash = $1 \
    AND u.active = $2 AND (sp.id IS NULL OR sp.active = $2)";

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    tenant_id: String,
    name: String,
    scopes: Json<Vec<Perm>>,
}

/// Resolves a bearer/cookie token to its principal (`None`: unknown, revoked or expired).
pub async fn principal_for_token(
    store: &Store,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<Principal>, StoreError> {
    let hash = token_hash(token);
    if token.starts_with("zk_") {
        let row = with_pool!(store, |p| {
            sqlx::query_as::<_, ApiKeyRow>(
                "SELECT tenant_id, name, scopes FROM api_keys WHERE key_hash = $1 AND revoked = $2",
            )
            .bind(&hash)
            .bind(false)
            .fetch_optional(p)
            .await?
        });
        return match row {
            None => Ok(None),
            Some(r) => Ok(Some(Principal {
                tenant: TenantId::parse(&r.tenant_id).ok_or(StoreError::Corrupt("api_keys"))?,
                actor: format!("apikey:{}", r.name),
                user: None,
                role: None,
                agent: None,
                release: None,
                scopes: Some(r.scopes.0),
                session_hash: None,
                expires_at: None,
            })),
        };
    }
    let row = with_pool!(store, |p| {
        sqlx::query_as::<_, PrincipalRow>(PRINCIPAL_SELECT)
            .bind(&hash)
            .bind(true)
            .fetch_optional(p)
            .await?
    });
    match row {
        Some(r) if r.expires_at > now => Ok(Some(r.into_principal(Some(hash))?)),
        _ => Ok(None),
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn request_token(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        return v
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .map(|s| s.trim().to_owned());
    }
    if let Some(t) = cookie_token(&parts.headers) {
        return Some(t);
    }
    if parts.uri.path().ends_with("/events") {
        return parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "access_token")
                .map(|(_, v)| v.to_owned())
        });
    }
    None
}

/// How long a resolved credential is trusted from memory before the database is asked again.
/// Logout, API-key revocation and changes of users and service providers through the API drop
/// cache entries at once; this only bounds how long changes made directly in the database take
/// to be seen.
pub const PRINCIPAL_CACHE_TTL: Duration = Duration::seconds(10);

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = request_token(parts).ok_or(ApiError::Unauthenticated)?;
        let hash = token_hash(&token);
        let now = state.now();
        if let Some(p) = state.cached_principal(&hash, now) {
            return Ok(p);
        }
        let p = principal_for_token(state.store(), &token, now)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        state.cache_principal(hash, p.clone(), now + PRINCIPAL_CACHE_TTL);
        Ok(p)
    }
}

/// The client address (from the server's `ConnectInfo`; "unknown" without a socket, as in
/// router tests).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "unknown".to_owned()),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Login / logout / me

/// Login request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Tenant slug; needed only when the username exists in several tenants.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The current TOTP code, for users who enabled the second factor.
    #[serde(default)]
    pub totp: Option<String>,
}

/// The logged-in user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// Tenant.
    pub tenant: TenantId,
    /// Who.
    pub actor: String,
    /// User id (absent for API keys).
    pub user: Option<UserId>,
    /// Role (absent for API keys).
    pub role: Option<Role>,
    /// The routing agent this user is.
    pub agent: Option<String>,
    /// Set for service-provider users.
    pub release: Option<Release>,
}

impl From<&Principal> for Me {
    fn from(p: &Principal) -> Self {
        Me {
            tenant: p.tenant,
            actor: p.actor.clone(),
            user: p.user,
            role: p.role,
            agent: p.agent.clone(),
            release: p.release.clone(),
        }
    }
}

/// Login answer; the token is also set as the HttpOnly session cookie.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for API clients.
    pub token: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
    /// Who logged in.
    pub me: Me,
}

#[derive(sqlx::FromRow)]
struct LoginRow {
    id: String,
    tenant_id: String,
    password_hash: String,
    totp_secret: Option<String>,
}

/// Logs in with username and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if req.username.is_empty() || req.username.len() > 128 {
        return Err(ApiError::validation(
            "username",
            "must be 1..128 characters",
        ));
    }
    if req.password.len() > 1024 {
        return Err(ApiError::validation("password", "too long"));
    }
    let now = state.now();
    let key = (req.username.to_lowercase(), addr.0);
    if let Err(retry_after_s) = state.limiter().check(&key, now) {
        return Err(ApiError::RateLimited { retry_after_s });
    }
    let store = state.store();
    let rows = with_pool!(store, |p| {
        // Deactivated users, and users of a deleted service provider, log in like unknown ones.
        let mut sql = "SELECT u.id, u.tenant_id, u.password_hash, u.totp_secret FROM users u \
                       JOIN tenants t ON t.id = u.tenant_id \
                       LEFT JOIN service_providers sp ON sp.id = u.provider_id \
                       WHERE u.username = $1 AND u.active = $2 \
                       AND (sp.id IS NULL OR sp.active = $2)"
            .to_owned();
        if req.tenant.is_some() {
            sql.push_str(" AND t.slug = $3");
        }
        let mut q = sqlx::query_as::<_, LoginRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&req.username)
            .bind(true);
        if let Some(t) = &req.tenant {
            q = q.bind(t);
        }
        q.fetch_all(p).await?
    });
    let row = match rows.len() {
        0 => None,
        1 => rows.into_iter().next(),
        _ => {
            return Err(ApiError::validation(
                "tenant",
                "username exists in several tenants; give the tenant",
            ));
        }
    };
    let ok = match &row {
        Some(r) => verify_password(&req.password, &r.password_hash).await,
        None => {
            // Unknown users cost as much time as known ones, so response times do not reveal
            // which usernames exist.
            verify_password(&req.password, &state.dummy_hash().await?).await;
            false
        }
    };
    let Some(row) = row.filter(|_| ok) else {
        state.limiter().failed(key, now);
        return Err(ApiError::Unauthenticated);
    };
    if let Some(secret) = &row.totp_secret {
        let Some(code) = &req.totp else {
            // The password was right: not a failure, but the second factor is missing.
            return Err(ApiError::validation("totp", "second factor required"));
        };
        if !totp_ok(secret, code, now) {
            state.limiter().failed(key, now);
            return Err(ApiError::Unauthenticated);
        }
    }
    state.limiter().succeeded(&key);
    let token = random_token("");
    let expires_at = now + SESSION_TTL;
    with_pool!(store, |p| {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, tenant_id, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(&token))
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(expires_at)
        .bind(now)
        .execute(p)
        .await?;
    });
    let principal = principal_for_token(store, &token, now)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_TTL.num_seconds(),
        if state.secure_cookies() {
            "; Secure"
        } else {
            ""
        }
    );
    let body = LoginResponse {
        token,
        expires_at,
        me: Me::from(&principal),
    };
    Ok(([(header::SET_COOKIE, cookie)], axum::Json(body)).into_response())
}

/// Ends the session of the presented token (and clears the cookie).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    if let Some(h) = &who.session_hash {
        state.forget_principal(h);
        with_pool!(state.store(), |p| {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(h)
                .execute(p)
                .await?;
        });
    }
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// The caller's identity and rights.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(who: Principal) -> axum::Json<Me> {
    axum::Json(Me::from(&who))
}

// ---------------------------------------------------------------------------------------------
// TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step of clock skew — what
// authenticator apps expect)

fn totp_for(secret_b32: &str) -> Option<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).ok()?;
    totp_rs::Builder::new().with_secret(secret).build().ok()
}

/// Whether `code` is valid for the base32 `secret` at `now`.
pub fn totp_ok(secret: &str, code: &str, now: DateTime<Utc>) -> bool {
    let Ok(t) = u64::try_from(now.timestamp()) else {
        return false;
    };
    totp_for(secret).is_some_and(|totp| totp.check(code.trim(), t).is_some())
}

/// A fresh TOTP secret for the authenticator app.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TotpSetup {
    /// Base32 secret (enter into the app, then confirm with `/auth/totp/enable`).
    pub secret: String,
    /// `otpauth://` URL for a QR code.
    pub otpauth_url: String,
}

/// Confirms a TOTP secret with a current code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpEnable {
    /// The secret from `/auth/totp/setup`.
    pub secret: String,
    /// The code the app shows now.
    pub code: String,
}

/// Generates a TOTP secret (nothing is stored until it is confirmed).
#[utoipa::path(post, path = "/api/v1/auth/totp/setup", tag = "auth",
    responses((status = 200, body = TotpSetup), (status = 401, body = crate::error::ErrorBody)))]
pub async fn totp_setup(who: Principal) -> Result<axum::Json<TotpSetup>, ApiError> {
    if who.user.is_none() {
        return Err(ApiError::Forbidden);
    }
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let secret = totp_rs::Secret::from(bytes).to_base32();
    let otpauth_url = format!(
        "otpauth://totp/zentrale:{}?secret={secret}&issuer=zentrale&algorithm=SHA1&digits=6&period=30",
        who.actor
    );
    Ok(axum::Json(TotpSetup {
        secret,
        otpauth_url,
    }))
}

/// Enables the second factor for the caller after checking a current code.
#[utoipa::path(post, path = "/api/v1/auth/totp/enable", tag = "auth", request_body = TotpEnable,
    responses((status = 204), (status = 422, body = crate::error::ErrorBody)))]
pub async fn totp_enable(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<TotpEnable>,
) -> Result<StatusCode, ApiError> {
    let user = who.user.ok_or(ApiError::Forbidden)?;
    if totp_for(&req.secret).is_none() {
        return Err(ApiError::validation(
            "secret",
            "not a base32 secret of at least 128 bits",
        ));
    }
    if !totp_ok(&req.secret, &req.code, state.now()) {
        return Err(ApiError::validation("code", "code does not match"));
    }
    with_pool!(state.store(), |p| {
        sqlx::query("UPDATE users SET totp_secret = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(&req.secret)
            .bind(user.as_text())
            .bind(who.tenant.as_text())
            .execute(p)
            .await
            .map(|_| ())?
    });
    state
        .audit(&who, "user", &user.as_text(), "totp_enable", None, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Users

/// A user as shown to admins (never the hash).
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct User {
    /// Id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: String,
    /// Service provider, if a partner's user.
    pub provider_id: Option<String>,
    /// Routing agent name.
    pub agent: Option<String>,
    /// Deactivated users cannot log in; their history stays.
    pub active: bool,
}

/// New user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name: 1..64 of `A-Z a-z 0-9 . _ @ -`.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// At least 8 characters.
    pub password: String,
    /// Role.
    pub role: Role,
    /// The routing agent this user is.
    #[serde(default)]
    pub agent: Option<String>,
    /// Makes the user a service provider's user.
    #[serde(default)]
    pub provider_id: Option<ProviderId>,
}

/// Checks a name used as a login or routing name.
pub fn validate_name(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 64 {
        return Err(ApiError::validation(field, "must be 1..64 characters"));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err(ApiError::validation(
            field,
            "only letters, digits and . _ @ - are allowed",
        ));
    }
    Ok(())
}

/// Creates a user in a tenant (used by the API and by [`crate::demo::seed`]).
pub async fn create_user(
    store: &Store,
    tenant: TenantId,
    u: &NewUser,
    now: DateTime<Utc>,
) -> Result<UserId, ApiError> {
    validate_name("username", &u.username)?;
    if u.display_name.is_empty() || u.display_name.len() > 200 {
        return Err(ApiError::validation(
            "display_name",
            "must be 1..200 characters",
        ));
    }
    if u.password.chars().count() < 8 || u.password.len() > 1024 {
        return Err(ApiError::validation(
            "password",
            "must be 8..1024 characters",
        ));
    }
    if let Some(a) = &u.agent {
        validate_name("agent", a)?;
    }
    if let Some(p) = u.provider_id {
        let found: Option<(String,)> = with_pool!(store, |pool| {
            sqlx::query_as(
                "SELECT id FROM service_providers WHERE id = $1 AND tenant_id = $2 AND active = $3",
            )
            .bind(p.as_text())
            .bind(tenant.as_text())
            .bind(true)
            .fetch_optional(pool)
            .await?
        });
        if found.is_none() {
            return Err(ApiError::validation(
                "provider_id",
                "no such service provider",
            ));
        }
    }
    let hash = hash_password(&u.password, store.hash_cost()).await?;
    let id = UserId::new();
    let res = with_pool!(store, |p| {
        sqlx::query(
            "INSERT INTO users (id, tenant_id, username, display_name, password_hash, role, \
             provider_id, agent, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.as_text())
        .bind(tenant.as_text())
        .bind(&u.username)
        .bind(&u.display_name)
        .bind(&hash)
        .bind(u.role.as_str())
        .bind(u.provider_id.map(|p| p.as_text()))
        .bind(&u.agent)
        .bind(now)
        .execute(p)
        .await
        .map(|_| ())
    });
    match res {
        Ok(_) => Ok(id),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::conflict("username", "username already exists"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Users of the caller's tenant.
#[utoipa::path(get, path = "/api/v1/users", tag = "admin",
    responses((status = 200, body = Vec<User>), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    who: Principal,
) -> Result<axum::Json<Vec<User>>, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let rows = with_pool!(state.store(), |p| {
        sqlx::query_as::<_, User>(
            "SELECT id, username, display_name, role, provider_id, agent, active FROM users \
             WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(who.tenant.as_text())
        .fetch_all(p)
        .await?
    });
    Ok(axum::Json(rows))
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "admin", request_body = NewUser,
    responses((status = 201, body = User), (status = 422, body = crate::error::ErrorBody)))]
pub async fn post_user(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(u): ApiJson<NewUser>,
) -> Result<(StatusCode, axum::Json<User>), ApiError> {
    who.require(Perm::UsersAdmin)?;
    let id = create_user(state.store(), who.tenant, &u, state.now()).await?;
    let user = User {
        id: id.as_text(),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        role: u.role.as_str().to_owned(),
        provider_id: u.provider_id.map(|p| p.as_text()),
        agent: u.agent.clone(),
        active: true,
    };
    state
        .audit(
            &who,
            "user",
            &user.id,
            "create",
            None,
            Some(serde_json::json!(user)),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(user)))
}

// ---------------------------------------------------------------------------------------------
// API keys

/// New API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Integration name.
    pub name: String,
    /// Scopes, e.g. `customers:read`.
    pub scopes: Vec<Perm>,
}

/// A stored API key (the secret is shown only once, at creation).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Id.
    pub id: ApiKeyId,
    /// Integration name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Perm>,
    /// Revoked keys authenticate nothing.
    pub revoked: bool,
    /// The secret (only in the creation answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyListRow {
    id: String,
    name: String,
    scopes: Json<Vec<Perm>>,
    revoked: bool,
}

/// Creates an API key.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "admin", request_body = NewApiKey,
    responses((status = 201, body = ApiKeyInfo), (status = 403, body = crate::error::ErrorBody)))]
pub async fn post_api_key(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(k): ApiJson<NewApiKey>,
) -> Result<(StatusCode, axum::Json<ApiKeyInfo>), ApiError> {
    who.require(Perm::UsersAdmin)?;
    validate_name("name", &k.name)?;
    if k.scopes.is_empty() {
        return Err(ApiError::validation("scopes", "at least one scope"));
    }
    let id = ApiKeyId::new();
    let key = random_token("zk_");
    with_pool!(state.store(), |p| {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, scopes, created_by, created_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id.as_text())
        .bind(who.tenant.as_text())
        .bind(&k.name)
        .bind(token_hash(&key))
        .bind(Json(&k.scopes))
        .bind(&who.actor)
        .bind(state.now())
        .bind(false)
        .execute(p)
        .await?;
    });
    let mut info = ApiKeyInfo {
        id,
        name: k.name,
        scopes: k.scopes,
        revoked: false,
        key: None,
    };
    state
        .audit(
            &who,
            "api_key",
            &id.as_text(),
            "create",
            None,
            Some(serde_json::json!(info)),
        )
        .await?;
    info.key = Some(key);
    Ok((StatusCode::CREATED, axum::Json(info)))
}

/// API keys of the tenant.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "admin",
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    who: Principal,
) -> Result<axum::Json<Vec<ApiKeyInfo>>, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let rows = with_pool!(state.store(), |p| {
        sqlx::query_as::<_, ApiKeyListRow>(
            "SELECT id, name, scopes, revoked FROM api_keys WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(who.tenant.as_text())
        .fetch_all(p)
        .await?
    });
    rows.into_iter()
        .map(|r| {
            Ok(ApiKeyInfo {
                id: ApiKeyId::parse(&r.id).ok_or(StoreError::Corrupt("api_keys"))?,
                name: r.name,
                scopes: r.scopes.0,
                revoked: r.revoked,
                key: None,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()
        .map(axum::Json)
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "API key id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let id = ApiKeyId::parse(&id).ok_or(ApiError::NotFound)?;
    let n = with_pool!(state.store(), |p| {
        sqlx::query("UPDATE api_keys SET revoked = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(true)
            .bind(id.as_text())
            .bind(who.tenant.as_text())
            .execute(p)
            .await?
            .rows_affected()
    });
    if n == 0 {
        return Err(ApiError::NotFound);
    }
    state.forget_api_keys();
    state
        .audit(&who, "api_key", &id.as_text(), "revoke", None, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Service providers

/// A service provider and what the tenant released to it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceProvider {
    /// Id (ignored on create).
    #[serde(default)]
    pub id: Option<ProviderId>,
    /// Partner organisation name.
    pub name: String,
    /// Queue names its users may work in and see.
    pub released_queues: Vec<String>,
    /// Functions its users may use: customers, tickets, routing (read), reports.
    pub released_functions: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct ProviderRow {
    id: String,
    name: String,
    released_queues: Json<Vec<String>>,
    released_functions: Json<Vec<String>>,
}

/// Creates a service provider.
#[utoipa::path(post, path = "/api/v1/service-providers", tag = "admin", request_body = ServiceProvider,
    responses((status = 201, body = ServiceProvider), (status = 422, body = crate::error::ErrorBody)))]
pub async fn post_provider(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(mut sp): ApiJson<ServiceProvider>,
) -> Result<(StatusCode, axum::Json<ServiceProvider>), ApiError> {
    who.require(Perm::UsersAdmin)?;
    if sp.name.is_empty() || sp.name.len() > 200 {
        return Err(ApiError::validation("name", "must be 1..200 characters"));
    }
    validate_release(&sp.released_queues, &sp.released_functions)?;
    let id = ProviderId::new();
    sp.id = Some(id);
    let res = with_pool!(state.store(), |p| {
        sqlx::query(
            "INSERT INTO service_providers (id, tenant_id, name, released_queues, released_functions, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_text())
        .bind(who.tenant.as_text())
        .bind(&sp.name)
        .bind(Json(&sp.released_queues))
        .bind(Json(&sp.released_functions))
        .bind(state.now())
        .execute(p)
        .await.map(|_| ())
    });
    match res {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict(
                "name",
                "a provider with this name exists",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    state
        .audit(
            &who,
            "service_provider",
            &id.as_text(),
            "create",
            None,
            Some(serde_json::json!(sp)),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(sp)))
}

/// Service providers of the tenant.
#[utoipa::path(get, path = "/api/v1/service-providers", tag = "admin",
    responses((status = 200, body = Vec<ServiceProvider>), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_providers(
    State(state): State<AppState>,
    who: Principal,
) -> Result<axum::Json<Vec<ServiceProvider>>, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let rows = with_pool!(state.store(), |p| {
        sqlx::query_as::<_, ProviderRow>(
            "SELECT id, name, released_queues, released_functions FROM service_providers \
             WHERE tenant_id = $1 AND active = $2 ORDER BY id",
        )
        .bind(who.tenant.as_text())
        .bind(true)
        .fetch_all(p)
        .await?
    });
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| ServiceProvider {
                id: ProviderId::parse(&r.id),
                name: r.name,
                released_queues: r.released_queues.0,
                released_functions: r.released_functions.0,
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Changing and deactivating users

/// A change of a user; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Role.
    #[serde(default)]
    pub role: Option<Role>,
    /// The routing agent this user is; `""` removes it.
    #[serde(default)]
    pub agent: Option<String>,
    /// A new password (at least 8 characters); ends the user's other sessions.
    #[serde(default)]
    pub password: Option<String>,
    /// `false` deactivates: logins and existing sessions stop working at once.
    #[serde(default)]
    pub active: Option<bool>,
}

async fn user_in_tenant(
    store: &Store,
    tenant: TenantId,
    id: UserId,
) -> Result<Option<User>, StoreError> {
    Ok(with_pool!(store, |p| {
        sqlx::query_as::<_, User>(
            "SELECT id, username, display_name, role, provider_id, agent, active FROM users \
             WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id.as_text())
        .bind(tenant.as_text())
        .fetch_optional(p)
        .await?
    }))
}

async fn change_user(
    state: &AppState,
    who: &Principal,
    id: UserId,
    patch: UserPatch,
) -> Result<User, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let store = state.store();
    let before = user_in_tenant(store, who.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut after = User {
        id: before.id.clone(),
        username: before.username.clone(),
        display_name: before.display_name.clone(),
        role: before.role.clone(),
        provider_id: before.provider_id.clone(),
        agent: before.agent.clone(),
        active: before.active,
    };
    if let Some(d) = patch.display_name {
        if d.is_empty() || d.len() > 200 {
            return Err(ApiError::validation(
                "display_name",
                "must be 1..200 characters",
            ));
        }
        after.display_name = d;
    }
    if let Some(r) = patch.role {
        after.role = r.as_str().to_owned();
    }
    if let Some(a) = patch.agent {
        if a.is_empty() {
            after.agent = None;
        } else {
            validate_name("agent", &a)?;
            after.agent = Some(a);
        }
    }
    if let Some(a) = patch.active {
        after.active = a;
    }
    let hash = match &patch.password {
        None => None,
        Some(pw) => {
            if pw.chars().count() < 8 || pw.len() > 1024 {
                return Err(ApiError::validation(
                    "password",
                    "must be 8..1024 characters",
                ));
            }
            Some(hash_password(pw, store.hash_cost()).await?)
        }
    };
    let admin = Role::Admin.as_str();
    let removes_admin =
        before.active && before.role == admin && !(after.active && after.role == admin);
    with_pool!(store, |p| {
        let mut tx = p.begin().await?;
        // The first write locks the tenant row (as routing changes do), so two admins demoting
        // each other at once are serialised and the second sees the first's change.
        sqlx::query("UPDATE tenants SET slug = slug WHERE id = $1")
            .bind(who.tenant.as_text())
            .execute(&mut *tx)
            .await?;
        if removes_admin {
            let (others,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND role = $2 AND active = $3 \
                 AND id <> $4",
            )
            .bind(who.tenant.as_text())
            .bind(admin)
            .bind(true)
            .bind(&before.id)
            .fetch_one(&mut *tx)
            .await?;
            if others == 0 {
                return Err(ApiError::conflict(
                    if after.active { "role" } else { "active" },
                    "this is the last active admin of the tenant; make another user admin first",
                ));
            }
        }
        sqlx::query(
            "UPDATE users SET display_name = $1, role = $2, agent = $3, active = $4, \
             password_hash = COALESCE($5, password_hash) WHERE id = $6 AND tenant_id = $7",
        )
        .bind(&after.display_name)
        .bind(&after.role)
        .bind(&after.agent)
        .bind(after.active)
        .bind(&hash)
        .bind(id.as_text())
        .bind(who.tenant.as_text())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    });
    // A deactivated user loses every session; a new password ends all sessions but the
    // caller's own (an admin resetting their own password stays logged in).
    if !after.active || hash.is_some() {
        let keep = who.session_hash.clone().unwrap_or_default();
        with_pool!(store, |p| {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND (token_hash <> $2 OR $3)")
                .bind(id.as_text())
                .bind(&keep)
                .bind(!after.active)
                .execute(p)
                .await?;
        });
    }
    state.forget_user(id);
    let action = match (before.active, after.active) {
        (true, false) => "deactivate",
        (false, true) => "reactivate",
        _ => "update",
    };
    let mut after_audit = serde_json::json!(after);
    if hash.is_some() {
        after_audit["password_changed"] = serde_json::json!(true);
    }
    state
        .audit(
            who,
            "user",
            &after.id,
            action,
            Some(serde_json::json!(before)),
            Some(after_audit),
        )
        .await?;
    Ok(after)
}

/// Changes a user: display name, role, agent, password, active.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "admin", request_body = UserPatch,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = User), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn patch_user(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<axum::Json<User>, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let id = UserId::parse(&id).ok_or(ApiError::NotFound)?;
    change_user(&state, &who, id, patch).await.map(axum::Json)
}

/// Deactivates a user (rows referenced by the timeline and audit log are kept).
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete_user(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let id = UserId::parse(&id).ok_or(ApiError::NotFound)?;
    let patch = UserPatch {
        active: Some(false),
        ..UserPatch::default()
    };
    change_user(&state, &who, id, patch).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Changing and ending service providers

/// A change of a service provider; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPatch {
    /// Partner organisation name.
    #[serde(default)]
    pub name: Option<String>,
    /// Queue names its users may work in and see.
    #[serde(default)]
    pub released_queues: Option<Vec<String>>,
    /// Functions its users may use: customers, tickets, routing (read), reports.
    #[serde(default)]
    pub released_functions: Option<Vec<String>>,
}

fn validate_release(queues: &[String], functions: &[String]) -> Result<(), ApiError> {
    for (i, f) in functions.iter().enumerate() {
        if !RELEASABLE_FUNCTIONS.contains(&f.as_str()) {
            return Err(ApiError::validation(
                format!("released_functions[{i}]"),
                format!("unknown function; releasable are {RELEASABLE_FUNCTIONS:?}"),
            ));
        }
    }
    for (i, q) in queues.iter().enumerate() {
        validate_name(&format!("released_queues[{i}]"), q)?;
    }
    Ok(())
}

async fn active_provider(
    store: &Store,
    tenant: TenantId,
    id: ProviderId,
) -> Result<Option<ServiceProvider>, StoreError> {
    let row = with_pool!(store, |p| {
        sqlx::query_as::<_, ProviderRow>(
            "SELECT id, name, released_queues, released_functions FROM service_providers \
             WHERE id = $1 AND tenant_id = $2 AND active = $3",
        )
        .bind(id.as_text())
        .bind(tenant.as_text())
        .bind(true)
        .fetch_optional(p)
        .await?
    });
    Ok(row.map(|r| ServiceProvider {
        id: ProviderId::parse(&r.id),
        name: r.name,
        released_queues: r.released_queues.0,
        released_functions: r.released_functions.0,
    }))
}

/// Changes a service provider's name or what is released to it; its users' rights change with
/// their next request.
#[utoipa::path(patch, path = "/api/v1/service-providers/{id}", tag = "admin",
    request_body = ProviderPatch,
    params(("id" = String, Path, description = "Service provider id")),
    responses((status = 200, body = ServiceProvider), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn patch_provider(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ProviderPatch>,
) -> Result<axum::Json<ServiceProvider>, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let id = ProviderId::parse(&id).ok_or(ApiError::NotFound)?;
    let before = active_provider(state.store(), who.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let after = ServiceProvider {
        id: Some(id),
        name: patch.name.unwrap_or_else(|| before.name.clone()),
        released_queues: patch
            .released_queues
            .unwrap_or_else(|| before.released_queues.clone()),
        released_functions: patch
            .released_functions
            .unwrap_or_else(|| before.released_functions.clone()),
    };
    if after.name.is_empty() || after.name.len() > 200 {
        return Err(ApiError::validation("name", "must be 1..200 characters"));
    }
    validate_release(&after.released_queues, &after.released_functions)?;
    let res = with_pool!(state.store(), |p| {
        sqlx::query(
            "UPDATE service_providers SET name = $1, released_queues = $2, \
             released_functions = $3 WHERE id = $4 AND tenant_id = $5",
        )
        .bind(&after.name)
        .bind(Json(&after.released_queues))
        .bind(Json(&after.released_functions))
        .bind(id.as_text())
        .bind(who.tenant.as_text())
        .execute(p)
        .await
        .map(|_| ())
    });
    match res {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict(
                "name",
                "a provider with this name exists",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    state.forget_provider(id);
    state
        .audit(
            &who,
            "service_provider",
            &id.as_text(),
            "update",
            Some(serde_json::json!(before)),
            Some(serde_json::json!(after)),
        )
        .await?;
    Ok(axum::Json(after))
}

/// Ends a service provider: its users lose access at once (the rows stay for the history).
#[utoipa::path(delete, path = "/api/v1/service-providers/{id}", tag = "admin",
    params(("id" = String, Path, description = "Service provider id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_provider(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Perm::UsersAdmin)?;
    let id = ProviderId::parse(&id).ok_or(ApiError::NotFound)?;
    let before = active_provider(state.store(), who.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    with_pool!(state.store(), |p| {
        sqlx::query("UPDATE service_providers SET active = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(false)
            .bind(id.as_text())
            .bind(who.tenant.as_text())
            .execute(p)
            .await?;
        sqlx::query(
            "DELETE FROM sessions WHERE user_id IN \
             (SELECT id FROM users WHERE provider_id = $1 AND tenant_id = $2)",
        )
        .bind(id.as_text())
        .bind(who.tenant.as_text())
        .execute(p)
        .await?;
    });
    state.forget_provider(id);
    state
        .audit(
            &who,
            "service_provider",
            &id.as_text(),
            "delete",
            Some(serde_json::json!(before)),
            None,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

impl Principal {
    /// The system itself acting in a tenant (screen pops, CDR import): full rights.
    pub fn system(tenant: TenantId) -> Self {
        Principal {
            tenant,
            actor: "system".to_owned(),
            user: None,
            role: Some(Role::Admin),
            agent: None,
            release: None,
            scopes: None,
            session_hash: None,
            expires_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (String, String) {
        ("agent1".to_owned(), "127.0.0.1".to_owned())
    }

    #[test]
    fn limiter_blocks_after_max_failures_until_window_ends() {
        let l = LoginLimiter::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
        for _ in 0..LOGIN_MAX_FAILURES {
            assert!(l.check(&key(), t0).is_ok());
            l.failed(key(), t0);
        }
        assert_eq!(l.check(&key(), t0), Err(LOGIN_WINDOW.num_seconds()));
        assert!(
            l.check(&("agent2".to_owned(), "127.0.0.1".to_owned()), t0)
                .is_ok()
        );
        assert!(l.check(&key(), t0 + LOGIN_WINDOW).is_ok());
        l.succeeded(&key());
        assert!(l.check(&key(), t0).is_ok());
    }

    #[test]
    fn roles_grant_nested_rights_and_providers_only_released_functions() {
        assert!(Role::Admin.grants(Perm::RoutingWrite));
        assert!(!Role::Supervisor.grants(Perm::RoutingWrite));
        assert!(Role::Supervisor.grants(Perm::RoutingRead));
        assert!(!Role::Agent.grants(Perm::RoutingRead));
        let mut p = Principal::system(TenantId::new());
        p.release = Some(Release {
            provider: ProviderId::new(),
            queues: vec!["support".into()],
            functions: vec!["customers".into()],
        });
        assert!(p.allows(Perm::CustomersWrite));
        assert!(!p.allows(Perm::TicketsRead));
        assert!(
            !p.allows(Perm::UsersAdmin),
            "admin rights are never released"
        );
        assert!(p.allows(Perm::Events));
        assert!(p.sees_queue("support") && !p.sees_queue("sales"));
    }

    #[tokio::test]
    async fn passwords_verify_only_with_the_right_password() {
        let h = hash_password("correct horse", HashCost::Fast)
            .await
            .expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h).await);
        assert!(!verify_password("correct horse!", &h).await);
        assert!(!verify_password("correct horse", "not a hash").await);
    }
}
