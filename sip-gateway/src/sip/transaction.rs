//! RFC 3261 §17 transactions (with RFC 6026's Accepted state), sans-IO.
//!
//! [`TransactionLayer`] demultiplexes messages to client and server transactions by branch
//! (§17.1.3, §17.2.3), runs timers A–M, retransmits over unreliable transports only, answers a
//! new INVITE with 100 Trying at once, generates the ACK for non-2xx final responses, and passes
//! 2xx ACKs (which are not part of the INVITE transaction) up to the dialog layer. Inputs are
//! `handle_*(now, ..)`; outputs are drained with [`TransactionLayer::poll_transmit`],
//! [`TransactionLayer::poll_event`] and [`TransactionLayer::poll_timeout`]. It reads no clock
//! and owns no socket, so tests drive both sides with a fake clock and a lossy fake network.
//!
//! Retransmissions resend the stored `Bytes` of the last message (a reference-count increment);
//! timers live in one binary heap with lazy deletion, so 100,000 live transactions cost a heap
//! push per state change rather than a scan per tick.
//!
//! One addition to RFC 3261's transaction state machines: a UAS INVITE transaction in the
//! Accepted state also retransmits its 2xx on UDP until the dialog's ACK arrives (§13.3.1.4
//! puts this in the UAS core; keeping it here means the B2BUA never runs timers of its own
//! for it). The ACK is matched by Call-ID and CSeq number and still handed to the TU.
//!
//! RFC 3261 gives a server transaction in Proceeding no timer of its own: the TU must answer
//! every request it is handed (the B2BUA answers INVITEs it gives up on with a final response),
//! or the transaction stays until the layer is dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::header::Via;
use super::message::{HeaderName, Limits, Message, MessageBuilder, Method, response_to_source};

/// How long an INVITE client transaction waits for a final response after a provisional
/// one before it gives up (RFC 3261 §16.6's Timer C: more than three minutes).
const TIMER_C: Duration = Duration::from_secs(181);

/// Handle of one transaction inside a [`TransactionLayer`]. A local handle, never persisted
/// or sent to another node, so a per-layer counter is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// The transport a message travels on; only UDP is unreliable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// UDP: we retransmit.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket.
    Wss,
}

impl TransportKind {
    /// True for transports that deliver reliably (no retransmission, zero-length wait timers).
    pub fn is_reliable(self) -> bool {
        self != TransportKind::Udp
    }
}

/// Where a message comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Remote address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: TransportKind,
}

/// Timer base values (RFC 3261 §17.1.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Why the TU's call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The request has no top Via with a branch, or no CSeq.
    #[error("request lacks a Via branch or CSeq")]
    NotARequest,
    /// A transaction with this branch and method already exists.
    #[error("transaction already exists")]
    Duplicate,
    /// No such transaction (it may have terminated).
    #[error("unknown transaction")]
    Unknown,
    /// The bytes handed in as a response have no parseable status line.
    #[error("not a response")]
    NotAResponse,
    /// A response after the final response, or on a client transaction.
    #[error("the transaction no longer takes responses")]
    WrongState,
}

/// A datagram or stream write to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub peer: Peer,
    /// Bytes to send.
    pub bytes: Bytes,
}

/// What the transaction layer tells its TU (the dialog layer / B2BUA).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A new request created a server transaction; answer it with [`TransactionLayer::respond`].
    Request {
        /// The new server transaction.
        tx: TxId,
        /// The request.
        request: Message,
        /// Where it came from (responses go back there).
        source: Peer,
        /// For CANCEL: the INVITE server transaction it cancels, if still alive.
        cancels: Option<TxId>,
    },
    /// An ACK outside any INVITE transaction: the ACK of a 2xx, for the dialog.
    Ack {
        /// The ACK.
        request: Message,
        /// Where it came from.
        source: Peer,
        /// The Accepted INVITE server transaction it acknowledges, if known.
        invite_tx: Option<TxId>,
    },
    /// A response on a client transaction (provisional, final, or a 2xx retransmission while
    /// Accepted, which the dialog layer must ACK again).
    Response {
        /// The client transaction.
        tx: TxId,
        /// The response.
        response: Message,
    },
    /// Timer B/F fired (client: no final response) or H (server: the ACK never came).
    Timeout {
        /// The transaction.
        tx: TxId,
    },
    /// A response that matches no client transaction (forwarded 2xx after Timer M, strays).
    StrayResponse {
        /// The response.
        response: Message,
        /// Where it came from.
        source: Peer,
    },
    /// The transaction is gone; its id will not appear again.
    Terminated {
        /// The transaction.
        tx: TxId,
    },
}

/// State of a transaction, for inspection in tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxState {
    /// Client INVITE sent, nothing heard yet.
    Calling,
    /// Client non-INVITE sent, nothing heard yet.
    Trying,
    /// A provisional response was received / sent (server non-INVITE: sent).
    Proceeding,
    /// A final non-2xx response (server INVITE, all non-INVITE finals) was received / sent.
    Completed,
    /// Server INVITE: the ACK for a non-2xx arrived.
    Confirmed,
    /// INVITE with a 2xx (RFC 6026).
    Accepted,
    /// Done.
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum MethodKey {
    Invite,
    Other(Method),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    branch: Bytes,
    sent_by: Bytes,
    method: MethodKey,
}

fn method_key(m: &Method) -> MethodKey {
    match m {
        Method::Invite | Method::Ack => MethodKey::Invite,
        other => MethodKey::Other(other.clone()),
    }
}

/// The branch used as key: the RFC 3261 branch, or for RFC 2543 peers (no magic cookie) a
/// stand-in built from the fields RFC 3261 §17.2.3 names for them.
fn branch_of(msg: &Message, via: &Via) -> Bytes {
    if via.has_rfc3261_branch()
        && let Some(b) = via.branch()
    {
        return b.clone();
    }
    let mut k = b"2543|".to_vec();
    if let Some(r) = msg.request_line() {
        k.extend_from_slice(&r.uri_raw);
    }
    k.push(b'|');
    if let Ok(Some(c)) = msg.call_id() {
        k.extend_from_slice(&c);
    }
    k.push(b'|');
    if let Ok(Some(c)) = msg.cseq() {
        k.extend_from_slice(c.seq.to_string().as_bytes());
    }
    k.push(b'|');
    if let Ok(Some(f)) = msg.from()
        && let Some(t) = f.tag()
    {
        k.extend_from_slice(t);
    }
    Bytes::from(k)
}

fn sent_by(via: &Via) -> Bytes {
    let mut s = via.host.to_vec();
    if let Some(p) = via.port {
        s.extend_from_slice(format!(":{p}").as_bytes());
    }
    Bytes::from(s)
}

#[derive(Debug)]
#[allow(clippy::enum_variant_names)] // the RFC's own names
enum Role {
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
}

#[derive(Debug)]
struct Tx {
    role: Role,
    state: TxState,
    key: Key,
    peer: Peer,
    /// Client: the request. Server: the request (for 2xx-ACK matching and CANCEL).
    request: Message,
    /// What a retransmission resends: the request (client) or the last response (server).
    last_sent: Option<Bytes>,
    /// Client INVITE: the ACK generated for a non-2xx, resent on each final retransmission.
    ack: Option<Bytes>,
    /// Retransmission timer (A, E, G, or the 2xx resend) and its current interval.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// The state's deadline (B, D, F, H, I, J, K, L, M).
    deadline: Option<Instant>,
}

impl Tx {
    fn next_wakeup(&self) -> Option<Instant> {
        match (self.retransmit_at, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The transaction layer of one SIP endpoint; see the module docs.
#[derive(Debug)]
pub struct TransactionLayer {
    timers: TimerConfig,
    limits: Limits,
    next_id: u64,
    txs: HashMap<TxId, Tx>,
    client_index: HashMap<Key, TxId>,
    server_index: HashMap<Key, TxId>,
    /// Accepted server INVITE transactions by (Call-ID, CSeq number), for 2xx ACKs.
    accepted: HashMap<(Bytes, u32), TxId>,
    heap: BinaryHeap<Reverse<(Instant, TxId)>>,
    transmits: std::collections::VecDeque<Transmit>,
    events: std::collections::VecDeque<Event>,
}

impl TransactionLayer {
    /// A layer with these timer values.
    pub fn new(timers: TimerConfig) -> TransactionLayer {
        TransactionLayer {
            timers,
            limits: Limits::default(),
            next_id: 1,
            txs: HashMap::new(),
            client_index: HashMap::new(),
            server_index: HashMap::new(),
            accepted: HashMap::new(),
            heap: BinaryHeap::new(),
            transmits: Default::default(),
            events: Default::default(),
        }
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// The state of a transaction (`None` once terminated and removed).
    pub fn state(&self, tx: TxId) -> Option<TxState> {
        self.txs.get(&tx).map(|t| t.state)
    }

    /// The request that created a transaction.
    pub fn request(&self, tx: TxId) -> Option<&Message> {
        self.txs.get(&tx).map(|t| &t.request)
    }

    /// Next bytes to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the TU.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Drop heap entries of transactions that are gone or were rescheduled later.
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            match self.txs.get(&id).and_then(Tx::next_wakeup) {
                Some(w) if w <= at => return Some(at.max(w)),
                Some(w) => {
                    self.heap.pop();
                    self.heap.push(Reverse((w, id)));
                }
                None => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    fn alloc(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn schedule(&mut self, id: TxId) {
        if let Some(w) = self.txs.get(&id).and_then(Tx::next_wakeup) {
            self.heap.push(Reverse((w, id)));
        }
    }

    fn send(&mut self, peer: Peer, bytes: Bytes) {
        self.transmits.push_back(Transmit { peer, bytes });
    }

    /// Sends bytes outside any transaction (the dialog's ACK for a 2xx, stateless replies).
    pub fn send_stateless(&mut self, peer: Peer, bytes: Bytes) {
        self.send(peer, bytes);
    }

    /// Starts a client transaction: sends `request` (which carries our Via with a fresh branch)
    /// to `peer`.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        peer: Peer,
    ) -> Result<TxId, TxError> {
        let via = request
            .top_via()
            .ok()
            .flatten()
            .ok_or(TxError::NotARequest)?;
        let method = request.method().cloned().ok_or(TxError::NotARequest)?;
        if method == Method::Ack {
            // ACK for a 2xx has no transaction: use [`Self::send_stateless`].
            return Err(TxError::NotARequest);
        }
        let key = Key {
            branch: via.branch().cloned().ok_or(TxError::NotARequest)?,
            sent_by: Bytes::new(),
            method: method_key(&method),
        };
        if self.client_index.contains_key(&key) {
            return Err(TxError::Duplicate);
        }
        let id = self.alloc();
        let t1 = self.timers.t1;
        let unreliable = !peer.transport.is_reliable();
        let invite = method == Method::Invite;
        let tx = Tx {
            role: if invite {
                Role::ClientInvite
            } else {
                Role::ClientNonInvite
            },
            state: if invite {
                TxState::Calling
            } else {
                TxState::Trying
            },
            key: key.clone(),
            peer,
            last_sent: Some(request.raw().clone()),
            request: request.clone(),
            ack: None,
            retransmit_at: unreliable.then(|| now + t1),
            interval: t1,
            // Timer B / F.
            deadline: Some(now + 64 * t1),
        };
        self.send(peer, request.raw().clone());
        self.client_index.insert(key, id);
        self.txs.insert(id, tx);
        self.schedule(id);
        Ok(id)
    }

    /// Feeds a message that arrived from `source` (already validated by [`super::validate`]).
    pub fn handle_message(&mut self, now: Instant, msg: Message, source: Peer) {
        if msg.is_request() {
            self.handle_request(now, msg, source);
        } else {
            self.handle_response(now, msg, source);
        }
    }

    fn handle_request(&mut self, now: Instant, req: Message, source: Peer) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        let Ok(Some(via)) = req.top_via() else {
            return;
        };
        let key = Key {
            branch: branch_of(&req, &via),
            sent_by: sent_by(&via),
            method: method_key(&method),
        };
        if let Some(&id) = self.server_index.get(&key) {
            self.retransmitted_request(now, id, &method, req, source);
            return;
        }
        if method == Method::Ack {
            let invite_tx = match (req.call_id(), req.cseq()) {
                (Ok(Some(c)), Ok(Some(s))) => self.accepted.get(&(c, s.seq)).copied(),
                _ => None,
            };
            if let Some(id) = invite_tx
                && let Some(tx) = self.txs.get_mut(&id)
            {
                // The dialog's ACK: stop resending the 2xx; Timer L still absorbs INVITE copies.
                tx.retransmit_at = None;
            }
            self.events.push_back(Event::Ack {
                request: req,
                source,
                invite_tx,
            });
            return;
        }
        let id = self.alloc();
        let invite = method == Method::Invite;
        let cancels = if method == Method::Cancel {
            let k = Key {
                method: MethodKey::Invite,
                ..key.clone()
            };
            self.server_index.get(&k).copied()
        } else {
            None
        };
        let mut tx = Tx {
            role: if invite {
                Role::ServerInvite
            } else {
                Role::ServerNonInvite
            },
            state: if invite {
                TxState::Proceeding
            } else {
                TxState::Trying
            },
            key: key.clone(),
            peer: source,
            request: req.clone(),
            last_sent: None,
            ack: None,
            retransmit_at: None,
            interval: self.timers.t1,
            deadline: None,
        };
        if invite {
            // 100 Trying at once: the B2BUA's answer depends on acd-core and on the agent's
            // phone, which may take longer than the 200 ms RFC 3261 §17.2.1 allows.
            let trying = response_to_source(&req, Some(source.addr), 100, "Trying", None).finish();
            tx.last_sent = Some(trying.clone());
            self.send(source, trying);
        }
        self.server_index.insert(key, id);
        self.txs.insert(id, tx);
        self.events.push_back(Event::Request {
            tx: id,
            request: req,
            source,
            cancels,
        });
    }

    fn retransmitted_request(
        &mut self,
        now: Instant,
        id: TxId,
        method: &Method,
        _req: Message,
        source: Peer,
    ) {
        let t4 = self.timers.t4;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if *method == Method::Ack {
            // ACK for our non-2xx final: Completed → Confirmed, Timer I.
            if matches!(tx.role, Role::ServerInvite) && tx.state == TxState::Completed {
                tx.state = TxState::Confirmed;
                tx.retransmit_at = None;
                tx.deadline = Some(if tx.peer.transport.is_reliable() {
                    now
                } else {
                    now + t4
                });
                self.schedule(id);
            }
            return;
        }
        // A retransmitted request: resend the last response (none yet in Trying: absorb).
        // In Accepted the 2xx is the TU's to resend, but we hold it, so resending is harmless.
        if let Some(b) = tx.last_sent.clone() {
            let peer = tx.peer;
            let _ = source;
            self.send(peer, b);
        }
    }

    fn handle_response(&mut self, now: Instant, resp: Message, source: Peer) {
        let (Ok(Some(via)), Ok(Some(cseq)), Some(code)) =
            (resp.top_via(), resp.cseq(), resp.status())
        else {
            return;
        };
        let Some(branch) = via.branch().cloned() else {
            self.events.push_back(Event::StrayResponse {
                response: resp,
                source,
            });
            return;
        };
        let method = Method::from_token(&cseq.method, &cseq.method);
        let key = Key {
            branch,
            sent_by: Bytes::new(),
            method: method_key(&method),
        };
        let Some(&id) = self.client_index.get(&key) else {
            self.events.push_back(Event::StrayResponse {
                response: resp,
                source,
            });
            return;
        };
        let timers = self.timers;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let reliable = tx.peer.transport.is_reliable();
        match tx.role {
            Role::ClientInvite => match (tx.state, code) {
                (TxState::Calling | TxState::Proceeding, 100..=199) => {
                    tx.state = TxState::Proceeding;
                    tx.retransmit_at = None;
                    // Timer B guards the Calling state only (§17.1.1.2): a phone may ring for
                    // minutes. Ending the ringing is the TU's decision (offer timeout, CANCEL);
                    // as a safety net against a peer that never sends a final response, each
                    // provisional re-arms a Timer C-like limit (§16.6: more than 3 minutes).
                    tx.deadline = Some(now + TIMER_C);
                    self.events.push_back(Event::Response {
                        tx: id,
                        response: resp,
                    });
                }
                (TxState::Calling | TxState::Proceeding, 200..=299) => {
                    tx.state = TxState::Accepted;
                    tx.retransmit_at = None;
                    // Timer M (RFC 6026 §8.4).
                    tx.deadline = Some(now + 64 * timers.t1);
                    self.events.push_back(Event::Response {
                        tx: id,
                        response: resp,
                    });
                }
                (TxState::Accepted, 200..=299) => {
                    self.events.push_back(Event::Response {
                        tx: id,
                        response: resp,
                    });
                }
                (TxState::Calling | TxState::Proceeding, 300..=699) => {
                    let ack = build_ack(&tx.request, &resp);
                    tx.ack = Some(ack.clone());
                    tx.state = TxState::Completed;
                    tx.retransmit_at = None;
                    // Timer D: 32 s (at least) on UDP, 0 on reliable transports.
                    tx.deadline = Some(if reliable {
                        now
                    } else {
                        now + Duration::from_secs(32).max(64 * timers.t1)
                    });
                    let peer = tx.peer;
                    self.send(peer, ack);
                    self.events.push_back(Event::Response {
                        tx: id,
                        response: resp,
                    });
                }
                (TxState::Completed, 300..=699) => {
                    // Our ACK was lost: resend it, do not bother the TU again.
                    if let Some(ack) = tx.ack.clone() {
                        let peer = tx.peer;
                        self.send(peer, ack);
                    }
                }
                _ => {}
            },
            Role::ClientNonInvite => match (tx.state, code) {
                (TxState::Trying | TxState::Proceeding, 100..=199) => {
                    tx.state = TxState::Proceeding;
                    self.events.push_back(Event::Response {
                        tx: id,
                        response: resp,
                    });
                }
                (TxState::Trying | TxState::Proceeding, 200..=699) => {
                    tx.state = TxState::Completed;
                    tx.retransmit_at = None;
                    // Timer K.
                    tx.deadline = Some(if reliable { now } else { now + timers.t4 });
                    self.events.push_back(Event::Response {
                        tx: id,
                        response: resp,
                    });
                }
                _ => {}
            },
            Role::ServerInvite | Role::ServerNonInvite => {}
        }
        self.schedule(id);
    }

    /// Sends a response on a server transaction. `response` must be a complete response
    /// (build it with [`super::message::response_to_source`]).
    pub fn respond(&mut self, now: Instant, id: TxId, response: Bytes) -> Result<(), TxError> {
        let code = status_of(&response).ok_or(TxError::NotAResponse)?;
        let timers = self.timers;
        let tx = self.txs.get_mut(&id).ok_or(TxError::Unknown)?;
        let reliable = tx.peer.transport.is_reliable();
        match (&tx.role, tx.state) {
            (Role::ServerInvite, TxState::Proceeding) => {
                tx.last_sent = Some(response.clone());
                match code {
                    100..=199 => {}
                    200..=299 => {
                        tx.state = TxState::Accepted;
                        // Timer L (RFC 6026 §8.7); on UDP resend the 2xx until the ACK.
                        tx.deadline = Some(now + 64 * timers.t1);
                        tx.interval = timers.t1;
                        tx.retransmit_at = (!reliable).then(|| now + timers.t1);
                        if let (Ok(Some(c)), Ok(Some(s))) =
                            (tx.request.call_id(), tx.request.cseq())
                        {
                            self.accepted.insert((c, s.seq), id);
                        }
                    }
                    _ => {
                        tx.state = TxState::Completed;
                        tx.interval = timers.t1;
                        // Timer G (UDP only) and Timer H.
                        tx.retransmit_at = (!reliable).then(|| now + timers.t1);
                        tx.deadline = Some(now + 64 * timers.t1);
                    }
                }
            }
            (Role::ServerNonInvite, TxState::Trying | TxState::Proceeding) => {
                tx.last_sent = Some(response.clone());
                if code < 200 {
                    tx.state = TxState::Proceeding;
                } else {
                    tx.state = TxState::Completed;
                    // Timer J.
                    tx.deadline = Some(if reliable { now } else { now + 64 * timers.t1 });
                }
            }
            (Role::ServerInvite, TxState::Accepted) if (200..=299).contains(&code) => {
                // A 2xx retransmission requested by the TU passes straight through.
            }
            _ => return Err(TxError::WrongState),
        }
        let peer = tx.peer;
        self.send(peer, response);
        self.schedule(id);
        Ok(())
    }

    /// Fires every timer due at `now`. Calling it early or often is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            self.fire(now, id);
        }
    }

    fn fire(&mut self, now: Instant, id: TxId) {
        let timers = self.timers;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if let Some(at) = tx.retransmit_at
            && at <= now
        {
            let bytes = tx.last_sent.clone();
            // A doubles without cap; E, G and the 2xx resend cap at T2 (§17.1.1.2, §17.1.2.2,
            // §17.2.1). E in Proceeding fires every T2.
            tx.interval = match (&tx.role, tx.state) {
                (Role::ClientInvite, _) => tx.interval * 2,
                (Role::ClientNonInvite, TxState::Proceeding) => timers.t2,
                _ => (tx.interval * 2).min(timers.t2),
            };
            tx.retransmit_at = Some(at + tx.interval);
            if let Some(b) = bytes {
                let peer = tx.peer;
                self.send(peer, b);
            }
        }
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if let Some(at) = tx.deadline
            && at <= now
        {
            match (&tx.role, tx.state) {
                // Timer H: the ACK never came. Timer B/F: no final response.
                (Role::ServerInvite, TxState::Completed)
                | (Role::ClientInvite, TxState::Calling | TxState::Proceeding)
                | (Role::ClientNonInvite, TxState::Trying | TxState::Proceeding) => {
                    self.events.push_back(Event::Timeout { tx: id });
                }
                _ => {}
            }
            self.terminate(id);
            return;
        }
        self.schedule(id);
    }

    fn terminate(&mut self, id: TxId) {
        if let Some(tx) = self.txs.remove(&id) {
            match tx.role {
                Role::ClientInvite | Role::ClientNonInvite => {
                    self.client_index.remove(&tx.key);
                }
                Role::ServerInvite | Role::ServerNonInvite => {
                    self.server_index.remove(&tx.key);
                    if let (Ok(Some(c)), Ok(Some(s))) = (tx.request.call_id(), tx.request.cseq()) {
                        let k = (c, s.seq);
                        if self.accepted.get(&k) == Some(&id) {
                            self.accepted.remove(&k);
                        }
                    }
                }
            }
            self.events.push_back(Event::Terminated { tx: id });
        }
    }

    /// Limits used when this layer parses messages it builds itself.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

fn status_of(resp: &[u8]) -> Option<u16> {
    if resp.len() < 12 || !resp.starts_with(b"SIP/2.0 ") {
        return None;
    }
    let d = &resp[8..11];
    d.iter()
        .all(u8::is_ascii_digit)
        .then(|| d.iter().fold(0u16, |a, c| a * 10 + u16::from(c - b'0')))
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same Request-URI, Call-ID,
/// From, CSeq number and top Via as the INVITE, the response's To (with its tag), the
/// INVITE's Route set.
pub fn build_ack(invite: &Message, response: &Message) -> Bytes {
    let uri = invite
        .request_line()
        .map(|r| r.uri_raw.clone())
        .unwrap_or_default();
    let mut b = MessageBuilder::request(&Method::Ack, &uri);
    if let Some(v) = invite.headers_named(&HeaderName::Via).next() {
        // Only the top Via value (ours), not any others in the same field.
        let top = super::header::split_commas(v)
            .and_then(|p| p.first().map(|s| s.to_vec()))
            .unwrap_or_else(|| v.to_vec());
        b = b.header(b"Via", &top);
    }
    b = b.copy_headers(invite, &HeaderName::Route);
    b = b.header(b"Max-Forwards", b"70");
    b = b.copy_headers(invite, &HeaderName::From);
    b = b.copy_headers(response, &HeaderName::To);
    b = b.copy_headers(invite, &HeaderName::CallId);
    if let Ok(Some(c)) = invite.cseq() {
        b = b.header(b"CSeq", format!("{} ACK", c.seq).as_bytes());
    }
    b.finish()
}

/// A CANCEL for a pending INVITE (RFC 3261 §9.1): same Request-URI, top Via (so the same
/// branch), From, To, Call-ID, CSeq number and Route set.
pub fn build_cancel(invite: &Message) -> Bytes {
    let uri = invite
        .request_line()
        .map(|r| r.uri_raw.clone())
        .unwrap_or_default();
    let mut b = MessageBuilder::request(&Method::Cancel, &uri);
    if let Some(v) = invite.headers_named(&HeaderName::Via).next() {
        let top = super::header::split_commas(v)
            .and_then(|p| p.first().map(|s| s.to_vec()))
            .unwrap_or_else(|| v.to_vec());
        b = b.header(b"Via", &top);
    }
    b = b
        .copy_headers(invite, &HeaderName::Route)
        .header(b"Max-Forwards", b"70")
        .copy_headers(invite, &HeaderName::From)
        .copy_headers(invite, &HeaderName::To)
        .copy_headers(invite, &HeaderName::CallId);
    if let Ok(Some(c)) = invite.cseq() {
        b = b.header(b"CSeq", format!("{} CANCEL", c.seq).as_bytes());
    }
    b.finish()
}

/// A fresh RFC 3261 branch from caller-supplied randomness (the core draws no random numbers).
pub fn new_branch(random: u64) -> String {
    format!("z9hG4bK{random:016x}")
}
