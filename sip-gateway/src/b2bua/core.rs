//! The B2BUA core, sans-IO: from carrier INVITE through acd-core to an agent's phone.
//!
//! [`B2bua`] owns the transaction layer, the registrar and the table of calls. Everything
//! enters through `handle_*(now, ..)`: datagrams and stream messages from the transports,
//! acd-core actions, media-relay events, timeouts. Everything leaves through `poll_*`: bytes to
//! send ([`B2bua::poll_transmit`]), routing inputs for the tenant's engine
//! ([`B2bua::poll_routing`]), and CDR rows ([`B2bua::poll_cdr`]). Time is an argument
//! ([`Now`]: a monotonic instant for timers and the wall clock for records and nonces), and
//! randomness comes from a seeded generator, so a test can drive a whole call with a fake clock.
//!
//! The one port to the outside that is a call rather than an output is [`MediaPort`]: the relay
//! must hand back the ports it bound before the SDP answer can be written, so the core asks it
//! synchronously (the relay's `add_call` binds two sockets and queues a command, no waiting).
//!
//! A call has one caller leg (the carrier's INVITE server transaction and dialog) and, per
//! offer acd-core makes, one branch per registered contact of the agent (forking: the first
//! 2xx wins, the others get CANCEL, a late 2xx gets ACK and BYE). Ringing is reported to the
//! caller with a 180 while the call waits in the queue; the 200 with our anchored SDP is sent
//! only when an agent answers, so the carrier bills talk time only — unless the queue has
//! media or the DID leads to an IVR menu: then the caller is answered at once and hears the
//! greeting, music, announcements or menu (`queue_media`, `ivr`, `voicemail` child modules),
//! and the agent's answer first stops whatever plays.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acd_core::{
    Action, AgentId, Channel, ContactId, Input, NewContact, OfferId, QueueId, RejectKind,
};
use acd_core::{Disposition, io::CancelReason};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::model::{GatewayModel, ModelIndex};

mod callback;
mod cdr_quality;
mod hold;
mod internal;
mod ivr;
mod live;
mod outbound;
mod queue_media;
mod recording;
mod reinvite;
mod session_timer;
mod supervise;
mod transfer;
mod trunks;
mod voicemail;

use crate::media::{
    AudioCommand, CallMedia, Leg, LegSetup, MediaError, MediaEvent, MediaSessionId, PayloadTypes,
    PortPair,
};
use crate::sdp::{Codec, LocalMedia, SessionDescription};
use crate::sip::auth::DigestServer;
use crate::sip::registrar::{RegisterAction, Registrar, RegistrarConfig, RegistrarEvent};
use crate::sip::transaction::{
    Event, Peer, TimerConfig, TransactionLayer, Transmit, TransportKind, TxId, new_branch,
};
use crate::sip::{
    HeaderName, Limits, Message, MessageBuilder, Method, ParseError, Policy, Verdict,
    response_to_source, validate,
};
pub use recording::{RecordingSettings, RecordingSummary, recording_path};
pub use trunks::TrunkStatus;

/// The two clocks every input carries.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time for timers.
    pub mono: Instant,
    /// Milliseconds since the Unix epoch, for records, contact ids and digest nonces.
    pub wall_ms: u64,
}

/// The media relay as the core sees it (implemented by [`crate::media::MediaRelay`], and by a
/// fake in unit tests).
pub trait MediaPort {
    /// Reserves ports for a call with these two legs.
    fn add_call(&mut self, a: LegSetup, b: LegSetup) -> Result<CallMedia, MediaError>;
    /// Tells the relay where a leg's peer receives.
    fn update_leg(&mut self, id: MediaSessionId, leg: Leg, setup: LegSetup);
    /// Releases the call's ports.
    fn remove_call(&mut self, id: MediaSessionId);
    /// Plays, mixes, detects or records (see [`crate::media::control`]).
    fn audio(&mut self, id: MediaSessionId, cmd: AudioCommand);
    /// Adds the third leg ([`Leg::C`]) and returns its ports.
    fn add_leg(&mut self, id: MediaSessionId, setup: LegSetup) -> Result<PortPair, MediaError>;
    /// Removes the third leg.
    fn remove_leg(&mut self, id: MediaSessionId, leg: Leg);
    /// Whether [`MediaEvent::Removed`] with final counters follows `remove_call` (then CDR
    /// rows wait for it to carry the MOS, core/cdr_quality.rs).
    fn reports_removal(&self) -> bool {
        false
    }
}

impl MediaPort for Arc<crate::media::MediaRelay> {
    fn add_call(&mut self, a: LegSetup, b: LegSetup) -> Result<CallMedia, MediaError> {
        crate::media::MediaRelay::add_call(self, a, b)
    }
    fn update_leg(&mut self, id: MediaSessionId, leg: Leg, setup: LegSetup) {
        if let Err(e) = crate::media::MediaRelay::update_leg(self, id, leg, setup) {
            tracing::warn!(?id, "media update failed: {e}");
        }
    }
    fn remove_call(&mut self, id: MediaSessionId) {
        // Already gone (relay shut down or removed by the worker) is what we want anyway.
        let _ = crate::media::MediaRelay::remove_call(self, id);
    }
    fn audio(&mut self, id: MediaSessionId, cmd: AudioCommand) {
        if let Err(e) = crate::media::MediaRelay::audio(self, id, cmd) {
            tracing::warn!(?id, "media command failed: {e}");
        }
    }
    fn add_leg(&mut self, id: MediaSessionId, setup: LegSetup) -> Result<PortPair, MediaError> {
        crate::media::MediaRelay::add_leg(self, id, setup)
    }
    fn remove_leg(&mut self, id: MediaSessionId, leg: Leg) {
        let _ = crate::media::MediaRelay::remove_leg(self, id, leg);
    }
    fn reports_removal(&self) -> bool {
        true
    }
}

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct B2buaConfig {
    /// The address written into our Via and Contact (the public one behind NAT).
    pub sip_address: SocketAddr,
    /// The address written into our SDP (the relay's public address).
    pub media_address: IpAddr,
    /// Digest realm for phones whose extension belongs to no tenant (each agent is challenged
    /// in its own tenant's realm, which comes with its `SipSecret`).
    pub realm: String,
    /// Key that signs digest nonces (random per start unless shared between nodes).
    pub nonce_key: Vec<u8>,
    /// Registrar limits.
    pub registrar: RegistrarConfig,
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Seed of the generator for tags, branches and Call-IDs.
    pub seed: u64,
}

/// One CDR row (GLOSSARY "CDR": one row per call leg), handed to the binary to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrRow {
    /// Tenant (crm-api's id).
    pub tenant: Uuid,
    /// acd-core's contact.
    pub contact: ContactId,
    /// `caller` (trunk side) or `agent`.
    pub leg: &'static str,
    /// Leg start, ms since the epoch.
    pub started_ms: u64,
    /// Answer time.
    pub answered_ms: Option<u64>,
    /// Leg end.
    pub ended_ms: u64,
    /// Calling party (user part of From).
    pub caller: String,
    /// Called party (the DID, or the agent's extension for the agent leg).
    pub callee: String,
    /// `answered`, `abandoned`, `refused`, `failed`.
    pub result: &'static str,
    /// Queue.
    pub queue: Option<String>,
    /// Agent who answered.
    pub agent: Option<String>,
    /// Time in queue until answer or abandon, ms.
    pub wait_ms: u64,
    /// Talk time, ms.
    pub talk_ms: u64,
    /// The call's recording: file, duration, pauses (the last one when there were several).
    pub recording: Option<RecordingSummary>,
    /// Voice quality as MOS x100 (E-model), when the relay reported it for this leg.
    pub mos_x100: Option<u16>,
    /// The voicemail the caller left (file), if any.
    pub voicemail: Option<String>,
    /// What a transfer did to this leg (e.g. `blind:1002`, `attended:1002`), if any.
    pub transfer: Option<String>,
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls accepted into a queue.
    pub calls_in: u64,
    /// Calls connected to an agent.
    pub answered: u64,
    /// Callers who hung up before an agent answered.
    pub abandoned: u64,
    /// Datagrams that could not be framed.
    pub unparseable: u64,
    /// Requests refused by validation.
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CallKey(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegRef {
    Caller,
    Branch(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchState {
    Calling,
    Ringing,
    Won,
    Done,
}

#[derive(Debug)]
struct Branch {
    offer: OfferId,
    agent: AgentId,
    tx: TxId,
    invite: Message,
    peer: Peer,
    call_id: Bytes,
    state: BranchState,
    /// From the 2xx: the agent's To (with tag) and Contact, for ACK and BYE.
    remote_to: Option<Bytes>,
    remote_target: Option<Bytes>,
    /// The engine withdrew this offer (timeout, ring-all loser): its failure needs no report.
    withdrawn: bool,
    last_status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Queued,
    Connected,
}

#[derive(Debug)]
struct Call {
    tenant: Uuid,
    contact: ContactId,
    queue: QueueId,
    invite_tx: TxId,
    invite: Message,
    source: Peer,
    local_tag: String,
    call_id: Bytes,
    caller_contact: Bytes,
    caller_number: String,
    dialled: String,
    media: CallMedia,
    answer_sdp: Bytes,
    agent_codecs: Vec<Codec>,
    state: CallState,
    branches: Vec<Branch>,
    winner: Option<usize>,
    started_ms: u64,
    answered_ms: Option<u64>,
    bye_cseq: u32,
    /// Our current SDP towards the winning agent after a re-INVITE changed it (None: the
    /// offer in the branch's INVITE).
    agent_sdp: Option<Bytes>,
    /// The recording in progress (core/recording.rs).
    recording: Option<recording::Recording>,
    /// Recordings of this call already finished (stopped by API).
    recordings_done: Vec<RecordingSummary>,
    /// The supervisor attached or being rung (core/supervise.rs).
    monitor: Option<supervise::Monitor>,
    /// The leg whose phone put the call on hold (core/hold.rs).
    held_by: Option<Leg>,
    /// A direct transfer to an agent while its phones ring (core/transfer.rs).
    transfer: Option<transfer::Transfer>,
    /// Answered once, then transferred back into a queue: the next answer must not answer
    /// the caller again (core/transfer.rs).
    requeued: bool,
    /// The engine no longer holds this contact as a conversation (a direct transfer ended it
    /// there): no second `ContactEnded` at hang-up.
    engine_released: bool,
    /// When the current agent's leg began, if not at the call's answer (after a transfer).
    agent_since_ms: Option<u64>,
    /// Our last CSeq in the transferor's dialog (NOTIFYs and its BYE, core/transfer.rs).
    transfer_cseq: u32,
}

/// The B2BUA; see the module docs.
pub struct B2bua<M: MediaPort> {
    config: B2buaConfig,
    tl: TransactionLayer,
    registrar: Registrar,
    index: ModelIndex,
    media: M,
    rng: SmallRng,
    limits: Limits,
    policy_dgram: Policy,
    policy_stream: Policy,
    next_call: u64,
    calls: HashMap<CallKey, Call>,
    by_contact: HashMap<ContactId, CallKey>,
    by_call_id: HashMap<Bytes, (CallKey, LegRef)>,
    by_invite_tx: HashMap<TxId, CallKey>,
    by_branch_tx: HashMap<TxId, (CallKey, usize)>,
    by_media: HashMap<MediaSessionId, CallKey>,
    /// Branches still pending when their call ended: a late 2xx gets ACK and BYE.
    orphans: HashMap<TxId, Branch>,
    routing: VecDeque<(Uuid, Input)>,
    cdrs: VecDeque<CdrRow>,
    /// CDR rows of finished calls waiting for the relay's final counters (core/cdr_quality.rs).
    held_cdrs: cdr_quality::HeldCdrs,
    accepting: bool,
    counters: Counters,
    /// Callbacks requested by callers (filled by core/callback.rs's request side), dialled
    /// when the engine emits `Action::DialCallback` for the contact.
    pending_callbacks: HashMap<ContactId, callback::CallbackInfo>,
    /// Carrier trunks: registrations, probes, channel counts (core/trunks.rs).
    trunks: trunks::TrunkSet,
    /// Refuse INVITEs to DIDs from sources that are no trunk (core/trunks.rs).
    trusted_sources_only: bool,
    /// Outbound calls through trunks before their answer (core/outbound.rs).
    dials: outbound::Dials,
    /// RFC 4028 timers of connected legs (core/session_timer.rs).
    session_timers: session_timer::SessionTimers,
    /// Where recordings go, which queues record (core/recording.rs).
    recording: RecordingSettings,
    /// Supervisor dialogs by transaction and Call-ID (core/supervise.rs).
    monitors: supervise::MonitorIndex,
    /// Early answer, prompts, IVR, voicemail per call, and their timers (core/queue_media.rs).
    experience: queue_media::CallerExperience,
}

impl<M: MediaPort> std::fmt::Debug for B2bua<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("B2bua")
            .field("calls", &self.calls.len())
            .field("transactions", &self.tl.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn user_of(value: Option<&crate::sip::NameAddr>) -> String {
    value
        .and_then(|n| n.uri.user_unescaped())
        .map(|u| String::from_utf8_lossy(&u).into_owned())
        .unwrap_or_default()
}

fn transport_token(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Udp => "UDP",
        TransportKind::Tcp => "TCP",
        TransportKind::Tls => "TLS",
        TransportKind::Ws => "WS",
        _ => "WSS",
    }
}

const ALLOW: &[u8] = b"INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, REFER, NOTIFY, UPDATE";

impl<M: MediaPort> B2bua<M> {
    /// A core with no tenants yet (see [`Self::set_model`]).
    pub fn new(config: B2buaConfig, media: M) -> B2bua<M> {
        let digest = DigestServer::new(config.realm.clone(), &config.nonce_key, 300);
        let registrar = Registrar::new(config.registrar.clone(), digest);
        let policy_stream = Policy {
            datagram: false,
            ..Policy::default()
        };
        B2bua {
            tl: TransactionLayer::new(config.timers),
            registrar,
            index: ModelIndex::default(),
            media,
            rng: SmallRng::seed_from_u64(config.seed),
            limits: Limits::default(),
            policy_dgram: Policy::default(),
            policy_stream,
            next_call: 1,
            calls: HashMap::new(),
            by_contact: HashMap::new(),
            by_call_id: HashMap::new(),
            by_invite_tx: HashMap::new(),
            by_branch_tx: HashMap::new(),
            by_media: HashMap::new(),
            orphans: HashMap::new(),
            routing: VecDeque::new(),
            cdrs: VecDeque::new(),
            held_cdrs: Default::default(),
            accepting: true,
            counters: Counters::default(),
            pending_callbacks: HashMap::new(),
            trunks: trunks::TrunkSet::default(),
            trusted_sources_only: false,
            dials: outbound::Dials::default(),
            session_timers: session_timer::SessionTimers::default(),
            recording: RecordingSettings::default(),
            monitors: supervise::MonitorIndex::default(),
            experience: queue_media::CallerExperience::default(),
            config,
        }
    }

    /// Replaces the tenants' telephony live; calls in progress keep their queue.
    pub fn set_model(&mut self, model: &Arc<GatewayModel>) {
        self.index = ModelIndex::build(model);
        self.trunks_model_changed();
    }

    /// Stops taking new calls (they get 503); calls in progress continue.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Calls in progress (queued, ringing or connected).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Next bytes to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.tl.poll_transmit()
    }

    /// Next routing input for a tenant's engine.
    #[must_use]
    pub fn poll_routing(&mut self) -> Option<(Uuid, Input)> {
        self.routing.pop_front()
    }

    /// Next CDR row to persist.
    #[must_use]
    pub fn poll_cdr(&mut self) -> Option<CdrRow> {
        self.cdr_quality_flush_when_draining();
        self.cdrs.pop_front()
    }

    /// When [`Self::handle_timeout`] must run next.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let t = match (self.tl.poll_timeout(), self.registrar.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let t = match (t, self.caller_media_poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let t = match (t, self.trunks_poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let t = match (t, self.cdr_quality_poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let t = match (t, self.session_timers_poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (t, self.outbound_poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires due timers (transactions, registration expiry).
    pub fn handle_timeout(&mut self, now: Now) {
        self.tl.handle_timeout(now.mono);
        self.registrar.handle_timeout(now.mono);
        self.pump(now);
        self.caller_media_timeout(now);
        self.trunks_timeout(now);
        self.session_timers_timeout(now);
        self.outbound_timeouts(now);
        self.cdr_quality_timeout(now);
    }

    /// A datagram from `source` (UDP). Garbage is dropped (and counted); requests that parse
    /// but fail validation are answered statelessly with the status validation chose.
    pub fn handle_datagram(&mut self, now: Now, bytes: Bytes, source: Peer) {
        match Message::parse_datagram(bytes, &self.limits) {
            Ok(msg) => self.handle_message(now, msg, source),
            Err(ParseError::Empty) => {}
            Err(e) => {
                self.counters.unparseable += 1;
                tracing::debug!(%source.addr, "dropped unparseable datagram: {e}");
            }
        }
    }

    /// A framed message (from a stream transport, or [`Self::handle_datagram`]).
    pub fn handle_message(&mut self, now: Now, msg: Message, source: Peer) {
        let policy = if source.transport.is_reliable() {
            &self.policy_stream
        } else {
            &self.policy_dgram
        };
        match validate(&msg, policy) {
            Verdict::Accept => {
                self.tl.handle_message(now.mono, msg, source);
                self.pump(now);
            }
            Verdict::Reject(r) => {
                self.counters.rejected += 1;
                tracing::debug!(%source.addr, status = r.status, "refused request: {}", r.detail);
                if msg.method() != Some(&Method::Ack) {
                    let tag = self.token();
                    self.tl
                        .send_stateless(source, r.response(&msg, tag.as_bytes()));
                }
            }
            Verdict::Drop(why) => {
                self.counters.unparseable += 1;
                tracing::debug!(%source.addr, "dropped message: {why}");
            }
        }
    }

    /// An action of a tenant's routing engine.
    pub fn handle_action(&mut self, now: Now, tenant: Uuid, action: Action) {
        match action {
            Action::Offer {
                offer,
                contact,
                agent,
                ..
            } => self.offer(now, tenant, offer, contact, agent),
            Action::CancelOffer {
                offer,
                contact,
                reason,
                ..
            } => self.withdraw_offer(now, offer, contact, reason),
            Action::Refused {
                contact,
                then: Disposition::Voicemail,
                ..
            }
            | Action::Overflow {
                contact,
                target: Disposition::Voicemail,
                ..
            } => self.voicemail_for_contact(now, contact),
            Action::Announce {
                contact,
                position,
                ewt_ms,
                ..
            } => self.announce(now, contact, position, ewt_ms),
            Action::OfferCallback { contact, .. } => self.offer_callback(now, contact),
            Action::Refused {
                contact,
                then: Disposition::Number(number),
                ..
            } => self.overflow_to_number(now, contact, &number),
            Action::DialCallback {
                offer,
                contact,
                agent,
                queue,
                ..
            } => self.dial_callback(now, tenant, offer, contact, agent, queue),
            Action::Refused {
                contact,
                reason: acd_core::io::RefusalReason::Closed,
                ..
            } if self.caller_answered_contact(contact) => self.closed_for_answered(now, contact),
            Action::Refused { contact, .. } => self.refuse(now, contact, 480, "refused"),
            Action::Overflow {
                contact, target, ..
            } => match target {
                Disposition::Queue(q) => {
                    if let Some(call) = self
                        .by_contact
                        .get(&contact)
                        .and_then(|k| self.calls.get_mut(k))
                    {
                        call.queue = q;
                    }
                    self.caller_media_requeued(contact);
                }
                Disposition::Number(number) => self.overflow_to_number(now, contact, &number),
                _ => self.refuse(now, contact, 480, "overflowed"),
            },
            _ => {}
        }
    }

    /// An event of the media relay.
    pub fn handle_media_event(&mut self, now: Now, event: MediaEvent) {
        self.cdr_quality_event(&event);
        if self.supervisor_media_event(now, &event) {
            return;
        }
        if self.caller_media_event(now, &event) {
            return;
        }
        if let MediaEvent::RtpTimeout { id, leg } = event {
            let Some(&key) = self.by_media.get(&id) else {
                return;
            };
            let connected = self
                .calls
                .get(&key)
                .is_some_and(|c| c.state == CallState::Connected);
            // A queued caller may be silent (nothing to answer yet); only a bridged call is dead
            // when a leg stops sending.
            if connected {
                tracing::info!(?id, ?leg, "no RTP: clearing the call");
                self.hang_up(now, key, None);
            }
        }
    }

    fn token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    fn via(&mut self, transport: TransportKind) -> String {
        let branch = new_branch(self.rng.random());
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport_token(transport),
            self.config.sip_address
        )
    }

    fn our_contact(&self) -> String {
        format!("<sip:zentrale@{}>", self.config.sip_address)
    }

    /// Drains the transaction layer's and the registrar's events.
    fn pump(&mut self, now: Now) {
        while let Some(ev) = self.tl.poll_event() {
            self.handle_tx_event(now, ev);
        }
        while let Some(ev) = self.registrar.poll_event() {
            self.handle_registrar_event(now, ev);
        }
    }

    fn respond(&mut self, now: Now, tx: TxId, bytes: Bytes) {
        if let Err(e) = self.tl.respond(now.mono, tx, bytes) {
            tracing::debug!(?tx, "response not sent: {e}");
        }
    }

    fn simple(&mut self, now: Now, tx: TxId, req: &Message, source: Peer, code: u16, reason: &str) {
        let tag = self.token();
        let b = response_to_source(req, Some(source.addr), code, reason, Some(tag.as_bytes()));
        self.respond(now, tx, b.finish());
    }

    fn handle_registrar_event(&mut self, now: Now, ev: RegistrarEvent) {
        let (aor, online) = match ev {
            RegistrarEvent::Registered { aor, .. } => (aor, true),
            RegistrarEvent::Unregistered { aor, .. } | RegistrarEvent::Expired { aor, .. } => {
                (aor, false)
            }
        };
        let Some((tenant, agent, _)) = self.index.extensions.get(&aor).cloned() else {
            return;
        };
        let contacts = self.registrar.bindings(&aor, now.mono).len();
        if online && contacts == 1 {
            // The first phone of an agent logs the agent in, ready (a desk phone has no
            // other way to say so); pause and wrap-up come from the agent desktop.
            self.routing.push_back((
                tenant,
                Input::AgentLogin {
                    agent: agent.clone(),
                },
            ));
            self.routing
                .push_back((tenant, Input::AgentReady { agent }));
        } else if !online && contacts == 0 {
            self.routing
                .push_back((tenant, Input::AgentLogout { agent }));
        }
    }

    fn handle_tx_event(&mut self, now: Now, ev: Event) {
        match ev {
            Event::Request {
                tx,
                request,
                source,
                cancels,
            } => self.handle_request(now, tx, request, source, cancels),
            Event::Ack { request, .. } => {
                // A 2xx ACK from the caller confirms the dialog; nothing else to do (the
                // transaction layer stopped resending our 200).
                let _ = request;
            }
            Event::Response { tx, response } => {
                if !self.trunk_response(now, tx, &response)
                    && !self.outbound_response(now, tx, &response)
                    && !self.session_refresh_response(now, tx, &response)
                {
                    self.handle_response(now, tx, response);
                }
            }
            Event::Timeout { tx } => {
                if self.trunk_tx_timeout(now, tx)
                    || self.outbound_timeout(now, tx)
                    || self.session_refresh_timeout(now, tx)
                {
                    return;
                }
                if self.supervisor_timeout(now, tx) {
                    return;
                }
                if let Some(&(key, i)) = self.by_branch_tx.get(&tx) {
                    self.branch_failed(now, key, i, 408);
                }
            }
            Event::Terminated { tx } => {
                self.trunk_tx_terminated(tx);
                self.supervisor_tx_terminated(tx);
                self.by_branch_tx.remove(&tx);
                self.by_invite_tx.remove(&tx);
                self.orphans.remove(&tx);
            }
            Event::StrayResponse { .. } => {}
        }
    }

    fn handle_request(
        &mut self,
        now: Now,
        tx: TxId,
        req: Message,
        source: Peer,
        cancels: Option<TxId>,
    ) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        match method {
            Method::Options => {
                let tag = self.token();
                let b =
                    response_to_source(&req, Some(source.addr), 200, "OK", Some(tag.as_bytes()))
                        .header(b"Allow", ALLOW)
                        .header(b"Accept", b"application/sdp")
                        .finish();
                self.respond(now, tx, b);
            }
            Method::Register => {
                let index = &self.index;
                let action = self.registrar.handle_register_ha1(
                    now.mono,
                    now.wall_ms / 1000,
                    &req,
                    source,
                    |user| index.extensions.get(user).map(|(_, _, s)| s.ha1().clone()),
                );
                match action {
                    RegisterAction::Respond { bytes, .. } => self.respond(now, tx, bytes),
                    RegisterAction::Drop(why) => {
                        // The registrar skipped the hashing; the server transaction still needs
                        // a final answer or it would stay forever (transaction.rs module docs).
                        tracing::info!(%source.addr, "REGISTER refused: {why}");
                        self.simple(now, tx, &req, source, 403, "Forbidden");
                    }
                }
                self.pump_registrar(now);
            }
            Method::Invite => {
                let in_dialog = req.to().ok().flatten().is_some_and(|t| t.tag().is_some());
                if in_dialog {
                    self.reinvite(now, tx, &req, source);
                } else {
                    self.new_call(now, tx, req, source);
                }
            }
            Method::Bye => {
                if self.supervisor_bye(now, tx, &req, source) {
                    return;
                }
                let found = req
                    .call_id()
                    .ok()
                    .flatten()
                    .and_then(|c| self.by_call_id.get(&c).copied());
                match found {
                    Some((key, from)) => {
                        self.simple(now, tx, &req, source, 200, "OK");
                        self.hang_up(now, key, Some(from));
                    }
                    None => self.simple(
                        now,
                        tx,
                        &req,
                        source,
                        481,
                        "Call/Transaction Does Not Exist",
                    ),
                }
            }
            Method::Cancel => {
                let target = cancels.and_then(|t| self.by_invite_tx.get(&t).copied());
                match target {
                    Some(key) => {
                        self.simple(now, tx, &req, source, 200, "OK");
                        self.abandon(now, key);
                    }
                    None => self.simple(
                        now,
                        tx,
                        &req,
                        source,
                        481,
                        "Call/Transaction Does Not Exist",
                    ),
                }
            }
            Method::Info => {
                self.caller_info(now, &req);
                self.simple(now, tx, &req, source, 200, "OK");
            }
            Method::Refer => self.refer(now, tx, &req, source),
            // Session refresh or media change without an offer/answer round trip (RFC 3311).
            Method::Update => self.reinvite(now, tx, &req, source),
            _ => {
                let tag = self.token();
                let b = response_to_source(
                    &req,
                    Some(source.addr),
                    501,
                    "Not Implemented",
                    Some(tag.as_bytes()),
                )
                .header(b"Allow", ALLOW)
                .finish();
                self.respond(now, tx, b);
            }
        }
    }

    fn pump_registrar(&mut self, now: Now) {
        while let Some(ev) = self.registrar.poll_event() {
            self.handle_registrar_event(now, ev);
        }
    }

    fn new_call(&mut self, now: Now, tx: TxId, req: Message, source: Peer) {
        if !self.accepting {
            self.simple(now, tx, &req, source, 503, "Service Unavailable");
            return;
        }
        if self.session_too_small(now, tx, &req, source) {
            return;
        }
        let internal = match self.internal_invite(now, tx, &req, source) {
            internal::Route::Handled => return,
            internal::Route::Queue(tenant, queue) => Some((tenant, queue)),
            internal::Route::NotInternal => None,
        };
        let dialled = req
            .request_uri()
            .and_then(Result::ok)
            .and_then(|u| {
                u.user_unescaped()
                    .map(|u| String::from_utf8_lossy(&u).into_owned())
            })
            .unwrap_or_default();
        let dialled = self.inbound_dialled(&req, source.addr, dialled);
        // A DID leads to a queue, or to an IVR menu (the queue is then chosen in the menu).
        let routed = internal
            .clone()
            .or_else(|| self.index.route(&dialled).cloned());
        let (tenant, queue, menu) = match routed {
            Some((tenant, queue)) => (tenant, queue, None),
            None => match self.index.route_menu(&dialled).cloned() {
                Some((tenant, menu)) => (tenant, QueueId::new(""), Some(menu)),
                None => {
                    tracing::info!(%dialled, "INVITE for an unknown number");
                    self.simple(now, tx, &req, source, 404, "Not Found");
                    return;
                }
            },
        };
        // An authenticated agent phone is no carrier (core/internal.rs).
        let admitted = match internal {
            Some(_) => Ok(None),
            None => self.admit_inbound(tenant, &dialled, source.addr),
        };
        let trunk = match admitted {
            Ok(t) => t,
            Err(refusal) => {
                let (code, reason) = refusal.status();
                self.simple(now, tx, &req, source, code, reason);
                return;
            }
        };
        let offer = match SessionDescription::parse(req.body()) {
            Ok(o) if !req.body().is_empty() => o,
            // No offer (late offer) or a broken one: we answer only offers we can anchor.
            _ => {
                self.simple(now, tx, &req, source, 488, "Not Acceptable Here");
                return;
            }
        };
        let Some(caller_setup) = LegSetup::from_sdp(&offer) else {
            self.simple(now, tx, &req, source, 488, "Not Acceptable Here");
            return;
        };
        let agent_side = LegSetup {
            peer: None,
            rtcp_peer: None,
            payload_types: PayloadTypes::of(&[0, 8, 101]),
            telephone_event: Some(101),
            codec: None,
        };
        let media = match self.media.add_call(caller_setup, agent_side) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("no media ports for a new call: {e}");
                self.simple(now, tx, &req, source, 503, "Service Unavailable");
                return;
            }
        };
        let session_id = self.rng.random::<u32>().into();
        let local = LocalMedia {
            address: self.config.media_address,
            port: media.leg_a.rtp,
        };
        let answer = match offer.answer(
            &[Codec::Pcmu, Codec::Pcma, Codec::TelephoneEvent],
            local,
            session_id,
        ) {
            Ok(a) => a,
            Err(_) => {
                self.media.remove_call(media.id);
                self.simple(now, tx, &req, source, 488, "Not Acceptable Here");
                return;
            }
        };
        // No transcoding: the agent is offered exactly the codec the caller got.
        let mut agent_codecs = vec![answer.audio.codec];
        if answer.telephone_event.is_some() {
            agent_codecs.push(Codec::TelephoneEvent);
        }
        let answer_sdp = Bytes::from(answer.sdp.to_string());
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let contact =
            ContactId(uuid::Builder::from_unix_timestamp_millis(now.wall_ms, &random).into_uuid());
        let local_tag = self.token();
        let call_id = req.call_id().ok().flatten().unwrap_or_default();
        let caller_number = user_of(req.from().ok().flatten().as_ref());
        let caller_contact = match req.contacts() {
            Ok(Some(crate::sip::Contacts::List(l))) => l.first().map(|c| c.uri.raw().clone()),
            _ => None,
        }
        .unwrap_or_else(|| {
            req.request_line()
                .map(|r| r.uri_raw.clone())
                .unwrap_or_default()
        });
        let ringing = response_to_source(
            &req,
            Some(source.addr),
            180,
            "Ringing",
            Some(local_tag.as_bytes()),
        )
        .copy_headers(&req, &HeaderName::RecordRoute)
        .header(b"Contact", self.our_contact().as_bytes())
        .finish();
        self.respond(now, tx, ringing);
        let key = CallKey(self.next_call);
        self.next_call += 1;
        let mut new = NewContact::new(contact, queue.clone(), Channel::Voice);
        new.attributes
            .insert("caller".to_owned(), caller_number.clone());
        new.attributes.insert("dialled".to_owned(), dialled.clone());
        if menu.is_none() {
            self.routing.push_back((tenant, Input::NewContact(new)));
        }
        self.by_contact.insert(contact, key);
        self.by_call_id
            .insert(call_id.clone(), (key, LegRef::Caller));
        self.by_invite_tx.insert(tx, key);
        self.by_media.insert(media.id, key);
        self.counters.calls_in += 1;
        if let Some(t) = &trunk {
            self.hold_channel(key, tenant, t);
        }
        self.calls.insert(
            key,
            Call {
                tenant,
                contact,
                queue,
                invite_tx: tx,
                invite: req,
                source,
                local_tag,
                call_id,
                caller_contact,
                caller_number,
                dialled,
                media,
                answer_sdp,
                agent_codecs,
                state: CallState::Queued,
                branches: Vec::new(),
                winner: None,
                started_ms: now.wall_ms,
                answered_ms: None,
                bye_cseq: 1,
                agent_sdp: None,
                recording: None,
                recordings_done: Vec::new(),
                monitor: None,
                held_by: None,
                transfer: None,
                requeued: false,
                engine_released: false,
                agent_since_ms: None,
                transfer_cseq: 1,
            },
        );
        self.caller_media_start(now, key, menu);
    }

    /// Rings every registered phone of the offered agent.
    fn offer(
        &mut self,
        now: Now,
        tenant: Uuid,
        offer: OfferId,
        contact: ContactId,
        agent: AgentId,
    ) {
        let Some(&key) = self.by_contact.get(&contact) else {
            // The caller is gone already; the engine learns it from the abandon it was sent.
            return;
        };
        let bindings: Vec<(Bytes, Peer)> = self
            .index
            .agents
            .get(&(tenant, agent.clone()))
            .map(|ext| {
                self.registrar
                    .bindings(ext, now.mono)
                    .into_iter()
                    .map(|b| (b.contact.clone(), phone_address(&b.contact, b.source)))
                    .collect()
            })
            .unwrap_or_default();
        if bindings.is_empty() {
            tracing::info!(%agent, "offered agent has no registered phone");
            self.routing.push_back((
                tenant,
                Input::OfferRejected {
                    offer,
                    kind: RejectKind::Failed,
                },
            ));
            return;
        }
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let from_user = if call.caller_number.is_empty() {
            "anonymous".to_owned()
        } else {
            call.caller_number.clone()
        };
        let codecs = call.agent_codecs.clone();
        let leg_b_port = call.media.leg_b.rtp;
        let sdp = SessionDescription::offer(
            LocalMedia {
                address: self.config.media_address,
                port: leg_b_port,
            },
            self.rng.random::<u32>().into(),
            &codecs,
            101,
        )
        .to_string();
        for (target, peer) in bindings {
            let Some((tx, invite, call_id)) =
                self.invite_phone(now, &target, peer, &from_user, &sdp, true, &agent)
            else {
                continue;
            };
            let Some(call) = self.calls.get_mut(&key) else {
                return;
            };
            let i = call.branches.len();
            call.branches.push(Branch {
                offer,
                agent: agent.clone(),
                tx,
                invite,
                peer,
                call_id: call_id.clone(),
                state: BranchState::Calling,
                remote_to: None,
                remote_target: None,
                withdrawn: false,
                last_status: 0,
            });
            self.by_branch_tx.insert(tx, (key, i));
            self.by_call_id.insert(call_id, (key, LegRef::Branch(i)));
        }
        let any = self
            .calls
            .get(&key)
            .is_some_and(|c| c.branches.iter().any(|b| b.offer == offer));
        if !any {
            self.routing.push_back((
                tenant,
                Input::OfferRejected {
                    offer,
                    kind: RejectKind::Failed,
                },
            ));
        }
    }

    fn cancel_branch(&mut self, now: Now, key: CallKey, i: usize) {
        let Some(b) = self.calls.get_mut(&key).and_then(|c| c.branches.get_mut(i)) else {
            return;
        };
        if matches!(b.state, BranchState::Calling | BranchState::Ringing) {
            b.withdrawn = true;
            let cancel = crate::sip::transaction::build_cancel(&b.invite);
            let peer = b.peer;
            if let Ok(m) = Message::parse_datagram(cancel, &self.limits) {
                let _ = self.tl.send_request(now.mono, m, peer);
            }
        }
    }

    fn withdraw_offer(
        &mut self,
        now: Now,
        offer: OfferId,
        contact: ContactId,
        reason: CancelReason,
    ) {
        let Some(&key) = self.by_contact.get(&contact) else {
            return;
        };
        let idx: Vec<usize> = self
            .calls
            .get(&key)
            .map(|c| {
                c.branches
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.offer == offer)
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default();
        tracing::debug!(?reason, "offer withdrawn");
        for i in idx {
            if let Some(b) = self.calls.get_mut(&key).and_then(|c| c.branches.get_mut(i)) {
                b.withdrawn = true;
            }
            self.cancel_branch(now, key, i);
        }
    }

    fn handle_response(&mut self, now: Now, tx: TxId, resp: Message) {
        if self.supervisor_response(now, tx, &resp) {
            return;
        }
        let Some(code) = resp.status() else {
            return;
        };
        if let Some(orphan) = self.orphans.get(&tx) {
            if (200..300).contains(&code) {
                // The call ended while this phone was ringing and it answered anyway.
                let (to, target, peer, invite) = (
                    resp.single(&HeaderName::To, "To")
                        .ok()
                        .flatten()
                        .cloned()
                        .unwrap_or_default(),
                    contact_uri(&resp).unwrap_or_default(),
                    orphan.peer,
                    orphan.invite.clone(),
                );
                self.ack_and_bye(now, &invite, &to, &target, peer);
            }
            return;
        }
        let Some(&(key, i)) = self.by_branch_tx.get(&tx) else {
            return;
        };
        match code {
            100..=199 => {
                if let Some(b) = self.calls.get_mut(&key).and_then(|c| c.branches.get_mut(i))
                    && b.state == BranchState::Calling
                {
                    b.state = BranchState::Ringing;
                }
            }
            200..=299 => self.branch_answered(now, key, i, &resp),
            _ => self.branch_failed(now, key, i, code),
        }
    }

    fn ack_and_bye(&mut self, now: Now, invite: &Message, to: &Bytes, target: &Bytes, peer: Peer) {
        self.send_ack(invite, to, target, peer);
        self.send_bye(now, invite, to, target, peer);
    }

    /// ACK for a 2xx to our `invite` (its own CSeq number), sent to the phone's `target` with
    /// the `to` (tag included) of the answer.
    fn send_ack(&mut self, invite: &Message, to: &Bytes, target: &Bytes, peer: Peer) {
        let via = self.via(peer.transport);
        let ack = MessageBuilder::request(&Method::Ack, target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70")
            .copy_headers(invite, &HeaderName::From)
            .header(b"To", to)
            .copy_headers(invite, &HeaderName::CallId)
            .header(
                b"CSeq",
                format!("{} ACK", outbound::cseq_of(invite)).as_bytes(),
            )
            .finish();
        self.tl.send_stateless(peer, ack);
    }

    /// BYE in the dialog our `invite` created (CSeq one above the INVITE's).
    fn send_bye(&mut self, now: Now, invite: &Message, to: &Bytes, target: &Bytes, peer: Peer) {
        let via = self.via(peer.transport);
        let bye = MessageBuilder::request(&Method::Bye, target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70")
            .copy_headers(invite, &HeaderName::From)
            .header(b"To", to)
            .copy_headers(invite, &HeaderName::CallId)
            .header(
                b"CSeq",
                format!("{} BYE", outbound::cseq_of(invite) + 1).as_bytes(),
            )
            .finish();
        if let Ok(m) = Message::parse_datagram(bye, &self.limits) {
            let _ = self.tl.send_request(now.mono, m, peer);
        }
    }

    /// Sends an INVITE from zentrale to one registered binding of a phone (an agent's offer,
    /// a supervisor's monitor leg): a fresh dialog from `from_user`, our anchored `sdp`,
    /// `Supported: timer` when `session_timer`. Returns the transaction, the INVITE as sent
    /// and its Call-ID; `None` (logged) when the binding's URI makes a message our own parser
    /// refuses or the transaction cannot start.
    #[allow(clippy::too_many_arguments)]
    fn invite_phone(
        &mut self,
        now: Now,
        target: &Bytes,
        peer: Peer,
        from_user: &str,
        sdp: &str,
        session_timer: bool,
        agent: &AgentId,
    ) -> Option<(TxId, Message, Bytes)> {
        let tag = self.token();
        let call_id = Bytes::from(format!("{}@zentrale", self.token()));
        let via = self.via(peer.transport);
        let mut builder = MessageBuilder::request(&Method::Invite, target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70")
            .header(
                b"From",
                format!(
                    "<sip:{from_user}@{}>;tag={tag}",
                    self.config.sip_address.ip()
                )
                .as_bytes(),
            )
            .header(
                b"To",
                format!("<{}>", String::from_utf8_lossy(target)).as_bytes(),
            )
            .header(b"Call-ID", &call_id)
            .header(b"CSeq", b"1 INVITE")
            .header(b"Contact", self.our_contact().as_bytes())
            .header(b"Allow", ALLOW);
        if session_timer {
            builder = builder.header(b"Supported", b"timer");
        }
        let bytes = builder
            .header(b"Content-Type", b"application/sdp")
            .body(sdp.as_bytes());
        let Ok(invite) = Message::parse_datagram(bytes, &self.limits) else {
            // Only a contact URI with bytes our own parser refuses gets here.
            tracing::warn!(%agent, "cannot build an INVITE to a registered contact");
            return None;
        };
        match self.tl.send_request(now.mono, invite.clone(), peer) {
            Ok(tx) => Some((tx, invite, call_id)),
            Err(e) => {
                tracing::warn!("cannot start INVITE transaction: {e}");
                None
            }
        }
    }

    fn branch_answered(&mut self, now: Now, key: CallKey, i: usize, resp: &Message) {
        let to = resp
            .single(&HeaderName::To, "To")
            .ok()
            .flatten()
            .cloned()
            .unwrap_or_default();
        let target = contact_uri(resp).unwrap_or_else(|| {
            self.calls
                .get(&key)
                .and_then(|c| c.branches.get(i))
                .and_then(|b| b.invite.request_line().map(|r| r.uri_raw.clone()))
                .unwrap_or_default()
        });
        // A transfer's target answering a call answered before (core/transfer.rs).
        let transfer_answer = self
            .calls
            .get(&key)
            .and_then(|c| c.branches.get(i))
            .is_some_and(|b| self.is_transfer_offer(key, b.offer));
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let reconnect = transfer_answer || call.requeued;
        let Some(b) = call.branches.get_mut(i) else {
            return;
        };
        if b.state == BranchState::Won {
            // A retransmitted 2xx: our ACK was lost, send it again.
            let via = format!(
                "SIP/2.0/{} {};branch={};rport",
                transport_token(b.peer.transport),
                self.config.sip_address,
                new_branch(self.rng.random())
            );
            let ack = MessageBuilder::request(&Method::Ack, &target)
                .header(b"Via", via.as_bytes())
                .header(b"Max-Forwards", b"70")
                .copy_headers(&b.invite, &HeaderName::From)
                .header(b"To", &to)
                .copy_headers(&b.invite, &HeaderName::CallId)
                .header(
                    b"CSeq",
                    format!("{} ACK", outbound::cseq_of(&b.invite)).as_bytes(),
                )
                .finish();
            let peer = b.peer;
            self.tl.send_stateless(peer, ack);
            // A 2xx to our re-INVITE (attended transfer) carries the phone's new answer.
            self.reanchor_answered(key, resp);
            return;
        }
        let late = (call.winner.is_some() && !transfer_answer) || b.withdrawn;
        let (invite, peer) = (b.invite.clone(), b.peer);
        if late {
            b.state = BranchState::Done;
            self.ack_and_bye(now, &invite, &to, &target, peer);
            return;
        }
        b.state = BranchState::Won;
        b.remote_to = Some(to.clone());
        b.remote_target = Some(target.clone());
        let offer = b.offer;
        call.winner = Some(i);
        call.state = CallState::Connected;
        if !reconnect {
            call.answered_ms = Some(now.wall_ms);
        }
        let (tenant, media_id, invite_tx, answer_sdp, local_tag) = (
            call.tenant,
            call.media.id,
            call.invite_tx,
            call.answer_sdp.clone(),
            call.local_tag.clone(),
        );
        let caller_invite = call.invite.clone();
        let caller_source = call.source;
        let others: Vec<usize> = (0..call.branches.len()).filter(|&j| j != i).collect();
        // Whatever plays to the caller stops first (core/queue_media.rs).
        let answered_early = self.caller_media_on_bridge(key);
        // ACK the agent's 2xx (a new transaction-less request to its Contact).
        let via = self.via(peer.transport);
        let ack = MessageBuilder::request(&Method::Ack, &target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70")
            .copy_headers(&invite, &HeaderName::From)
            .header(b"To", &to)
            .copy_headers(&invite, &HeaderName::CallId)
            .header(
                b"CSeq",
                format!("{} ACK", outbound::cseq_of(&invite)).as_bytes(),
            )
            .finish();
        self.tl.send_stateless(peer, ack);
        if let Ok(sdp) = SessionDescription::parse(resp.body())
            && let Some(setup) = LegSetup::from_sdp(&sdp)
        {
            self.media.update_leg(media_id, Leg::B, setup);
        }
        let ok = response_to_source(
            &caller_invite,
            Some(caller_source.addr),
            200,
            "OK",
            Some(local_tag.as_bytes()),
        )
        .copy_headers(&caller_invite, &HeaderName::RecordRoute)
        .header(b"Contact", self.our_contact().as_bytes())
        .header(b"Allow", ALLOW);
        // RFC 4028 on the caller leg (core/session_timer.rs), only when this 200 is sent.
        let ok = match (!reconnect && !answered_early)
            .then(|| self.session_timer_for_caller(now, key))
            .flatten()
        {
            Some(se) if self.caller_requires_timer(key) => ok
                .header(b"Session-Expires", se.as_bytes())
                .header(b"Require", b"timer"),
            Some(se) => ok.header(b"Session-Expires", se.as_bytes()),
            None => ok,
        };
        let ok = ok
            .header(b"Content-Type", b"application/sdp")
            .body(&answer_sdp);
        self.session_timer_for_agent(now, key, i, resp);
        if !reconnect && !answered_early {
            self.respond(now, invite_tx, ok);
        }
        for j in others {
            self.cancel_branch(now, key, j);
        }
        if !transfer_answer && offer != outbound::NO_OFFER {
            self.routing
                .push_back((tenant, Input::OfferAccepted { offer }));
        }
        if reconnect {
            self.transfer_connected(now, key, i);
            return;
        }
        self.counters.answered += 1;
        self.internal_answered(key);
        self.recording_on_bridge(now, key);
    }

    fn branch_failed(&mut self, now: Now, key: CallKey, i: usize, code: u16) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(b) = call.branches.get_mut(i) else {
            return;
        };
        if matches!(b.state, BranchState::Done | BranchState::Won) {
            return;
        }
        b.state = BranchState::Done;
        b.last_status = code;
        let offer = b.offer;
        if self.transfer_branch_failed(now, key, offer) {
            return;
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.winner.is_some() {
            return;
        }
        let siblings: Vec<&Branch> = call.branches.iter().filter(|b| b.offer == offer).collect();
        if siblings.iter().any(|b| b.state != BranchState::Done) {
            return;
        }
        if siblings.iter().all(|b| b.withdrawn) {
            return;
        }
        // Every phone of the agent refused: busy beats declined beats failed.
        let kind = if siblings.iter().any(|b| matches!(b.last_status, 486 | 600)) {
            RejectKind::Busy
        } else if siblings.iter().any(|b| b.last_status == 603) {
            RejectKind::Declined
        } else {
            RejectKind::Failed
        };
        let tenant = call.tenant;
        self.routing
            .push_back((tenant, Input::OfferRejected { offer, kind }));
    }

    /// The caller gave up (CANCEL) before an agent answered.
    fn abandon(&mut self, now: Now, key: CallKey) {
        if self.caller_answered(key) {
            // A CANCEL that crossed our early 200 changes nothing; the caller sends BYE.
            return;
        }
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.state == CallState::Connected {
            return;
        }
        let (tx, invite, source, tag, tenant, contact) = (
            call.invite_tx,
            call.invite.clone(),
            call.source,
            call.local_tag.clone(),
            call.tenant,
            call.contact,
        );
        let b = response_to_source(
            &invite,
            Some(source.addr),
            487,
            "Request Terminated",
            Some(tag.as_bytes()),
        );
        self.respond(now, tx, b.finish());
        self.counters.abandoned += 1;
        if !self.calls.get(&key).is_some_and(|c| c.engine_released) {
            self.routing
                .push_back((tenant, Input::ContactAbandoned { contact }));
        }
        self.finish(now, key, "abandoned");
    }

    /// The engine could not queue the call, or moved it out of our reach.
    fn refuse(&mut self, now: Now, contact: ContactId, code: u16, result: &'static str) {
        let Some(&key) = self.by_contact.get(&contact) else {
            return;
        };
        if self.refuse_requeued(now, key, result) {
            return;
        }
        if self.caller_media_refuse(now, key, result) {
            return;
        }
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.state == CallState::Connected {
            return;
        }
        let (tx, invite, source, tag) = (
            call.invite_tx,
            call.invite.clone(),
            call.source,
            call.local_tag.clone(),
        );
        let b = response_to_source(
            &invite,
            Some(source.addr),
            code,
            "Temporarily Unavailable",
            Some(tag.as_bytes()),
        );
        self.respond(now, tx, b.finish());
        self.finish(now, key, result);
    }

    /// One side hung up (or the media died): BYE the other side(s), tell the engine.
    fn hang_up(&mut self, now: Now, key: CallKey, from: Option<LegRef>) {
        if self
            .calls
            .get(&key)
            .is_some_and(|c| c.state != CallState::Connected)
            && self.caller_media_hang_up(now, key, from)
        {
            return;
        }
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.state != CallState::Connected {
            // A BYE on an early dialog of the caller: treat as abandon.
            if from == Some(LegRef::Caller) {
                let (tenant, contact, released) = (call.tenant, call.contact, call.engine_released);
                let (tx, invite, source, tag) = (
                    call.invite_tx,
                    call.invite.clone(),
                    call.source,
                    call.local_tag.clone(),
                );
                let b = response_to_source(
                    &invite,
                    Some(source.addr),
                    487,
                    "Request Terminated",
                    Some(tag.as_bytes()),
                );
                self.respond(now, tx, b.finish());
                self.counters.abandoned += 1;
                if !released {
                    self.routing
                        .push_back((tenant, Input::ContactAbandoned { contact }));
                }
                self.finish(now, key, "abandoned");
            }
            return;
        }
        let winner = call.winner;
        if self.transfer_hang_up(now, key, from) {
            return;
        }
        if let Some(LegRef::Branch(i)) = from
            && winner != Some(i)
        {
            // A phone that lost the race hangs up its own (already cancelled) dialog only.
            return;
        }
        if from != Some(LegRef::Caller) {
            self.bye_caller(now, key);
        }
        if let Some(w) = winner
            && from != Some(LegRef::Branch(w))
        {
            self.bye_agent(now, key, w);
        }
        if let Some(call) = self.calls.get(&key)
            && !call.engine_released
        {
            let (tenant, contact) = (call.tenant, call.contact);
            self.routing
                .push_back((tenant, Input::ContactEnded { contact }));
        }
        self.finish(now, key, "answered");
    }

    fn bye_caller(&mut self, now: Now, key: CallKey) {
        let via_transport = match self.calls.get(&key) {
            Some(c) => c.source.transport,
            None => return,
        };
        let via = self.via(via_transport);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.bye_cseq += 1;
        let inv = &call.invite;
        let from = inv
            .single(&HeaderName::From, "From")
            .ok()
            .flatten()
            .cloned()
            .unwrap_or_default();
        let to = inv
            .single(&HeaderName::To, "To")
            .ok()
            .flatten()
            .cloned()
            .unwrap_or_default();
        let mut our_side = to.to_vec();
        if !our_side
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b";tag="))
        {
            our_side.extend_from_slice(b";tag=");
            our_side.extend_from_slice(call.local_tag.as_bytes());
        }
        let mut b = MessageBuilder::request(&Method::Bye, &call.caller_contact)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70");
        // Our route set towards the caller is its Record-Route in order (RFC 3261 §12.1.1).
        for rr in inv.headers_named(&HeaderName::RecordRoute) {
            b = b.header(b"Route", rr);
        }
        let bytes = b
            .header(b"From", &our_side)
            .header(b"To", &from)
            .header(b"Call-ID", &call.call_id)
            .header(b"CSeq", format!("{} BYE", call.bye_cseq).as_bytes())
            .finish();
        let peer = call.source;
        if let Ok(m) = Message::parse_datagram(bytes, &self.limits) {
            let _ = self.tl.send_request(now.mono, m, peer);
        }
    }

    fn bye_agent(&mut self, now: Now, key: CallKey, w: usize) {
        let Some(b) = self.calls.get(&key).and_then(|c| c.branches.get(w)) else {
            return;
        };
        let (Some(to), Some(target)) = (b.remote_to.clone(), b.remote_target.clone()) else {
            return;
        };
        let (invite, peer) = (b.invite.clone(), b.peer);
        let via = self.via(peer.transport);
        let bye = MessageBuilder::request(&Method::Bye, &target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70")
            .copy_headers(&invite, &HeaderName::From)
            .header(b"To", &to)
            .copy_headers(&invite, &HeaderName::CallId)
            .header(
                b"CSeq",
                format!(
                    "{} BYE",
                    outbound::cseq_of(&invite).max(self.session_agent_cseq(key, w)) + 1
                )
                .as_bytes(),
            )
            .finish();
        if let Ok(m) = Message::parse_datagram(bye, &self.limits) {
            let _ = self.tl.send_request(now.mono, m, peer);
        }
    }

    /// Removes the call, releases media, writes CDRs.
    fn finish(&mut self, now: Now, key: CallKey, result: &'static str) {
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        self.internal_call_gone(&call);
        self.supervisor_on_end(now, &mut call);
        self.release_call_channels(key);
        self.outbound_call_gone(now, key);
        self.session_timers_forget(key);
        let recording = self.recording_on_end(now, &mut call);
        // A voicemail message is the caller leg's recording (core/voicemail.rs), and is named
        // as the voicemail, too.
        let voicemail = self.caller_media_on_end(key);
        let voicemail_file = voicemail.as_ref().map(|v| v.path.display().to_string());
        let recording = recording.or(voicemail);
        for i in 0..call.branches.len() {
            if matches!(
                call.branches[i].state,
                BranchState::Calling | BranchState::Ringing
            ) {
                let b = &call.branches[i];
                let cancel = crate::sip::transaction::build_cancel(&b.invite);
                if let Ok(m) = Message::parse_datagram(cancel, &self.limits) {
                    let _ = self.tl.send_request(now.mono, m, b.peer);
                }
            }
        }
        self.media.remove_call(call.media.id);
        self.by_media.remove(&call.media.id);
        self.by_contact.remove(&call.contact);
        self.by_call_id.remove(&call.call_id);
        self.by_invite_tx.remove(&call.invite_tx);
        let winner = call.winner.and_then(|w| call.branches.get(w));
        let agent = winner.map(|b| b.agent.to_string());
        let answered = call.answered_ms;
        let wait_ms = answered
            .unwrap_or(now.wall_ms)
            .saturating_sub(call.started_ms);
        let talk_ms = answered.map_or(0, |a| now.wall_ms.saturating_sub(a));
        self.cdrs.push_back(CdrRow {
            tenant: call.tenant,
            contact: call.contact,
            leg: "caller",
            started_ms: call.started_ms,
            answered_ms: answered,
            ended_ms: now.wall_ms,
            caller: call.caller_number.clone(),
            callee: call.dialled.clone(),
            result,
            // A caller who never left the IVR has no queue.
            queue: (!call.queue.as_str().is_empty()).then(|| call.queue.to_string()),
            agent: agent.clone(),
            wait_ms,
            talk_ms,
            recording: recording.clone(),
            mos_x100: None,
            voicemail: voicemail_file,
            transfer: None,
        });
        if let Some(b) = winner {
            let mut callee = String::new();
            let _ = write!(callee, "{}", b.agent);
            self.cdrs.push_back(CdrRow {
                tenant: call.tenant,
                contact: call.contact,
                leg: "agent",
                // After a transfer the agent's leg began when that agent answered.
                started_ms: call.agent_since_ms.or(answered).unwrap_or(now.wall_ms),
                answered_ms: call.agent_since_ms.or(answered),
                ended_ms: now.wall_ms,
                caller: call.caller_number.clone(),
                callee,
                result,
                queue: Some(call.queue.to_string()),
                agent,
                wait_ms: 0,
                talk_ms: call
                    .agent_since_ms
                    .map_or(talk_ms, |s| now.wall_ms.saturating_sub(s)),
                recording,
                mos_x100: None,
                voicemail: None,
                transfer: None,
            });
        }
        self.hold_cdrs_for_quality(now, call.media.id, call.contact);
        for b in call.branches {
            self.by_call_id.remove(&b.call_id);
            self.by_branch_tx.remove(&b.tx);
            if matches!(b.state, BranchState::Calling | BranchState::Ringing) {
                self.orphans.insert(b.tx, b);
            }
        }
    }

    /// Ends every call now (bounded shutdown ran out): BYE to connected legs, 503 to waiting
    /// callers.
    pub fn end_all(&mut self, now: Now) {
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for key in keys {
            let state = self.calls.get(&key).map(|c| (c.state, c.contact));
            match state {
                Some((CallState::Connected, _)) => self.hang_up(now, key, None),
                Some((CallState::Queued, contact)) => {
                    if let Some(c) = self.calls.get(&key) {
                        self.routing
                            .push_back((c.tenant, Input::ContactAbandoned { contact }));
                    }
                    self.refuse(now, contact, 503, "failed");
                }
                None => {}
            }
        }
    }

    /// How long to wait, at most, for calls to finish during shutdown.
    pub fn drain_deadline(now: Instant) -> Instant {
        now + Duration::from_secs(30)
    }
}

fn contact_uri(msg: &Message) -> Option<Bytes> {
    match msg.contacts() {
        Ok(Some(crate::sip::Contacts::List(l))) => l.first().map(|c| c.uri.raw().clone()),
        _ => None,
    }
}

/// Where to send requests for a registered contact. Behind NAT the phone is reached where its
/// REGISTER came from (RFC 3581 style), not at the private address in its Contact. When the
/// Contact names the very address the REGISTER came from, nothing rewrote it, so its port is
/// trusted too: a phone may register from one socket and listen on another.
fn phone_address(contact: &Bytes, source: Peer) -> Peer {
    // Over a connection the phone is reached on that connection, whatever its Contact says.
    if source.transport.is_reliable() {
        return source;
    }
    let Ok(uri) = crate::sip::Uri::parse(contact.clone()) else {
        return source;
    };
    let host = String::from_utf8_lossy(uri.host());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) if ip == source.addr.ip() => Peer {
            addr: SocketAddr::new(ip, uri.port().unwrap_or(5060)),
            transport: source.transport,
        },
        _ => source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use acd_core::{Timestamp, ids::OfferId};

    use super::*;
    use crate::b2bua::model::{AgentSip, SipSecret, TenantModel};
    use crate::sip::auth::{ClientCredentials, answer_challenge};

    #[derive(Default)]
    pub(super) struct FakeMedia {
        next: u64,
        pub(super) live: Vec<MediaSessionId>,
        pub(super) updated: Vec<(MediaSessionId, Leg, Option<SocketAddr>)>,
        pub(super) audio: Vec<(MediaSessionId, AudioCommand)>,
    }

    impl MediaPort for FakeMedia {
        fn add_call(&mut self, _a: LegSetup, _b: LegSetup) -> Result<CallMedia, MediaError> {
            self.next += 1;
            let id = MediaSessionId(self.next);
            self.live.push(id);
            Ok(CallMedia {
                id,
                address: "127.0.0.1".parse().unwrap(),
                leg_a: PortPair { rtp: 30000 },
                leg_b: PortPair { rtp: 30002 },
            })
        }
        fn update_leg(&mut self, id: MediaSessionId, leg: Leg, setup: LegSetup) {
            self.updated.push((id, leg, setup.peer));
        }
        fn remove_call(&mut self, id: MediaSessionId) {
            self.live.retain(|x| *x != id);
        }
        fn audio(&mut self, id: MediaSessionId, cmd: AudioCommand) {
            self.audio.push((id, cmd));
        }
        fn add_leg(&mut self, _id: MediaSessionId, _s: LegSetup) -> Result<PortPair, MediaError> {
            Ok(PortPair { rtp: 30004 })
        }
        fn remove_leg(&mut self, _id: MediaSessionId, _leg: Leg) {}
    }

    pub(super) const TENANT: Uuid = Uuid::from_u128(0x7e);
    pub(super) const CARRIER: &str = "127.0.0.1:5070";
    pub(super) const PHONE: &str = "127.0.0.1:5090";

    pub(super) struct Harness {
        pub(super) core: B2bua<FakeMedia>,
        pub(super) base: Instant,
        pub(super) ms: u64,
    }

    pub(super) fn peer(a: &str) -> Peer {
        Peer {
            addr: a.parse().unwrap(),
            transport: TransportKind::Udp,
        }
    }

    pub(super) fn sdp(port: u16) -> String {
        format!(
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        )
    }

    impl Harness {
        pub(super) fn new() -> Harness {
            let config = B2buaConfig {
                sip_address: "127.0.0.1:5060".parse().unwrap(),
                media_address: "127.0.0.1".parse().unwrap(),
                realm: "zentrale".into(),
                nonce_key: b"test key".to_vec(),
                registrar: RegistrarConfig::default(),
                timers: TimerConfig::default(),
                seed: 7,
            };
            let mut core = B2bua::new(config, FakeMedia::default());
            core.set_model(&Arc::new(GatewayModel {
                tenants: vec![TenantModel {
                    tenant: TENANT,
                    dids: HashMap::from([("100".to_owned(), QueueId::new("support"))]),
                    agents: vec![AgentSip {
                        agent: AgentId::new("1001"),
                        extension: "1001".into(),
                        secret: SipSecret::from_password("1001", "zentrale", "pw1001"),
                    }],
                    media: Default::default(),
                    trunks: Default::default(),
                }],
            }));
            Harness {
                core,
                base: Instant::now(),
                ms: 0,
            }
        }

        pub(super) fn now(&self) -> Now {
            Now {
                mono: self.base + Duration::from_millis(self.ms),
                wall_ms: 1_800_000_000_000 + self.ms,
            }
        }

        pub(super) fn send(&mut self, from: &str, text: &str) -> Vec<(SocketAddr, Message)> {
            self.ms += 10;
            let now = self.now();
            self.core.handle_datagram(
                now,
                Bytes::from(text.replace("\r\n", "\n").replace('\n', "\r\n")),
                peer(from),
            );
            self.out()
        }

        pub(super) fn out(&mut self) -> Vec<(SocketAddr, Message)> {
            let mut v = Vec::new();
            while let Some(t) = self.core.poll_transmit() {
                v.push((
                    t.peer.addr,
                    Message::parse_datagram(t.bytes, &Limits::default()).unwrap(),
                ));
            }
            v
        }

        pub(super) fn routing(&mut self) -> Vec<Input> {
            std::iter::from_fn(|| self.core.poll_routing())
                .map(|(t, i)| {
                    assert_eq!(t, TENANT);
                    i
                })
                .collect()
        }

        pub(super) fn register(&mut self) {
            let req = |auth: Option<&str>| {
                let mut s = format!(
                    "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKr{};rport\nMax-Forwards: 70\nFrom: <sip:1001@127.0.0.1>;tag=r\nTo: <sip:1001@127.0.0.1>\nCall-ID: reg@phone\nCSeq: {} REGISTER\nContact: <sip:1001@{PHONE}>\nExpires: 600\n",
                    auth.map_or(1, |_| 2),
                    auth.map_or(1, |_| 2)
                );
                if let Some(a) = auth {
                    s.push_str(&format!("Authorization: {a}\n"));
                }
                s.push_str("Content-Length: 0\n\n");
                s
            };
            let out = self.send(PHONE, &req(None));
            let challenge = out[0]
                .1
                .headers_named(&HeaderName::WwwAuthenticate)
                .next()
                .unwrap()
                .clone();
            let auth = answer_challenge(
                &challenge,
                &ClientCredentials {
                    username: "1001",
                    password: "pw1001",
                },
                "REGISTER",
                "sip:127.0.0.1",
                "c1",
                1,
            )
            .unwrap();
            let out = self.send(PHONE, &req(Some(&auth)));
            assert_eq!(out[0].1.status(), Some(200));
        }

        pub(super) fn invite(&mut self, branch: &str) -> (Vec<(SocketAddr, Message)>, ContactId) {
            let body = sdp(40000);
            let out = self.send(
                CARRIER,
                &format!(
                    "INVITE sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch={branch}\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>\nCall-ID: {branch}@carrier\nCSeq: 1 INVITE\nContact: <sip:c@{CARRIER}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
                    body.len()
                ),
            );
            let contact = self
                .routing()
                .into_iter()
                .find_map(|i| match i {
                    Input::NewContact(n) => Some(n.id),
                    _ => None,
                })
                .unwrap();
            (out, contact)
        }

        pub(super) fn offer(
            &mut self,
            contact: ContactId,
            offer: u128,
        ) -> Vec<(SocketAddr, Message)> {
            self.ms += 10;
            let now = self.now();
            self.core.handle_action(
                now,
                TENANT,
                Action::Offer {
                    offer: OfferId(Uuid::from_u128(offer)),
                    contact,
                    agent: AgentId::new("1001"),
                    queue: QueueId::new("support"),
                    channel: Channel::Voice,
                    expires_at: Timestamp(now.wall_ms + 20_000),
                },
            );
            self.out()
        }
    }

    pub(super) fn statuses(out: &[(SocketAddr, Message)]) -> Vec<u16> {
        out.iter().filter_map(|(_, m)| m.status()).collect()
    }

    pub(super) fn reply(to: &Message, code: &str, body: &str) -> String {
        let mut s = format!("SIP/2.0 {code}\n");
        for v in to.headers_named(&HeaderName::Via) {
            s.push_str(&format!("Via: {}\n", String::from_utf8_lossy(v)));
        }
        for (name, hn) in [
            ("From", HeaderName::From),
            ("Call-ID", HeaderName::CallId),
            ("CSeq", HeaderName::CSeq),
        ] {
            let v = to.headers_named(&hn).next().unwrap();
            s.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(v)));
        }
        let t = to.headers_named(&HeaderName::To).next().unwrap();
        s.push_str(&format!(
            "To: {};tag=ph\nContact: <sip:1001@{PHONE}>\n",
            String::from_utf8_lossy(t)
        ));
        if body.is_empty() {
            s.push_str("Content-Length: 0\n\n");
        } else {
            s.push_str(&format!(
                "Content-Type: application/sdp\nContent-Length: {}\n\n{body}",
                body.len()
            ));
        }
        s
    }

    #[test]
    fn queued_call_rings_the_agent_and_is_bridged_when_the_phone_answers() {
        let mut h = Harness::new();
        h.register();
        let login = h.routing();
        assert!(matches!(login[0], Input::AgentLogin { .. }));
        assert!(matches!(login[1], Input::AgentReady { .. }));

        let (out, contact) = h.invite("z9hG4bKcall1");
        assert_eq!(statuses(&out), vec![100, 180]);
        assert_eq!(h.core.active_calls(), 1);

        let out = h.offer(contact, 1);
        assert_eq!(out.len(), 1);
        let (to, invite) = &out[0];
        assert_eq!(to.to_string(), PHONE);
        assert_eq!(invite.method(), Some(&Method::Invite));
        // The agent is offered our relay's leg-B port with the caller's codec only.
        let offered = String::from_utf8_lossy(invite.body()).into_owned();
        assert!(offered.contains("m=audio 30002 RTP/AVP 0"), "{offered}");

        let out = h.send(PHONE, &reply(invite, "200 OK", &sdp(50000)));
        let acked = out
            .iter()
            .any(|(a, m)| a.to_string() == PHONE && m.method() == Some(&Method::Ack));
        assert!(acked, "the agent's 2xx is acknowledged");
        let to_caller = out
            .iter()
            .find(|(a, m)| a.to_string() == CARRIER && m.status() == Some(200))
            .unwrap();
        assert!(String::from_utf8_lossy(to_caller.1.body()).contains("m=audio 30000"));
        assert!(matches!(h.routing()[..], [Input::OfferAccepted { .. }]));
        let (_, leg, dest) = h.core.media.updated[0];
        assert_eq!(
            (leg, dest),
            (Leg::B, Some("127.0.0.1:50000".parse().unwrap()))
        );

        let out = h.send(
            CARRIER,
            "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye1\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKcall1@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        );
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == CARRIER && m.status() == Some(200))
        );
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == PHONE && m.method() == Some(&Method::Bye))
        );
        assert!(matches!(h.routing()[..], [Input::ContactEnded { contact: c }] if c == contact));
        let cdrs: Vec<CdrRow> = std::iter::from_fn(|| h.core.poll_cdr()).collect();
        assert_eq!(cdrs.len(), 2);
        assert!(
            cdrs.iter()
                .all(|c| c.result == "answered" && c.agent.as_deref() == Some("1001"))
        );
        assert_eq!(h.core.active_calls(), 0);
        assert!(h.core.media.live.is_empty(), "media released");
    }

    #[test]
    fn cancel_while_queued_is_an_abandon() {
        let mut h = Harness::new();
        let (_, contact) = h.invite("z9hG4bKcall2");
        let out = h.send(
            CARRIER,
            "CANCEL sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcall2\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>\nCall-ID: z9hG4bKcall2@carrier\nCSeq: 1 CANCEL\nContent-Length: 0\n\n",
        );
        assert_eq!(statuses(&out), vec![200, 487]);
        assert!(
            matches!(h.routing()[..], [Input::ContactAbandoned { contact: c }] if c == contact)
        );
        let cdr = h.core.poll_cdr().unwrap();
        assert_eq!(cdr.result, "abandoned");
        assert!(h.core.media.live.is_empty());
    }

    #[test]
    fn busy_phone_returns_the_offer_as_busy_and_the_caller_keeps_waiting() {
        let mut h = Harness::new();
        h.register();
        h.routing();
        let (_, contact) = h.invite("z9hG4bKcall3");
        let out = h.offer(contact, 2);
        let invite = out[0].1.clone();
        let out = h.send(PHONE, &reply(&invite, "486 Busy Here", ""));
        assert!(
            out.iter().any(|(_, m)| m.method() == Some(&Method::Ack)),
            "non-2xx ACKed"
        );
        assert!(matches!(
            h.routing()[..],
            [Input::OfferRejected {
                kind: RejectKind::Busy,
                ..
            }]
        ));
        assert_eq!(h.core.active_calls(), 1, "the call stays queued");
    }

    #[test]
    fn offer_to_an_agent_without_phone_fails_at_once() {
        let mut h = Harness::new();
        let (_, contact) = h.invite("z9hG4bKcall4");
        assert!(h.offer(contact, 3).is_empty());
        assert!(matches!(
            h.routing()[..],
            [Input::OfferRejected {
                kind: RejectKind::Failed,
                ..
            }]
        ));
    }

    #[test]
    fn unknown_number_garbage_and_shutdown_get_the_right_answers() {
        let mut h = Harness::new();
        let out = h.send(
            CARRIER,
            "INVITE sip:999@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnum\nMax-Forwards: 70\nFrom: <sip:a@b>;tag=c\nTo: <sip:999@127.0.0.1>\nCall-ID: num@carrier\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
        );
        assert_eq!(statuses(&out), vec![100, 404]);
        for junk in [
            &b"\x00\xff garbage"[..],
            b"SIP/2.0",
            b"\r\n\r\n",
            b"INVITE x",
        ] {
            h.ms += 1;
            let now = h.now();
            h.core
                .handle_datagram(now, Bytes::copy_from_slice(junk), peer(CARRIER));
        }
        assert!(h.out().is_empty(), "garbage is dropped silently");
        assert!(h.core.counters().unparseable >= 3);
        let out = h.send(
            CARRIER,
            "OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopt\nMax-Forwards: 70\nFrom: <sip:a@b>;tag=c\nTo: <sip:127.0.0.1>\nCall-ID: opt@carrier\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
        );
        assert_eq!(statuses(&out), vec![200]);
        h.core.stop_accepting();
        let (out, _) = {
            let out = h.send(
                CARRIER,
                &format!(
                    "INVITE sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKlate\nMax-Forwards: 70\nFrom: <sip:a@b>;tag=c\nTo: <sip:100@127.0.0.1>\nCall-ID: late@carrier\nCSeq: 1 INVITE\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
                    sdp(4000).len(),
                    sdp(4000)
                ),
            );
            (out, ())
        };
        assert_eq!(statuses(&out), vec![100, 503]);
    }
}
