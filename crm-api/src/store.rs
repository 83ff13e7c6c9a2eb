//! Persistence: one [`Store`] over SQLite (embedded, the default) or PostgreSQL.
//!
//! # Design
//!
//! `sqlx::Any` cannot carry uuid/chrono/JSON types, and a trait with one impl per backend would
//! duplicate every query. Instead [`Store`] holds an enum over the two pools and the private
//! `with_pool!` macro expands one query body once per backend: the SQL text is identical (both
//! accept `$n` placeholders; ids are TEXT in both; times bind as `DateTime<Utc>`, which is
//! TIMESTAMPTZ in PostgreSQL and ISO-8601 TEXT in SQLite; JSON binds as `Json<Value>`, JSONB
//! resp. TEXT), and each arm is type-checked against its own driver, so a query that is not
//! portable fails in the tests of that backend rather than at compile time of the other.
//! Row structs derive `FromRow`, which is generic over the row type. The schema lives in
//! `migrations/sqlite` and `migrations/postgres` (embedded with `sqlx::migrate!`).
//!
//! SQLite runs in WAL mode with `synchronous = FULL`: a committed transaction survives a crash
//! or power loss, at the cost of one fsync per commit (measured in BENCHMARKS.md).

use crate::error::StoreError;
use crate::ids::{TenantId, uuid_v7_at};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// Runs `$body` with `$pool` bound to the concrete pool of `$store`'s backend.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.backend() {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// The concrete connection pool.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL server.
    Postgres(PgPool),
}

/// How expensive password hashes are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HashCost {
    /// argon2id with the OWASP-recommended parameters (19 MiB, 2 passes).
    #[default]
    Standard,
    /// Minimal parameters, for tests and benchmarks only (unoptimised builds would otherwise
    /// spend seconds per login).
    Fast,
}

/// The database of one zentrale installation (all tenants).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    hash_cost: HashCost,
}

impl Store {
    /// Opens (and creates, for SQLite `mode=rwc`) the database at `url` and applies pending
    /// migrations. `sqlite::memory:` gives a private in-memory database (one connection, since
    /// every SQLite memory connection would otherwise be its own empty database).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let opts = if memory {
                opts
            } else {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(if memory { 1 } else { 8 })
                .min_connections(1)
                // An in-memory database dies with its last connection.
                .idle_timeout(if memory {
                    None
                } else {
                    Some(Duration::from_secs(600))
                })
                .max_lifetime(if memory {
                    None
                } else {
                    Some(Duration::from_secs(3600))
                })
                .connect_with(opts)
                .await?;
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            Backend::Postgres(Self::pg_pool(opts).await?)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let store = Self {
            backend,
            hash_cost: HashCost::Standard,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Opens PostgreSQL with explicit connect options (e.g. a `search_path` per test schema)
    /// and applies migrations.
    pub async fn open_postgres(opts: PgConnectOptions) -> Result<Self, StoreError> {
        let store = Self {
            backend: Backend::Postgres(Self::pg_pool(opts).await?),
            hash_cost: HashCost::Standard,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn pg_pool(opts: PgConnectOptions) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
    }

    /// Sets the password hash cost (see [`HashCost`]).
    pub fn with_hash_cost(mut self, cost: HashCost) -> Self {
        self.hash_cost = cost;
        self
    }

    /// The password hash cost in force.
    pub fn hash_cost(&self) -> HashCost {
        self.hash_cost
    }

    /// The concrete pool.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Applies pending migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Backend::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// Closes all connections (waits for checked-out ones).
    pub async fn close(&self) {
        with_pool!(self, |p| p.close().await)
    }

    /// Creates a tenant; `slug` is its login/URL name and must be unique.
    pub async fn create_tenant(
        &self,
        slug: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<TenantId, StoreError> {
        let id = TenantId::new();
        with_pool!(self, |p| {
            sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
                .bind(id.as_text())
                .bind(slug)
                .bind(name)
                .bind(now)
                .execute(p)
                .await?;
        });
        Ok(id)
    }

    /// The tenant with this slug.
    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Option<TenantRow>, StoreError> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as::<_, TenantRow>(
                "SELECT id, slug, name, created_at FROM tenants WHERE slug = $1",
            )
            .bind(slug)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Every tenant, oldest first (the binary starts each one's routing and SIP model).
    pub async fn tenants(&self) -> Result<Vec<TenantRow>, StoreError> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as::<_, TenantRow>(
                "SELECT id, slug, name, created_at FROM tenants ORDER BY created_at, id",
            )
            .fetch_all(p)
            .await?
        }))
    }

    /// Appends queue-log rows in one transaction (all or nothing).
    pub async fn append_queue_log(&self, rows: &[QueueLogEntry]) -> Result<(), StoreError> {
        with_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for r in rows {
                sqlx::query(
                    "INSERT INTO queue_log (id, tenant_id, time, contact_id, queue, agent, event, data) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(uuid_v7_at(r.time).as_hyphenated().to_string())
                .bind(r.tenant.as_text())
                .bind(r.time)
                .bind(&r.contact_id)
                .bind(&r.queue)
                .bind(&r.agent)
                .bind(&r.event)
                .bind(Json(&r.data))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Queue-log rows of a tenant in `[from, to)`, in time order.
    pub async fn queue_log(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<QueueLogEntry>, StoreError> {
        let rows = with_pool!(self, |p| {
            sqlx::query_as::<_, QueueLogRow>(
                "SELECT tenant_id, time, contact_id, queue, agent, event, data FROM queue_log \
                 WHERE tenant_id = $1 AND time >= $2 AND time < $3 ORDER BY id",
            )
            .bind(tenant.as_text())
            .bind(from)
            .bind(to)
            .fetch_all(p)
            .await?
        });
        rows.into_iter().map(QueueLogRow::into_entry).collect()
    }
}

/// A stored tenant.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct TenantRow {
    /// Id.
    pub id: String,
    /// Unique short name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// One queue-log event (GLOSSARY "Queue log"): what reports are recomputed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueLogEntry {
    /// Tenant the contact belongs to.
    pub tenant: TenantId,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The contact (acd-core's contact id in text form).
    pub contact_id: String,
    /// Queue name, when the event concerns one.
    pub queue: Option<String>,
    /// Agent name, when the event concerns one.
    pub agent: Option<String>,
    /// enter, offer, connect, abandon, timeout, transfer, complete, …
    pub event: String,
    /// Event-specific details.
    pub data: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct QueueLogRow {
    tenant_id: String,
    time: DateTime<Utc>,
    contact_id: String,
    queue: Option<String>,
    agent: Option<String>,
    event: String,
    data: Json<serde_json::Value>,
}

impl QueueLogRow {
    fn into_entry(self) -> Result<QueueLogEntry, StoreError> {
        Ok(QueueLogEntry {
            tenant: TenantId::parse(&self.tenant_id).ok_or(StoreError::Corrupt("queue_log"))?,
            time: self.time,
            contact_id: self.contact_id,
            queue: self.queue,
            agent: self.agent,
            event: self.event,
            data: self.data.0,
        })
    }
}
