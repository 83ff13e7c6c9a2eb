//! The UDP listener: one task per socket that forwards datagrams to the driver unparsed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Inbound, TransportError};
use crate::sip::transaction::{Peer, TransportKind};

/// Largest datagram read; anything longer is truncated by the kernel and then refused by the
/// parser's size limit (64 KiB) or framing.
const MAX_DATAGRAM: usize = 65_535;

/// Binds a UDP socket.
pub async fn bind(address: SocketAddr) -> Result<Arc<UdpSocket>, TransportError> {
    UdpSocket::bind(address)
        .await
        .map(Arc::new)
        .map_err(|source| TransportError::Bind {
            transport: "udp",
            address,
            source,
        })
}

/// Reads datagrams until the driver goes away.
pub async fn run(socket: Arc<UdpSocket>, inbound: mpsc::Sender<Inbound>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, addr)) => {
                let msg = Inbound::Datagram {
                    bytes: Bytes::copy_from_slice(&buf[..n]),
                    source: Peer {
                        addr,
                        transport: TransportKind::Udp,
                    },
                };
                // A full queue means the driver is overloaded: shedding here is what the
                // kernel would do anyway, and UDP peers retransmit.
                match inbound.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!("SIP inbound queue full; datagram dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // ICMP port unreachable from an earlier send shows up here on Linux; not fatal.
            Err(e) => tracing::debug!("UDP receive error: {e}"),
        }
    }
}
