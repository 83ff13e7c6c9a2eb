//! The default embedded database: a file in WAL mode with synchronous=FULL (a committed
//! transaction survives a crash or power loss), migrations applied once, data there after
//! reopening, and a refused URL scheme gives a typed error.
#![allow(clippy::unwrap_used)]

use crm_api::Store;
use crm_api::store::Backend;

#[tokio::test]
async fn file_database_is_wal_full_sync_and_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("z.db").display());
    let store = Store::open(&url).await.unwrap();
    let Backend::Sqlite(pool) = store.backend() else {
        panic!("sqlite url opens sqlite")
    };
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(sync, 2, "FULL");
    let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let tenant = crm_api::demo::seed(&store).await.unwrap();
    store.close().await;

    let again = Store::open(&url).await.unwrap();
    assert_eq!(
        crm_api::demo::seed(&again).await.unwrap(),
        tenant,
        "seed is idempotent"
    );
    let state = crm_api::AppState::new(again.clone());
    let cfg = state.routing_config(tenant).await.unwrap();
    assert!(cfg.queues.contains_key(&acd_core::QueueId::new("support")));
    let pop = state
        .screen_pop(tenant, "1001", "+4930111222", "c")
        .await
        .unwrap();
    match pop {
        crm_api::events::Event::ScreenPop { customer, .. } => {
            assert_eq!(customer.unwrap().name, "Erika Mustermann");
        }
        other => panic!("{other:?}"),
    }
    again.close().await;
}

#[tokio::test]
async fn unsupported_url_is_a_typed_error() {
    match Store::open("mysql://localhost/x").await {
        Err(crm_api::StoreError::UnsupportedUrl(u)) => assert_eq!(u, "mysql://localhost/x"),
        other => panic!("{other:?}"),
    }
}
