//! Agents' SIP credentials through the API: stored as digest HA1 for the tenant's realm,
//! validated (the error names the field), unique extensions per node, denied across tenants
//! and to non-admins, audited and published without the secret. Plus the CDR batch writes
//! (many rows in one transaction, wrap-up times recorded afterwards, new columns round trip).
#![allow(clippy::unwrap_used)]

mod common;
use axum::http::StatusCode;
use chrono::Duration;
use common::{TestDb, error_of};
use crm_api::customers::{CdrRecord, CdrWrapUp};
use crm_api::ids::TenantId;
use crm_api::sip_credentials::{Ha1, load_credentials};
use serde_json::json;

both_backends!(
    admin_sets_a_sip_password_stored_only_as_ha1_of_the_tenant_realm,
    bad_input_names_the_field,
    other_tenants_and_non_admins_are_denied_and_extensions_are_unique_per_node,
    audit_and_responses_never_carry_the_secret,
    many_cdrs_land_in_one_batch_and_wrap_up_times_follow,
);

const PASSWORD: &str = "correct horse 1001";

/// A tenant with queue `support`, agents `1001` and `sales-anna` (a non-numeric id).
async fn tenant_with_agents(db: &TestDb, slug: &str) -> (TenantId, String) {
    let t = db.tenant(slug).await;
    let admin = db.login(slug, "admin").await;
    let api = db.api();
    let (s, v) = api
        .put("/api/v1/routing/queues/support", &admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for agent in ["1001", "sales-anna"] {
        let (s, v) = api
            .put(
                &format!("/api/v1/routing/agents/{agent}"),
                &admin,
                json!({"queues": ["support"]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    (t, admin)
}

async fn admin_sets_a_sip_password_stored_only_as_ha1_of_the_tenant_realm(db: &TestDb) {
    let (tenant, admin) = tenant_with_agents(db, "acme").await;
    let api = db.api();
    let mut updates = db.state.subscribe_routing();
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/1001/sip",
            &admin,
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["extension"], "1001", "defaults to the numeric agent id");
    assert_eq!(v["realm"], "acme.zentrale");
    let (s, got) = api.get("/api/v1/routing/agents/1001/sip", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["extension"], "1001");
    // A non-numeric agent names its extension.
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/sales-anna/sip",
            &admin,
            json!({"password": "anna-secret-pw", "extension": "2042"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["extension"], "2042");

    let stored = load_credentials(&db.store, tenant).await.unwrap();
    assert_eq!(stored.len(), 2);
    let c = stored.iter().find(|c| c.agent == "1001").unwrap();
    assert_eq!(c.realm, "acme.zentrale");
    assert_eq!(c.ha1, Ha1::derive("1001", "acme.zentrale", PASSWORD));

    // Published live, with the credentials, for the gateway.
    let mut last = None;
    while let Ok(u) = updates.try_recv() {
        last = Some(u);
    }
    let last = last.expect("the change was published");
    assert_eq!(last.tenant, tenant);
    assert_eq!(last.sip.len(), 2);
    assert!(last.sip.iter().any(|c| c.extension == "2042"));

    // A new password alone keeps a chosen extension.
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/sales-anna/sip",
            &admin,
            json!({"password": "anna-secret-pw-2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["extension"], "2042");
    // The endpoints are in the OpenAPI document.
    let doc = serde_json::to_string(&crm_api::openapi()).unwrap();
    assert!(doc.contains("/api/v1/routing/agents/{agent}/sip"));
    assert!(doc.contains("SetSipCredentials") && doc.contains("SipCredentialsInfo"));

    // A new password replaces the hashes; a routing change republishes them too.
    let (s, _) = api
        .put(
            "/api/v1/routing/agents/1001/sip",
            &admin,
            json!({"password": "another-password"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let stored = load_credentials(&db.store, tenant).await.unwrap();
    let c = stored.iter().find(|c| c.agent == "1001").unwrap();
    assert_eq!(
        c.ha1,
        Ha1::derive("1001", "acme.zentrale", "another-password")
    );
    let (s, _) = api
        .put(
            "/api/v1/routing/skills/german",
            &admin,
            json!({"name": "Deutsch"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut last = None;
    while let Ok(u) = updates.try_recv() {
        last = Some(u);
    }
    assert_eq!(last.unwrap().sip.len(), 2);

    // Removal.
    let (s, _) = api.delete("/api/v1/routing/agents/1001/sip", &admin).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.get("/api/v1/routing/agents/1001/sip", &admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(load_credentials(&db.store, tenant).await.unwrap().len(), 1);

    // Deleting the agent removes its credentials and frees its extension.
    let (s, v) = api
        .delete("/api/v1/routing/agents/sales-anna", &admin)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert!(
        load_credentials(&db.store, tenant)
            .await
            .unwrap()
            .is_empty()
    );
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/1001/sip",
            &admin,
            json!({"password": PASSWORD, "extension": "2042"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "extension 2042 is free again: {v}");
    // Provisioning a model without the agent removes its credentials too.
    let file = "[queues.support]\n[agents.1002]\nqueues = [\"support\"]\n";
    crm_api::provision::apply(&db.store, tenant, file)
        .await
        .unwrap();
    assert!(
        load_credentials(&db.store, tenant)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn bad_input_names_the_field(db: &TestDb) {
    let (_, admin) = tenant_with_agents(db, "acme").await;
    let api = db.api();
    let cases = [
        ("1001", json!({"password": "short"}), "password"),
        ("1001", json!({"password": "x".repeat(200)}), "password"),
        ("1001", json!({"password": "tab\tinside-pw"}), "password"),
        ("1001", json!({}), "password"),
        ("1001", json!({"password": 12345678}), "password"),
        (
            "1001",
            json!({"password": PASSWORD, "extension": "1"}),
            "extension",
        ),
        (
            "1001",
            json!({"password": PASSWORD, "extension": "123456789"}),
            "extension",
        ),
        (
            "1001",
            json!({"password": PASSWORD, "extension": "10a1"}),
            "extension",
        ),
        (
            "1001",
            json!({"password": PASSWORD, "pasword": "x"}),
            "pasword",
        ),
        // A non-numeric agent id cannot be the extension.
        ("sales-anna", json!({"password": PASSWORD}), "extension"),
    ];
    for (agent, body, field) in cases {
        let (s, v) = api
            .put(
                &format!("/api/v1/routing/agents/{agent}/sip"),
                &admin,
                body.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(error_of(&v).1.as_deref(), Some(field), "{body}: {v}");
    }
    let (s, _) = api
        .put(
            "/api/v1/routing/agents/nobody/sip",
            &admin,
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an unknown agent");
    let (s, v, _) = api
        .raw(
            axum::http::Method::PUT,
            "/api/v1/routing/agents/1001/sip",
            Some(&admin),
            Some("{not json"),
            "application/json",
        )
        .await;
    assert_eq!(s.as_u16() / 100, 4, "{v}");
    error_of(&v);
}

async fn other_tenants_and_non_admins_are_denied_and_extensions_are_unique_per_node(db: &TestDb) {
    let (_, admin) = tenant_with_agents(db, "acme").await;
    let (_, other_admin) = tenant_with_agents(db, "other").await;
    let api = db.api();
    let (s, _) = api
        .put(
            "/api/v1/routing/agents/sales-anna/sip",
            &admin,
            json!({"password": PASSWORD, "extension": "3001"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // The other tenant's admin sees and changes only their own agent of that name.
    let (s, _) = api
        .get("/api/v1/routing/agents/sales-anna/sip", &other_admin)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The extension is taken on this node, whatever the tenant.
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/sales-anna/sip",
            &other_admin,
            json!({"password": PASSWORD, "extension": "3001"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_of(&v).1.as_deref(), Some("extension"));
    // ... also within a tenant.
    let (s, v) = api
        .put(
            "/api/v1/routing/agents/1001/sip",
            &admin,
            json!({"password": PASSWORD, "extension": "3001"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Supervisors read routing but do not set secrets; agents do neither.
    let sup = db.login("acme", "super").await;
    let (s, _) = api
        .put(
            "/api/v1/routing/agents/1001/sip",
            &sup,
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let agent = db.login("acme", "agent1").await;
    let (s, _) = api
        .get("/api/v1/routing/agents/sales-anna/sip", &agent)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api
        .delete("/api/v1/routing/agents/sales-anna/sip", &sup)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // No token at all.
    let (s, _, _) = api
        .call(
            axum::http::Method::GET,
            "/api/v1/routing/agents/sales-anna/sip",
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn audit_and_responses_never_carry_the_secret(db: &TestDb) {
    let (tenant, admin) = tenant_with_agents(db, "acme").await;
    let api = db.api();
    let (s, put) = api
        .put(
            "/api/v1/routing/agents/1001/sip",
            &admin,
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    api.put(
        "/api/v1/routing/agents/1001/sip",
        &admin,
        json!({"password": "second-password"}),
    )
    .await;
    let (_, get) = api.get("/api/v1/routing/agents/1001/sip", &admin).await;
    let (_, audit) = api.get("/api/v1/audit", &admin).await;
    let (_, routing) = api.get("/api/v1/routing", &admin).await;
    let ha1 = Ha1::derive("1001", "acme.zentrale", PASSWORD);
    let ha1b = Ha1::derive("1001", "acme.zentrale", "second-password");
    for text in [
        put.to_string(),
        get.to_string(),
        audit.to_string(),
        routing.to_string(),
    ] {
        for secret in [
            PASSWORD,
            "second-password",
            &ha1.md5,
            &ha1.sha256,
            &ha1b.md5,
            &ha1b.sha256,
        ] {
            assert!(!text.contains(secret), "secret leaked into {text}");
        }
    }
    let entries: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entity"] == "agent_sip")
        .collect();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(entries[0]["action"], "create");
    assert_eq!(entries[1]["action"], "update");
    assert_eq!(entries[1]["entity_id"], "1001");
    assert_eq!(entries[1]["after"]["extension"], "1001");
    assert_eq!(entries[1]["actor"], "admin");
    // Debug output of what the gateway receives is redacted too.
    let stored = load_credentials(&db.store, tenant).await.unwrap();
    assert!(!format!("{stored:?}").contains(&ha1b.md5));
}

fn cdr(tenant: TenantId, i: usize, now: chrono::DateTime<chrono::Utc>) -> CdrRecord {
    CdrRecord {
        tenant,
        contact_id: format!("c{i}"),
        leg: if i.is_multiple_of(2) {
            "caller"
        } else {
            "agent"
        }
        .into(),
        direction: "inbound".into(),
        started_at: now + Duration::milliseconds(i as i64),
        answered_at: Some(now + Duration::seconds(3)),
        ended_at: now + Duration::seconds(60),
        caller: "+4930555".into(),
        callee: "+4930123456".into(),
        result: "answered".into(),
        queue: Some("support".into()),
        agent: Some("1001".into()),
        wait_ms: 3000,
        talk_ms: 57_000,
        wrap_ms: 0,
        recording: Some(format!("recordings/c{i}.wav")),
        quality: json!({}),
        mos_x100: Some(412),
        recording_ms: Some(57_000),
        voicemail: None,
        transfer: (i == 999).then(|| "blind:1002".to_owned()),
    }
}

async fn many_cdrs_land_in_one_batch_and_wrap_up_times_follow(db: &TestDb) {
    let (tenant, admin) = tenant_with_agents(db, "acme").await;
    let api = db.api();
    let (_, customer) = api
        .post(
            "/api/v1/customers",
            &admin,
            json!({"name": "Caller", "identities": [{"kind": "phone", "value": "+4930555"}]}),
        )
        .await;
    let now = db.clock_now();
    let batch: Vec<CdrRecord> = (0..1000).map(|i| cdr(tenant, i, now)).collect();
    let customers = db.store.insert_cdrs(&batch).await.unwrap();
    assert_eq!(customers.len(), 1000);
    assert_eq!(
        customers.iter().filter(|c| c.is_some()).count(),
        500,
        "caller legs find the customer, agent legs do not"
    );
    let count: i64 = match db.store.backend() {
        crm_api::store::Backend::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM cdr")
            .fetch_one(p)
            .await
            .unwrap(),
        crm_api::store::Backend::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM cdr")
            .fetch_one(p)
            .await
            .unwrap(),
    };
    assert_eq!(count, 1000);
    // Wrap-up ends after the call: known contacts are updated, an unknown one is reported.
    let found = db
        .store
        .record_wrap_ups(&[
            CdrWrapUp {
                tenant,
                contact_id: "c998".into(),
                wrap_ms: 7_500,
            },
            CdrWrapUp {
                tenant,
                contact_id: "not-yet".into(),
                wrap_ms: 1_000,
            },
        ])
        .await
        .unwrap();
    assert_eq!(found, vec![true, false]);
    // The newest 200 (the page limit): c800..c999.
    let (s, cdrs) = api.get("/api/v1/cdrs?limit=200", &admin).await;
    assert_eq!(s, StatusCode::OK, "{cdrs}");
    let rows = cdrs.as_array().unwrap();
    let c998 = rows.iter().find(|r| r["contact_id"] == "c998").unwrap();
    assert_eq!(c998["wrap_ms"], 7_500);
    assert_eq!(c998["mos_x100"], 412);
    assert_eq!(c998["recording_ms"], 57_000);
    let c999 = rows.iter().find(|r| r["contact_id"] == "c999").unwrap();
    assert_eq!(c999["transfer"], "blind:1002");
    assert_eq!(c999["wrap_ms"], 0);
    // The timeline item of c998 carries the wrap-up too.
    let (_, tl) = api
        .get(
            &format!(
                "/api/v1/customers/{}/timeline?limit=200",
                customer["id"].as_str().unwrap()
            ),
            &admin,
        )
        .await;
    let items = tl["items"].as_array().unwrap();
    let item = items.iter().find(|i| i["contact_id"] == "c998").unwrap();
    assert_eq!(item["wrap_s"], 7);
    assert_eq!(item["quality"], 4.12);
}
