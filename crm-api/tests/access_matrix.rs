//! The access matrix: every endpoint, called by every kind of principal — admin, supervisor,
//! agent, a read-only API key, nobody, and the admin of another tenant — is allowed exactly
//! where the role/scope table says, and never reaches another tenant's data.
#![allow(clippy::unwrap_used)]

mod common;
use axum::http::{Method, StatusCode};
use common::TestDb;
use serde_json::{Value, json};

both_backends!(every_endpoint_denies_beyond_role_and_cross_tenant);

struct Ep {
    method: Method,
    path: String,
    body: Option<Value>,
    /// allowed for [admin, supervisor, agent, api key with customers:read]
    allowed: [bool; 4],
}

fn ep(method: Method, path: impl Into<String>, body: Option<Value>, allowed: [bool; 4]) -> Ep {
    Ep {
        method,
        path: path.into(),
        body,
        allowed,
    }
}

async fn every_endpoint_denies_beyond_role_and_cross_tenant(db: &TestDb) {
    db.tenant("acme").await;
    db.tenant("other").await;
    let admin = db.login("acme", "admin").await;
    let sup = db.login("acme", "super").await;
    let agent = db.login("acme", "agent1").await;
    let other_admin = db.login("other", "admin").await;
    let api = db.api();
    let (_, k) = api
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "ro", "scopes": ["customers:read"]}),
        )
        .await;
    let key = k["key"].as_str().unwrap().to_owned();
    let kid = k["id"].as_str().unwrap().to_owned();
    let (s, v) = api
        .put("/api/v1/routing/skills/temp", &admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .put("/api/v1/routing/queues/support", &admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/1001",
            &admin,
            json!({"queues": ["support"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, c) = api.post("/api/v1/customers", &agent, json!({"name": "Acme customer", "identities": [{"kind": "phone", "value": "+4930777"}]})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    let (_, dup) = api
        .post("/api/v1/customers", &agent, json!({"name": "dup"}))
        .await;
    let dup = dup["id"].as_str().unwrap().to_owned();
    let (_, t) = api
        .post(
            "/api/v1/tickets",
            &agent,
            json!({"customer_id": cid, "subject": "S"}),
        )
        .await;
    let tid = t["id"].as_str().unwrap().to_owned();
    let (_, users) = api.get("/api/v1/users", &admin).await;
    let uid = |name: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (uid1, uid2) = (uid("agent1"), uid("agent2"));
    let mut pids = Vec::new();
    for name in ["Partner", "Partner2"] {
        let (s, sp) = api
            .post(
                "/api/v1/service-providers",
                &admin,
                json!({"name": name, "released_queues": ["support"], "released_functions": ["customers"]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{sp}");
        pids.push(sp["id"].as_str().unwrap().to_owned());
    }
    let (pid, pid2) = (pids[0].clone(), pids[1].clone());

    let (y, n) = (true, false);
    let eps = vec![
        ep(Method::GET, "/api/v1/auth/me", None, [y, y, y, y]),
        ep(Method::POST, "/api/v1/auth/totp/setup", None, [y, y, y, n]),
        ep(Method::GET, "/api/v1/users", None, [y, n, n, n]),
        ep(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"username": "newbie", "display_name": "N", "password": "password-newbie", "role": "agent"}),
            ),
            [y, n, n, n],
        ),
        ep(Method::GET, "/api/v1/api-keys", None, [y, n, n, n]),
        ep(
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "k2", "scopes": ["events"]})),
            [y, n, n, n],
        ),
        ep(Method::GET, "/api/v1/service-providers", None, [y, n, n, n]),
        ep(
            Method::POST,
            "/api/v1/service-providers",
            Some(json!({"name": "P", "released_queues": [], "released_functions": []})),
            [y, n, n, n],
        ),
        ep(
            Method::PATCH,
            format!("/api/v1/users/{uid2}"),
            Some(json!({"display_name": "Agent Two", "role": "supervisor"})),
            [y, n, n, n],
        ),
        ep(
            Method::DELETE,
            format!("/api/v1/users/{uid2}"),
            None,
            [y, n, n, n],
        ),
        ep(
            Method::PATCH,
            format!("/api/v1/service-providers/{pid}"),
            Some(json!({"released_functions": ["customers", "tickets"]})),
            [y, n, n, n],
        ),
        ep(
            Method::DELETE,
            format!("/api/v1/service-providers/{pid}"),
            None,
            [y, n, n, n],
        ),
        ep(Method::GET, "/api/v1/custom-fields", None, [y, y, y, y]),
        ep(
            Method::POST,
            "/api/v1/custom-fields",
            Some(json!({"key": "f1", "label": "F", "kind": "text"})),
            [y, n, n, n],
        ),
        ep(Method::GET, "/api/v1/customers", None, [y, y, y, y]),
        ep(
            Method::POST,
            "/api/v1/customers",
            Some(json!({"name": "X"})),
            [y, y, y, n],
        ),
        ep(
            Method::GET,
            format!("/api/v1/customers/{cid}"),
            None,
            [y, y, y, y],
        ),
        ep(
            Method::PATCH,
            format!("/api/v1/customers/{cid}"),
            Some(json!({"company": "Acme"})),
            [y, y, y, n],
        ),
        ep(
            Method::GET,
            "/api/v1/customers/lookup?phone=%2B4930777",
            None,
            [y, y, y, y],
        ),
        ep(
            Method::GET,
            format!("/api/v1/customers/{cid}/timeline"),
            None,
            [y, y, y, y],
        ),
        ep(
            Method::POST,
            format!("/api/v1/customers/{cid}/timeline"),
            Some(json!({"kind": "note", "body": "n"})),
            [y, y, y, n],
        ),
        ep(
            Method::POST,
            format!("/api/v1/customers/{cid}/merge"),
            Some(json!({"duplicate_id": dup})),
            [y, y, y, n],
        ),
        ep(Method::GET, "/api/v1/tickets", None, [y, y, y, n]),
        ep(
            Method::POST,
            "/api/v1/tickets",
            Some(json!({"customer_id": cid, "subject": "T"})),
            [y, y, y, n],
        ),
        ep(
            Method::GET,
            format!("/api/v1/tickets/{tid}"),
            None,
            [y, y, y, n],
        ),
        ep(
            Method::PATCH,
            format!("/api/v1/tickets/{tid}"),
            Some(json!({"status": "pending"})),
            [y, y, y, n],
        ),
        ep(Method::GET, "/api/v1/cdrs", None, [y, y, n, n]),
        ep(Method::GET, "/api/v1/routing", None, [y, y, n, n]),
        ep(Method::GET, "/api/v1/routing/queues", None, [y, y, n, n]),
        ep(
            Method::GET,
            "/api/v1/routing/queues/support",
            None,
            [y, y, n, n],
        ),
        ep(
            Method::PUT,
            "/api/v1/routing/queues/support",
            Some(json!({"wrap_up_s": 5})),
            [y, n, n, n],
        ),
        ep(
            Method::DELETE,
            "/api/v1/routing/skills/temp",
            None,
            [y, n, n, n],
        ),
        ep(
            Method::PUT,
            "/api/v1/routing/agents/1001/sip",
            Some(json!({"password": "matrix-secret-1"})),
            [y, n, n, n],
        ),
        ep(
            Method::GET,
            "/api/v1/routing/agents/1001/sip",
            None,
            [y, y, n, n],
        ),
        ep(
            Method::DELETE,
            "/api/v1/routing/agents/1001/sip",
            None,
            [y, n, n, n],
        ),
        ep(Method::GET, "/api/v1/audit", None, [y, y, n, n]),
        ep(
            Method::DELETE,
            format!("/api/v1/api-keys/{kid}"),
            None,
            [y, n, n, n],
        ),
    ];
    let who = [
        ("admin", &admin),
        ("supervisor", &sup),
        ("agent", &agent),
        ("api key", &key),
    ];
    // Denied callers go first so that the allowed call (which may change state) comes last.
    for e in &eps {
        for i in [3, 2, 1, 0] {
            let (name, tok) = who[i];
            let (s, v, _) = api
                .call(e.method.clone(), &e.path, Some(tok), e.body.clone())
                .await;
            if e.allowed[i] {
                // allowed: not refused (a repeated state change may legitimately answer 422)
                assert!(
                    s.is_success() || s == StatusCode::UNPROCESSABLE_ENTITY,
                    "{name} must be allowed {} {}: {s} {v}",
                    e.method,
                    e.path
                );
            } else {
                assert_eq!(
                    s,
                    StatusCode::FORBIDDEN,
                    "{name} must be denied {} {}: {v}",
                    e.method,
                    e.path
                );
            }
        }
        let (s, _, _) = api
            .call(e.method.clone(), &e.path, None, e.body.clone())
            .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "anonymous {} {}",
            e.method,
            e.path
        );
    }

    // Another tenant's admin (all rights in its own tenant) never reaches acme's data: ids are
    // "not found", lists are its own, changes touch nothing.
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/1001/sip",
            &admin,
            json!({"password": "matrix-secret-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, c2) = api
        .post(
            "/api/v1/customers",
            &other_admin,
            json!({"name": "Other's"}),
        )
        .await;
    let c2 = c2["id"].as_str().unwrap().to_owned();
    for (m, path, body) in [
        (Method::GET, format!("/api/v1/customers/{cid}"), None),
        (
            Method::PATCH,
            format!("/api/v1/customers/{cid}"),
            Some(json!({"name": "pwned"})),
        ),
        (
            Method::GET,
            format!("/api/v1/customers/{cid}/timeline"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/customers/{cid}/timeline"),
            Some(json!({"kind": "note", "body": "x"})),
        ),
        (
            Method::POST,
            format!("/api/v1/customers/{cid}/merge"),
            Some(json!({"duplicate_id": c2})),
        ),
        (Method::GET, format!("/api/v1/tickets/{tid}"), None),
        (
            Method::PATCH,
            format!("/api/v1/tickets/{tid}"),
            Some(json!({"status": "solved"})),
        ),
        (
            Method::GET,
            "/api/v1/customers/lookup?phone=%2B4930777".to_owned(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/routing/queues/support".to_owned(),
            None,
        ),
        (Method::DELETE, format!("/api/v1/api-keys/{kid}"), None),
        (
            Method::GET,
            "/api/v1/routing/agents/1001/sip".to_owned(),
            None,
        ),
        (
            Method::PUT,
            "/api/v1/routing/agents/1001/sip".to_owned(),
            Some(json!({"password": "takeover-attempt"})),
        ),
        (
            Method::DELETE,
            "/api/v1/routing/agents/1001/sip".to_owned(),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{uid1}"),
            Some(json!({"role": "admin", "active": false})),
        ),
        (Method::DELETE, format!("/api/v1/users/{uid1}"), None),
        (
            Method::PATCH,
            format!("/api/v1/service-providers/{pid2}"),
            Some(json!({"released_functions": ["customers", "tickets", "reports"]})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/service-providers/{pid2}"),
            None,
        ),
    ] {
        let (s, v, _) = api.call(m.clone(), &path, Some(&other_admin), body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "other tenant {m} {path}: {v}");
    }
    let (s, v) = api
        .post(
            &format!("/api/v1/customers/{c2}/merge"),
            &other_admin,
            json!({"duplicate_id": cid}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "cross-tenant merge: {v}"
    );
    let (s, v) = api
        .post(
            "/api/v1/tickets",
            &other_admin,
            json!({"customer_id": cid, "subject": "x"}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ticket for a foreign customer: {v}"
    );
    for path in [
        "/api/v1/customers",
        "/api/v1/tickets",
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/audit",
        "/api/v1/cdrs",
        "/api/v1/routing/queues",
        "/api/v1/custom-fields",
        "/api/v1/service-providers",
    ] {
        let (s, v) = api.get(path, &other_admin).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        let text = v.to_string();
        for secret in [
            cid.as_str(),
            tid.as_str(),
            "Acme customer",
            "support",
            "newbie",
            "\"ro\"",
            "\"f1\"",
        ] {
            assert!(
                !text.contains(secret),
                "{path} leaks `{secret}` to another tenant: {text}"
            );
        }
    }
    let (s, sip) = api.get("/api/v1/routing/agents/1001/sip", &admin).await;
    assert_eq!(s, StatusCode::OK, "acme's SIP credentials untouched: {sip}");
    let (_, still) = api.get(&format!("/api/v1/customers/{cid}"), &admin).await;
    assert_eq!(still["name"], "Acme customer");
    let (s, me) = api.get("/api/v1/auth/me", &agent).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "agent1 untouched by the other tenant: {me}"
    );
    assert_eq!(me["role"], "agent");
    let (_, sps) = api.get("/api/v1/service-providers", &admin).await;
    let sp2 = sps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == pid2.as_str())
        .unwrap_or_else(|| panic!("Partner2 still there: {sps}"));
    assert_eq!(sp2["released_functions"], json!(["customers"]));
}
