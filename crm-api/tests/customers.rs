//! Customers, identities, custom fields, look-up by caller number, merge, timeline with
//! cursor pagination, tickets, CDR → timeline — on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;
use axum::http::StatusCode;
use chrono::Duration;
use common::TestDb;
use serde_json::json;

both_backends!(
    customer_with_identities_is_found_by_caller_number,
    identity_belongs_to_one_customer,
    custom_fields_are_typed_and_required,
    merge_moves_identities_timeline_and_tickets,
    timeline_is_newest_first_with_cursor_pages,
    ticket_status_change_lands_on_timeline,
    cdr_of_known_caller_lands_on_timeline,
    queue_log_round_trips,
    customers_list_paginates,
);

async fn customer_with_identities_is_found_by_caller_number(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    let (s, c) = api
        .post(
            "/api/v1/customers",
            &tok,
            json!({"name": "Erika", "company": "Muster AG", "identities": [
                {"kind": "phone", "value": "+49 (30) 123-4567"},
                {"kind": "email", "value": "Erika@Example.com"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["identities"][0]["value"], "+49301234567");
    assert_eq!(c["identities"][1]["value"], "erika@example.com");
    let (s, found) = api
        .get("/api/v1/customers/lookup?phone=%2B49301234567", &tok)
        .await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found["id"], c["id"]);
    let (s, found) = api
        .get("/api/v1/customers/lookup?phone=0049301234567", &tok)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(found["id"], c["id"]);
    let (s, found) = api
        .get("/api/v1/customers/lookup?email=ERIKA@example.com", &tok)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(found["id"], c["id"]);
    let (s, _) = api
        .get("/api/v1/customers/lookup?phone=%2B4930999999", &tok)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = api.get("/api/v1/customers/lookup?phone=030123", &tok).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(common::error_of(&e).1.as_deref(), Some("phone"));
    let (s, got) = api
        .get(
            &format!("/api/v1/customers/{}", c["id"].as_str().unwrap()),
            &tok,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, c);
}

async fn identity_belongs_to_one_customer(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    let body = json!({"name": "A", "identities": [{"kind": "phone", "value": "+4930111"}]});
    let (s, _) = api.post("/api/v1/customers", &tok, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = api
        .post(
            "/api/v1/customers",
            &tok,
            json!({"name": "B", "identities": [{"kind": "phone", "value": "+49 30 111"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(common::error_of(&e).1.as_deref(), Some("identities"));
    // the failed customer was rolled back with its identity insert
    let (_, list) = api.get("/api/v1/customers", &tok).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // another tenant may hold the same number
    db.tenant("other").await;
    let tok2 = db.login("other", "agent1").await;
    let (s, _) = api.post("/api/v1/customers", &tok2, body).await;
    assert_eq!(s, StatusCode::CREATED);
}

async fn custom_fields_are_typed_and_required(db: &TestDb) {
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let agent = db.login("acme", "agent1").await;
    let api = db.api();
    for f in [
        json!({"key": "contract_no", "label": "Contract", "kind": "integer", "required": true}),
        json!({"key": "tier", "label": "Tier", "kind": "select", "options": ["gold", "silver"]}),
        json!({"key": "birthday", "label": "Birthday", "kind": "date"}),
    ] {
        let (s, v) = api.post("/api/v1/custom-fields", &admin, f).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, _) = api
        .post(
            "/api/v1/custom-fields",
            &agent,
            json!({"key": "x", "label": "X", "kind": "text"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let cases = [
        (json!({"name": "A"}), "custom.contract_no"),
        (
            json!({"name": "A", "custom": {"contract_no": "12"}}),
            "custom.contract_no",
        ),
        (
            json!({"name": "A", "custom": {"contract_no": 12, "tier": "bronze"}}),
            "custom.tier",
        ),
        (
            json!({"name": "A", "custom": {"contract_no": 12, "birthday": "1990-13-01"}}),
            "custom.birthday",
        ),
        (
            json!({"name": "A", "custom": {"contract_no": 12, "nope": 1}}),
            "custom.nope",
        ),
    ];
    for (body, field) in cases {
        let (s, e) = api.post("/api/v1/customers", &agent, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(common::error_of(&e).1.as_deref(), Some(field), "{body}");
    }
    let (s, c) = api
        .post("/api/v1/customers", &agent, json!({"name": "A", "custom": {"contract_no": 12, "tier": "gold", "birthday": "1990-01-31"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap();
    let (s, e) = api
        .patch(
            &format!("/api/v1/customers/{id}"),
            &agent,
            json!({"custom": {"contract_no": null}}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "required field cannot be removed: {e}"
    );
    let (s, c2) = api
        .patch(
            &format!("/api/v1/customers/{id}"),
            &agent,
            json!({"custom": {"tier": null}, "name": "A2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c2}");
    assert_eq!(
        c2["custom"],
        json!({"contract_no": 12, "birthday": "1990-01-31"})
    );
    assert_eq!(c2["name"], "A2");
}

async fn merge_moves_identities_timeline_and_tickets(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    let (_, a) = api
        .post(
            "/api/v1/customers",
            &tok,
            json!({"name": "Erika", "identities": [{"kind": "phone", "value": "+4930111"}]}),
        )
        .await;
    let (_, b) = api.post("/api/v1/customers", &tok, json!({"name": "E. Mustermann", "identities": [{"kind": "email", "value": "e@example.com"}]})).await;
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let (s, _) = api
        .post(
            &format!("/api/v1/customers/{b}/timeline"),
            &tok,
            json!({"kind": "note", "body": "called about invoice"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, t) = api
        .post(
            "/api/v1/tickets",
            &tok,
            json!({"customer_id": b, "subject": "Invoice"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let (s, e) = api
        .post(
            &format!("/api/v1/customers/{a}/merge"),
            &tok,
            json!({"duplicate_id": a}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(common::error_of(&e).1.as_deref(), Some("duplicate_id"));
    let (s, m) = api
        .post(
            &format!("/api/v1/customers/{a}/merge"),
            &tok,
            json!({"duplicate_id": b}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["identities"].as_array().unwrap().len(), 2);
    let (_, found) = api
        .get("/api/v1/customers/lookup?email=e@example.com", &tok)
        .await;
    assert_eq!(found["id"], a.as_str());
    let (_, tl) = api
        .get(&format!("/api/v1/customers/{a}/timeline"), &tok)
        .await;
    assert_eq!(tl["items"][0]["body"], "called about invoice");
    let (_, tickets) = api
        .get(&format!("/api/v1/tickets?customer_id={a}"), &tok)
        .await;
    assert_eq!(tickets["items"].as_array().unwrap().len(), 1);
    let (_, dup) = api.get(&format!("/api/v1/customers/{b}"), &tok).await;
    assert_eq!(dup["merged_into"], a.as_str());
    let (_, list) = api.get("/api/v1/customers", &tok).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "merged duplicate is not listed"
    );
    let (s, _) = api
        .post(
            &format!("/api/v1/customers/{a}/merge"),
            &tok,
            json!({"duplicate_id": b}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "second merge refused");
}

async fn timeline_is_newest_first_with_cursor_pages(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    let (_, c) = api
        .post("/api/v1/customers", &tok, json!({"name": "T"}))
        .await;
    let id = c["id"].as_str().unwrap();
    let base = db.clock_now();
    // recorded out of order: the timeline orders by when it happened
    for i in [3, 1, 4, 0, 2] {
        let at = base - Duration::minutes(10 - i);
        let (s, v) = api
            .post(
                &format!("/api/v1/customers/{id}/timeline"),
                &tok,
                json!({"kind": "mail", "occurred_at": at, "subject": format!("m{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/customers/{id}/timeline?limit=2&cursor={c}"),
            None => format!("/api/v1/customers/{id}/timeline?limit=2"),
        };
        let (s, page) = api.get(&path, &tok).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for it in page["items"].as_array().unwrap() {
            seen.push(it["subject"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["m4", "m3", "m2", "m1", "m0"]);
    let (s, e) = api
        .get(
            &format!("/api/v1/customers/{id}/timeline?cursor=x'%20OR%201=1--"),
            &tok,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(common::error_of(&e).1.as_deref(), Some("cursor"));
}

async fn ticket_status_change_lands_on_timeline(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    let (_, me) = api.get("/api/v1/auth/me", &tok).await;
    let (_, c) = api
        .post("/api/v1/customers", &tok, json!({"name": "T"}))
        .await;
    let cid = c["id"].as_str().unwrap();
    let (s, t) = api
        .post("/api/v1/tickets", &tok, json!({"customer_id": cid, "subject": "Router broken", "priority": "high",
              "tags": ["hardware"], "team": "support", "assignee": me["user"], "due_at": "2026-11-28T12:00:00Z"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(t["status"], "open");
    let tid = t["id"].as_str().unwrap();
    let (s, t2) = api
        .patch(
            &format!("/api/v1/tickets/{tid}"),
            &tok,
            json!({"status": "solved"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    assert_eq!(t2["status"], "solved");
    let (_, tl) = api
        .get(&format!("/api/v1/customers/{cid}/timeline"), &tok)
        .await;
    assert_eq!(tl["items"][0]["kind"], "status_change");
    assert_eq!(tl["items"][0]["ticket_id"], tid);
    let (_, open) = api.get("/api/v1/tickets?status=open", &tok).await;
    assert_eq!(open["items"].as_array().unwrap().len(), 0);
    let (_, solved) = api.get("/api/v1/tickets?status=solved", &tok).await;
    assert_eq!(solved["items"].as_array().unwrap().len(), 1);
    let (s, e) = api
        .patch(
            &format!("/api/v1/tickets/{tid}"),
            &tok,
            json!({"status": "closed"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(common::error_of(&e).1.as_deref(), Some("status"));
    let (s, e) = api
        .patch(
            &format!("/api/v1/tickets/{tid}"),
            &tok,
            json!({"assignee": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(common::error_of(&e).1.as_deref(), Some("assignee"));
}

async fn cdr_of_known_caller_lands_on_timeline(db: &TestDb) {
    let tenant = db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let sup = db.login("acme", "super").await;
    let api = db.api();
    let (_, c) = api
        .post(
            "/api/v1/customers",
            &tok,
            json!({"name": "Caller", "identities": [{"kind": "phone", "value": "+4930555"}]}),
        )
        .await;
    let now = db.clock_now();
    let cdr = crm_api::customers::CdrRecord {
        tenant,
        contact_id: uuid::Uuid::now_v7().to_string(),
        leg: "caller".into(),
        direction: "inbound".into(),
        started_at: now,
        answered_at: Some(now + Duration::seconds(12)),
        ended_at: now + Duration::seconds(100),
        caller: "+4930555".into(),
        callee: "+4930123456".into(),
        result: "answered".into(),
        queue: Some("support".into()),
        agent: Some("1001".into()),
        wait_ms: 12_000,
        talk_ms: 88_000,
        wrap_ms: 5_000,
        recording: Some("rec/1.wav".into()),
        quality: json!({"mos": 4.2}),
        mos_x100: None,
        recording_ms: None,
        voicemail: None,
        transfer: None,
    };
    let cust = db.store.insert_cdr(&cdr).await.unwrap();
    assert_eq!(cust.map(|c| c.to_string()).as_deref(), c["id"].as_str());
    let unknown = crm_api::customers::CdrRecord {
        caller: "anonymous".into(),
        ..cdr.clone()
    };
    assert_eq!(db.store.insert_cdr(&unknown).await.unwrap(), None);
    let (_, tl) = api
        .get(
            &format!("/api/v1/customers/{}/timeline", c["id"].as_str().unwrap()),
            &tok,
        )
        .await;
    let items = tl["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["kind"], "call");
    assert_eq!(items[0]["wait_s"], 12);
    assert_eq!(items[0]["talk_s"], 88);
    assert_eq!(items[0]["quality"], 4.2);
    let (s, cdrs) = api.get("/api/v1/cdrs", &sup).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cdrs.as_array().unwrap().len(), 2);
    let (s, _) = api.get("/api/v1/cdrs", &tok).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "agents do not read reports");
}

async fn queue_log_round_trips(db: &TestDb) {
    let tenant = db.tenant("acme").await;
    let other = db.tenant("other").await;
    let now = db.clock_now();
    let rows: Vec<crm_api::QueueLogEntry> = (0..5)
        .map(|i| crm_api::QueueLogEntry {
            tenant: if i == 4 { other } else { tenant },
            time: now + Duration::seconds(i),
            contact_id: "c1".into(),
            queue: Some("support".into()),
            agent: (i > 0).then(|| "1001".to_owned()),
            event: ["enter", "offer", "connect", "complete", "enter"][i as usize].into(),
            data: json!({"i": i}),
        })
        .collect();
    db.store.append_queue_log(&rows).await.unwrap();
    let got = db
        .store
        .queue_log(tenant, now, now + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(got, rows[..4].to_vec());
}

async fn customers_list_paginates(db: &TestDb) {
    db.tenant("acme").await;
    let tok = db.login("acme", "agent1").await;
    let api = db.api();
    for i in 0..5 {
        api.post(
            "/api/v1/customers",
            &tok,
            json!({"name": format!("Kunde {i}")}),
        )
        .await;
    }
    let (_, p1) = api.get("/api/v1/customers?limit=3", &tok).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 3);
    let c = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = api
        .get(&format!("/api/v1/customers?limit=3&cursor={c}"), &tok)
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 2);
    assert!(p2["next_cursor"].is_null());
    assert_eq!(p2["items"][1]["name"], "Kunde 4");
    let (_, q) = api.get("/api/v1/customers?q=KUNDE%203", &tok).await;
    assert_eq!(q["items"].as_array().unwrap().len(), 1);
    let (s, e) = api.get("/api/v1/customers?limit=1000", &tok).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(common::error_of(&e).1.as_deref(), Some("limit"));
}
