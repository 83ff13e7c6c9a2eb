//! [`AppState`]: what every handler shares — the store, the clock, the login limiter, the
//! event hub behind `/api/v1/events`, and the channel on which routing changes are published
//! to the binary (which applies them to the running engine; crm-api never owns the engine).

use crate::auth::{LoginLimiter, Principal};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::events::EventHub;
use crate::ids::TenantId;
use crate::routing::RoutingUpdate;
use crate::store::{Store, with_pool};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Shared state of the API (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    limiter: LoginLimiter,
    events: EventHub,
    routing: broadcast::Sender<RoutingUpdate>,
    secure_cookies: bool,
    dummy_hash: tokio::sync::OnceCell<String>,
    /// token hash → (principal, trusted until)
    principals: dashmap::DashMap<String, (Principal, DateTime<Utc>)>,
    /// The channel to the SIP side's call control, set once by the binary.
    call_control: std::sync::OnceLock<crate::calls::CallControlPort>,
    /// `<data_dir>` for tenants' prompt uploads (crate::prompts), set once by the binary.
    data_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// Tenants whose uploaded prompts changed (crate::prompts).
    prompts: broadcast::Sender<TenantId>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("backend", &self.inner.store.backend_name())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `store` with the system clock.
    pub fn new(store: Store) -> Self {
        Self::with_clock(store, Arc::new(SystemClock))
    }

    /// State over `store` with an injected clock (tests use [`crate::clock::FakeClock`]).
    pub fn with_clock(store: Store, clock: Arc<dyn Clock>) -> Self {
        let (routing, _) = broadcast::channel(64);
        let (prompts, _) = broadcast::channel(64);
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                limiter: LoginLimiter::default(),
                events: EventHub::new(),
                routing,
                secure_cookies: false,
                dummy_hash: tokio::sync::OnceCell::new(),
                principals: dashmap::DashMap::new(),
                call_control: std::sync::OnceLock::new(),
                data_dir: std::sync::OnceLock::new(),
                prompts,
            }),
        }
    }

    /// Marks the session cookie `Secure` (when served behind TLS). Call before sharing.
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.secure_cookies = secure;
        }
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    /// Now, from the injected clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }
    pub(crate) fn limiter(&self) -> &LoginLimiter {
        &self.inner.limiter
    }
    pub(crate) fn secure_cookies(&self) -> bool {
        self.inner.secure_cookies
    }
    pub(crate) fn cached_principal(&self, hash: &str, now: DateTime<Utc>) -> Option<Principal> {
        let hit = self.inner.principals.get(hash).and_then(|e| {
            let (p, until) = e.value();
            let session_valid = p.expires_at.is_none_or(|exp| exp > now);
            (*until > now && session_valid).then(|| p.clone())
        });
        if hit.is_none() {
            self.inner.principals.remove(hash);
        }
        hit
    }

    pub(crate) fn cache_principal(&self, hash: String, p: Principal, until: DateTime<Utc>) {
        // Bounded: a flood of distinct valid tokens cannot exist (each needs a login), but
        // stale entries of ended sessions are dropped wholesale rather than tracked.
        if self.inner.principals.len() > 100_000 {
            self.inner.principals.clear();
        }
        self.inner.principals.insert(hash, (p, until));
    }

    pub(crate) fn forget_principal(&self, hash: &str) {
        self.inner.principals.remove(hash);
    }

    /// Drops cached credentials of `user`, so that a role change or deactivation applies to
    /// the next request rather than after [`crate::auth::PRINCIPAL_CACHE_TTL`].
    pub(crate) fn forget_user(&self, user: crate::ids::UserId) {
        self.inner
            .principals
            .retain(|_, (p, _)| p.user != Some(user));
    }

    /// Drops cached credentials of the users of `provider` (its release changed or it ended).
    pub(crate) fn forget_provider(&self, provider: crate::ids::ProviderId) {
        self.inner
            .principals
            .retain(|_, (p, _)| p.release.as_ref().is_none_or(|r| r.provider != provider));
    }

    pub(crate) fn forget_api_keys(&self) {
        self.inner.principals.retain(|_, (p, _)| p.scopes.is_none());
    }

    /// A hash of no known password, at the store's cost, for logins of unknown users.
    pub(crate) async fn dummy_hash(&self) -> Result<String, StoreError> {
        self.inner
            .dummy_hash
            .get_or_try_init(|| {
                crate::auth::hash_password("no-user-has-this-password", self.store().hash_cost())
            })
            .await
            .cloned()
    }

    /// Connects the live-call endpoints to the SIP side (once; later calls are ignored).
    pub fn set_call_control(&self, port: crate::calls::CallControlPort) {
        let _ = self.inner.call_control.set(port);
    }

    /// The call-control port, when the SIP side is wired.
    pub fn call_control(&self) -> Option<&crate::calls::CallControlPort> {
        self.inner.call_control.get()
    }

    /// Sets the data directory under which tenants' prompt uploads are stored (once; later
    /// calls are ignored). Without it the prompt endpoints answer `503`.
    pub fn set_data_dir(&self, dir: std::path::PathBuf) {
        let _ = self.inner.data_dir.set(dir);
    }

    /// The data directory, when set.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.inner.data_dir.get().map(std::path::PathBuf::as_path)
    }

    /// Subscribes to prompt changes: the tenant whose uploads changed (reload
    /// [`crate::prompts::tenant_dir`]).
    pub fn subscribe_prompts(&self) -> broadcast::Receiver<TenantId> {
        self.inner.prompts.subscribe()
    }

    pub(crate) fn publish_prompts(&self, tenant: TenantId) {
        let _ = self.inner.prompts.send(tenant);
    }

    /// The hub that feeds `/api/v1/events` sockets.
    pub fn events(&self) -> &EventHub {
        &self.inner.events
    }

    /// Subscribes to routing changes: every committed change of a tenant's routing model
    /// publishes the tenant's complete new configuration.
    pub fn subscribe_routing(&self) -> broadcast::Receiver<RoutingUpdate> {
        self.inner.routing.subscribe()
    }

    pub(crate) fn publish_routing(&self, update: RoutingUpdate) {
        // No subscriber (no engine wired, e.g. in tests) is fine: the DB is the truth and the
        // binary loads it at start.
        let _ = self.inner.routing.send(update);
    }

    /// Writes an audit-log row (who, when, what, before/after).
    pub async fn audit(
        &self,
        who: &Principal,
        entity: &str,
        entity_id: &str,
        action: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        audit_row(
            self.store(),
            who.tenant,
            &who.actor,
            self.now(),
            AuditChange {
                entity,
                entity_id,
                action,
                before,
                after,
            },
        )
        .await
    }
}

/// One change for the audit log.
#[derive(Debug)]
pub struct AuditChange<'a> {
    /// Entity type (customer, queue, user, …).
    pub entity: &'a str,
    /// Entity id or name.
    pub entity_id: &'a str,
    /// create, update, delete, merge, …
    pub action: &'a str,
    /// State before (absent on create).
    pub before: Option<serde_json::Value>,
    /// State after (absent on delete).
    pub after: Option<serde_json::Value>,
}

/// SQL of one audit insert; shared by the in-transaction callers.
pub(crate) const AUDIT_INSERT: &str = "INSERT INTO audit_log \
    (id, tenant_id, actor, at, entity, entity_id, action, before, after) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Writes one audit row outside a transaction.
pub async fn audit_row(
    store: &Store,
    tenant: TenantId,
    actor: &str,
    at: DateTime<Utc>,
    c: AuditChange<'_>,
) -> Result<(), StoreError> {
    with_pool!(store, |p| {
        sqlx::query(AUDIT_INSERT)
            .bind(crate::ids::uuid_v7_at(at).as_hyphenated().to_string())
            .bind(tenant.as_text())
            .bind(actor)
            .bind(at)
            .bind(c.entity)
            .bind(c.entity_id)
            .bind(c.action)
            .bind(c.before.map(Json))
            .bind(c.after.map(Json))
            .execute(p)
            .await?;
    });
    Ok(())
}
