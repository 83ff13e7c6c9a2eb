//! The live-call API against a scripted SIP side: who sees which call, who may do what to it,
//! tenant isolation, errors naming the field, and the audit rows for monitoring and recording.
//! (The real SIP side behind the port is exercised end to end in the repository's
//! `tests/sip_supervisor_*.rs` and `tests/sip_recording_*.rs`.)
#![allow(clippy::unwrap_used)]

mod common;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use chrono::Utc;
use common::TestDb;
use crm_api::calls::{
    CallAction, CallControlPort, CallError, CallOp, CallPhase, CallReply, LiveCall, RecordingState,
};
use crm_api::ids::TenantId;
use serde_json::json;
use uuid::Uuid;

both_backends!(
    rights_follow_roles_and_tenants_never_meet,
    without_sip_the_api_says_unavailable
);

type Log = Arc<Mutex<Vec<(TenantId, Uuid, CallAction)>>>;

fn call(contact: u128, agent: &str) -> LiveCall {
    LiveCall {
        contact: Uuid::from_u128(contact),
        queue: "support".into(),
        agent: Some(agent.into()),
        phase: CallPhase::Connected,
        caller: "+4930111".into(),
        since: Utc::now(),
        answered_at: Some(Utc::now()),
        recording: RecordingState::Off,
        monitored_by: None,
    }
}

/// A SIP side that knows `calls` (per tenant) and logs every action it carries out.
fn scripted(db: &TestDb, calls: Vec<(TenantId, LiveCall)>) -> Log {
    let (port, mut rx) = CallControlPort::channel(16);
    db.state.set_call_control(port);
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let answer = match req.op {
                CallOp::List => Ok(CallReply::Calls(
                    calls
                        .iter()
                        .filter(|(t, _)| *t == req.tenant)
                        .map(|(_, c)| c.clone())
                        .collect(),
                )),
                CallOp::Control { contact, action } => {
                    if calls
                        .iter()
                        .any(|(t, c)| *t == req.tenant && c.contact == contact)
                    {
                        if action == CallAction::Hold {
                            Err(CallError::Refused("not supported: hold".into()))
                        } else {
                            seen.lock().unwrap().push((req.tenant, contact, action));
                            Ok(CallReply::Done)
                        }
                    } else {
                        Err(CallError::NoSuchCall)
                    }
                }
                _ => Err(CallError::Unavailable),
            };
            let _ = req.reply.send(answer);
        }
    });
    log
}

async fn rights_follow_roles_and_tenants_never_meet(db: &TestDb) {
    let acme = db.tenant("acme").await;
    let other = db.tenant("other").await;
    let log = scripted(
        db,
        vec![
            (acme, call(1, "1001")),
            (acme, call(2, "1002")),
            (other, call(3, "1001")),
        ],
    );
    let admin = db.login("acme", "admin").await;
    let sup = db.login("acme", "super").await;
    let agent = db.login("acme", "agent1").await;
    let other_admin = db.login("other", "admin").await;
    let api = db.api();
    let c1 = Uuid::from_u128(1);
    let c2 = Uuid::from_u128(2);
    let c3 = Uuid::from_u128(3);

    // Listing: supervisors see every call of their tenant, an agent only their own.
    let (s, v) = api.get("/api/v1/calls", &sup).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (_, v) = api.get("/api/v1/calls", &agent).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["contact"], json!(c1.to_string()));
    assert_eq!(v[0]["phase"], json!("connected"));
    assert_eq!(v[0]["recording"], json!("off"));
    let (_, v) = api.get("/api/v1/calls", &other_admin).await;
    assert_eq!(
        v.as_array().unwrap().len(),
        1,
        "only the other tenant's call"
    );

    // An agent: own call yes, a colleague's call is invisible, supervisor functions are not theirs.
    let (s, v) = api
        .post(
            &format!("/api/v1/calls/{c1}/recording/pause"),
            &agent,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _) = api
        .post(
            &format!("/api/v1/calls/{c2}/recording/pause"),
            &agent,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .post(
            &format!("/api/v1/calls/{c1}/monitor"),
            &agent,
            json!({"mode": "listen"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an agent cannot monitor");
    let (s, _) = api
        .post(
            &format!("/api/v1/calls/{c1}/recording/start"),
            &agent,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an agent cannot start recordings");
    let (s, v) = api
        .post(
            &format!("/api/v1/calls/{c1}/transfer"),
            &agent,
            json!({"queue": "billing"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    // The SIP side's refusal reaches the client as a conflict with its message.
    let (s, v) = api
        .post(&format!("/api/v1/calls/{c1}/hold"), &agent, json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["error"]["message"], json!("not supported: hold"));

    // Supervisors monitor with their own phone; this one has none, so the field is named.
    let (s, v) = api
        .post(
            &format!("/api/v1/calls/{c2}/monitor"),
            &sup,
            json!({"mode": "whisper"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["field"], json!("supervisor"));
    let (s, _) = api
        .post(
            &format!("/api/v1/calls/{c2}/monitor"),
            &sup,
            json!({"mode": "whisper", "supervisor": "1001"}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "only an admin names another phone"
    );
    let (s, v) = api
        .post(
            &format!("/api/v1/calls/{c2}/monitor"),
            &admin,
            json!({"mode": "barge", "supervisor": "1001"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = api
        .post(
            &format!("/api/v1/calls/{c2}/monitor"),
            &admin,
            json!({"mode": "shout"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], json!("mode"), "{v}");
    let (s, _, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/calls/{c2}/monitor"),
            Some(&sup),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Tenants never meet: the other tenant's call is "not found" for acme's admin and back.
    let (s, _) = api
        .post(&format!("/api/v1/calls/{c3}/hangup"), &admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .post(
            &format!("/api/v1/calls/{c1}/recording/stop"),
            &other_admin,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Bad input names the field.
    let (s, v) = api
        .post("/api/v1/calls/not-a-uuid/hangup", &admin, json!({}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("contact"))
    );
    let (s, v) = api
        .post(
            &format!("/api/v1/calls/{c1}/recording/rewind"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("action"))
    );
    let (s, v) = api
        .post(
            &format!("/api/v1/calls/{c1}/transfer"),
            &admin,
            json!({"number": "0800; rm"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("number"))
    );
    let (s, v) = api
        .post(
            &format!("/api/v1/calls/{c1}/transfer"),
            &admin,
            json!({"queue": "a", "agent": "b"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // What reached the SIP side: exactly the allowed actions, each in its own tenant.
    let done = log.lock().unwrap().clone();
    assert_eq!(
        done,
        vec![
            (acme, c1, CallAction::RecordingPause),
            (
                acme,
                c1,
                CallAction::Transfer(crm_api::calls::TransferTo::Queue("billing".into()))
            ),
            (
                acme,
                c2,
                CallAction::Monitor {
                    supervisor: "1001".into(),
                    mode: crm_api::calls::MonitorMode::Barge
                }
            ),
            (acme, c2, CallAction::StopMonitor),
        ]
    );

    // Monitoring and the recording pause are in the audit log, with who did it.
    let (s, v) = api.get("/api/v1/audit", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows: Vec<(String, String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entity"] == json!("call"))
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["entity_id"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("agent1".into(), c1.to_string(), "recording_pause".into()),
            ("admin".into(), c2.to_string(), "monitor".into()),
            ("super".into(), c2.to_string(), "monitor_stop".into()),
        ]
    );
}

async fn without_sip_the_api_says_unavailable(db: &TestDb) {
    let (s, doc, _) = db
        .api()
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/calls",
        "/api/v1/calls/{contact}/hold",
        "/api/v1/calls/{contact}/resume",
        "/api/v1/calls/{contact}/transfer",
        "/api/v1/calls/{contact}/recording/{action}",
        "/api/v1/calls/{contact}/monitor",
        "/api/v1/calls/{contact}/hangup",
    ] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lists {path}");
    }
    assert!(doc["paths"]["/api/v1/calls/{contact}/monitor"]["delete"].is_object());
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let (s, v) = db.api().get("/api/v1/calls", &admin).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], json!("unavailable"));
    let (s, _, _) = db
        .api()
        .call(Method::GET, "/api/v1/calls", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
