//! The tokio shells that move SIP bytes: UDP sockets and TCP connections.
//!
//! They own no protocol state. A UDP task hands every datagram up unparsed (the core parses
//! and validates, so garbage handling is tested without sockets); a TCP connection frames its
//! stream by Content-Length with the core's own stream parser, because framing is the one
//! thing only the stream reader can do. Everything arrives at the gateway driver through one
//! channel of [`Inbound`]; the driver writes back through [`Outbound`].
//!
//! TLS and WebSocket listeners slot in as further tasks producing the same [`Inbound`] values
//! with their own [`TransportKind`].

pub mod tcp;
pub mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::sip::Message;
use crate::sip::transaction::{Peer, TransportKind};

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Binding the socket failed (address in use, not local, no permission).
    #[error("cannot bind SIP {transport} listener on {address}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a transport hands to the driver.
#[derive(Debug)]
pub enum Inbound {
    /// A datagram, not yet parsed.
    Datagram {
        /// The bytes.
        bytes: Bytes,
        /// Sender.
        source: Peer,
    },
    /// A message framed off a stream.
    Message {
        /// The message.
        message: Message,
        /// Connection's remote end.
        source: Peer,
    },
}

/// Writers of the stream connections, by remote address.
pub type StreamWriters = Arc<Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Bytes>>>>;

/// Where the driver writes.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The UDP socket our requests leave from (the first UDP listener).
    pub udp: Option<Arc<UdpSocket>>,
    /// Open TCP connections.
    pub streams: StreamWriters,
}

impl Outbound {
    /// Sends `bytes` to `peer`. UDP sends never wait: when the socket buffer is full the
    /// datagram is dropped, as the network could have done, and the transaction layer's
    /// retransmission covers it. A stream peer without an open connection is logged (we do not
    /// open connections towards phones yet; they register over the connection they keep).
    pub fn send(&self, peer: Peer, bytes: Bytes) {
        match peer.transport {
            TransportKind::Udp => {
                if let Some(sock) = &self.udp
                    && let Err(e) = sock.try_send_to(&bytes, peer.addr)
                {
                    tracing::debug!(%peer.addr, "UDP send failed: {e}");
                }
            }
            _ => {
                // Poisoning means a connection task panicked mid-insert; the map is still usable.
                let writers = self
                    .streams
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match writers.get(&peer.addr) {
                    Some(w) => {
                        let _ = w.send(bytes);
                    }
                    None => tracing::debug!(%peer.addr, "no open connection to send on"),
                }
            }
        }
    }
}
