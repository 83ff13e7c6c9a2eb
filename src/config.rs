//! `zentrale.toml`: the server's own configuration (listeners, media ports, database, logs).
//!
//! Plain data at the edge (STYLE.md §8): every table is `deny_unknown_fields`, so a typo is an
//! error that names the key and line instead of a silently ignored setting; every field has a
//! default that runs on a laptop (everything on 127.0.0.1, SQLite in `./data`). Routing
//! configuration (queues, agents, skills) is *not* here: it lives in the database and is
//! administered live through the API, or provisioned from a routing file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The whole `zentrale.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the embedded database, recordings and uploaded prompts.
    pub data_dir: PathBuf,
    /// The HTTP listener (API, event WebSocket, browser UI).
    pub http: HttpConfig,
    /// SIP listeners and the address written into Contact/Via when behind NAT.
    pub sip: SipConfig,
    /// The RTP port range and address media is anchored on.
    pub rtp: RtpConfig,
    /// Where durable data lives.
    pub database: DatabaseConfig,
    /// Log format and level.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http: HttpConfig::default(),
            sip: SipConfig::default(),
            rtp: RtpConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port of the HTTP server. Localhost unless configured otherwise.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        }
    }
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// One entry per listening socket.
    pub listen: Vec<SipListener>,
    /// The address carriers and phones must reach us at, written into Contact, Via and SDP
    /// when zentrale sits behind NAT. Defaults to each listener's own address.
    pub public_address: Option<IpAddr>,
    /// Refuse INVITEs to DIDs unless they come from a configured trunk's address. Off by
    /// default: a DID without a trunk is reachable from anywhere, a DID bound to a trunk only
    /// from that trunk either way.
    #[serde(default)]
    pub trusted_sources_only: bool,
    /// Digest algorithms the registrar offers phones, one challenge each, in this order:
    /// `["MD5", "SHA-256"]` by default. Some user agents (baresip 1.0 with libre 1.1) give up
    /// on a 401 that names any algorithm they lack instead of answering the one they know
    /// (RFC 8760 §2.4); for them set `["MD5"]`.
    pub digest_algorithms: Vec<DigestAlgorithm>,
}

/// A digest algorithm token as written in `sip.digest_algorithms`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// RFC 2617 MD5.
    #[serde(rename = "MD5")]
    Md5,
    /// RFC 7616 / RFC 8760 SHA-256.
    #[serde(rename = "SHA-256")]
    Sha256,
}

impl Default for SipConfig {
    fn default() -> Self {
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 5060));
        Self {
            listen: vec![
                SipListener {
                    transport: SipTransport::Udp,
                    address: local,
                },
                SipListener {
                    transport: SipTransport::Tcp,
                    address: local,
                },
            ],
            public_address: None,
            trusted_sources_only: false,
            digest_algorithms: vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256],
        }
    }
}

/// One `[[sip.listen]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SipListener {
    /// The transport protocol.
    pub transport: SipTransport,
    /// Address and port to bind.
    pub address: SocketAddr,
}

/// SIP transports. TLS and WebSocket are named here so configurations can be written for them;
/// the server refuses to start with a transport it does not serve yet rather than ignore it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// Datagrams (RFC 3261 §18), with retransmissions.
    Udp,
    /// Stream, framed by Content-Length.
    Tcp,
    /// TCP with TLS (`sips:`).
    Tls,
    /// SIP over WebSocket (RFC 7118), for browser softphones.
    Ws,
    /// SIP over secure WebSocket.
    Wss,
}

/// `[rtp]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    /// Address media sockets bind to.
    pub address: IpAddr,
    /// Lowest RTP port (even); RTCP uses the port above each RTP port.
    pub port_min: u16,
    /// Highest RTP port.
    pub port_max: u16,
}

impl Default for RtpConfig {
    fn default() -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 20000,
            port_max: 29999,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`. Empty means the embedded
    /// SQLite file `zentrale.db` in `data_dir`.
    pub url: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,sip_gateway=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Parses a configuration text; `origin` names the file in error messages.
    pub fn from_toml_str(text: &str, origin: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|span| {
                    let (line, col) = line_col(text, span.start);
                    format!("{origin}:{line}:{col}")
                })
                .unwrap_or_else(|| origin.to_owned());
            anyhow::anyhow!("{place}: {}", e.message())
        })?;
        config.validate().with_context(|| origin.to_owned())?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Checks what the types alone cannot.
    fn validate(&self) -> anyhow::Result<()> {
        let rtp = &self.rtp;
        if !rtp.port_min.is_multiple_of(2) {
            anyhow::bail!("rtp.port_min must be even (RTP on even ports, RTCP on the next)");
        }
        if rtp.port_min >= rtp.port_max {
            anyhow::bail!("rtp.port_min must be below rtp.port_max");
        }
        if rtp.port_min < 1024 {
            anyhow::bail!("rtp.port_min must be 1024 or above");
        }
        if self.sip.listen.is_empty() {
            anyhow::bail!("sip.listen must name at least one listener");
        }
        let algs = &self.sip.digest_algorithms;
        if algs.is_empty() {
            anyhow::bail!("sip.digest_algorithms must name at least one of \"MD5\", \"SHA-256\"");
        }
        if algs.iter().enumerate().any(|(i, a)| algs[..i].contains(a)) {
            anyhow::bail!("sip.digest_algorithms names an algorithm twice");
        }
        Ok(())
    }

    /// The database URL to open: the configured one, or the embedded SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("zentrale.db").display()
            ),
        }
    }
}

/// 1-based line and column of a byte offset, for error messages that point into the file.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_localhost_defaults() {
        let config = Config::from_toml_str("", "empty.toml").expect("defaults are valid");
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert!(
            config
                .sip
                .listen
                .iter()
                .all(|l| l.address.ip().is_loopback())
        );
        assert!(
            config
                .database_url()
                .starts_with("sqlite://data/zentrale.db")
        );
    }

    #[test]
    fn every_sample_config_in_the_repo_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for dir in ["deploy", "examples"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("dir exists") {
                let path = entry.expect("entry").path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("zentrale") && name.ends_with(".toml") {
                    Config::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                    seen += 1;
                }
            }
        }
        assert!(
            seen >= 2,
            "expected deploy/ and examples/ sample configs, saw {seen}"
        );
    }

    #[test]
    fn digest_algorithms_default_to_md5_then_sha256_and_bad_lists_are_refused() {
        let config = Config::from_toml_str("", "d.toml").expect("defaults");
        assert_eq!(
            config.sip.digest_algorithms,
            [DigestAlgorithm::Md5, DigestAlgorithm::Sha256]
        );
        let md5 = Config::from_toml_str("[sip]\ndigest_algorithms = [\"MD5\"]\n", "d.toml")
            .expect("MD5 only");
        assert_eq!(md5.sip.digest_algorithms, [DigestAlgorithm::Md5]);
        for (bad, needle) in [
            ("[sip]\ndigest_algorithms = []\n", "at least one"),
            ("[sip]\ndigest_algorithms = [\"MD5\", \"MD5\"]\n", "twice"),
            ("[sip]\ndigest_algorithms = [\"SHA-1\"]\n", "SHA-1"),
        ] {
            let msg = format!("{:#}", Config::from_toml_str(bad, "d.toml").expect_err(bad));
            assert!(msg.contains(needle), "{bad}: {msg}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let err = Config::from_toml_str("[http]\nlisten = \"127.0.0.1:1\"\nlsten = 3\n", "z.toml")
            .expect_err("typo must be refused");
        let msg = format!("{err:#}");
        assert!(msg.contains("z.toml:3"), "{msg}");
        assert!(msg.contains("lsten"), "{msg}");
    }

    #[test]
    fn bad_value_is_an_error_naming_the_line() {
        let err = Config::from_toml_str(
            "[sip]\n\n[[sip.listen]]\ntransport = \"sctp\"\naddress = \"127.0.0.1:5060\"\n",
            "z.toml",
        )
        .expect_err("unknown transport");
        let msg = format!("{err:#}");
        assert!(msg.contains("z.toml:4"), "{msg}");
        assert!(msg.contains("sctp"), "{msg}");
    }

    #[test]
    fn odd_rtp_port_is_refused() {
        let err = Config::from_toml_str("[rtp]\nport_min = 20001\nport_max = 30000\n", "z.toml")
            .expect_err("odd port");
        assert!(format!("{err:#}").contains("port_min must be even"));
    }
}
