//! CRM API load benchmark: mixed reads and writes over real HTTP against a file-backed SQLite
//! database (WAL, synchronous=FULL), open-loop at a fixed request rate.
//!
//! Latency is measured from each request's *scheduled* send time (not its actual one), so a
//! stalled server cannot hide its queueing delay (no coordinated omission).
//!
//! Run: `cargo bench -p crm-api --bench crm_http` (env: `RATE` req/s, default 500;
//! `SECS`, default 20; `CUSTOMERS`, default 2000; `DB` = `sqlite` (default) or a postgres URL).
// A measuring program, not library code: any failure (setup, a refused request) must stop the
// run loudly rather than skew the numbers, so unwrap is the intended behaviour here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Lookup,
    Timeline,
    AddNote,
    CreateCustomer,
}

const OPS: [Op; 4] = [Op::Lookup, Op::Timeline, Op::AddNote, Op::CreateCustomer];

fn pick(i: u64) -> Op {
    // 50 % look-ups by caller number, 20 % timeline reads, 20 % notes, 10 % new customers
    match i % 10 {
        0..=4 => Op::Lookup,
        5 | 6 => Op::Timeline,
        7 | 8 => Op::AddNote,
        _ => Op::CreateCustomer,
    }
}

#[tokio::main]
async fn main() {
    let rate = env_u64("RATE", 500);
    let secs = env_u64("SECS", 20);
    let customers = env_u64("CUSTOMERS", 2000);
    let dir = tempfile::tempdir().unwrap();
    let url = match std::env::var("DB") {
        Ok(u) if u.starts_with("postgres") => u,
        _ => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        ),
    };
    let store = crm_api::Store::open(&url)
        .await
        .expect("open store")
        .with_hash_cost(crm_api::HashCost::Fast);
    let backend = store.backend_name();
    let slug = format!("bench{}", uuid::Uuid::now_v7().simple());
    let tenant = store
        .create_tenant(&slug, "Bench", chrono::Utc::now())
        .await
        .unwrap();
    crm_api::auth::create_user(
        &store,
        tenant,
        &crm_api::auth::NewUser {
            username: "agent".into(),
            display_name: "Agent".into(),
            password: "bench-password".into(),
            role: crm_api::auth::Role::Agent,
            agent: Some("1001".into()),
            provider_id: None,
        },
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..customers {
        let c = crm_api::customers::create_customer(
            &store,
            tenant,
            "bench",
            &crm_api::customers::NewCustomer {
                name: format!("Kunde {i}"),
                company: None,
                identities: vec![crm_api::customers::Identity {
                    kind: crm_api::customers::IdentityKind::Phone,
                    value: format!("+49301{i:07}"),
                }],
                custom: Default::default(),
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        ids.push(c.id.to_string());
    }
    let state = crm_api::AppState::new(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = crm_api::router(state);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http::<Full<Bytes>>();
    let login = hyper::Request::post(format!("http://{addr}/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"username": "agent", "password": "bench-password", "tenant": slug}).to_string(),
        )))
        .unwrap();
    let resp = client.request(login).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let token: String = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = Arc::new(format!("Bearer {token}"));
    let ids = Arc::new(ids);

    let hists: Arc<Vec<Mutex<Histogram<u64>>>> = Arc::new(
        (0..=OPS.len())
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()))
            .collect(),
    );
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * u32::try_from(i).unwrap();
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, auth, ids, hists, errors) = (
            client.clone(),
            auth.clone(),
            ids.clone(),
            hists.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let op = pick(i);
            let n = (i.wrapping_mul(2_654_435_761)) % ids.len() as u64;
            let cid = &ids[n as usize];
            let (method, path, body) = match op {
                Op::Lookup => ("GET", format!("/api/v1/customers/lookup?phone=%2B49301{n:07}"), None),
                Op::Timeline => ("GET", format!("/api/v1/customers/{cid}/timeline?limit=10"), None),
                Op::AddNote => ("POST", format!("/api/v1/customers/{cid}/timeline"), Some(json!({"kind": "note", "body": format!("bench note {i}")}))),
                Op::CreateCustomer => ("POST", "/api/v1/customers".to_owned(), Some(json!({"name": format!("Neu {i}"), "identities": [{"kind": "email", "value": format!("n{i}@bench.example")}]}))),
            };
            let mut req = hyper::Request::builder().method(method).uri(format!("http://{addr}{path}")).header("authorization", auth.as_str());
            let req = match body {
                Some(b) => { req = req.header("content-type", "application/json"); req.body(Full::new(Bytes::from(b.to_string()))).unwrap() }
                None => req.body(Full::new(Bytes::new())).unwrap(),
            };
            let ok = match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
                Ok(Ok(resp)) => {
                    let good = resp.status().is_success();
                    let _ = resp.into_body().collect().await;
                    good
                }
                _ => false,
            };
            let us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
            if !ok {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let k = OPS.iter().position(|o| std::mem::discriminant(o) == std::mem::discriminant(&op)).unwrap();
            hists[k].lock().unwrap().saturating_record(us);
            hists[OPS.len()].lock().unwrap().saturating_record(us);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "crm_http: backend={backend} target={rate} req/s for {secs} s, {total} requests, {customers} seeded customers"
    );
    println!(
        "achieved {:.1} req/s over {:.2} s, errors {}",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    let names = [
        "lookup by phone",
        "timeline read",
        "add note (write)",
        "create customer (write)",
        "ALL",
    ];
    for (k, name) in names.iter().enumerate() {
        let h = hists[k].lock().unwrap();
        println!(
            "{name:<24} n={:<6} p50={:>7.3} ms  p99={:>7.3} ms  p999={:>7.3} ms  max={:>7.3} ms",
            h.len(),
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
    store.close().await;
}
