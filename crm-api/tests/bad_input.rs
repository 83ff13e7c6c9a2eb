//! Bad input — malformed JSON, wrong types, oversized bodies, unknown fields, wrong content
//! type, SQL-injection strings — gets a 4xx JSON error naming the field, and nothing is stored.
#![allow(clippy::unwrap_used)]

mod common;
use axum::http::{Method, StatusCode};
use common::{TestDb, error_of};
use serde_json::json;

both_backends!(
    bad_bodies_are_rejected_naming_the_field_and_store_nothing,
    injection_strings_are_data_not_sql,
    unknown_routes_and_ids_are_json_404,
    request_id_is_generated_and_echoed,
);

async fn customers_count(db: &TestDb, tok: &str) -> usize {
    let (_, list) = db.api().get("/api/v1/customers", tok).await;
    list["items"].as_array().unwrap().len()
}

async fn bad_bodies_are_rejected_naming_the_field_and_store_nothing(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(crm_api::BODY_LIMIT + 10));
    let cases: Vec<(&str, String, &str, StatusCode, Option<&str>)> = vec![
        (
            "malformed",
            r#"{"name": "A""#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "trailing garbage",
            r#"{"name": "A"} x"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "wrong type",
            r#"{"name": 42}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            "missing field",
            r#"{"company": "X"}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "unknown field",
            r#"{"name": "A", "is_admin": true}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("is_admin"),
        ),
        (
            "nested unknown",
            r#"{"name": "A", "identities": [{"kind": "phone", "value": "+4930111", "x": 1}]}"#
                .into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("identities[0].x"),
        ),
        (
            "bad enum",
            r#"{"name": "A", "identities": [{"kind": "fax", "value": "1"}]}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("identities[0].kind"),
        ),
        (
            "bad phone",
            r#"{"name": "A", "identities": [{"kind": "phone", "value": "12345"}]}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("identities[0].value"),
        ),
        (
            "empty name",
            r#"{"name": "  "}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            "not json content type",
            r#"{"name": "A"}"#.into(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            "oversized",
            big,
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
    ];
    for (what, body, ct, status, field) in cases {
        let (s, v, _) = api
            .raw(
                Method::POST,
                "/api/v1/customers",
                Some(&tok),
                Some(&body),
                ct,
            )
            .await;
        assert_eq!(s, status, "{what}: {v}");
        let (_, f) = error_of(&v);
        if let Some(field) = field {
            assert_eq!(f.as_deref(), Some(field), "{what}: {v}");
        }
    }
    assert_eq!(customers_count(db, &tok).await, 0, "nothing stored");
    // wrong types in query strings and paths
    let (s, v) = api.get("/api/v1/customers?limit=abc", &tok).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&v).1.as_deref(), Some("query"));
    let (s, v) = api.get("/api/v1/tickets?status=bogus", &tok).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api.get("/api/v1/customers?bogus=1", &tok).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown query parameter: {v}"
    );
}

async fn injection_strings_are_data_not_sql(db: &TestDb) {
    db.tenant("acme").await;
    db.tenant("other").await;
    let tok = db.login("acme", "agent1").await;
    let other = db.login("other", "agent1").await;
    let api = db.api();
    let evil = "Robert'); DROP TABLE customers;-- \" OR 1=1 --";
    let (s, c) = api
        .post(
            "/api/v1/customers",
            &tok,
            json!({"name": evil, "company": "' OR ''='"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["name"], evil);
    let (s, q) = api
        .get("/api/v1/customers?q=%27%20OR%201%3D1%20--", &tok)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(q["items"].as_array().unwrap().len(), 0);
    let (s, q) = api.get("/api/v1/customers?q=robert%27)", &tok).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(q["items"].as_array().unwrap().len(), 1);
    // the other tenant sees nothing, whatever it sends
    let (_, q) = api.get("/api/v1/customers?q=%25", &other).await;
    assert_eq!(q["items"].as_array().unwrap().len(), 0);
    let (s, v) = api.get("/api/v1/customers/1'%20OR%20'1'='1", &tok).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/auth/login",
            &tok,
            json!({"username": "admin' --", "password": "x' OR '1'='1"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = api
        .put(
            "/api/v1/routing/queues/x';DROP%20TABLE%20tenants;--",
            &db.login("acme", "admin").await,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(customers_count(db, &tok).await, 1);
}

async fn unknown_routes_and_ids_are_json_404(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    for path in [
        "/api/v1/nope",
        "/api/v1/customers/0190a1b2-0000-7000-8000-000000000000",
        "/api/v1/tickets/nope",
    ] {
        let (s, v) = api.get(path, &tok).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_of(&v).0, "not_found");
    }
}

async fn request_id_is_generated_and_echoed(db: &TestDb) {
    let api = db.api();
    let (s, v, h) = api.call(Method::GET, "/api/v1/auth/me", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&v).0, "unauthenticated");
    assert!(h.get("x-request-id").is_some());
    let req = axum::http::Request::builder()
        .uri("/api/v1/auth/me")
        .header("x-request-id", "abc-123")
        .body(axum::body::Body::empty())
        .unwrap();
    let (_, _, h) = api.send(req).await;
    assert_eq!(h.get("x-request-id").unwrap(), "abc-123");
}
