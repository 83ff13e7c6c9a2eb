//! Logins, sessions (cookie and bearer), logout, session expiry, the login rate limit (on a
//! fake clock), API keys with scopes, and service providers limited to released queues.
#![allow(clippy::unwrap_used)]

mod common;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::Duration;
use common::{TestDb, error_of};
use serde_json::json;

both_backends!(
    login_gives_cookie_and_bearer_and_logout_ends_both,
    sessions_expire,
    failed_logins_are_rate_limited_per_user_and_address,
    api_keys_have_exactly_their_scopes,
    service_provider_users_see_only_released_queues_and_functions,
    ambiguous_username_needs_tenant,
    totp_second_factor,
);

async fn totp_second_factor(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    let (s, setup) = api.post("/api/v1/auth/totp/setup", &tok, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{setup}");
    let secret = setup["secret"].as_str().unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    let now = u64::try_from(db.clock_now().timestamp()).unwrap();
    let code = totp.generate(now).to_string();
    let wrong = totp.generate(now + 3600).to_string();
    let (s, e) = api
        .post(
            "/api/v1/auth/totp/enable",
            &tok,
            json!({"secret": secret, "code": wrong}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&e).1.as_deref(), Some("code"));
    let (s, _) = api
        .post(
            "/api/v1/auth/totp/enable",
            &tok,
            json!({"secret": secret, "code": code}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let login = |totp: Option<String>| json!({"username": "agent1", "password": "password-agent1", "totp": totp});
    let (s, v, _) = api
        .call(Method::POST, "/api/v1/auth/login", None, Some(login(None)))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_of(&v).1.as_deref(), Some("totp"));
    let (s, _, _) = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(login(Some(wrong))),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    db.clock.advance(Duration::seconds(30));
    let later = totp.generate(now + 30).to_string();
    let (s, v, _) = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(login(Some(later))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn login_gives_cookie_and_bearer_and_logout_ends_both(db: &TestDb) {
    db.tenant("acme").await;
    let api = db.api();
    let (s, v, h) = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "agent1", "password": "password-agent1"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cookie = h
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let token = v["token"].as_str().unwrap();
    assert!(cookie.starts_with(&format!("zentrale_session={token};")));
    assert_eq!(v["me"]["role"], "agent");
    assert_eq!(v["me"]["agent"], "1001");
    let with_cookie = || {
        Request::builder()
            .uri("/api/v1/auth/me")
            .header(
                header::COOKIE,
                format!("theme=dark; zentrale_session={token}"),
            )
            .body(Body::empty())
            .unwrap()
    };
    let (s, me, _) = api.send(with_cookie()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["actor"], "agent1");
    let (s, _) = api.get("/api/v1/auth/me", token).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, h) = api
        .call(Method::POST, "/api/v1/auth/logout", Some(token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(
        h.get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (s, _) = api.get("/api/v1/auth/me", token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = api.send(with_cookie()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v, _) = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "agent1", "password": "wrong-password"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&v).0, "unauthenticated");
    let (s, _) = api.get("/api/v1/auth/me", "garbage-token").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn sessions_expire(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    db.clock
        .advance(crm_api::auth::SESSION_TTL - Duration::seconds(1));
    assert_eq!(api.get("/api/v1/auth/me", &tok).await.0, StatusCode::OK);
    db.clock.advance(Duration::seconds(2));
    assert_eq!(
        api.get("/api/v1/auth/me", &tok).await.0,
        StatusCode::UNAUTHORIZED
    );
}

async fn failed_logins_are_rate_limited_per_user_and_address(db: &TestDb) {
    db.tenant("acme").await;
    let api = db.api();
    let attempt = |user: &str, pw: &str| json!({"username": user, "password": pw});
    for _ in 0..crm_api::auth::LOGIN_MAX_FAILURES {
        let (s, _, _) = api
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(attempt("agent1", "nope-nope")),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // now even the right password is refused, with Retry-After
    let (s, v, h) = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(attempt("agent1", "password-agent1")),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(error_of(&v).0, "rate_limited");
    assert!(h.get(header::RETRY_AFTER).is_some());
    // another user from the same address is not affected
    let (s, _, _) = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(attempt("agent2", "password-agent2")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // after the window it works again
    db.clock
        .advance(crm_api::auth::LOGIN_WINDOW + Duration::seconds(1));
    let (s, _, _) = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(attempt("agent1", "password-agent1")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

async fn api_keys_have_exactly_their_scopes(db: &TestDb) {
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let agent = db.login("acme", "agent1").await;
    let api = db.api();
    let (s, _) = api
        .post(
            "/api/v1/api-keys",
            &agent,
            json!({"name": "crm-sync", "scopes": ["customers:read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = api
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "crm-sync", "scopes": ["customers:everything"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&e).1.as_deref(), Some("scopes[0]"));
    let (s, k) = api
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "crm-sync", "scopes": ["customers:read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let key = k["key"].as_str().unwrap();
    assert!(key.starts_with("zk_"));
    assert_eq!(api.get("/api/v1/customers", key).await.0, StatusCode::OK);
    assert_eq!(
        api.post("/api/v1/customers", key, json!({"name": "X"}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get("/api/v1/routing/queues", key).await.0,
        StatusCode::FORBIDDEN
    );
    let (_, list) = api.get("/api/v1/api-keys", &admin).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("key").is_none(), "secret is shown once only");
    let id = k["id"].as_str().unwrap();
    assert_eq!(
        api.delete(&format!("/api/v1/api-keys/{id}"), &admin)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get("/api/v1/customers", key).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, audit) = api.get("/api/v1/audit", &admin).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["entity"] == "api_key")
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "revoke"]);
}

async fn service_provider_users_see_only_released_queues_and_functions(db: &TestDb) {
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let api = db.api();
    for q in ["support", "sales"] {
        let (s, v) = api
            .put(&format!("/api/v1/routing/queues/{q}"), &admin, json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, e) = api.post("/api/v1/service-providers", &admin, json!({"name": "CallCo", "released_queues": ["support"], "released_functions": ["customers", "admin"]})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&e).1.as_deref(), Some("released_functions[1]"));
    let (s, sp) = api.post("/api/v1/service-providers", &admin, json!({"name": "CallCo", "released_queues": ["support"], "released_functions": ["customers", "routing"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{sp}");
    let (s, u) = api.post("/api/v1/users", &admin, json!({"username": "cc1", "display_name": "CallCo 1", "password": "password-cc1", "role": "supervisor", "provider_id": sp["id"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let cc = db.login("acme", "cc1").await;
    let (_, queues) = api.get("/api/v1/routing/queues", &cc).await;
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["support"]);
    assert_eq!(
        api.get("/api/v1/routing/queues/sales", &cc).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/api/v1/routing/agents", &cc)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(api.get("/api/v1/customers", &cc).await.0, StatusCode::OK);
    // supervisor role, but tickets/reports/audit were not released
    assert_eq!(
        api.get("/api/v1/tickets", &cc).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(api.get("/api/v1/cdrs", &cc).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.get("/api/v1/audit", &cc).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        api.get("/api/v1/routing", &cc).await.0,
        StatusCode::FORBIDDEN
    );
    // timeline items of unreleased queues are hidden
    let (_, c) = api
        .post("/api/v1/customers", &admin, json!({"name": "K"}))
        .await;
    let cid = c["id"].as_str().unwrap();
    for q in ["support", "sales"] {
        let (s, v) = api
            .post(
                &format!("/api/v1/customers/{cid}/timeline"),
                &admin,
                json!({"kind": "chat", "queue": q, "body": q}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (_, tl) = api
        .get(&format!("/api/v1/customers/{cid}/timeline"), &cc)
        .await;
    let qs: Vec<&str> = tl["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["queue"].as_str().unwrap())
        .collect();
    assert_eq!(qs, ["support"]);
    let (s, _) = api
        .post(
            &format!("/api/v1/customers/{cid}/timeline"),
            &cc,
            json!({"kind": "chat", "queue": "sales", "body": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn ambiguous_username_needs_tenant(db: &TestDb) {
    db.tenant("acme").await;
    db.tenant("other").await;
    let api = db.api();
    let (s, v, _) = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": "password-admin"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_of(&v).1.as_deref(), Some("tenant"));
    let tok = db.login("other", "admin").await;
    let (_, me) = api.get("/api/v1/auth/me", &tok).await;
    let t = db.store.tenant_by_slug("other").await.unwrap().unwrap();
    assert_eq!(me["tenant"], t.id);
}
