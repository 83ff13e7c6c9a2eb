//! End to end over real HTTP on 127.0.0.1: login through the cookie, the OpenAPI document, and
//! screen pop — the answered call's customer card arrives on that agent's `/api/v1/events`
//! WebSocket, and only on that agent's.
#![allow(clippy::unwrap_used)]

mod common;
use common::TestDb;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

both_backends!(
    screen_pop_reaches_the_answering_agent_over_websocket,
    openapi_document_is_served
);

async fn serve(db: &TestDb) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = crm_api::router(db.state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string())))
            .unwrap(),
        None => req.body(Full::new(Bytes::new())).unwrap(),
    };
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        set_cookie,
    )
}

async fn login_cookie(addr: SocketAddr, user: &str) -> String {
    let (s, v, cookie) = http(
        addr,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": user, "password": format!("password-{user}"), "tenant": "acme"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    cookie.unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn events(addr: SocketAddr, cookie: &str) -> Ws {
    let mut req = format!("ws://{addr}/api/v1/events")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn next_event(ws: &mut Ws) -> Value {
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    serde_json::from_str(msg.to_text().unwrap()).unwrap()
}

async fn screen_pop_reaches_the_answering_agent_over_websocket(db: &TestDb) {
    let tenant = db.tenant("acme").await;
    let addr = serve(db).await;
    let c1 = login_cookie(addr, "agent1").await;
    let c2 = login_cookie(addr, "agent2").await;
    let (s, cust, _) = http(
        addr,
        "POST",
        "/api/v1/customers",
        Some(&c1),
        Some(json!({"name": "Erika", "identities": [{"kind": "phone", "value": "+4930111222"}]})),
    )
    .await;
    assert_eq!(s, 201, "{cust}");
    let cid = cust["id"].as_str().unwrap();
    for i in 0..7 {
        let (s, _, _) = http(addr, "POST", &format!("/api/v1/customers/{cid}/timeline"), Some(&c1),
            Some(json!({"kind": "note", "body": format!("note {i}"), "occurred_at": db.clock_now() + chrono::Duration::seconds(i)}))).await;
        assert_eq!(s, 201);
    }
    let mut ws1 = events(addr, &c1).await;
    let mut ws2 = events(addr, &c2).await;
    let pop = db
        .state
        .screen_pop(tenant, "1001", "+49 30 111222", "contact-1")
        .await
        .unwrap();
    let got = next_event(&mut ws1).await;
    assert_eq!(got["type"], "screen_pop");
    assert_eq!(got["contact_id"], "contact-1");
    assert_eq!(got["customer"]["id"], cid);
    let tl = got["timeline"].as_array().unwrap();
    assert_eq!(tl.len(), crm_api::customers::SCREEN_POP_ITEMS as usize);
    assert_eq!(tl[0]["body"], "note 6", "newest first");
    assert_eq!(got, serde_json::to_value(&pop).unwrap());
    // unknown caller: the pop still comes, without a customer
    db.state
        .screen_pop(tenant, "1002", "anonymous", "contact-2")
        .await
        .unwrap();
    let got2 = next_event(&mut ws2).await;
    assert_eq!(
        got2["contact_id"], "contact-2",
        "agent 1002 did not get 1001's pop first"
    );
    assert!(got2["customer"].is_null());
    // other tenants' pops for the same agent name never arrive
    let other = db.tenant("other").await;
    db.state
        .screen_pop(other, "1001", "+4930111222", "foreign")
        .await
        .unwrap();
    db.state
        .screen_pop(tenant, "1001", "+4930111222", "contact-3")
        .await
        .unwrap();
    assert_eq!(next_event(&mut ws1).await["contact_id"], "contact-3");
    // no credential, no socket
    let req = format!("ws://{addr}/api/v1/events")
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
}

async fn openapi_document_is_served(db: &TestDb) {
    let addr = serve(db).await;
    let (s, doc, _) = http(addr, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/auth/login",
        "/api/v1/customers",
        "/api/v1/customers/{id}/timeline",
        "/api/v1/events",
        "/api/v1/routing/{kind}/{name}",
        "/api/v1/tickets/{id}",
        "/api/v1/audit",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}
