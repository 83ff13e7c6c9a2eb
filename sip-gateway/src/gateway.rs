//! The gateway's public entry point: bind the listeners, start the media relay and the
//! driver task, and hand back what the binary needs (bound addresses, a join handle).
//!
//! The binary owns the configuration file and the wiring to acd-core and the store; it passes
//! plain values here so sip-gateway stays independent of crm-api.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::b2bua::{B2bua, B2buaConfig};
use crate::media::{MediaError, MediaRelay, RelayConfig};
use crate::sip::auth::Algorithm;
use crate::sip::registrar::RegistrarConfig;
use crate::sip::transaction::{TimerConfig, TransportKind};
use crate::transport::{self, Outbound, TransportError, tcp::TcpLimits};

pub use crate::b2bua::model::TenantTrunks;
pub use crate::b2bua::model::{IvrChoice, IvrCollect, IvrMenu, IvrTarget, TenantMedia};
pub use crate::b2bua::{AgentSip, CdrRow, GatewayIo, GatewayModel, SipSecret, TenantModel};
pub use crate::trunk::{TrunkCredentials, TrunkModel, TrunkSecret};
/// Tenants are named by crm-api's UUIDs; re-exported so the binary need not depend on uuid.
pub use uuid::Uuid;

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// SIP listeners (UDP and TCP today).
    pub listeners: Vec<(TransportKind, SocketAddr)>,
    /// The address written into Via/Contact/SDP when behind NAT; the listener's and the
    /// relay's own address otherwise.
    pub public_address: Option<IpAddr>,
    /// The media relay.
    pub relay: RelayConfig,
    /// Digest realm for phones whose extension belongs to no tenant (each agent is challenged
    /// in its own tenant's realm, which comes with its [`SipSecret`]).
    pub realm: String,
    /// How long calls in progress may continue after shutdown starts.
    pub shutdown_grace: Duration,
    /// TCP limits.
    pub tcp: TcpLimits,
    /// Prompt overrides are read from `<media_dir>/prompts/<lang>/<name>.wav` at start (over
    /// the built-in prompts) and voicemail messages written under `<media_dir>/voicemail`;
    /// `None`: built-in prompts only, no voicemail.
    pub media_dir: Option<std::path::PathBuf>,
    /// Refuse INVITEs to DIDs from sources that are no configured trunk
    /// (`sip.trusted_sources_only`; see [`crate::b2bua::model::TenantTrunks`]).
    pub trusted_sources_only: bool,
    /// Digest algorithms offered to phones, one challenge each, in this order (never empty:
    /// an empty list means the default, MD5 then SHA-256).
    pub digest_algorithms: Vec<Algorithm>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A listener could not bind.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The media relay could not start.
    #[error("media relay: {0}")]
    Media(#[from] MediaError),
    /// A transport this build does not serve yet was configured.
    #[error("SIP transport {0:?} is not supported yet")]
    Unsupported(TransportKind),
    /// No UDP listener: requests towards phones need one.
    #[error("at least one UDP listener is required")]
    NoUdp,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Bound listeners (port 0 in the configuration is replaced by the real port).
    pub listeners: Vec<(TransportKind, SocketAddr)>,
    /// Ends when shutdown has drained the calls.
    pub task: JoinHandle<()>,
}

/// Binds, starts and returns. Must be called inside a tokio runtime.
pub async fn start(config: GatewayConfig, io: GatewayIo) -> Result<Gateway, GatewayError> {
    let (inbound_tx, inbound_rx) = mpsc::channel(8192);
    let streams: transport::StreamWriters = Arc::new(Mutex::new(Default::default()));
    let mut udp = None;
    let mut bound = Vec::new();
    for &(kind, addr) in &config.listeners {
        match kind {
            TransportKind::Udp => {
                let sock = transport::udp::bind(addr).await?;
                let local = sock.local_addr().map_err(|source| TransportError::Bind {
                    transport: "udp",
                    address: addr,
                    source,
                })?;
                bound.push((kind, local));
                if udp.is_none() {
                    udp = Some(sock.clone());
                }
                tokio::spawn(transport::udp::run(sock, inbound_tx.clone()));
            }
            TransportKind::Tcp => {
                let l = transport::tcp::bind(addr).await?;
                let local = l.local_addr().map_err(|source| TransportError::Bind {
                    transport: "tcp",
                    address: addr,
                    source,
                })?;
                bound.push((kind, local));
                tokio::spawn(transport::tcp::run(
                    l,
                    inbound_tx.clone(),
                    streams.clone(),
                    config.tcp,
                ));
            }
            other => return Err(GatewayError::Unsupported(other)),
        }
    }
    let Some(udp_sock) = udp.clone() else {
        return Err(GatewayError::NoUdp);
    };
    let udp_local = udp_sock
        .local_addr()
        .map_err(|source| TransportError::Bind {
            transport: "udp",
            address: udp_sock
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            source,
        })?;
    let sip_address = match config.public_address {
        Some(ip) => SocketAddr::new(ip, udp_local.port()),
        None => udp_local,
    };
    let media_address = config.public_address.unwrap_or(config.relay.bind_address);
    let (relay, media_events) = MediaRelay::start(config.relay.clone())?;
    let mut seed = [0u8; 8];
    let mut key = [0u8; 32];
    rand::fill(&mut seed);
    rand::fill(&mut key);
    let mut core = B2bua::new(
        B2buaConfig {
            sip_address,
            media_address,
            realm: config.realm.clone(),
            nonce_key: key.to_vec(),
            registrar: RegistrarConfig {
                // Many desk phones (and SIPp) read only the first challenge and give up on an
                // algorithm they lack, so MD5, which every phone speaks, goes first by default;
                // phones that prefer SHA-256 still find it (RFC 8760 §2.4 leaves the order to
                // us). Phones that refuse a 401 naming any unknown algorithm need MD5 alone
                // (`sip.digest_algorithms`).
                algorithms: if config.digest_algorithms.is_empty() {
                    vec![Algorithm::Md5, Algorithm::Sha256]
                } else {
                    config.digest_algorithms.clone()
                },
                ..RegistrarConfig::default()
            },
            timers: TimerConfig::default(),
            seed: u64::from_le_bytes(seed),
        },
        Arc::new(relay),
    );
    core.set_trusted_sources_only(config.trusted_sources_only);
    if let Some(dir) = &config.media_dir {
        core.set_caller_media(caller_prompts(dir), Some(dir.join("voicemail")));
    }
    let out = Outbound { udp, streams };
    // The driver holds the only sender clone besides the transports; dropping ours here lets
    // the channel close once the listeners stop.
    drop(inbound_tx);
    let task = tokio::spawn(crate::b2bua::driver::drive(
        core,
        inbound_rx,
        media_events,
        out,
        io,
        config.shutdown_grace,
    ));
    Ok(Gateway {
        listeners: bound,
        task,
    })
}

/// The built-in prompts with the operator's overrides from `<dir>/prompts` layered on. A broken
/// override is skipped with a log line: a bad upload must not keep the gateway from starting.
fn caller_prompts(dir: &std::path::Path) -> crate::audio::prompt::PromptLibrary {
    let mut prompts = crate::audio::prompt::PromptLibrary::builtin().unwrap_or_else(|e| {
        tracing::error!("built-in prompts unusable: {e}");
        crate::audio::prompt::PromptLibrary::new()
    });
    let overrides = dir.join("prompts");
    if overrides.is_dir() {
        match prompts.load_dir(&overrides) {
            Ok(n) => {
                tracing::info!(count = n, dir = %overrides.display(), "prompt overrides loaded")
            }
            Err(e) => {
                tracing::warn!(dir = %overrides.display(), "prompt overrides not loaded: {e}")
            }
        }
    }
    prompts
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listeners: vec![(TransportKind::Udp, SocketAddr::from(([127, 0, 0, 1], 5060)))],
            public_address: None,
            relay: RelayConfig::default(),
            realm: "zentrale".to_owned(),
            shutdown_grace: Duration::from_secs(30),
            tcp: TcpLimits::default(),
            trusted_sources_only: false,
            media_dir: None,
            digest_algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
        }
    }
}
