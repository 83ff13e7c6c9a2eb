//! Shared harness of the end-to-end tests: start the real `zentrale serve --demo` on free
//! ports with its own data directory, talk HTTP to it, and run SIPp processes that are always
//! bounded in time and stopped by PID.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod caller_media;
pub mod ua;

pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
    pub dir: PathBuf,
    pub http: String,
    pub sip: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `serve --demo` with SIP on a free UDP port and RTP in `rtp` (give each test file
    /// its own range so test binaries can run side by side).
    pub fn start(name: &str, rtp: (u16, u16)) -> Server {
        Server::start_with(name, rtp, "")
    }

    /// As [`Server::start`], with extra TOML appended to the configuration.
    pub fn start_with(name: &str, rtp: (u16, u16), extra: &str) -> Server {
        Server::start_prepared(name, rtp, extra, |_| {})
    }

    /// As [`Server::start_with`], after `prepare` has put files into the (empty) data
    /// directory, e.g. prompt overrides under `prompts/<lang>/<name>.wav`.
    pub fn start_prepared(
        name: &str,
        rtp: (u16, u16),
        extra: &str,
        prepare: impl FnOnce(&Path),
    ) -> Server {
        let dir = std::env::temp_dir().join(format!("zentrale-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        prepare(&dir.join("data"));
        let config = dir.join("zentrale.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[sip.listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:0\"\n[rtp]\naddress = \"127.0.0.1\"\nport_min = {}\nport_max = {}\n[log]\nlevel = \"info\"\n{extra}",
                dir.join("data").display(),
                rtp.0,
                rtp.1
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
        let mut server = Server {
            child,
            lines,
            seen: Default::default(),
            dir,
            http: String::new(),
            sip: "127.0.0.1:1".parse().unwrap(),
        };
        let api = server.wait_for("/api/v1/");
        server.http = api
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned();
        let sip = server.wait_for("SIP          Udp ");
        server.sip = sip.rsplit(' ').next().unwrap().parse().unwrap();
        server.wait_for("zentrale serving");
        server
    }

    /// Waits (bounded) for a line containing `needle`; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
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

    /// How many lines containing `needle` the server has printed so far (reads what is
    /// already in the pipe, without waiting).
    pub fn count_lines(&self, needle: &str) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.borrow_mut().push(line);
        }
        self.seen
            .borrow()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (bounded) until more than `before` lines containing `needle` were printed.
    pub fn wait_for_more(&self, needle: &str, before: usize) {
        let until = Instant::now() + Duration::from_secs(60);
        while self.count_lines(needle) <= before {
            assert!(
                Instant::now() < until,
                "server never printed {needle:?} again; it printed:\n{}",
                self.seen.borrow().join("\n")
            );
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.borrow_mut().push(line);
            }
        }
    }

    /// The server's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("data").join("zentrale.db")
    }

    /// Logs in as the demo admin; returns the bearer token.
    pub fn admin_token(&self) -> String {
        let (status, body) = http(
            &self.http,
            "POST",
            "/api/v1/auth/login",
            None,
            r#"{"tenant":"demo","username":"admin","password":"demo-admin"}"#,
        );
        assert_eq!(status, 200, "{body}");
        let login: serde_json::Value = serde_json::from_str(&body).unwrap();
        login["token"].as_str().unwrap().to_owned()
    }

    /// Replaces the demo queue `support` (e.g. no wrap-up so SIPp agents take call after call).
    pub fn set_support_queue(&self, body: &str) {
        let token = self.admin_token();
        let (status, resp) = http(
            &self.http,
            "PUT",
            "/api/v1/routing/queues/support",
            Some(&token),
            body,
        );
        assert!(status == 200 || status == 201, "{status} {resp}");
        self.wait_for("routing configuration applied live");
    }

    /// The demo tenant's queue-log events as (event, agent) in order, read from the database.
    pub fn queue_log(&self) -> Vec<(String, Option<String>)> {
        let url = format!("sqlite://{}?mode=ro", self.db_path().display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = crm_api::Store::open(&url).await.unwrap();
            let tenant = store.tenant_by_slug("demo").await.unwrap().unwrap();
            let tenant = crm_api::ids::TenantId::parse(&tenant.id).unwrap();
            let rows = store
                .queue_log(
                    tenant,
                    chrono::DateTime::from_timestamp(0, 0).unwrap(),
                    chrono::Utc::now() + chrono::Duration::hours(1),
                )
                .await
                .unwrap();
            store.close().await;
            rows.into_iter().map(|r| (r.event, r.agent)).collect()
        })
    }

    /// The CDR rows of one contact of the demo tenant as (leg, result, agent, transfer).
    pub fn cdrs(&self, contact: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
        let url = format!("sqlite://{}?mode=ro", self.db_path().display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = crm_api::Store::open(&url).await.unwrap();
            let tenant = store.tenant_by_slug("demo").await.unwrap().unwrap();
            let tenant = crm_api::ids::TenantId::parse(&tenant.id).unwrap();
            let rows = store.cdrs_of_contact(tenant, contact).await.unwrap();
            store.close().await;
            rows.into_iter()
                .map(|r| (r.leg, r.result, r.agent, r.transfer))
                .collect()
        })
    }

    /// Polls a contact's CDR rows until `pred` holds (bounded); returns the last read.
    pub fn wait_cdrs(
        &self,
        contact: &str,
        pred: impl Fn(&[(String, String, Option<String>, Option<String>)]) -> bool,
    ) -> Vec<(String, String, Option<String>, Option<String>)> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.cdrs(contact);
            if pred(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < until,
                "CDRs of {contact} never matched: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls the queue log until `pred` holds (bounded); returns the last read.
    pub fn wait_queue_log(
        &self,
        what: &str,
        pred: impl Fn(&[(String, Option<String>)]) -> bool,
    ) -> Vec<(String, Option<String>)> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.queue_log();
            if pred(&log) {
                return log;
            }
            assert!(
                Instant::now() < until,
                "queue log never showed {what}: {log:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
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

/// A free UDP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
        .join(name)
}

/// One SIPp process, killed on drop if still running.
pub struct Sipp {
    child: Child,
    pub name: String,
    dir: PathBuf,
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sipp {
    /// Starts `sipp <target> -sf <scenario> <args>` on 127.0.0.1, in `dir` (its logs land there).
    pub fn start(
        dir: &Path,
        name: &str,
        target: SocketAddr,
        scenario_file: &str,
        args: &[&str],
    ) -> Sipp {
        let dir = dir.join(format!("sipp-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("sipp")
            .arg(target.to_string())
            .arg("-sf")
            .arg(scenario(scenario_file))
            .args([
                "-i",
                "127.0.0.1",
                "-nostdin",
                "-trace_err",
                "-trace_stat",
                "-stf",
            ])
            .arg(dir.join("stat.csv"))
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (Debian package sip-tester) must be installed");
        Sipp {
            child,
            name: name.to_owned(),
            dir,
        }
    }

    /// Waits up to `limit` for SIPp to end; kills it when it takes longer.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs to the end and asserts SIPp saw every call succeed (exit status 0).
    pub fn expect_success(&mut self, limit: Duration) {
        let status = self.wait(limit);
        assert!(
            status.is_some_and(|s| s.success()),
            "SIPp {} ended with {status:?}; errors:\n{}",
            self.name,
            self.errors()
        );
    }

    /// SIPp's error log(s), for assertion messages.
    pub fn errors(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains("errors") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    out.push_str(&text.chars().take(4000).collect::<String>());
                }
            }
        }
        out
    }

    /// A column of the last line of SIPp's statistics file (e.g. `FailedCall(C)`).
    pub fn stat(&self, column: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.dir.join("stat.csv")).ok()?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.last()?.split(';').collect();
        let i = header.iter().position(|h| *h == column)?;
        last.get(i)?.trim().parse().ok()
    }
}

/// An agent's phone: a SIPp UAS on a free port running `scenario_file`, registered as
/// `extension` with its demo password (a separate SIPp REGISTER whose Contact points at it).
pub fn agent_phone(server: &Server, extension: &str, scenario_file: &str, calls: u32) -> Sipp {
    let port = free_udp_port();
    let media = free_udp_port();
    let uas = Sipp::start(
        &server.dir,
        &format!("agent-{extension}-{port}"),
        server.sip,
        scenario_file,
        &[
            "-p",
            &port.to_string(),
            "-mp",
            &media.to_string(),
            "-m",
            &calls.to_string(),
            "-timeout",
            "120",
        ],
    );
    register(server, extension, port);
    uas
}

/// Registers `extension` with digest, Contact at `contact_port`.
pub fn register(server: &Server, extension: &str, contact_port: u16) {
    register_from(server, extension, contact_port, free_udp_port());
}

/// As [`register`], with SIPp's own socket on `local_port` (for tests confined to a port range).
pub fn register_from(server: &Server, extension: &str, contact_port: u16, local_port: u16) {
    let password = format!("demo{extension}");
    let mut reg = Sipp::start(
        &server.dir,
        &format!("register-{extension}-{contact_port}"),
        server.sip,
        "register.xml",
        &[
            "-p",
            &local_port.to_string(),
            "-s",
            extension,
            "-au",
            extension,
            "-ap",
            &password,
            "-key",
            "contact_port",
            &contact_port.to_string(),
            "-key",
            "expires",
            "3600",
            "-m",
            "1",
            "-timeout",
            "20",
        ],
    );
    reg.expect_success(Duration::from_secs(30));
}
