//! Routing administration: CRUD with whole-model validation, refusal of dangling references,
//! the audit log with before/after, live publication of the new `acd_core::RoutingConfig`
//! (accepted by the engine), and provisioning from the same TOML the simulator reads.
#![allow(clippy::unwrap_used)]

mod common;
use axum::http::StatusCode;
use common::{TestDb, error_of};
use serde_json::json;

both_backends!(
    queues_skills_agents_crud_with_validation,
    referenced_objects_cannot_be_deleted,
    telephony_objects_are_validated,
    changes_are_audited_with_before_and_after,
    changes_are_published_live_and_accepted_by_the_engine,
    provisioning_applies_the_simulator_format_and_rejects_bad_files,
    concurrent_changes_all_land,
);

async fn queues_skills_agents_crud_with_validation(db: &TestDb) {
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let api = db.api();
    assert_eq!(
        api.put(
            "/api/v1/routing/skills/german",
            &admin,
            json!({"name": "Deutsch"})
        )
        .await
        .0,
        StatusCode::OK
    );
    let (s, q) = api
        .put("/api/v1/routing/queues/support", &admin, json!({
            "strategy": "ring_all", "skills": "german >= 2", "wrap_up_s": 15,
            "escalation": [{"after_s": 60, "action": {"relax_proficiency": 1}}, {"after_s": 300, "action": "voicemail"}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["body"]["strategy"], "ring_all");
    let (s, a) = api
        .put("/api/v1/routing/agents/1001", &admin, json!({"skills": {"german": 4}, "queues": ["support"], "capacity": {"voice": 1, "chat": 3}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let (_, got) = api.get("/api/v1/routing/agents/1001", &admin).await;
    assert_eq!(got["body"]["skills"]["german"], 4);
    let cases = [
        (
            "/api/v1/routing/queues/q2",
            json!({"strategy": "fastest_fingers"}),
            "strategy",
        ),
        (
            "/api/v1/routing/queues/q2",
            json!({"stratgy": "ring_all"}),
            "stratgy",
        ),
        (
            "/api/v1/routing/queues/q2",
            json!({"skills": "klingon >= 2"}),
            "queues.q2.skills",
        ),
        (
            "/api/v1/routing/queues/q2",
            json!({"wrap_up_s": "long"}),
            "wrap_up_s",
        ),
        (
            "/api/v1/routing/agents/1002",
            json!({"skills": {"klingon": 3}}),
            "agents.1002.skills",
        ),
        (
            "/api/v1/routing/agents/1002",
            json!({"queues": ["nope"]}),
            "agents.1002.queues",
        ),
        ("/api/v1/routing/queues/bad%20name", json!({}), "name"),
    ];
    for (path, body, field) in cases {
        let (s, e) = api.put(path, &admin, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {e}");
        let f = error_of(&e).1.unwrap_or_default();
        assert!(
            f.starts_with(field),
            "{path} {body}: field {f}, want {field}: {e}"
        );
    }
    assert_eq!(
        api.get("/api/v1/routing/queues/q2", &admin).await.0,
        StatusCode::NOT_FOUND,
        "nothing stored"
    );
    assert_eq!(
        api.get("/api/v1/routing/nonsense", &admin).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, all) = api.get("/api/v1/routing", &admin).await;
    assert_eq!(all["queues"]["support"]["wrap_up_s"], 15);
    assert_eq!(
        api.delete("/api/v1/routing/agents/1001", &admin).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/api/v1/routing/agents/1001", &admin).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn referenced_objects_cannot_be_deleted(db: &TestDb) {
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let api = db.api();
    api.put("/api/v1/routing/skills/german", &admin, json!({}))
        .await;
    api.put(
        "/api/v1/routing/queues/support",
        &admin,
        json!({"skills": "german >= 1"}),
    )
    .await;
    let (s, e) = api.delete("/api/v1/routing/skills/german", &admin).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(error_of(&e).1.as_deref(), Some("queues.support.skills"));
    assert_eq!(
        api.get("/api/v1/routing/skills/german", &admin).await.0,
        StatusCode::OK,
        "still there"
    );
    api.put(
        "/api/v1/routing/wrapup_codes/solved",
        &admin,
        json!({"label": "Solved", "queues": ["support"]}),
    )
    .await;
    let (s, e) = api.delete("/api/v1/routing/queues/support", &admin).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&e).1.as_deref(),
        Some("wrapup_codes.solved.queues[0]")
    );
}

async fn telephony_objects_are_validated(db: &TestDb) {
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let api = db.api();
    api.put("/api/v1/routing/queues/support", &admin, json!({}))
        .await;
    let (s, v) = api.put("/api/v1/routing/trunks/carrier1", &admin, json!({"host": "sip.carrier.example", "register": true, "username": "u", "password": "p"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api.put("/api/v1/routing/ivr_menus/main", &admin, json!({"prompt": "welcome.wav", "options": {"1": {"queue": "support"}, "9": "voicemail"}, "default": {"queue": "support"}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .put(
            "/api/v1/routing/dids/+4930123456",
            &admin,
            json!({"trunk": "carrier1", "target": {"menu": "main"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cases = [
        (
            "/api/v1/routing/dids/030123",
            json!({"target": "hangup"}),
            "name",
        ),
        (
            "/api/v1/routing/dids/+4930999",
            json!({"trunk": "nope", "target": "hangup"}),
            "dids.+4930999.trunk",
        ),
        (
            "/api/v1/routing/dids/+4930999",
            json!({"target": {"queue": "nope"}}),
            "dids.+4930999.target",
        ),
        (
            "/api/v1/routing/ivr_menus/m2",
            json!({"prompt": "x", "options": {"x": "hangup"}, "default": "hangup"}),
            "ivr_menus.m2.options.x",
        ),
        (
            "/api/v1/routing/ivr_menus/m2",
            json!({"prompt": "x", "default": {"number": "12345"}}),
            "ivr_menus.m2.default",
        ),
        (
            "/api/v1/routing/trunks/t2",
            json!({"host": "h", "register": true}),
            "trunks.t2.username",
        ),
        (
            "/api/v1/routing/trunks/t2",
            json!({"host": "h", "port": 70000}),
            "port",
        ),
        ("/api/v1/routing/settings/other", json!({}), "name"),
    ];
    for (path, body, field) in cases {
        let (s, e) = api.put(path, &admin, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {e}");
        assert_eq!(error_of(&e).1.as_deref(), Some(field), "{path} {body}: {e}");
    }
    let (s, e) = api.delete("/api/v1/routing/ivr_menus/main", &admin).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "DID still points at the menu: {e}"
    );
}

async fn changes_are_audited_with_before_and_after(db: &TestDb) {
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let api = db.api();
    api.put(
        "/api/v1/routing/queues/support",
        &admin,
        json!({"wrap_up_s": 10}),
    )
    .await;
    api.put(
        "/api/v1/routing/queues/support",
        &admin,
        json!({"wrap_up_s": 20}),
    )
    .await;
    api.put(
        "/api/v1/routing/queues/support",
        &admin,
        json!({"wrap_up_s": "x"}),
    )
    .await; // refused: not audited
    api.delete("/api/v1/routing/queues/support", &admin).await;
    let (_, audit) = api.get("/api/v1/audit", &admin).await;
    let rows: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entity"] == "queues")
        .collect();
    assert_eq!(rows.len(), 3, "{audit}");
    assert_eq!(rows[0]["action"], "create");
    assert!(rows[0]["before"].is_null());
    assert_eq!(rows[1]["action"], "update");
    assert_eq!(rows[1]["before"]["wrap_up_s"], 10);
    assert_eq!(rows[1]["after"]["wrap_up_s"], 20);
    assert_eq!(rows[1]["actor"], "admin");
    assert_eq!(rows[1]["entity_id"], "support");
    assert_eq!(rows[2]["action"], "delete");
    assert!(rows[2]["after"].is_null());
    assert_eq!(rows[1]["at"], "2026-11-27T08:00:00Z");
}

async fn changes_are_published_live_and_accepted_by_the_engine(db: &TestDb) {
    let tenant = db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let api = db.api();
    let mut rx = db.state.subscribe_routing();
    let mut events = db.state.events().subscribe();
    api.put("/api/v1/routing/skills/german", &admin, json!({}))
        .await;
    api.put(
        "/api/v1/routing/queues/support",
        &admin,
        json!({"skills": "german >= 2"}),
    )
    .await;
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/1001",
            &admin,
            json!({"skills": {"german": 3}, "queues": ["support"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    api.put(
        "/api/v1/routing/agents/1001",
        &admin,
        json!({"skills": {"nope": 3}}),
    )
    .await; // refused: not published
    let mut last = None;
    while let Ok(u) = rx.try_recv() {
        assert_eq!(u.tenant, tenant);
        last = Some(u);
    }
    let u = last.expect("published");
    assert_eq!(u.version, 3);
    let cfg = (*u.config).clone();
    assert_eq!(cfg, db.state.routing_config(tenant).await.unwrap());
    assert!(cfg.agents.contains_key(&acd_core::AgentId::new("1001")));
    let engine = acd_core::Engine::new(cfg, 7).expect("engine accepts the published config");
    assert!(
        engine
            .config()
            .queues
            .contains_key(&acd_core::QueueId::new("support"))
    );
    let mut changed = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e.event, crm_api::events::Event::RoutingChanged { .. }) {
            changed += 1;
        }
    }
    assert_eq!(changed, 3);
}

async fn provisioning_applies_the_simulator_format_and_rejects_bad_files(db: &TestDb) {
    let tenant = db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let api = db.api();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut applied = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // only routing files (the binary's zentrale.toml is another format)
        let Ok(expected) = acd_core::RoutingConfig::load(&text, "x") else {
            continue;
        };
        let model = crm_api::provision::apply(&db.store, tenant, &text)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut expected = expected;
        expected.simulation = None;
        assert_eq!(model.routing_config(), expected, "{}", path.display());
        assert_eq!(
            db.state.routing_config(tenant).await.unwrap(),
            expected,
            "{}",
            path.display()
        );
        applied += 1;
    }
    assert!(applied >= 2, "the repo's routing examples were provisioned");
    let good = r#"
[skills.german]
[queues.support]
skills = "german >= 1"
[agents.1001]
skills = { german = 2 }
queues = ["support"]
[trunks.carrier]
host = "sip.example.net"
[dids."+4930123456"]
trunk = "carrier"
target = { queue = "support" }
[wrapup_codes.ok]
label = "OK"
[simulation]
whatever = 1
"#;
    let m = db.state.provision(tenant, good).await.unwrap();
    assert_eq!(m.dids.len(), 1);
    let (_, dids) = api.get("/api/v1/routing/dids", &admin).await;
    assert_eq!(dids[0]["name"], "+4930123456");
    let (_, queues) = api.get("/api/v1/routing/queues", &admin).await;
    assert_eq!(
        queues.as_array().unwrap().len(),
        1,
        "the file is the whole model: old queues are gone"
    );
    let bad_syntax = "[queues.support]\nstrategy = \"ring_all\"\nwrap_up_s = \"ten\"\n";
    match crm_api::provision::apply(&db.store, tenant, bad_syntax).await {
        Err(crm_api::provision::ProvisionError::Parse { line, message, .. }) => {
            assert_eq!(line, 3, "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let bad_ref = "[queues.support]\n[dids.\"+4930123456\"]\ntarget = { queue = \"sales\" }\n";
    let e = crm_api::provision::apply(&db.store, tenant, bad_ref)
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("dids.+4930123456.target"));
    assert_eq!(
        db.state.routing_config(tenant).await.unwrap(),
        m.routing_config(),
        "failed files change nothing"
    );
    let (_, audit) = api.get("/api/v1/audit?limit=200", &admin).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "provision" && r["actor"] == "provision")
    );
}

async fn concurrent_changes_all_land(db: &TestDb) {
    let tenant = db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let api = db.api();
    api.put("/api/v1/routing/queues/support", &admin, json!({}))
        .await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let router = api.router.clone();
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let api = common::Api { router };
            api.put(
                &format!("/api/v1/routing/agents/a{i}"),
                &admin,
                json!({"queues": ["support"]}),
            )
            .await
            .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let cfg = db.state.routing_config(tenant).await.unwrap();
    assert_eq!(cfg.agents.len(), 12);
}
