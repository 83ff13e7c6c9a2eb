//! End to end: `zentrale serve --demo` starts on a fresh data directory, prints its URLs and
//! logins, lets the demo admin log in (and refuses a wrong password), and applies a routing
//! change to the running engine without a restart. Real binary, real SQLite file, real HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, http};

#[test]
fn demo_server_logs_in_and_applies_routing_changes_live() {
    let server = Server::start("serve-demo", (42200, 42299));
    server.wait_for("password demo-admin");
    server.wait_for("routing engine started");

    let token = server.admin_token();
    let (status, _) = http(
        &server.http,
        "POST",
        "/api/v1/auth/login",
        None,
        r#"{"tenant":"demo","username":"admin","password":"wrong"}"#,
    );
    assert_eq!(status, 401);

    let (status, body) = http(
        &server.http,
        "PUT",
        "/api/v1/routing/queues/sales",
        Some(&token),
        r#"{"strategy":"ring_all","wrap_up_s":5}"#,
    );
    assert!((200..300).contains(&status), "{status} {body}");
    server.wait_for("routing configuration applied live");

    let (status, body) = http(
        &server.http,
        "GET",
        "/api/v1/routing/queues",
        Some(&token),
        "",
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("\"sales\"") && body.contains("\"support\""),
        "{body}"
    );
}
