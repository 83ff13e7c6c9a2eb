//! End to end: `zentrale serve --demo` starts on a fresh data directory, prints its URLs and
//! logins, lets the demo admin log in, and applies a routing change to the running engine
//! without a restart. Real binary, real SQLite file, real HTTP over 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything printed so far (stdout and stderr interleave in no fixed order).
    seen: std::cell::RefCell<Vec<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        let config = dir.join("zentrale.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[sip.listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:0\"\n[rtp]\nport_min = 42200\nport_max = 42299\n[log]\nlevel = \"info\"\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_zentrale"))
            .args(["serve", "--demo", "--config"])
            .arg(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Server {
            child,
            lines,
            seen: Default::default(),
        }
    }

    /// Waits (bounded) for a line containing `needle`; returns it.
    fn wait_for(&self, needle: &str) -> String {
        if let Some(line) = self.seen.borrow().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    self.seen.borrow_mut().push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "server never printed {needle:?}: {e}; it printed:\n{}",
                    self.seen.borrow().join("\n")
                ),
            }
        }
    }
}

fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap();
    (status, body)
}

#[test]
fn demo_server_logs_in_and_applies_routing_changes_live() {
    let dir = std::env::temp_dir().join(format!("zentrale-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server::start(&dir);

    let api_line = server.wait_for("/api/v1/");
    let addr = api_line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    server.wait_for("password demo-admin");
    server.wait_for("routing engine started");

    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/auth/login",
        None,
        r#"{"tenant":"demo","username":"admin","password":"demo-admin"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let login: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = login["token"].as_str().unwrap().to_owned();

    let (status, _) = http(
        &addr,
        "POST",
        "/api/v1/auth/login",
        None,
        r#"{"tenant":"demo","username":"admin","password":"wrong"}"#,
    );
    assert_eq!(status, 401);

    let (status, body) = http(
        &addr,
        "PUT",
        "/api/v1/routing/queues/sales",
        Some(&token),
        r#"{"strategy":"ring_all","wrap_up_s":5}"#,
    );
    assert!((200..300).contains(&status), "{status} {body}");
    server.wait_for("routing configuration applied live");

    let (status, body) = http(&addr, "GET", "/api/v1/routing/queues", Some(&token), "");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"sales\"") && body.contains("\"support\""),
        "{body}"
    );

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
