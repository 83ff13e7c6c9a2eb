//! The TCP listener: framing by Content-Length, a cap on connections, an idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::{Inbound, StreamWriters, TransportError};
use crate::sip::transaction::{Peer, TransportKind};
use crate::sip::{Limits, Message, ParseError};

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Most connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// A connection that sends nothing (not even a CRLF keep-alive) this long is closed.
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Binds a TCP listener.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| TransportError::Bind {
            transport: "tcp",
            address,
            source,
        })
}

/// Accepts connections until the driver goes away.
pub async fn run(
    listener: TcpListener,
    inbound: mpsc::Sender<Inbound>,
    writers: StreamWriters,
    limits: TcpLimits,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("TCP accept failed: {e}");
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::info!(%addr, "SIP TCP connection limit reached; closing");
            drop(stream);
            continue;
        };
        if inbound.is_closed() {
            return;
        }
        let (inbound, writers) = (inbound.clone(), writers.clone());
        tokio::spawn(async move {
            connection(stream, addr, inbound, writers, limits.idle_timeout).await;
            drop(permit);
        });
    }
}

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    writers: StreamWriters,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<bytes::Bytes>();
    writers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(addr, tx);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let limits = Limits::default();
    let mut buf = BytesMut::with_capacity(8192);
    let source = Peer {
        addr,
        transport: TransportKind::Tcp,
    };
    'read: loop {
        let n = match tokio::time::timeout(idle, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => {
                tracing::debug!(%addr, "idle SIP TCP connection closed");
                break;
            }
        };
        let _ = n;
        loop {
            match Message::parse_stream(&mut buf, &limits) {
                Ok(Some(message)) => {
                    if inbound
                        .send(Inbound::Message { message, source })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(ParseError::Empty) => break,
                Err(e) => {
                    // Framing is lost; nothing after this point can be trusted.
                    tracing::info!(%addr, "closing SIP TCP connection: {e}");
                    break 'read;
                }
            }
        }
    }
    writers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&addr);
    writer.abort();
}
