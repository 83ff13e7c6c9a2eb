//! Tenants' prompt uploads (`/api/v1/prompts`): accepted formats, refusals that name the
//! field, rights (admin uploads, supervisor lists, agent is refused), tenant isolation, the
//! audit log, the files on disk (atomic, per tenant) and the live change notification. Runs on
//! SQLite and PostgreSQL (the audit rows are in the database; the audio is in files).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{TestDb, error_of};
use serde_json::Value;

both_backends!(
    uploads_at_8_16_48_khz_are_listed_fetched_and_deleted,
    bad_uploads_are_refused_naming_the_field,
    other_tenants_and_agents_cannot_touch_prompts,
    changes_are_audited_and_published,
);

/// A 16-bit PCM WAV of silence-free samples.
fn wav(rate: u32, channels: u16, bits: u16, ms: u32) -> Vec<u8> {
    let block = u32::from(channels) * u32::from(bits / 8);
    let frames = (u64::from(rate) * u64::from(ms) / 1000) as u32;
    let data = frames * block;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * block).to_le_bytes());
    b.extend_from_slice(&(block as u16).to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    b.extend((0..data).map(|i| (i % 251) as u8));
    b
}

async fn put(
    db: &TestDb,
    path: &str,
    token: &str,
    body: Vec<u8>,
    ctype: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, ctype)
        .body(Body::from(body))
        .unwrap();
    let (s, v, _) = db.api().send(req).await;
    (s, v)
}

/// GET returning the raw bytes.
async fn fetch(db: &TestDb, path: &str, token: &str) -> (StatusCode, Vec<u8>, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = db.api().router.oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes, ctype)
}

fn data_dir(db: &TestDb) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    db.state.set_data_dir(dir.path().to_path_buf());
    dir
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

async fn uploads_at_8_16_48_khz_are_listed_fetched_and_deleted(db: &TestDb) {
    let dir = data_dir(db);
    let tenant = db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    for (rate, name) in [(8000, "eight"), (16000, "sixteen"), (48000, "forty_eight")] {
        let (s, v) = put(
            db,
            &format!("/api/v1/prompts/de/{name}"),
            &admin,
            wav(rate, 1, 16, 500),
            "audio/wav",
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{rate}: {v}");
        assert_eq!(v["sample_rate"], rate);
        assert_eq!(v["duration_ms"], 500);
    }
    // Stereo is accepted (down-mixed when played); a second PUT replaces (200).
    let stereo = wav(16000, 2, 16, 1000);
    let (s, v) = put(
        db,
        "/api/v1/prompts/de/eight",
        &admin,
        stereo.clone(),
        "audio/x-wav",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["channels"], 2);

    let (s, list) = db.api().get("/api/v1/prompts", &admin).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eight", "forty_eight", "sixteen"]);
    assert_eq!(list["items"][0]["size_bytes"], stereo.len());
    assert_eq!(list["items"][0]["duration_ms"], 1000);

    let (s, bytes, ctype) = fetch(db, "/api/v1/prompts/de/eight", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ctype, "audio/wav");
    assert_eq!(bytes, stereo, "the upload, byte for byte");

    // On disk: the tenant's directory, no temporary files.
    let root = dir
        .path()
        .join("prompts/tenants")
        .join(tenant.0.as_hyphenated().to_string());
    let files = files_under(&root);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().all(|f| f.ends_with(".wav")), "{files:?}");

    let (s, _) = db.api().delete("/api/v1/prompts/de/eight", &admin).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = db.api().delete("/api/v1/prompts/de/eight", &admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = fetch(db, "/api/v1/prompts/de/eight", &admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(files_under(&root).len(), 2);
}

async fn bad_uploads_are_refused_naming_the_field(db: &TestDb) {
    let dir = data_dir(db);
    db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("de/x", wav(44_100, 1, 16, 100), "audio/wav", "sample_rate"),
        ("de/x", wav(8000, 1, 8, 100), "audio/wav", "bits_per_sample"),
        ("de/x", b"this is not audio".to_vec(), "audio/wav", "body"),
        ("de/x", wav(8000, 1, 16, 601_000), "audio/wav", "duration"),
        (
            "de/x",
            wav(8000, 1, 16, 100),
            "application/json",
            "content-type",
        ),
        ("deu/x", wav(8000, 1, 16, 100), "audio/wav", "language"),
        ("de/x.wav", wav(8000, 1, 16, 100), "audio/wav", "name"),
        ("de/..", wav(8000, 1, 16, 100), "audio/wav", "name"),
        ("de/UPPER", wav(8000, 1, 16, 100), "audio/wav", "name"),
    ];
    for (path, body, ctype, field) in cases {
        let (s, v) = put(db, &format!("/api/v1/prompts/{path}"), &admin, body, ctype).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {field}: {v}");
        let (code, f) = error_of(&v);
        assert_eq!(code, "validation");
        assert_eq!(f.as_deref(), Some(field), "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().len() > 10,
            "a clear message: {v}"
        );
    }
    // Larger than the limit: 413 in the same error shape.
    let huge = wav(48_000, 2, 16, 200_000);
    assert!(huge.len() > crm_api::prompts::MAX_BYTES);
    let (s, v) = put(db, "/api/v1/prompts/de/x", &admin, huge, "audio/wav").await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(error_of(&v).0, "payload_too_large");
    assert!(files_under(dir.path()).is_empty(), "nothing stored");
}

async fn other_tenants_and_agents_cannot_touch_prompts(db: &TestDb) {
    let _dir = data_dir(db);
    db.tenant("acme").await;
    db.tenant("other").await;
    let admin = db.login("acme", "admin").await;
    let (s, _) = put(
        db,
        "/api/v1/prompts/en/my_music",
        &admin,
        wav(8000, 1, 16, 200),
        "audio/wav",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    let other = db.login("other", "admin").await;
    let (s, list) = db.api().get("/api/v1/prompts", &other).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    let (s, _, _) = fetch(db, "/api/v1/prompts/en/my_music", &other).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = db.api().delete("/api/v1/prompts/en/my_music", &other).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The supervisor lists and fetches, but cannot change.
    let sup = db.login("acme", "super").await;
    let (s, list) = db.api().get("/api/v1/prompts", &sup).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (s, _) = put(
        db,
        "/api/v1/prompts/en/x",
        &sup,
        wav(8000, 1, 16, 200),
        "audio/wav",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = db.api().delete("/api/v1/prompts/en/my_music", &sup).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Agents can do nothing here.
    let agent = db.login("acme", "agent1").await;
    let (s, _) = put(
        db,
        "/api/v1/prompts/en/x",
        &agent,
        wav(8000, 1, 16, 200),
        "audio/wav",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = db.api().get("/api/v1/prompts", &agent).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Without a login: 401.
    let req = Request::builder()
        .uri("/api/v1/prompts")
        .body(Body::empty())
        .unwrap();
    let (s, _, _) = db.api().send(req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn changes_are_audited_and_published(db: &TestDb) {
    let _dir = data_dir(db);
    let tenant = db.tenant("acme").await;
    let admin = db.login("acme", "admin").await;
    let mut changes = db.state.subscribe_prompts();
    put(
        db,
        "/api/v1/prompts/en/my_music",
        &admin,
        wav(16000, 1, 16, 300),
        "audio/wav",
    )
    .await;
    put(
        db,
        "/api/v1/prompts/en/my_music",
        &admin,
        wav(48000, 1, 16, 400),
        "audio/wav",
    )
    .await;
    db.api().delete("/api/v1/prompts/en/my_music", &admin).await;
    for _ in 0..3 {
        assert_eq!(
            changes.try_recv().unwrap(),
            tenant,
            "each change is published"
        );
    }
    let (_, audit) = db.api().get("/api/v1/audit", &admin).await;
    let rows: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entity"] == "prompt")
        .collect();
    assert_eq!(rows.len(), 3, "{audit}");
    assert_eq!(rows[0]["action"], "create");
    assert_eq!(rows[0]["entity_id"], "en/my_music");
    assert_eq!(rows[0]["after"]["sample_rate"], 16000);
    assert_eq!(rows[1]["action"], "update");
    assert_eq!(rows[1]["before"]["sample_rate"], 16000);
    assert_eq!(rows[1]["after"]["sample_rate"], 48000);
    assert_eq!(rows[2]["action"], "delete");
    assert!(rows[2]["after"].is_null());
    assert_eq!(rows[2]["actor"], "admin");
}
