//! Test harness shared by the crm-api integration tests: the same test body runs on SQLite
//! (in memory) and on PostgreSQL (a fresh schema per test, so tests run in parallel), and
//! requests go through the router without a server (`oneshot`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{TimeZone, Utc};
use crm_api::auth::{NewUser, Role, create_user};
use crm_api::clock::FakeClock;
use crm_api::ids::TenantId;
use crm_api::{AppState, HashCost, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::Executor;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::sync::Arc;
use tower::ServiceExt;

/// Runs each listed `async fn name(db: &TestDb)` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = $crate::common::TestDb::postgres(stringify!($name)).await {
                        // drop the schema even when the test fails
                        let res = futures_util::FutureExt::catch_unwind(
                            std::panic::AssertUnwindSafe(super::$name(&db)),
                        )
                        .await;
                        db.finish().await;
                        if let Err(panic) = res {
                            std::panic::resume_unwind(panic);
                        }
                    }
                }
            )*
        }
    };
}

/// One test's database and API state.
pub struct TestDb {
    pub store: Store,
    pub state: AppState,
    pub clock: FakeClock,
    pg_admin: Option<(sqlx::PgPool, String)>,
}

pub fn pg_url() -> String {
    std::env::var("ZENTRALE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

impl TestDb {
    fn wrap(store: Store, pg_admin: Option<(sqlx::PgPool, String)>) -> Self {
        let store = store.with_hash_cost(HashCost::Fast);
        let clock = FakeClock::new(Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap());
        let state = AppState::with_clock(store.clone(), Arc::new(clock.clone()));
        TestDb {
            store,
            state,
            clock,
            pg_admin,
        }
    }

    pub async fn sqlite() -> Self {
        Self::wrap(
            Store::open("sqlite::memory:").await.expect("open sqlite"),
            None,
        )
    }

    /// A fresh schema on the test PostgreSQL; `None` (with a loud SKIPPED line) when it is
    /// unreachable outside CI; panics when unreachable in CI.
    pub async fn postgres(test: &str) -> Option<Self> {
        let url = pg_url();
        let admin = match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&url)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("PostgreSQL not reachable at {url} (CI is set): {e}");
                }
                eprintln!("SKIPPED: PostgreSQL not reachable at {url}: {e} (test {test})");
                return None;
            }
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .expect("create schema");
        let opts = PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let store = Store::open_postgres(opts).await.expect("open postgres");
        Some(Self::wrap(store, Some((admin, schema))))
    }

    pub async fn finish(self) {
        self.store.close().await;
        if let Some((admin, schema)) = self.pg_admin {
            admin
                .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .await
                .expect("drop schema");
        }
    }

    pub fn api(&self) -> Api {
        Api {
            router: crm_api::router(self.state.clone()),
        }
    }

    /// A tenant with users admin/super/agent1/agent2 (password `password-<name>`), returning
    /// the tenant id.
    pub async fn tenant(&self, slug: &str) -> TenantId {
        let now = self.clock_now();
        let t = self.store.create_tenant(slug, slug, now).await.unwrap();
        for (name, role, agent) in [
            ("admin", Role::Admin, None),
            ("super", Role::Supervisor, None),
            ("agent1", Role::Agent, Some("1001")),
            ("agent2", Role::Agent, Some("1002")),
        ] {
            create_user(
                &self.store,
                t,
                &NewUser {
                    username: name.to_owned(),
                    display_name: name.to_owned(),
                    password: format!("password-{name}"),
                    role,
                    agent: agent.map(str::to_owned),
                    provider_id: None,
                },
                now,
            )
            .await
            .unwrap();
        }
        t
    }

    pub fn clock_now(&self) -> chrono::DateTime<Utc> {
        use crm_api::clock::Clock;
        self.clock.now()
    }

    /// Logs in and returns the bearer token.
    pub async fn login(&self, tenant: &str, user: &str) -> String {
        let (s, v, _) = self
            .api()
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({"username": user, "password": format!("password-{user}"), "tenant": tenant})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "login {user}@{tenant}: {v}");
        v["token"].as_str().unwrap().to_owned()
    }
}

/// The router, called without a server.
pub struct Api {
    pub router: axum::Router,
}

impl Api {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, HeaderMap) {
        let raw = body.map(|b| b.to_string());
        self.raw(method, path, token, raw.as_deref(), "application/json")
            .await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        content_type: &str,
    ) -> (StatusCode, Value, HeaderMap) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(b.to_owned()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value, HeaderMap) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, v, headers)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.call(Method::GET, path, Some(token), None).await;
        (s, v)
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self.call(Method::POST, path, Some(token), Some(body)).await;
        (s, v)
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self.call(Method::PUT, path, Some(token), Some(body)).await;
        (s, v)
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self
            .call(Method::PATCH, path, Some(token), Some(body))
            .await;
        (s, v)
    }
    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.call(Method::DELETE, path, Some(token), None).await;
        (s, v)
    }
}

/// Asserts the stable error shape and returns (code, field).
pub fn error_of(v: &Value) -> (String, Option<String>) {
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("not an error body: {v}"));
    assert!(e["message"].is_string(), "error without message: {v}");
    (
        e["code"].as_str().unwrap().to_owned(),
        e.get("field").and_then(Value::as_str).map(str::to_owned),
    )
}
