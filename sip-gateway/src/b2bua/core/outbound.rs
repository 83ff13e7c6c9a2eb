//! Outbound calls through the tenant's carrier trunks: trunk choice, digest, failover.
//!
//! # API (for other core modules)
//! - [`B2bua::dial_out_bridge`]`(now, key, number)`: dial `number` for the queued caller of
//!   call `key` and bridge them when it answers (overflow to a number, an IVR choice that leads
//!   to a number). The external party takes the agent's side of the call (relay leg B); when
//!   it answers it becomes the call's winning branch, so BYE, re-INVITE and CDRs work as for
//!   an agent (the CDR's `agent` column holds the number). When every trunk fails the caller
//!   gets the carrier's final status (404, 486, ...) or 480.
//! - [`B2bua::dial_callback`] (from `Action::DialCallback`): a new call whose caller leg is
//!   the customer we dial; when the customer answers, the reserved agent is rung with the
//!   ordinary offer path and the engine gets the offer's accept/reject from there.
//!
//! # Trunk choice and failover
//! The tenant's trunks are tried in their configured order, those at `max_channels` skipped
//! and those that probing declared down moved to the end (a last resort, not excluded: a probe
//! can be wrong). An attempt the callee answers with 180/183 but does not pick up within
//! `RING_TIMEOUT` (60 s) is cancelled and final (no failover: the callee was reached).
//!
//! Per attempt: INVITE with our anchored SDP; a `401`/`407` is answered once with digest (same Call-ID, CSeq + 1, `Authorization` or
//! `Proxy-Authorization`); `408`, `5xx`, `403` (the carrier refuses us, not the callee), a
//! second challenge and a transaction time-out fail over to the next trunk (RFC 3263 section
//! 4.3 treats 503 and no answer as "try the next server"; the others are trunk-side problems
//! too). Every other final status (`404`, `480`, `486`, `6xx`, ...) is about the callee and
//! ends the attempt: another carrier would reach the same busy phone.

use acd_core::{AgentId, ContactId, Input, OfferId, QueueId};
use bytes::Bytes;
use rand::Rng;
use uuid::Uuid;

use super::{
    ALLOW, B2bua, Branch, BranchState, Call, CallKey, CallState, LegRef, MediaPort, Now,
    contact_uri, transport_token,
};
use crate::media::{Leg, LegSetup, PayloadTypes};
use crate::sdp::{Codec, LocalMedia, SessionDescription};
use crate::sip::transaction::{Peer, TxId, new_branch};
use crate::sip::{HeaderName, Message, MessageBuilder, Method};
use crate::trunk::{TrunkModel, authorize};

use super::trunks::trunk_peer;

/// The offer id of a branch that is an outbound call, not an engine offer.
pub(super) const NO_OFFER: OfferId = OfferId(Uuid::nil());

/// Why an outbound call could not even start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DialError {
    /// No call with that key, or it is already bridged.
    NoCall,
    /// The tenant has no usable trunk (none configured, all down or full).
    NoTrunk,
    /// The number is empty or not dialable.
    BadNumber,
}

/// What the answer of an outbound call leads to.
#[derive(Debug, Clone)]
enum Purpose {
    /// Bridge the caller of this call to the answering party.
    Bridge,
    /// Callback: ring the reserved agent once the customer answers.
    Callback { offer: OfferId, agent: AgentId },
}

/// One outbound call in progress (before its 2xx).
#[derive(Debug)]
pub(super) struct Dial {
    key: CallKey,
    tenant: Uuid,
    number: String,
    from_user: String,
    /// Trunks not tried yet, in order.
    remaining: Vec<TrunkModel>,
    trunk: TrunkModel,
    /// The INVITE in flight (None before the first is built).
    invite: Option<Message>,
    peer: Peer,
    call_id: String,
    from_tag: String,
    cseq: u32,
    sdp: Bytes,
    answered_challenge: bool,
    purpose: Purpose,
    /// Last final status seen (for the caller when every trunk failed).
    last_status: u16,
    /// When the current attempt is given up if unanswered (ringing forever is no answer).
    deadline: std::time::Instant,
    /// The current attempt got a provisional response beyond 100: the callee is reached.
    ringing: bool,
}

/// Outbound calls in progress, by INVITE transaction and by call.
#[derive(Debug, Default)]
pub(crate) struct Dials {
    by_tx: std::collections::HashMap<TxId, Dial>,
    by_call: std::collections::HashMap<CallKey, TxId>,
}

/// How long one outbound attempt may ring before it is cancelled as unanswered.
pub(super) const RING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a final status means "try the next trunk" (module docs).
fn fails_over(status: u16) -> bool {
    matches!(status, 403 | 408 | 500..=599)
}

impl<M: MediaPort> B2bua<M> {
    /// Dials `number` through the tenant's trunks for the queued caller of call `key` and
    /// bridges them on answer (module docs). Errors leave the call as it was.
    pub(super) fn dial_out_bridge(
        &mut self,
        now: Now,
        key: CallKey,
        number: &str,
    ) -> Result<(), DialError> {
        let call = self.calls.get(&key).ok_or(DialError::NoCall)?;
        if call.state == CallState::Connected || self.dials.by_call.contains_key(&key) {
            return Err(DialError::NoCall);
        }
        let from_user = if call.caller_number.is_empty() {
            "anonymous".to_owned()
        } else {
            call.caller_number.clone()
        };
        let sdp = SessionDescription::offer(
            LocalMedia {
                address: self.config.media_address,
                port: call.media.leg_b.rtp,
            },
            self.rng.random::<u32>().into(),
            &call.agent_codecs,
            101,
        )
        .to_string();
        let tenant = call.tenant;
        self.start_dial(
            now,
            key,
            tenant,
            number,
            from_user,
            Bytes::from(sdp),
            Purpose::Bridge,
        )
    }

    /// `Action::Overflow { target: Number }` / `Action::Refused { then: Number }`: the engine
    /// let go of the contact; dial the number and bridge the caller to it, or refuse the
    /// caller when no trunk can take the call.
    pub(super) fn overflow_to_number(&mut self, now: Now, contact: ContactId, number: &str) {
        let Some(&key) = self.by_contact.get(&contact) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&key) {
            // The engine no longer holds the contact: no ContactEnded/abandon for it later.
            call.engine_released = true;
        }
        if let Err(e) = self.dial_out_bridge(now, key, number) {
            tracing::info!(%contact, %number, ?e, "overflow to a number not possible");
            let code = if e == DialError::NoTrunk { 503 } else { 480 };
            self.refuse(now, contact, code, "overflowed");
        }
    }

    /// `Action::DialCallback`: dial the number stored for `contact` in
    /// [`B2bua::pending_callbacks`], then ring `agent` with `offer`. Without a number or a
    /// trunk the contact is given up (abandoned): re-offering it would only fail again.
    pub(super) fn dial_callback(
        &mut self,
        now: Now,
        tenant: Uuid,
        offer: OfferId,
        contact: ContactId,
        agent: AgentId,
        queue: QueueId,
    ) {
        // The customer is already on the line (an earlier agent did not answer): ring the
        // newly reserved agent for them.
        if let Some(&key) = self.by_contact.get(&contact)
            && self.is_callback_call(key)
            && self.calls.get(&key).is_some_and(|c| !c.call_id.is_empty())
        {
            self.offer(now, tenant, offer, contact, agent);
            return;
        }
        let Some(info) = self.pending_callbacks.get(&contact).cloned() else {
            tracing::warn!(%contact, "DialCallback for a contact without a callback number");
            self.routing
                .push_back((tenant, Input::ContactAbandoned { contact }));
            return;
        };
        let customer = LegSetup {
            peer: None,
            rtcp_peer: None,
            payload_types: PayloadTypes::of(&[0, 8, 101]),
            telephone_event: Some(101),
            codec: None,
        };
        let agent_side = customer;
        let media = match self.media.add_call(customer, agent_side) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("no media ports for a callback: {e}");
                self.routing.push_back((
                    tenant,
                    Input::OfferRejected {
                        offer,
                        kind: acd_core::RejectKind::Failed,
                    },
                ));
                return;
            }
        };
        let codecs = [Codec::Pcmu, Codec::Pcma, Codec::TelephoneEvent];
        let sdp = SessionDescription::offer(
            LocalMedia {
                address: self.config.media_address,
                port: media.leg_a.rtp,
            },
            self.rng.random::<u32>().into(),
            &codecs,
            101,
        )
        .to_string();
        let key = CallKey(self.next_call);
        self.next_call += 1;
        let placeholder = Message::parse_datagram(
            Bytes::from_static(
                b"INVITE sip:callback@invalid SIP/2.0\r\nVia: SIP/2.0/UDP invalid;branch=z9hG4bKcb\r\nFrom: <sip:callback@invalid>;tag=cb\r\nTo: <sip:callback@invalid>\r\nCall-ID: cb@invalid\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ),
            &self.limits,
        );
        let Ok(placeholder) = placeholder else {
            // A constant message our own parser accepts (unit-tested by every callback test).
            self.media.remove_call(media.id);
            return;
        };
        self.by_contact.insert(contact, key);
        self.by_media.insert(media.id, key);
        self.calls.insert(
            key,
            Call {
                tenant,
                contact,
                queue,
                // No server transaction: we are the UAC towards the customer. Responses
                // "to the caller" (the 200 on bridge) go nowhere.
                invite_tx: TxId(u64::MAX),
                invite: placeholder,
                source: Peer {
                    addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                    transport: crate::sip::transaction::TransportKind::Udp,
                },
                local_tag: String::new(),
                call_id: Bytes::new(),
                caller_contact: Bytes::new(),
                caller_number: info.number.clone(),
                dialled: info.number.clone(),
                media,
                answer_sdp: Bytes::from(sdp.clone()),
                agent_codecs: vec![Codec::Pcmu, Codec::TelephoneEvent],
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
        let from_user = self
            .index
            .trunks
            .get(&tenant)
            .and_then(|l| l.first())
            .and_then(|t| t.credentials.as_ref().map(|c| c.username.clone()))
            .unwrap_or_else(|| "zentrale".to_owned());
        if let Err(e) = self.start_dial(
            now,
            key,
            tenant,
            &info.number,
            from_user,
            Bytes::from(sdp),
            Purpose::Callback { offer, agent },
        ) {
            tracing::warn!(%contact, ?e, "callback cannot be dialled");
            self.routing
                .push_back((tenant, Input::ContactAbandoned { contact }));
            self.pending_callbacks.remove(&contact);
            self.finish(now, key, "failed");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_dial(
        &mut self,
        now: Now,
        key: CallKey,
        tenant: Uuid,
        number: &str,
        from_user: String,
        sdp: Bytes,
        purpose: Purpose,
    ) -> Result<(), DialError> {
        if number.is_empty()
            || !number
                .chars()
                .all(|c| c.is_ascii_digit() || "+-. ()*#".contains(c))
        {
            return Err(DialError::BadNumber);
        }
        let number =
            crate::b2bua::model::normalize_e164(number).unwrap_or_else(|| number.to_owned());
        let mut remaining: Vec<TrunkModel> =
            self.index.trunks.get(&tenant).cloned().unwrap_or_default();
        // Trunks that probing declared down go last: tried only when every healthy one failed
        // (a probe can be wrong; refusing the call outright would be worse).
        remaining.sort_by_key(|t| !self.trunk_health(tenant, &t.name).usable());
        let Some(first) = remaining.first().cloned() else {
            return Err(DialError::NoTrunk);
        };
        let dial = Dial {
            key,
            tenant,
            number,
            from_user,
            remaining,
            trunk: first,
            invite: None,
            peer: Peer {
                addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                transport: crate::sip::transaction::TransportKind::Udp,
            },
            call_id: String::new(),
            from_tag: String::new(),
            cseq: 0,
            sdp,
            answered_challenge: false,
            purpose,
            last_status: 480,
            deadline: now.mono,
            ringing: false,
        };
        if self.next_trunk(now, dial) {
            Ok(())
        } else {
            Err(DialError::NoTrunk)
        }
    }

    /// Starts the INVITE on the next usable trunk in `dial.remaining`; `false` when none is
    /// left (the dial is dropped, its channel already given back).
    fn next_trunk(&mut self, now: Now, mut dial: Dial) -> bool {
        while !dial.remaining.is_empty() {
            let trunk = dial.remaining.remove(0);
            if !self.trunk_health(dial.tenant, &trunk.name).usable() {
                tracing::info!(trunk = %trunk.name, "trying a trunk that probing declared down (last resort)");
            }
            let Some(peer) = trunk_peer(&trunk) else {
                continue;
            };
            if !self.take_channel(dial.tenant, &trunk.name) {
                tracing::info!(trunk = %trunk.name, "trunk at max_channels: trying the next");
                continue;
            }
            dial.trunk = trunk;
            dial.peer = peer;
            dial.call_id = format!("{}@zentrale", self.token());
            dial.from_tag = self.token();
            dial.cseq = 1;
            dial.answered_challenge = false;
            dial.deadline = now.mono + RING_TIMEOUT;
            dial.ringing = false;
            match self.send_dial_invite(now, &mut dial, None) {
                Some(tx) => {
                    tracing::info!(trunk = %dial.trunk.name, number = %dial.number, "dialling out");
                    self.dials.by_call.insert(dial.key, tx);
                    self.dials.by_tx.insert(tx, dial);
                    return true;
                }
                None => {
                    self.release_channel(dial.tenant, &dial.trunk.name);
                }
            }
        }
        false
    }

    fn send_dial_invite(
        &mut self,
        now: Now,
        dial: &mut Dial,
        auth: Option<(&'static [u8], String)>,
    ) -> Option<TxId> {
        let uri = dial.trunk.number_uri(&dial.number);
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            transport_token(dial.peer.transport),
            self.config.sip_address,
            new_branch(self.rng.random())
        );
        let mut b = MessageBuilder::request(&Method::Invite, uri.as_bytes())
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70")
            .header(
                b"From",
                format!(
                    "<sip:{}@{}>;tag={}",
                    dial.from_user,
                    self.config.sip_address.ip(),
                    dial.from_tag
                )
                .as_bytes(),
            )
            .header(b"To", format!("<{uri}>").as_bytes())
            .header(b"Call-ID", dial.call_id.as_bytes())
            .header(b"CSeq", format!("{} INVITE", dial.cseq).as_bytes())
            .header(b"Contact", self.our_contact().as_bytes())
            .header(b"Allow", ALLOW)
            .header(b"Supported", b"timer");
        if let Some((name, value)) = auth {
            b = b.header(name, value.as_bytes());
        }
        let bytes = b
            .header(b"Content-Type", b"application/sdp")
            .body(&dial.sdp);
        let invite = match Message::parse_datagram(bytes, &self.limits) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(trunk = %dial.trunk.name, "cannot build an outbound INVITE: {e}");
                return None;
            }
        };
        match self.tl.send_request(now.mono, invite.clone(), dial.peer) {
            Ok(tx) => {
                dial.invite = Some(invite);
                Some(tx)
            }
            Err(e) => {
                tracing::warn!(trunk = %dial.trunk.name, "cannot send an outbound INVITE: {e}");
                None
            }
        }
    }

    /// A response on an outbound INVITE; `false` when the transaction is not one of ours.
    pub(super) fn outbound_response(&mut self, now: Now, tx: TxId, resp: &Message) -> bool {
        let Some(status) = resp.status() else {
            return self.dials.by_tx.contains_key(&tx);
        };
        if !self.dials.by_tx.contains_key(&tx) {
            return false;
        }
        if status < 200 {
            if status > 100
                && let Some(d) = self.dials.by_tx.get_mut(&tx)
            {
                d.ringing = true;
            }
            return true;
        }
        let Some(mut dial) = self.dials.by_tx.remove(&tx) else {
            return true;
        };
        self.dials.by_call.remove(&dial.key);
        match status {
            200..=299 => self.dial_answered(now, tx, dial, resp),
            401 | 407 if !dial.answered_challenge => {
                let name = if status == 401 {
                    HeaderName::WwwAuthenticate
                } else {
                    HeaderName::ProxyAuthenticate
                };
                let cnonce = self.token();
                let uri = dial.trunk.number_uri(&dial.number);
                let auth = authorize(
                    status,
                    resp.headers_named(&name),
                    dial.trunk.credentials.as_ref(),
                    "INVITE",
                    &uri,
                    &cnonce,
                );
                let Some(auth) = auth else {
                    tracing::warn!(trunk = %dial.trunk.name, "cannot answer the carrier's INVITE challenge");
                    self.release_channel(dial.tenant, &dial.trunk.name);
                    dial.last_status = status;
                    self.dial_failed_over(now, dial);
                    return true;
                };
                dial.answered_challenge = true;
                dial.cseq += 1;
                match self.send_dial_invite(now, &mut dial, Some(auth)) {
                    Some(tx) => {
                        self.dials.by_call.insert(dial.key, tx);
                        self.dials.by_tx.insert(tx, dial);
                    }
                    None => {
                        self.release_channel(dial.tenant, &dial.trunk.name);
                        self.dial_failed_over(now, dial);
                    }
                }
            }
            _ => {
                self.release_channel(dial.tenant, &dial.trunk.name);
                dial.last_status = status;
                tracing::info!(trunk = %dial.trunk.name, status, "outbound call attempt failed");
                if fails_over(status) || matches!(status, 401 | 407) {
                    self.dial_failed_over(now, dial);
                } else {
                    self.dial_failed(now, dial);
                }
            }
        }
        true
    }

    /// The outbound INVITE got no final response; `false` when it is not one of ours.
    pub(super) fn outbound_timeout(&mut self, now: Now, tx: TxId) -> bool {
        let Some(mut dial) = self.dials.by_tx.remove(&tx) else {
            return false;
        };
        self.dials.by_call.remove(&dial.key);
        self.release_channel(dial.tenant, &dial.trunk.name);
        if dial.ringing {
            // The callee was reached and did not answer (the transaction layer's Timer B also
            // runs while ringing): stop the ringing, no failover.
            if let Some(invite) = dial.invite.take() {
                let cancel = crate::sip::transaction::build_cancel(&invite);
                if let Ok(m) = Message::parse_datagram(cancel, &self.limits) {
                    let _ = self.tl.send_request(now.mono, m, dial.peer);
                }
            }
            tracing::info!(number = %dial.number, "outbound call not answered");
            dial.last_status = 480;
            self.dial_failed(now, dial);
            return true;
        }
        dial.last_status = 408;
        tracing::info!(trunk = %dial.trunk.name, "outbound call attempt timed out");
        self.dial_failed_over(now, dial);
        true
    }

    /// The earliest ring deadline of the outbound attempts.
    pub(super) fn outbound_poll_timeout(&self) -> Option<std::time::Instant> {
        self.dials.by_tx.values().map(|d| d.deadline).min()
    }

    /// Cancels attempts that rang too long: the callee did not answer (a final verdict about
    /// the callee, so no failover).
    pub(super) fn outbound_timeouts(&mut self, now: Now) {
        let due: Vec<TxId> = self
            .dials
            .by_tx
            .iter()
            .filter(|(_, d)| d.deadline <= now.mono)
            .map(|(tx, _)| *tx)
            .collect();
        for tx in due {
            let Some(mut dial) = self.dials.by_tx.remove(&tx) else {
                continue;
            };
            self.dials.by_call.remove(&dial.key);
            self.release_channel(dial.tenant, &dial.trunk.name);
            tracing::info!(number = %dial.number, "outbound call not answered in time");
            if let Some(invite) = dial.invite.take() {
                let cancel = crate::sip::transaction::build_cancel(&invite);
                if let Ok(m) = Message::parse_datagram(cancel, &self.limits) {
                    let _ = self.tl.send_request(now.mono, m, dial.peer);
                }
                self.orphans.insert(
                    tx,
                    Branch {
                        offer: NO_OFFER,
                        agent: AgentId::new(dial.number.as_str()),
                        tx,
                        invite,
                        peer: dial.peer,
                        call_id: Bytes::from(dial.call_id.clone()),
                        state: BranchState::Calling,
                        remote_to: None,
                        remote_target: None,
                        withdrawn: true,
                        last_status: 0,
                    },
                );
            }
            dial.last_status = 480;
            self.dial_failed(now, dial);
        }
    }

    /// The call `key` ends while an outbound INVITE is pending: CANCEL it (hook in `finish`).
    pub(super) fn outbound_call_gone(&mut self, now: Now, key: CallKey) {
        let Some(tx) = self.dials.by_call.remove(&key) else {
            return;
        };
        let Some(dial) = self.dials.by_tx.remove(&tx) else {
            return;
        };
        self.release_channel(dial.tenant, &dial.trunk.name);
        let Some(invite) = dial.invite else {
            return;
        };
        let cancel = crate::sip::transaction::build_cancel(&invite);
        if let Ok(m) = Message::parse_datagram(cancel, &self.limits) {
            let _ = self.tl.send_request(now.mono, m, dial.peer);
        }
        // A 2xx racing the CANCEL is ACKed and hung up like any orphaned branch.
        self.orphans.insert(
            tx,
            Branch {
                offer: NO_OFFER,
                agent: AgentId::new(dial.number.as_str()),
                tx,
                invite,
                peer: dial.peer,
                call_id: Bytes::from(dial.call_id),
                state: BranchState::Calling,
                remote_to: None,
                remote_target: None,
                withdrawn: true,
                last_status: 0,
            },
        );
    }

    fn dial_failed_over(&mut self, now: Now, dial: Dial) {
        if dial.remaining.is_empty() {
            self.dial_failed(now, dial);
            return;
        }
        tracing::info!(number = %dial.number, "failing over to the next trunk");
        let (key, tenant, last) = (dial.key, dial.tenant, dial.last_status);
        let purpose = dial.purpose.clone();
        if !self.next_trunk(now, dial) {
            self.dial_gave_up(now, key, tenant, purpose, last);
        }
    }

    fn dial_failed(&mut self, now: Now, dial: Dial) {
        self.dial_gave_up(now, dial.key, dial.tenant, dial.purpose, dial.last_status);
    }

    fn dial_gave_up(
        &mut self,
        now: Now,
        key: CallKey,
        tenant: Uuid,
        purpose: Purpose,
        status: u16,
    ) {
        let Some(contact) = self.calls.get(&key).map(|c| c.contact) else {
            return;
        };
        tracing::info!(status, "outbound call failed on every trunk");
        match purpose {
            Purpose::Bridge => {
                // The callee's verdict where it is one; 480 for a trunk-side failure.
                let code = match status {
                    404 | 486 | 600 | 603 | 604 => status,
                    _ => 480,
                };
                self.refuse(now, contact, code, "failed");
            }
            Purpose::Callback { .. } => {
                // The customer did not answer: the callback is given up (offering it again
                // would only ring the reserved agent's turn away again).
                self.routing
                    .push_back((tenant, Input::ContactAbandoned { contact }));
                self.pending_callbacks.remove(&contact);
                self.finish(now, key, "failed");
            }
        }
    }

    fn dial_answered(&mut self, now: Now, tx: TxId, dial: Dial, resp: &Message) {
        let Some(invite) = dial.invite.clone() else {
            return;
        };
        let to = resp
            .single(&HeaderName::To, "To")
            .ok()
            .flatten()
            .cloned()
            .unwrap_or_default();
        let target = contact_uri(resp).unwrap_or_else(|| {
            invite
                .request_line()
                .map(|r| r.uri_raw.clone())
                .unwrap_or_default()
        });
        if !self.calls.contains_key(&dial.key) {
            // The call ended while the 2xx was on its way.
            self.release_channel(dial.tenant, &dial.trunk.name);
            self.ack_and_bye(now, &invite, &to, &target, dial.peer);
            return;
        }
        self.adopt_channel(dial.key, dial.tenant, &dial.trunk.name);
        let call_id = Bytes::from(dial.call_id.clone());
        match dial.purpose.clone() {
            Purpose::Bridge => {
                let Some(call) = self.calls.get_mut(&dial.key) else {
                    return;
                };
                let i = call.branches.len();
                call.branches.push(Branch {
                    offer: NO_OFFER,
                    agent: AgentId::new(dial.number.as_str()),
                    tx,
                    invite: invite.clone(),
                    peer: dial.peer,
                    call_id: call_id.clone(),
                    state: BranchState::Calling,
                    remote_to: None,
                    remote_target: None,
                    withdrawn: false,
                    last_status: 0,
                });
                // The engine let go of the contact when it overflowed it.
                call.engine_released = true;
                self.by_branch_tx.insert(tx, (dial.key, i));
                self.by_call_id
                    .insert(call_id, (dial.key, LegRef::Branch(i)));
                self.branch_answered(now, dial.key, i, resp);
            }
            Purpose::Callback { offer, agent } => {
                // ACK the customer's 2xx, point the relay at them, then ring the agent.
                let via = self.via(dial.peer.transport);
                let ack = MessageBuilder::request(&Method::Ack, &target)
                    .header(b"Via", via.as_bytes())
                    .header(b"Max-Forwards", b"70")
                    .copy_headers(&invite, &HeaderName::From)
                    .header(b"To", &to)
                    .header(b"Call-ID", &call_id)
                    .header(b"CSeq", format!("{} ACK", dial.cseq).as_bytes())
                    .finish();
                self.tl.send_stateless(dial.peer, ack);
                let answer = SessionDescription::parse(resp.body()).ok();
                let our_from = invite
                    .single(&HeaderName::From, "From")
                    .ok()
                    .flatten()
                    .cloned()
                    .unwrap_or_default();
                // The caller leg is kept as if the customer had called us: its "INVITE" has
                // the customer's side in From and ours in To, so BYE and re-INVITE handling
                // (written for inbound callers) address the dialog correctly.
                let seen = format!(
                    "INVITE {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bKcbdialog\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    String::from_utf8_lossy(&target),
                    transport_token(dial.peer.transport),
                    dial.peer.addr,
                    String::from_utf8_lossy(&to),
                    String::from_utf8_lossy(&our_from),
                    dial.call_id,
                    dial.cseq,
                );
                let seen = Message::parse_datagram(Bytes::from(seen), &self.limits).ok();
                let media_id = self.calls.get(&dial.key).map(|c| c.media.id);
                let Some(call) = self.calls.get_mut(&dial.key) else {
                    return;
                };
                if let Some(seen) = seen {
                    call.invite = seen;
                }
                call.local_tag = dial.from_tag.clone();
                call.call_id = call_id.clone();
                call.caller_contact = target.clone();
                call.source = dial.peer;
                call.bye_cseq = dial.cseq;
                call.started_ms = now.wall_ms;
                if let Some(a) = &answer
                    && let Some(i) = a.audio_index()
                {
                    // The agent gets exactly the codec the customer chose.
                    let m = &a.media[i];
                    let mut codecs: Vec<Codec> = m
                        .payload_types()
                        .filter_map(|pt| m.codec_of(pt))
                        .filter(|c| *c != Codec::TelephoneEvent)
                        .take(1)
                        .collect();
                    if m.payload_types()
                        .any(|pt| m.codec_of(pt) == Some(Codec::TelephoneEvent))
                    {
                        codecs.push(Codec::TelephoneEvent);
                    }
                    if !codecs.is_empty() {
                        call.agent_codecs = codecs;
                    }
                }
                self.by_call_id.insert(call_id, (dial.key, LegRef::Caller));
                if let (Some(a), Some(id)) = (&answer, media_id)
                    && let Some(setup) = LegSetup::from_sdp(a)
                {
                    self.media.update_leg(id, Leg::A, setup);
                }
                let contact = self.calls.get(&dial.key).map(|c| c.contact);
                if let Some(contact) = contact {
                    self.pending_callbacks.remove(&contact);
                    tracing::info!(%contact, %agent, "callback answered by the customer: ringing the agent");
                    self.offer(now, dial.tenant, offer, contact, agent);
                }
            }
        }
    }

    /// Whether call `key` is a callback whose customer leg we dialled (its caller leg has no
    /// server transaction).
    pub(super) fn is_callback_call(&self, key: CallKey) -> bool {
        self.calls
            .get(&key)
            .is_some_and(|c| c.invite_tx == TxId(u64::MAX))
    }
}

/// The CSeq number of an INVITE we sent (ACK repeats it, BYE goes one above).
pub(super) fn cseq_of(invite: &Message) -> u32 {
    invite.cseq().ok().flatten().map_or(1, |c| c.seq)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use acd_core::{Action, AgentId, Channel, Disposition, Input, OfferId, QueueId, Timestamp};
    use uuid::Uuid;

    use super::super::tests::{CARRIER, Harness, PHONE, TENANT, reply, sdp, statuses};
    use crate::b2bua::model::{AgentSip, GatewayModel, SipSecret, TenantModel, TenantTrunks};
    use crate::sip::auth::{DigestServer, parse_digest};
    use crate::sip::transaction::TransportKind;
    use crate::sip::{HeaderName, Message, Method};
    use crate::trunk::{TrunkCredentials, TrunkModel, TrunkSecret};

    const TRUNK1: &str = "127.0.0.2:5071";
    const TRUNK2: &str = "127.0.0.3:5072";

    fn trunk(name: &str, addr: &str, max: u32) -> TrunkModel {
        TrunkModel {
            name: name.into(),
            host: addr.split(':').next().unwrap().into(),
            addresses: vec![addr.parse().unwrap()],
            transport: TransportKind::Udp,
            credentials: Some(TrunkCredentials {
                username: "acct".into(),
                password: TrunkSecret::new("secret"),
            }),
            register: false,
            max_channels: max,
        }
    }

    /// The harness's tenant with two trunks; DID 200 bound to trunk 1.
    fn with_trunks(h: &mut Harness, max1: u32) {
        h.core.set_model(&Arc::new(GatewayModel {
            tenants: vec![TenantModel {
                tenant: TENANT,
                dids: HashMap::from([
                    ("100".to_owned(), QueueId::new("support")),
                    ("200".to_owned(), QueueId::new("support")),
                ]),
                agents: vec![AgentSip {
                    agent: AgentId::new("1001"),
                    extension: "1001".into(),
                    secret: SipSecret::from_password("1001", "zentrale", "pw1001"),
                }],
                media: Default::default(),
                trunks: TenantTrunks {
                    trunks: vec![trunk("one", TRUNK1, max1), trunk("two", TRUNK2, 0)],
                    did_trunks: HashMap::from([("200".to_owned(), "one".to_owned())]),
                },
            }],
        }));
        h.ms += 1;
        let now = h.now();
        h.core.handle_timeout(now);
        let probes = h.out();
        assert_eq!(probes.len(), 2, "one OPTIONS per trunk");
        assert!(
            probes
                .iter()
                .all(|(_, m)| m.method() == Some(&Method::Options))
        );
    }

    fn invites(out: &[(SocketAddr, Message)], to: &str) -> Vec<Message> {
        out.iter()
            .filter(|(a, m)| a.to_string() == to && m.method() == Some(&Method::Invite))
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn header(m: &Message, name: HeaderName) -> String {
        String::from_utf8_lossy(m.headers_named(&name).next().unwrap()).into_owned()
    }

    fn overflow(
        h: &mut Harness,
        contact: acd_core::ContactId,
        number: &str,
    ) -> Vec<(SocketAddr, Message)> {
        h.ms += 10;
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Overflow {
                contact,
                queue: QueueId::new("support"),
                target: Disposition::Number(number.into()),
            },
        );
        h.out()
    }

    #[test]
    fn overflow_fails_over_from_a_503_trunk_answers_407_and_bridges_the_caller() {
        let mut h = Harness::new();
        with_trunks(&mut h, 0);
        let (_, contact) = h.invite("z9hG4bKob1");
        let out = overflow(&mut h, contact, "+49 30 999");
        let first = invites(&out, TRUNK1);
        assert_eq!(first.len(), 1);
        let ruri = String::from_utf8_lossy(&first[0].request_line().unwrap().uri_raw).into_owned();
        assert_eq!(ruri, "sip:+4930999@127.0.0.2:5071");
        assert!(String::from_utf8_lossy(first[0].body()).contains("m=audio 30002"));

        // Trunk 1 is out of service: the next trunk gets a fresh INVITE.
        let out = h.send(TRUNK1, &reply(&first[0], "503 Service Unavailable", ""));
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == TRUNK1 && m.method() == Some(&Method::Ack))
        );
        let second = invites(&out, TRUNK2);
        assert_eq!(second.len(), 1);
        assert_ne!(
            header(&second[0], HeaderName::CallId),
            header(&first[0], HeaderName::CallId)
        );

        // Trunk 2 wants proxy authentication.
        let server = DigestServer::new("carrier2", b"k", 300);
        let [sha, _md5] = server.challenges(1_800_000_000, false);
        let challenge = reply(&second[0], "407 Proxy Authentication Required", "").replace(
            "Content-Length: 0",
            &format!("Proxy-Authenticate: {sha}\nContent-Length: 0"),
        );
        let out = h.send(TRUNK2, &challenge);
        let third = invites(&out, TRUNK2);
        assert_eq!(third.len(), 1, "{out:?}");
        assert_eq!(header(&third[0], HeaderName::CSeq), "2 INVITE");
        assert_eq!(
            header(&third[0], HeaderName::CallId),
            header(&second[0], HeaderName::CallId)
        );
        let auth = header(&third[0], HeaderName::ProxyAuthorization);
        let p = parse_digest(auth.as_bytes()).unwrap();
        server
            .verify(1_800_000_000, "INVITE", &p, "secret")
            .expect("carrier accepts the digest");
        assert!(
            h.routing().is_empty(),
            "nothing for the engine while dialling"
        );

        // Answer: ACK with the INVITE's CSeq, 200 to the caller, relay leg B moved.
        let out = h.send(TRUNK2, &reply(&third[0], "200 OK", &sdp(46000)));
        let ack = out
            .iter()
            .find(|(a, m)| a.to_string() == TRUNK2 && m.method() == Some(&Method::Ack))
            .unwrap();
        assert_eq!(header(&ack.1, HeaderName::CSeq), "2 ACK");
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == CARRIER && m.status() == Some(200))
        );
        assert!(
            h.routing().is_empty(),
            "no OfferAccepted for an outbound leg"
        );
        let moved = h.core.media.updated.last().unwrap();
        assert_eq!(moved.2, Some("127.0.0.1:46000".parse().unwrap()));
        let st = h.core.trunk_statuses();
        assert_eq!((st[0].name.as_str(), st[0].channels), ("one", 0));
        assert_eq!((st[1].name.as_str(), st[1].channels), ("two", 1));

        // The caller hangs up: BYE to the carrier above the INVITE's CSeq.
        let out = h.send(
            CARRIER,
            "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKob1bye\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKob1@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        );
        let bye = out
            .iter()
            .find(|(a, m)| a.to_string() == TRUNK2 && m.method() == Some(&Method::Bye))
            .unwrap();
        assert_eq!(header(&bye.1, HeaderName::CSeq), "3 BYE");
        assert!(
            h.routing().is_empty(),
            "the engine let go of the contact at the overflow"
        );
        assert_eq!(h.core.active_calls(), 0);
        assert!(h.core.trunk_statuses().iter().all(|t| t.channels == 0));
        let cdr = h.core.poll_cdr().unwrap();
        assert_eq!(
            (cdr.result, cdr.agent.as_deref()),
            ("answered", Some("+4930999"))
        );
    }

    #[test]
    fn a_busy_callee_is_final_and_the_caller_hears_486() {
        let mut h = Harness::new();
        with_trunks(&mut h, 0);
        let (_, contact) = h.invite("z9hG4bKob2");
        let out = overflow(&mut h, contact, "+4930998");
        let first = invites(&out, TRUNK1);
        let out = h.send(TRUNK1, &reply(&first[0], "486 Busy Here", ""));
        assert!(
            invites(&out, TRUNK2).is_empty(),
            "no failover for a busy callee"
        );
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == CARRIER && m.status() == Some(486))
        );
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn an_attempt_ringing_too_long_is_cancelled_and_the_caller_hears_480() {
        let mut h = Harness::new();
        with_trunks(&mut h, 0);
        let (_, contact) = h.invite("z9hG4bKob4");
        let out = overflow(&mut h, contact, "+4930996");
        let first = invites(&out, TRUNK1);
        h.send(TRUNK1, &reply(&first[0], "180 Ringing", ""));
        h.ms += super::RING_TIMEOUT.as_millis() as u64;
        let now = h.now();
        h.core.handle_timeout(now);
        let out = h.out();
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == TRUNK1 && m.method() == Some(&Method::Cancel))
        );
        assert!(
            invites(&out, TRUNK2).is_empty(),
            "no answer is about the callee: no failover"
        );
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == CARRIER && m.status() == Some(480))
        );
        assert!(h.core.trunk_statuses().iter().all(|t| t.channels == 0));
    }

    #[test]
    fn caller_cancel_while_dialling_out_cancels_the_carrier_leg() {
        let mut h = Harness::new();
        with_trunks(&mut h, 0);
        let (_, contact) = h.invite("z9hG4bKob3");
        let out = overflow(&mut h, contact, "+4930997");
        assert_eq!(invites(&out, TRUNK1).len(), 1);
        let out = h.send(
            CARRIER,
            "CANCEL sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKob3\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>\nCall-ID: z9hG4bKob3@carrier\nCSeq: 1 CANCEL\nContent-Length: 0\n\n",
        );
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == TRUNK1 && m.method() == Some(&Method::Cancel))
        );
        assert!(h.core.trunk_statuses().iter().all(|t| t.channels == 0));
    }

    fn inbound(h: &mut Harness, from: &str, did: &str, branch: &str) -> Vec<u16> {
        let body = sdp(40000);
        let out = h.send(
            from,
            &format!(
                "INVITE sip:{did}@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {from};branch={branch}\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:{did}@127.0.0.1>\nCall-ID: {branch}@carrier\nCSeq: 1 INVITE\nContact: <sip:c@{from}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
                body.len()
            ),
        );
        statuses(&out)
    }

    #[test]
    fn trunk_bound_did_only_from_its_trunk_and_max_channels_gives_503() {
        let mut h = Harness::new();
        with_trunks(&mut h, 1);
        assert_eq!(
            inbound(&mut h, "127.0.0.9:5060", "200", "z9hG4bKin1"),
            vec![100, 403]
        );
        assert_eq!(inbound(&mut h, TRUNK1, "200", "z9hG4bKin2"), vec![100, 180]);
        assert_eq!(h.core.trunk_statuses()[0].channels, 1);
        assert_eq!(inbound(&mut h, TRUNK1, "200", "z9hG4bKin3"), vec![100, 503]);
        // A DID without a trunk is open to any source unless trusted_sources_only.
        assert_eq!(
            inbound(&mut h, "127.0.0.9:5060", "100", "z9hG4bKin4"),
            vec![100, 180]
        );
        h.core.set_trusted_sources_only(true);
        assert_eq!(
            inbound(&mut h, "127.0.0.9:5060", "100", "z9hG4bKin5"),
            vec![100, 403]
        );
        assert_eq!(inbound(&mut h, TRUNK2, "100", "z9hG4bKin6"), vec![100, 180]);
    }

    #[test]
    fn callback_dials_the_customer_then_rings_the_reserved_agent() {
        let mut h = Harness::new();
        with_trunks(&mut h, 0);
        h.register();
        h.routing();
        let contact = acd_core::ContactId(Uuid::from_u128(0xcb));
        h.core.pending_callbacks.insert(
            contact,
            super::super::callback::CallbackInfo {
                tenant: TENANT,
                number: "+4930555".into(),
                queue: QueueId::new("support"),
                requested_ms: 0,
            },
        );
        h.ms += 10;
        let now = h.now();
        let offer = OfferId(Uuid::from_u128(0xcb1));
        h.core.handle_action(
            now,
            TENANT,
            Action::DialCallback {
                offer,
                contact,
                agent: AgentId::new("1001"),
                queue: QueueId::new("support"),
                expires_at: Timestamp(now.wall_ms + 30_000),
            },
        );
        let out = h.out();
        let to_customer = invites(&out, TRUNK1);
        assert_eq!(to_customer.len(), 1);
        assert!(String::from_utf8_lossy(to_customer[0].body()).contains("m=audio 30000"));
        let out = h.send(TRUNK1, &reply(&to_customer[0], "200 OK", &sdp(47000)));
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == TRUNK1 && m.method() == Some(&Method::Ack))
        );
        let to_agent = invites(&out, PHONE);
        assert_eq!(
            to_agent.len(),
            1,
            "the reserved agent rings once the customer answers"
        );
        let out = h.send(PHONE, &reply(&to_agent[0], "200 OK", &sdp(50000)));
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == PHONE && m.method() == Some(&Method::Ack))
        );
        assert!(matches!(h.routing()[..], [Input::OfferAccepted { offer: o }] if o == offer));
        assert!(h.core.pending_callbacks.is_empty());

        // The agent hangs up: the customer gets a BYE in our dialog with them.
        let call_id = header(&to_agent[0], HeaderName::CallId);
        let from = header(&to_agent[0], HeaderName::From);
        let out = h.send(
            PHONE,
            &format!(
                "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKcbbye\nMax-Forwards: 70\nFrom: <sip:1001@{PHONE}>;tag=ph\nTo: {from}\nCall-ID: {call_id}\nCSeq: 9 BYE\nContent-Length: 0\n\n"
            ),
        );
        let bye = out
            .iter()
            .find(|(a, m)| a.to_string() == TRUNK1 && m.method() == Some(&Method::Bye))
            .unwrap();
        assert_eq!(
            header(&bye.1, HeaderName::CallId),
            header(&to_customer[0], HeaderName::CallId)
        );
        assert!(
            header(&bye.1, HeaderName::From)
                .starts_with(&header(&to_customer[0], HeaderName::From))
        );
        assert!(header(&bye.1, HeaderName::To).contains("tag=ph"));
        assert_eq!(header(&bye.1, HeaderName::CSeq), "2 BYE");
        assert!(matches!(h.routing()[..], [Input::ContactEnded { contact: c }] if c == contact));
        assert_eq!(h.core.active_calls(), 0);
        let _ = Channel::Voice;
    }

    #[test]
    fn callback_without_a_trunk_or_number_is_given_up() {
        let mut h = Harness::new();
        let contact = acd_core::ContactId(Uuid::from_u128(0xcc));
        h.ms += 10;
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::DialCallback {
                offer: OfferId(Uuid::from_u128(1)),
                contact,
                agent: AgentId::new("1001"),
                queue: QueueId::new("support"),
                expires_at: Timestamp(now.wall_ms + 30_000),
            },
        );
        assert!(
            matches!(h.routing()[..], [Input::ContactAbandoned { contact: c }] if c == contact)
        );
        assert_eq!(h.core.active_calls(), 0);
        assert!(h.core.media.live.is_empty());
    }
}
