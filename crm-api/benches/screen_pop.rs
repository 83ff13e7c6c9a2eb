//! Screen-pop latency: from the moment the call is answered (`AppState::screen_pop` is called)
//! to the moment the agent's browser-side WebSocket client has the customer card, over real
//! HTTP/WebSocket on 127.0.0.1 with a file-backed SQLite database.
//!
//! Run: `cargo bench -p crm-api --bench screen_pop` (env: `POPS`, default 5000; `RATE` pops/s,
//! default 100; `AGENTS` connected agents, default 50).
// A measuring program, not library code: any failure (setup, a refused request) must stop the
// run loudly rather than skew the numbers, so unwrap is the intended behaviour here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let pops = env_u64("POPS", 5000);
    let rate = env_u64("RATE", 100);
    let agents = env_u64("AGENTS", 50);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("pop.db").display());
    let store = crm_api::Store::open(&url)
        .await
        .unwrap()
        .with_hash_cost(crm_api::HashCost::Fast);
    let now = chrono::Utc::now();
    let tenant = store.create_tenant("pop", "Pop", now).await.unwrap();
    for a in 0..agents {
        crm_api::auth::create_user(
            &store,
            tenant,
            &crm_api::auth::NewUser {
                username: format!("u{a}"),
                display_name: "A".into(),
                password: "bench-password".into(),
                role: crm_api::auth::Role::Agent,
                agent: Some(format!("{}", 1000 + a)),
                provider_id: None,
            },
            now,
        )
        .await
        .unwrap();
    }
    for i in 0..1000u64 {
        let c = crm_api::customers::create_customer(
            &store,
            tenant,
            "bench",
            &crm_api::customers::NewCustomer {
                name: format!("Kunde {i}"),
                company: None,
                identities: vec![crm_api::customers::Identity {
                    kind: crm_api::customers::IdentityKind::Phone,
                    value: format!("+49302{i:07}"),
                }],
                custom: Default::default(),
            },
            now,
        )
        .await
        .unwrap();
        let _ = c;
        // a few calls on each customer's timeline, so the pop carries real items
        for j in 0..3i64 {
            let at = now - chrono::Duration::minutes(j * 10 + 1);
            store
                .insert_cdr(&crm_api::customers::CdrRecord {
                    tenant,
                    contact_id: format!("old{i}-{j}"),
                    leg: "caller".into(),
                    direction: "inbound".into(),
                    started_at: at,
                    answered_at: Some(at),
                    ended_at: at,
                    caller: format!("+49302{i:07}"),
                    callee: "+4930123456".into(),
                    result: "answered".into(),
                    queue: Some("support".into()),
                    agent: Some("1001".into()),
                    wait_ms: 5000,
                    talk_ms: 60000,
                    wrap_ms: 10000,
                    recording: None,
                    quality: json!({"mos": 4.3}),
                    mos_x100: None,
                    recording_ms: None,
                    voicemail: None,
                    transfer: None,
                })
                .await
                .unwrap();
        }
    }
    let state = crm_api::AppState::new(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = crm_api::router(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for a in 0..agents {
        let login = hyper::Request::post(format!("http://{addr}/api/v1/auth/login"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({"username": format!("u{a}"), "password": "bench-password"}).to_string(),
            )))
            .unwrap();
        let resp = client.request(login).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut req = format!("ws://{addr}/api/v1/events")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let (sent, hist, received) = (sent.clone(), hist.clone(), received.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Ok(text) = msg.to_text() else { continue };
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                assert!(
                    v["customer"]["id"].is_string(),
                    "pop carries the customer card"
                );
                let id = v["contact_id"].as_str().unwrap().to_owned();
                if let Some(t0) = sent.lock().unwrap().remove(&id) {
                    let us = u64::try_from(t0.elapsed().as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    hist.lock().unwrap().saturating_record(us);
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..pops {
        let scheduled = start + interval * u32::try_from(i).unwrap();
        tokio::time::sleep_until(scheduled.into()).await;
        let (state, sent) = (state.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let contact = format!("c{i}");
            // "answered" = scheduled time; the pop's own look-up is part of the latency
            sent.lock().unwrap().insert(contact.clone(), scheduled);
            let agent = format!("{}", 1000 + i % agents);
            state
                .screen_pop(tenant, &agent, &format!("+49302{:07}", i % 1000), &contact)
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(std::sync::atomic::Ordering::Relaxed) < pops && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h = hist.lock().unwrap();
    println!(
        "screen_pop: {pops} pops at {rate}/s to {agents} connected agents, sqlite file, 5-item timeline"
    );
    println!(
        "delivered {} of {pops}",
        received.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "answer->websocket  p50={:.3} ms  p99={:.3} ms  p999={:.3} ms  max={:.3} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    for r in readers {
        r.abort();
    }
}
