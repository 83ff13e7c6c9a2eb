//! Transfer of a connected caller: blind by REFER from the agent's phone (RFC 3515) or by the
//! control API, to a queue, straight to another agent's phones or to a number; attended by
//! REFER with `Replaces` (RFC 3891) after a consultation call from the agent's phone.
//!
//! # To a queue
//! The caller goes back to acd-core with `Input::Transfer` (the engine ends the conversation,
//! puts the transferring agent into wrap-up, logs a `transfer` row and re-queues the contact
//! with its priority; the transferring agent is not offered it again during that wrap-up).
//! The caller hears hold music meanwhile; the transfer is complete as soon as the engine has
//! it, so the REFER gets `202`, `NOTIFY 100 Trying`, `NOTIFY 200 OK` and a BYE at once. The
//! engine's next `Offer` rings the new agent through the ordinary fork; its answer bridges leg B
//! to the new phone (the relay re-latches) and does **not** answer the caller again.
//!
//! # To an agent
//! acd-core has no input for "offer this contact to that agent", so the target's phones are
//! rung directly through the same fork code, under an offer id of ours that the engine never
//! hears about. While they ring the caller hears music and the transferor stays connected:
//! - answered → `NOTIFY 200`, BYE to the transferor, leg B moves to the new phone, and the
//!   engine gets `Input::AssignToAgent { contact, agent }`: the transferor goes into wrap-up,
//!   the new agent holds the contact (busy, not offered other voice calls; an `assign`
//!   queue-log row; `Action::Assigned`, on which the binary pops the caller's card on the new
//!   agent's screen), and the call's end later sends `ContactEnded`, the new agent's wrap-up.
//!   One owner per contact throughout (an engine offer ringing at the new agent is withdrawn
//!   to make room). The engine refuses the assignment when the new agent is logged out of
//!   routing or busy with another voice contact: the contact then stays the transferor's
//!   until the call ends (the transferor's wrap-up comes late). The CDR carries the transferor's leg as `transferred` (`transfer` =
//!   `blind:<agent>`) and the new agent as the call's agent.
//! - all phones refuse → `NOTIFY` with the final status, and the caller is back with the
//!   transferor (plain bridge); if the transferor has hung up meanwhile, the caller goes back
//!   into the call's queue instead of being dropped.
//!
//! # To a number
//! Any other target that is a number is dialled through the tenant's trunks
//! (core/outbound.rs `dial_out_bridge`); the transferor is released at once and the engine's
//! conversation ends; the number's answer moves leg B to the trunk. No trunk → the REFER's
//! NOTIFY says 503 and the transferor keeps the caller.
//!
//! # Attended (REFER with `Replaces`)
//! The agent holds the caller (call X), calls a colleague from the phone (call Y, an internal
//! call, core/internal.rs) and then REFERs X to `sip:1002@…?Replaces=<Y's Call-ID;tags>`.
//! We move the colleague's dialog from Y into X and re-INVITE the colleague's phone onto X's
//! relay port (a re-INVITE is unavoidable: the relay binds ports per call, and the phone sends
//! to Y's port until told otherwise; the relay re-latches leg B when the 2xx names the phone's
//! address); the hold ends, the transferor's dialogs on X and Y get BYE. The engine hears
//! `AgentBusy { busy: false }` for both agents of the consultation Y (core/internal.rs marked
//! them busy while it lasted), then `AssignToAgent { contact: X's, agent: the colleague }`
//! (the transferor's wrap-up, the colleague's contact from now, as for a blind transfer to an
//! agent). A consultation of a queue instead was an engine contact of its own: it gets
//! `ContactEnded`. A `Replaces` naming no call of ours is `404`, one naming a call that is not
//! the transferor's own consultation is `403`.
//!
//! The transferor's dialog is one in which we are the UAC, so the NOTIFYs and the BYE we send
//! there count on from a CSeq of our own (`Call::transfer_cseq`, above the INVITE's and the
//! session timer's refreshes).

use acd_core::{AgentId, Input, OfferId, QueueId};
use bytes::Bytes;
use uuid::Uuid;

use super::{B2bua, Branch, BranchState, CallKey, CallState, CdrRow, LegRef, MediaPort, Now};
use crate::b2bua::control::{ControlError, TransferTarget};
use crate::media::{AudioCommand, Leg, LegSet, LegSetup};
use crate::sdp::{LocalMedia, SessionDescription};
use crate::sip::transaction::{Peer, TxId};
use crate::sip::{HeaderName, Message, MessageBuilder, Method, response_to_source};

/// A direct transfer to an agent in progress (transfers to a queue complete at once).
#[derive(Debug, Clone)]
pub(super) struct Transfer {
    /// The branch (the transferor's dialog); `None` once the transferor has hung up.
    transferor: Option<usize>,
    /// Whether the transferor asked by REFER and so wants NOTIFYs.
    notify: bool,
    /// The offer id of our own under which the target's phones ring.
    offer: OfferId,
    /// The agent being rung.
    agent: AgentId,
}

/// Where a `Refer-To` (or an API request) leads, resolved against the tenant's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolved {
    /// An agent's extension.
    Agent(AgentId, String),
    /// A queue, by name or by one of its DIDs.
    Queue(QueueId),
    /// Anything else that is a number: dialled through the tenant's trunks.
    Number(String),
}

/// What a `Refer-To` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReferTo {
    /// The user part (extension, queue name, number), unescaped.
    pub(super) user: String,
    /// The `Replaces` header parameter (attended transfer), unescaped, if any.
    pub(super) replaces: Option<String>,
}

/// Parses `Refer-To: <sip:user@host;params?headers>` (or without angle brackets).
pub(super) fn parse_refer_to(value: &[u8]) -> Option<ReferTo> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let uri = match (text.find('<'), text.rfind('>')) {
        (Some(a), Some(b)) if a < b => &text[a + 1..b],
        (None, None) => text.split(';').next().unwrap_or(text),
        _ => return None,
    };
    let (uri, headers) = match uri.split_once('?') {
        Some((u, h)) => (u, Some(h)),
        None => (uri, None),
    };
    let rest = ["sip:", "sips:", "tel:"].iter().find_map(|s| {
        uri.get(..s.len())
            .filter(|p| p.eq_ignore_ascii_case(s))
            .map(|_| &uri[s.len()..])
    })?;
    let user = match rest.split_once('@') {
        Some((u, _)) => u,
        None if uri[..4].eq_ignore_ascii_case("tel:") => rest.split(';').next().unwrap_or(rest),
        None => return None,
    };
    let user = percent_decode(user.split(';').next().unwrap_or(user))?;
    if user.is_empty() {
        return None;
    }
    let replaces = headers.and_then(|h| {
        h.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("replaces")
                .then(|| percent_decode(v))
                .flatten()
        })
    });
    Some(ReferTo { user, replaces })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn reason_of(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Failed",
    }
}

impl<M: MediaPort> B2bua<M> {
    /// Resolves a transfer target's user part within `tenant`: an agent's extension first,
    /// then a DID, then a queue name. The gateway's model lists a tenant's queues only where
    /// a DID leads to them or they have caller media; a queue with neither cannot be a
    /// transfer target yet (refused rather than handed to an engine that may not know it).
    pub(super) fn resolve_transfer_target(&self, tenant: Uuid, user: &str) -> Option<Resolved> {
        if let Some((t, agent, _)) = self.index.extensions.get(user)
            && *t == tenant
        {
            return Some(Resolved::Agent(agent.clone(), user.to_owned()));
        }
        if let Some((t, q)) = self.index.route(user)
            && *t == tenant
        {
            return Some(Resolved::Queue(q.clone()));
        }
        let queue = QueueId::new(user);
        let has_media = self
            .index
            .media
            .get(&tenant)
            .is_some_and(|m| m.queues.contains_key(&queue));
        let has_did = self
            .index
            .dids
            .values()
            .any(|(t, q)| *t == tenant && *q == queue);
        (has_media || has_did).then_some(Resolved::Queue(queue))
    }

    /// A REFER inside a call's dialog.
    pub(super) fn refer(&mut self, now: Now, tx: TxId, req: &Message, source: Peer) {
        let found = req
            .call_id()
            .ok()
            .flatten()
            .and_then(|c| self.by_call_id.get(&c).copied());
        let Some((key, leg)) = found else {
            self.simple(now, tx, req, source, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let Some(call) = self.calls.get(&key) else {
            self.simple(now, tx, req, source, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let branch = match leg {
            LegRef::Branch(i) if call.state == CallState::Connected && call.winner == Some(i) => i,
            LegRef::Branch(_) => {
                self.simple(now, tx, req, source, 481, "Call/Transaction Does Not Exist");
                return;
            }
            // The carrier's side transferring "our" agent is not a contact-centre feature.
            LegRef::Caller => {
                self.simple(now, tx, req, source, 403, "Forbidden");
                return;
            }
        };
        if call.transfer.is_some() {
            self.simple(now, tx, req, source, 491, "Request Pending");
            return;
        }
        let tenant = call.tenant;
        let refer_to = req
            .headers_named(&HeaderName::ReferTo)
            .next()
            .and_then(|v| parse_refer_to(v));
        let Some(refer_to) = refer_to else {
            self.simple(now, tx, req, source, 400, "Bad Refer-To");
            return;
        };
        if let Some(replaces) = &refer_to.replaces {
            self.attended_refer(now, tx, req, source, key, branch, replaces);
            return;
        }
        let target = match self.resolve_transfer_target(tenant, &refer_to.user) {
            Some(t) => t,
            None => match crate::b2bua::model::normalize_e164(&refer_to.user) {
                Some(number) => Resolved::Number(number),
                None => {
                    tracing::info!(user = %refer_to.user, "REFER to an unknown target");
                    self.simple(now, tx, req, source, 404, "Not Found");
                    return;
                }
            },
        };
        if let Resolved::Agent(_, ext) = &target
            && self.registrar.bindings(ext, now.mono).is_empty()
        {
            self.simple(now, tx, req, source, 480, "Temporarily Unavailable");
            return;
        }
        let tag = self.token();
        let accepted = response_to_source(
            req,
            Some(source.addr),
            202,
            "Accepted",
            Some(tag.as_bytes()),
        )
        .header(b"Contact", self.our_contact().as_bytes())
        .finish();
        self.respond(now, tx, accepted);
        self.notify_refer(now, key, branch, "SIP/2.0 100 Trying", false);
        let started = match target {
            Resolved::Queue(q) => self.transfer_to_queue(now, key, q, Some(branch)),
            Resolved::Agent(agent, ext) => {
                self.transfer_to_agent(now, key, agent, &ext, Some(branch))
            }
            Resolved::Number(number) => self.transfer_to_number(now, key, &number, Some(branch)),
        };
        if let Err(e) = started {
            tracing::info!("transfer failed at once: {e}");
            self.notify_refer(now, key, branch, "SIP/2.0 503 Service Unavailable", true);
        }
    }

    /// REFER with `Replaces` (RFC 3891, RFC 5589 section 7): the transferor (agent A, on
    /// call X with the caller, usually held) has a consultation call Y with a colleague, and
    /// asks us to connect the caller with that colleague. We move the colleague's dialog from
    /// Y into X as X's agent branch, send the colleague's phone a re-INVITE that points it at
    /// X's relay port facing the agent (the relay's leg B of X re-latches to it), end the hold,
    /// release the transferor's two dialogs (NOTIFY 200 and BYE on X, BYE on Y) and tell the
    /// engine that the transferor's conversation is over. Y must be a call *from the
    /// transferor's own extension*, and the Replaces tags, when given, must name our side of Y.
    #[allow(clippy::too_many_arguments)]
    fn attended_refer(
        &mut self,
        now: Now,
        tx: TxId,
        req: &Message,
        source: Peer,
        x: CallKey,
        w: usize,
        replaces: &str,
    ) {
        let mut parts = replaces.split(';');
        let cid = parts.next().unwrap_or_default().trim();
        let tags: Vec<&str> = parts
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| {
                k.trim().eq_ignore_ascii_case("to-tag") || k.trim().eq_ignore_ascii_case("from-tag")
            })
            .map(|(_, v)| v.trim())
            .collect();
        let transferor_ext = self.calls.get(&x).and_then(|c| {
            c.branches
                .get(w)
                .and_then(|b| self.index.agents.get(&(c.tenant, b.agent.clone())))
                .cloned()
        });
        let y = match self.by_call_id.get(cid.as_bytes()) {
            Some(&(y, LegRef::Caller)) if y != x => y,
            _ => {
                tracing::info!(%cid, "REFER with Replaces names no call of ours");
                self.simple(now, tx, req, source, 404, "Replaced Dialog Not Found");
                return;
            }
        };
        let valid = self
            .calls
            .get(&y)
            .zip(self.calls.get(&x))
            .is_some_and(|(cy, cx)| {
                cy.state == CallState::Connected
                    && cy.winner.is_some()
                    && cy.tenant == cx.tenant
                    && Some(&cy.caller_number) == transferor_ext.as_ref()
                    && (tags.is_empty() || tags.contains(&cy.local_tag.as_str()))
            });
        if !valid {
            tracing::info!(%cid, "REFER with Replaces for a dialog the transferor does not own");
            self.simple(now, tx, req, source, 403, "Forbidden");
            return;
        }
        let tag = self.token();
        let accepted = response_to_source(
            req,
            Some(source.addr),
            202,
            "Accepted",
            Some(tag.as_bytes()),
        )
        .header(b"Contact", self.our_contact().as_bytes())
        .finish();
        self.respond(now, tx, accepted);
        self.notify_refer(now, x, w, "SIP/2.0 100 Trying", false);
        // The consultation's agents (the transferor and the colleague), freed below.
        let consulting = self
            .calls
            .get(&y)
            .map(|c| self.internal_agents(c))
            .unwrap_or_default();
        match self.move_consultation(now, x, y) {
            Some(n) => {
                let (tenant, contact, media) = match self.calls.get_mut(&x) {
                    Some(c) => {
                        c.held_by = None;
                        c.agent_since_ms = Some(now.wall_ms);
                        (c.tenant, c.contact, c.media.id)
                    }
                    None => return,
                };
                tracing::info!(%contact, branch = n, "attended transfer connected");
                self.media.audio(media, AudioCommand::Reset);
                self.supervisor_after_reset(x);
                let to = self.winner_agent(x);
                self.transferor_cdr(now, x, w, format!("attended:{to}"));
                self.notify_refer(now, x, w, "SIP/2.0 200 OK", true);
                self.bye_branch(now, x, w);
                // The consultation call: its caller (the transferor's phone) gets a BYE. A
                // consultation of a queue was the engine's contact: that conversation is over,
                // and the colleague goes on with the customer instead of wrapping it up (their
                // wrap-up slot would refuse the customer's assignment below).
                if let Some(cy) = self.calls.get(&y)
                    && !cy.engine_released
                {
                    let (t, c) = (cy.tenant, cy.contact);
                    self.routing
                        .push_back((t, Input::ContactEnded { contact: c }));
                    self.routing
                        .push_back((t, Input::WrapUpEnded { contact: c }));
                }
                self.bye_caller(now, y);
                self.finish(now, y, "transferred");
                // The consultation is over for both agents (before the assignment: the
                // engine refuses to assign a contact to an agent on an outside call).
                self.internal_busy_sync(tenant, &consulting);
                let released = self.calls.get(&x).is_some_and(|c| c.engine_released);
                let colleague = self
                    .calls
                    .get(&x)
                    .and_then(|c| c.winner.and_then(|n| c.branches.get(n)))
                    .map(|b| b.agent.clone());
                if !released && let Some(agent) = colleague {
                    // The contact is the colleague's now; its end later is theirs.
                    self.routing
                        .push_back((tenant, Input::AssignToAgent { contact, agent }));
                } else if let Some(c) = self.calls.get(&x) {
                    let agents = self.internal_agents(c);
                    self.internal_busy_sync(tenant, &agents);
                }
            }
            None => self.notify_refer(now, x, w, "SIP/2.0 500 Server Internal Error", true),
        }
    }

    /// Moves the answered colleague's branch of call `y` into call `x` as its winner and sends
    /// the re-INVITE that moves the phone's media to `x`'s relay port. Returns the new index.
    fn move_consultation(&mut self, now: Now, x: CallKey, y: CallKey) -> Option<usize> {
        let (j, refreshed) = {
            let cy = self.calls.get(&y)?;
            let j = cy.winner?;
            (j, self.session_agent_cseq(y, j))
        };
        let (port, codecs) = {
            let cx = self.calls.get(&x)?;
            (cx.media.leg_b.rtp, cx.agent_codecs.clone())
        };
        let media_address = self.config.media_address;
        let cy = self.calls.get_mut(&y)?;
        cy.winner = None;
        let ours_before = cy
            .agent_sdp
            .clone()
            .or_else(|| cy.branches.get(j).map(|b| b.invite.body().clone()))
            .unwrap_or_default();
        let slot = cy.branches.get_mut(j)?;
        let mut moved = Branch {
            offer: slot.offer,
            agent: slot.agent.clone(),
            tx: slot.tx,
            invite: slot.invite.clone(),
            peer: slot.peer,
            call_id: std::mem::take(&mut slot.call_id),
            state: BranchState::Won,
            remote_to: slot.remote_to.take(),
            remote_target: slot.remote_target.take(),
            withdrawn: false,
            last_status: slot.last_status,
        };
        // What stays in `y` is an empty husk: `finish(y)` must not unmap the moved dialog.
        slot.state = BranchState::Done;
        slot.tx = TxId(u64::MAX);
        let (Some(to), Some(target)) = (moved.remote_to.clone(), moved.remote_target.clone())
        else {
            return None;
        };
        // Our new offer to the colleague: same o= session, next version (RFC 3264 section 8).
        let mut sdp = SessionDescription::offer(
            LocalMedia {
                address: media_address,
                port,
            },
            rand::Rng::random::<u32>(&mut self.rng).into(),
            &codecs,
            101,
        );
        if let Ok(before) = SessionDescription::parse(&ours_before) {
            sdp.origin.session_id = before.origin.session_id;
            sdp.origin.session_version = before.origin.session_version.saturating_add(1);
        }
        let body = Bytes::from(sdp.to_string());
        let cseq = super::outbound::cseq_of(&moved.invite).max(refreshed) + 1;
        let via = self.via(moved.peer.transport);
        let bytes = MessageBuilder::request(&Method::Invite, &target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70")
            .copy_headers(&moved.invite, &HeaderName::From)
            .header(b"To", &to)
            .header(b"Call-ID", &moved.call_id)
            .header(b"CSeq", format!("{cseq} INVITE").as_bytes())
            .header(b"Contact", self.our_contact().as_bytes())
            .header(b"Allow", super::ALLOW)
            .header(b"Content-Type", b"application/sdp")
            .body(&body);
        let reinvite = Message::parse_datagram(bytes, &self.limits).ok()?;
        match self.tl.send_request(now.mono, reinvite.clone(), moved.peer) {
            Ok(rtx) => {
                moved.tx = rtx;
                // ACK and BYE in this dialog count on from the re-INVITE's CSeq.
                moved.invite = reinvite;
            }
            Err(e) => tracing::warn!("cannot send the re-INVITE to the colleague: {e}"),
        }
        let call_id = moved.call_id.clone();
        let rtx = moved.tx;
        let cx = self.calls.get_mut(&x)?;
        let n = cx.branches.len();
        cx.branches.push(moved);
        cx.winner = Some(n);
        cx.agent_sdp = Some(body);
        self.by_branch_tx.insert(rtx, (x, n));
        self.by_call_id.insert(call_id, (x, LegRef::Branch(n)));
        Some(n)
    }

    /// Hook of the 2xx retransmission path of `branch_answered`: a 2xx to our re-INVITE of a
    /// moved colleague carries its (possibly new) media address.
    pub(super) fn reanchor_answered(&mut self, key: CallKey, resp: &Message) {
        let reinvite = resp
            .cseq()
            .ok()
            .flatten()
            .is_some_and(|c| c.seq > 1 && c.method.eq_ignore_ascii_case(b"INVITE"));
        if !reinvite {
            return;
        }
        let Some(media) = self.calls.get(&key).map(|c| c.media.id) else {
            return;
        };
        if let Ok(sdp) = SessionDescription::parse(resp.body())
            && let Some(setup) = LegSetup::from_sdp(&sdp)
        {
            self.media.update_leg(media, Leg::B, setup);
        }
    }

    /// Transfer by the control API.
    pub(crate) fn control_transfer(
        &mut self,
        now: Now,
        key: CallKey,
        target: TransferTarget,
    ) -> Result<(), ControlError> {
        let call = self.calls.get(&key).ok_or(ControlError::NoSuchCall)?;
        if call.state != CallState::Connected || call.winner.is_none() {
            return Err(ControlError::NotConnected);
        }
        if call.transfer.is_some() {
            return Err(ControlError::Unsupported(
                "a transfer of this call is already in progress",
            ));
        }
        let tenant = call.tenant;
        match target {
            TransferTarget::Queue(q) => match self.resolve_transfer_target(tenant, q.as_str()) {
                Some(Resolved::Queue(q)) => self.transfer_to_queue(now, key, q, None),
                _ => Err(ControlError::Unsupported(
                    "no such queue (a queue is reachable by name when a DID leads to it)",
                )),
            },
            TransferTarget::Agent(agent) => {
                let ext = self
                    .index
                    .agents
                    .get(&(tenant, agent.clone()))
                    .cloned()
                    .ok_or(ControlError::NoPhone)?;
                self.transfer_to_agent(now, key, agent, &ext, None)
            }
            TransferTarget::Number(n) => match crate::b2bua::model::normalize_e164(&n) {
                Some(number) => self.transfer_to_number(now, key, &number, None),
                None => Err(ControlError::Unsupported("not a dialable number")),
            },
        }
    }

    /// Hands the connected caller back to the engine in queue `queue`.
    fn transfer_to_queue(
        &mut self,
        now: Now,
        key: CallKey,
        queue: QueueId,
        refer_branch: Option<usize>,
    ) -> Result<(), ControlError> {
        let transferor = self
            .calls
            .get(&key)
            .ok_or(ControlError::NoSuchCall)?
            .winner
            .ok_or(ControlError::NotConnected)?;
        // The transferor's row names the queue it answered from.
        let queue_name = queue.to_string();
        self.transferor_cdr(now, key, transferor, format!("blind:queue:{queue_name}"));
        let call = self.calls.get_mut(&key).ok_or(ControlError::NoSuchCall)?;
        let (tenant, contact, media) = (call.tenant, call.contact, call.media.id);
        tracing::info!(%contact, %queue, "blind transfer to a queue");
        call.state = CallState::Queued;
        call.winner = None;
        call.held_by = None;
        call.requeued = true;
        call.queue = queue.clone();
        if let Some(b) = call.branches.get_mut(transferor) {
            b.state = BranchState::Done;
        }
        // The new queue's music.
        let music = self.hold_music_for(key);
        self.routing
            .push_back((tenant, Input::Transfer { contact, queue }));
        self.media.audio(media, AudioCommand::Reset);
        self.media.audio(
            media,
            AudioCommand::Play {
                leg: Leg::A,
                items: Vec::new(),
                music,
                tag: super::hold::HOLD_MUSIC_TAG,
            },
        );
        if let Some(b) = refer_branch {
            self.notify_refer(now, key, b, "SIP/2.0 200 OK", true);
        }
        self.bye_branch(now, key, transferor);
        Ok(())
    }

    /// Rings `agent`'s phones for the connected caller (see the module docs).
    fn transfer_to_agent(
        &mut self,
        now: Now,
        key: CallKey,
        agent: AgentId,
        extension: &str,
        refer_branch: Option<usize>,
    ) -> Result<(), ControlError> {
        if self.registrar.bindings(extension, now.mono).is_empty() {
            return Err(ControlError::NoPhone);
        }
        let music = self.hold_music_for(key);
        let mut random = [0u8; 16];
        rand::Rng::fill(&mut self.rng, &mut random);
        let offer = OfferId(uuid::Builder::from_random_bytes(random).into_uuid());
        let call = self.calls.get_mut(&key).ok_or(ControlError::NoSuchCall)?;
        let transferor = call.winner.ok_or(ControlError::NotConnected)?;
        let (tenant, contact, media) = (call.tenant, call.contact, call.media.id);
        tracing::info!(%contact, %agent, "blind transfer to an agent");
        call.transfer = Some(Transfer {
            transferor: Some(transferor),
            notify: refer_branch.is_some(),
            offer,
            agent: agent.clone(),
        });
        call.held_by = None;
        self.media.audio(
            media,
            AudioCommand::Play {
                leg: Leg::A,
                items: Vec::new(),
                music,
                tag: super::hold::HOLD_MUSIC_TAG,
            },
        );
        self.media.audio(
            media,
            AudioCommand::Hears {
                leg: Leg::B,
                from: LegSet::EMPTY,
            },
        );
        self.offer(now, tenant, offer, contact, agent);
        // `offer` reports a phone it could not ring to the engine; nothing rings then.
        let ringing = self
            .calls
            .get(&key)
            .is_some_and(|c| c.branches.iter().any(|b| b.offer == offer));
        self.routing
            .retain(|(_, i)| !matches!(i, Input::OfferRejected { offer: o, .. } if *o == offer));
        if !ringing {
            if let Some(c) = self.calls.get_mut(&key) {
                c.transfer = None;
            }
            self.media.audio(media, AudioCommand::Reset);
            self.supervisor_after_reset(key);
            return Err(ControlError::NoPhone);
        }
        Ok(())
    }

    /// Dials `number` through the tenant's trunks (core/outbound.rs) and hands the caller
    /// over: the transferor is released at once (blind), the engine's conversation ends, and
    /// the caller hears music until the number answers; if the number fails the caller gets a
    /// BYE (the outbound side refuses the call, `refuse_requeued` below). When no trunk can
    /// even try, nothing changes and the transferor keeps the caller.
    fn transfer_to_number(
        &mut self,
        now: Now,
        key: CallKey,
        number: &str,
        refer_branch: Option<usize>,
    ) -> Result<(), ControlError> {
        let call = self.calls.get_mut(&key).ok_or(ControlError::NoSuchCall)?;
        let transferor = call.winner.ok_or(ControlError::NotConnected)?;
        // The outbound API dials for a caller that is not bridged.
        call.state = CallState::Queued;
        call.winner = None;
        if let Err(e) = self.dial_out_bridge(now, key, number) {
            if let Some(c) = self.calls.get_mut(&key) {
                c.state = CallState::Connected;
                c.winner = Some(transferor);
            }
            tracing::info!(%number, ?e, "transfer to a number not possible");
            return Err(ControlError::Unsupported(
                "no trunk can dial that number for this tenant",
            ));
        }
        let music = self.hold_music_for(key);
        let Some(call) = self.calls.get_mut(&key) else {
            return Ok(());
        };
        let (tenant, contact, media) = (call.tenant, call.contact, call.media.id);
        tracing::info!(%contact, %number, "blind transfer to a number");
        call.requeued = true;
        call.held_by = None;
        call.engine_released = true;
        self.routing
            .push_back((tenant, Input::ContactEnded { contact }));
        self.media.audio(media, AudioCommand::Reset);
        self.media.audio(
            media,
            AudioCommand::Play {
                leg: Leg::A,
                items: Vec::new(),
                music,
                tag: super::hold::HOLD_MUSIC_TAG,
            },
        );
        self.transferor_cdr(now, key, transferor, format!("blind:{number}"));
        if let Some(b) = refer_branch {
            self.notify_refer(now, key, b, "SIP/2.0 200 OK", true);
        }
        self.bye_branch(now, key, transferor);
        Ok(())
    }

    /// Whether the branch that answered rings for a direct transfer of this call.
    pub(super) fn is_transfer_offer(&self, key: CallKey, offer: OfferId) -> bool {
        self.calls
            .get(&key)
            .and_then(|c| c.transfer.as_ref())
            .is_some_and(|t| t.offer == offer)
    }

    /// A branch answered a call that had been answered before (a transfer's target): the
    /// caller is already in a dialog with us, so only the media and the transferor change.
    /// Called by `branch_answered` after leg B was pointed at the new phone.
    pub(super) fn transfer_connected(&mut self, now: Now, key: CallKey, i: usize) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.requeued = false;
        call.held_by = None;
        call.agent_since_ms = Some(now.wall_ms);
        let (media, tenant, contact) = (call.media.id, call.tenant, call.contact);
        let direct = call.transfer.take();
        self.media.audio(media, AudioCommand::Reset);
        self.supervisor_after_reset(key);
        tracing::info!(%contact, branch = i, "transfer connected");
        if let Some(t) = direct {
            let mut freed = Vec::new();
            if let Some(b) = t.transferor {
                if t.notify {
                    self.notify_refer(now, key, b, "SIP/2.0 200 OK", true);
                }
                self.transferor_cdr(now, key, b, format!("blind:{}", t.agent));
                self.bye_branch(now, key, b);
                if let Some(br) = self.calls.get(&key).and_then(|c| c.branches.get(b)) {
                    freed.push(br.agent.clone());
                }
            }
            let released = self.calls.get(&key).is_some_and(|c| c.engine_released);
            if released {
                // An internal call transferred on: its agents' busy state follows.
                freed.push(t.agent.clone());
                self.internal_busy_sync(tenant, &freed);
            } else {
                // The engine's contact is the new agent's now: the transferor goes into
                // wrap-up, the new agent is busy with it, and the call's end is theirs.
                self.routing.push_back((
                    tenant,
                    Input::AssignToAgent {
                        contact,
                        agent: t.agent.clone(),
                    },
                ));
            }
        }
    }

    /// A phone ringing for a direct transfer failed. Returns `false` when `offer` is not a
    /// transfer's (the engine's offer failed: its usual report follows). When every phone of
    /// the target has failed, the transfer fails with the most telling status (busy first).
    pub(super) fn transfer_branch_failed(
        &mut self,
        now: Now,
        key: CallKey,
        offer: OfferId,
    ) -> bool {
        if offer == super::outbound::NO_OFFER && self.is_ringing_internal(key) {
            // A consultation (internal) call: the caller's INVITE gets the callee's verdict.
            let Some(call) = self.calls.get(&key) else {
                return true;
            };
            let siblings = || call.branches.iter();
            if siblings().any(|b| b.state != BranchState::Done) {
                return true;
            }
            let code = if siblings().any(|b| matches!(b.last_status, 486 | 600)) {
                486
            } else {
                siblings().map(|b| b.last_status).max().unwrap_or(480)
            };
            self.internal_failed(now, key, code);
            return true;
        }
        if !self.is_transfer_offer(key, offer) {
            return false;
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return true;
        };
        let siblings = || call.branches.iter().filter(|b| b.offer == offer);
        if siblings().any(|b| b.state != BranchState::Done) {
            return true;
        }
        let code = if siblings().any(|b| matches!(b.last_status, 486 | 600)) {
            486
        } else {
            siblings().map(|b| b.last_status).max().unwrap_or(480)
        };
        let Some(t) = call.transfer.take() else {
            return true;
        };
        let (media, tenant, contact, queue) =
            (call.media.id, call.tenant, call.contact, call.queue.clone());
        tracing::info!(%contact, agent = %t.agent, code, "transfer target did not answer");
        match t.transferor {
            Some(b) => {
                if t.notify {
                    let frag = format!("SIP/2.0 {code} {}", reason_of(code));
                    self.notify_refer(now, key, b, &frag, true);
                }
                // Back to the transferor.
                self.media.audio(media, AudioCommand::Reset);
                self.supervisor_after_reset(key);
            }
            None => {
                // The transferor is gone: back into the queue rather than dropped.
                if let Some(c) = self.calls.get_mut(&key) {
                    c.state = CallState::Queued;
                    c.winner = None;
                    c.requeued = true;
                }
                self.routing
                    .push_back((tenant, Input::Transfer { contact, queue }));
            }
        }
        true
    }

    /// A BYE (`from`) on a call with a direct transfer ringing. Returns `true` when handled
    /// here: the transferor leaving does not end the call; the caller leaving ends it with
    /// the transferor's BYE sent in sequence.
    pub(super) fn transfer_hang_up(
        &mut self,
        now: Now,
        key: CallKey,
        from: Option<LegRef>,
    ) -> bool {
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        let Some(t) = call.transfer.as_mut() else {
            return false;
        };
        match (from, t.transferor) {
            (Some(LegRef::Branch(i)), Some(b)) if i == b => {
                t.transferor = None;
                if let Some(br) = call.branches.get_mut(b) {
                    br.state = BranchState::Done;
                }
                let what = format!("blind:{}", t.agent);
                self.transferor_cdr(now, key, b, what);
                true
            }
            (Some(LegRef::Branch(_)), _) => true,
            _ => {
                let transferor = t.transferor.take();
                call.transfer = None;
                if from != Some(LegRef::Caller) {
                    self.bye_caller(now, key);
                }
                if let Some(b) = transferor {
                    self.bye_branch(now, key, b);
                }
                if let Some(c) = self.calls.get(&key) {
                    let (tenant, contact) = (c.tenant, c.contact);
                    self.routing
                        .push_back((tenant, Input::ContactEnded { contact }));
                }
                // Pending target branches get CANCEL in `finish`.
                self.finish(now, key, "answered");
                true
            }
        }
    }

    /// The engine refused or dropped a caller that was re-queued after it had been answered:
    /// there is no INVITE to answer any more, so the caller gets a BYE. Returns `false` for a
    /// caller never answered (the usual final response applies).
    pub(super) fn refuse_requeued(&mut self, now: Now, key: CallKey, result: &'static str) -> bool {
        if !self.calls.get(&key).is_some_and(|c| c.requeued) {
            return false;
        }
        self.bye_caller(now, key);
        self.finish(now, key, result);
        true
    }

    /// The CDR row of a transferring agent's leg (result `transferred`).
    fn transferor_cdr(&mut self, now: Now, key: CallKey, b: usize, what: String) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let Some(branch) = call.branches.get(b) else {
            return;
        };
        let since = call
            .agent_since_ms
            .or(call.answered_ms)
            .unwrap_or(now.wall_ms);
        self.cdrs.push_back(CdrRow {
            tenant: call.tenant,
            contact: call.contact,
            leg: "agent",
            started_ms: since,
            answered_ms: Some(since),
            ended_ms: now.wall_ms,
            caller: call.caller_number.clone(),
            callee: branch.agent.to_string(),
            result: "transferred",
            queue: Some(call.queue.to_string()),
            agent: Some(branch.agent.to_string()),
            wait_ms: 0,
            talk_ms: now.wall_ms.saturating_sub(since),
            recording: None,
            mos_x100: None,
            voicemail: None,
            transfer: Some(what),
        });
    }

    /// The agent (or number) the call `key` is connected to now.
    fn winner_agent(&self, key: CallKey) -> String {
        self.calls
            .get(&key)
            .and_then(|c| c.winner.and_then(|w| c.branches.get(w)))
            .map(|b| b.agent.to_string())
            .unwrap_or_default()
    }

    /// Sends `method` in the dialog of branch `b` (we are its UAC), with the next CSeq of ours.
    fn request_in_branch(
        &mut self,
        now: Now,
        key: CallKey,
        b: usize,
        method: &Method,
        extra: &[(&[u8], &[u8])],
        body: Option<(&[u8], &[u8])>,
    ) {
        let contact = self.our_contact();
        let refreshed = self.session_agent_cseq(key, b);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(branch) = call.branches.get(b) else {
            return;
        };
        let (Some(to), Some(target)) = (branch.remote_to.clone(), branch.remote_target.clone())
        else {
            return;
        };
        let floor = super::outbound::cseq_of(&branch.invite).max(refreshed);
        call.transfer_cseq = call.transfer_cseq.max(floor) + 1;
        let cseq = call.transfer_cseq;
        let (invite, peer) = (branch.invite.clone(), branch.peer);
        let via = self.via(peer.transport);
        let mut m = MessageBuilder::request(method, &target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70")
            .copy_headers(&invite, &HeaderName::From)
            .header(b"To", &to)
            .copy_headers(&invite, &HeaderName::CallId)
            .header(
                b"CSeq",
                format!("{cseq} {}", String::from_utf8_lossy(method.as_bytes())).as_bytes(),
            )
            .header(b"Contact", contact.as_bytes());
        for (name, value) in extra {
            m = m.header(name, value);
        }
        let bytes: Bytes = match body {
            Some((ctype, body)) => m.header(b"Content-Type", ctype).body(body),
            None => m.finish(),
        };
        match Message::parse_datagram(bytes, &self.limits) {
            Ok(msg) => {
                if let Err(e) = self.tl.send_request(now.mono, msg, peer) {
                    tracing::warn!("cannot send {method:?} to the transferor: {e}");
                }
            }
            Err(e) => tracing::warn!("built an unparseable in-dialog request: {e}"),
        }
    }

    /// A NOTIFY of the implicit REFER subscription (RFC 3515 section 2.4.4) carrying `frag`.
    fn notify_refer(&mut self, now: Now, key: CallKey, b: usize, frag: &str, last: bool) {
        let state: &[u8] = if last {
            b"terminated;reason=noresource"
        } else {
            b"active;expires=60"
        };
        let body = format!("{frag}\r\n");
        self.request_in_branch(
            now,
            key,
            b,
            &Method::Notify,
            &[(b"Event", b"refer"), (b"Subscription-State", state)],
            Some((b"message/sipfrag;version=2.0", body.as_bytes())),
        );
    }

    /// BYE to branch `b`'s phone, in sequence after our NOTIFYs.
    fn bye_branch(&mut self, now: Now, key: CallKey, b: usize) {
        self.request_in_branch(now, key, b, &Method::Bye, &[], None);
        if let Some(br) = self.calls.get_mut(&key).and_then(|c| c.branches.get_mut(b)) {
            br.state = BranchState::Done;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use acd_core::{Action, Channel, ContactId, Timestamp};

    use super::super::tests::{CARRIER, Harness, PHONE, TENANT, reply, sdp, statuses};
    use super::*;
    use crate::b2bua::control::{CallControl, ControlRequest};
    use crate::b2bua::model::{AgentSip, GatewayModel, SipSecret, TenantModel};
    use crate::sip::auth::{ClientCredentials, answer_challenge};

    const PHONE2: &str = "127.0.0.1:5092";

    fn header(m: &Message, name: &HeaderName) -> String {
        String::from_utf8_lossy(m.headers_named(name).next().unwrap()).into_owned()
    }

    fn methods(out: &[(SocketAddr, Message)], to: &str, method: &Method) -> Vec<Message> {
        out.iter()
            .filter(|(a, m)| a.to_string() == to && m.method() == Some(method))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Two agents (1001 on PHONE, 1002 on PHONE2), queue `support` (DID 100) and `sales`
    /// (DID 200); a call answered by 1001. Returns the contact and our INVITE to 1001.
    fn connected(h: &mut Harness) -> (ContactId, Message) {
        h.core.set_model(&Arc::new(GatewayModel {
            tenants: vec![TenantModel {
                tenant: TENANT,
                dids: HashMap::from([
                    ("100".to_owned(), QueueId::new("support")),
                    ("200".to_owned(), QueueId::new("sales")),
                ]),
                agents: ["1001", "1002"]
                    .iter()
                    .map(|e| AgentSip {
                        agent: AgentId::new(*e),
                        extension: (*e).into(),
                        secret: SipSecret::from_password(e, "zentrale", &format!("pw{e}")),
                    })
                    .collect(),
                media: Default::default(),
                trunks: Default::default(),
            }],
        }));
        h.register();
        register_1002(h);
        h.routing();
        let (_, contact) = h.invite("z9hG4bKxfer");
        let invite = h.offer(contact, 1)[0].1.clone();
        h.send(PHONE, &reply(&invite, "200 OK", &sdp(50000)));
        h.routing();
        h.core.media.audio.clear();
        h.core.cdrs.clear();
        (contact, invite)
    }

    fn register_1002(h: &mut Harness) {
        let req = |auth: Option<&str>| {
            let mut s = format!(
                "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {PHONE2};branch=z9hG4bKr2{}\nMax-Forwards: 70\nFrom: <sip:1002@127.0.0.1>;tag=r2\nTo: <sip:1002@127.0.0.1>\nCall-ID: reg2@phone\nCSeq: {} REGISTER\nContact: <sip:1002@{PHONE2}>\nExpires: 600\n",
                auth.map_or(1, |_| 2),
                auth.map_or(1, |_| 2)
            );
            if let Some(a) = auth {
                s.push_str(&format!("Authorization: {a}\n"));
            }
            s.push_str("Content-Length: 0\n\n");
            s
        };
        let out = h.send(PHONE2, &req(None));
        let challenge = out[0]
            .1
            .headers_named(&HeaderName::WwwAuthenticate)
            .next()
            .unwrap()
            .clone();
        let auth = answer_challenge(
            &challenge,
            &ClientCredentials {
                username: "1002",
                password: "pw1002",
            },
            "REGISTER",
            "sip:127.0.0.1",
            "c2",
            1,
        )
        .unwrap();
        assert_eq!(h.send(PHONE2, &req(Some(&auth)))[0].1.status(), Some(200));
    }

    /// A REFER from 1001's phone in its dialog with us.
    fn refer(h: &mut Harness, invite: &Message, refer_to: &str) -> Vec<(SocketAddr, Message)> {
        h.send(
            PHONE,
            &format!(
                "REFER sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKrefer{}\nMax-Forwards: 70\nFrom: {};tag=ph\nTo: {}\nCall-ID: {}\nCSeq: 2 REFER\nRefer-To: {refer_to}\nContact: <sip:1001@{PHONE}>\nContent-Length: 0\n\n",
                h.ms,
                header(invite, &HeaderName::To),
                header(invite, &HeaderName::From),
                header(invite, &HeaderName::CallId),
            ),
        )
    }

    fn caller_bye(h: &mut Harness) -> Vec<(SocketAddr, Message)> {
        h.send(
            CARRIER,
            "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbyex\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKxfer@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        )
    }

    fn sipfrag(m: &Message) -> String {
        String::from_utf8_lossy(m.body()).trim().to_owned()
    }

    fn cseq(m: &Message) -> u32 {
        header(m, &HeaderName::CSeq)
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn offer_1002(h: &mut Harness, contact: ContactId) -> Vec<(SocketAddr, Message)> {
        h.ms += 10;
        let now = h.now();
        h.core.handle_action(
            now,
            TENANT,
            Action::Offer {
                offer: OfferId(Uuid::from_u128(77)),
                contact,
                agent: AgentId::new("1002"),
                queue: QueueId::new("sales"),
                channel: Channel::Voice,
                expires_at: Timestamp(now.wall_ms + 20_000),
            },
        );
        h.out()
    }

    #[test]
    fn refer_to_a_queue_requeues_the_caller_and_the_next_agent_gets_it_without_a_second_answer() {
        let mut h = Harness::new();
        let (contact, invite) = connected(&mut h);

        let out = refer(&mut h, &invite, "<sip:sales@127.0.0.1>");
        assert_eq!(statuses(&out), vec![202]);
        let notifies = methods(&out, PHONE, &Method::Notify);
        assert_eq!(
            notifies.iter().map(sipfrag).collect::<Vec<_>>(),
            ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
        );
        assert_eq!(header(&notifies[0], &HeaderName::Event), "refer");
        let raw = String::from_utf8_lossy(notifies[1].raw()).into_owned();
        assert!(raw.contains("Subscription-State: terminated"), "{raw}");
        let bye = methods(&out, PHONE, &Method::Bye);
        assert_eq!(bye.len(), 1, "the transferor is released");
        assert!(
            cseq(&bye[0]) > cseq(&notifies[1]),
            "CSeq counts on in the dialog"
        );
        assert!(matches!(
            &h.routing()[..],
            [Input::Transfer { contact: c, queue }] if *c == contact && queue.as_str() == "sales"
        ));
        let audio: Vec<_> = h.core.media.audio.drain(..).map(|(_, c)| c).collect();
        assert!(matches!(
            &audio[..],
            [
                AudioCommand::Reset,
                AudioCommand::Play {
                    leg: Leg::A,
                    music: Some(_),
                    ..
                }
            ]
        ));
        let cdr = h.core.poll_cdr().unwrap();
        assert_eq!(
            (cdr.result, cdr.agent.as_deref(), cdr.transfer.as_deref()),
            ("transferred", Some("1001"), Some("blind:queue:sales"))
        );
        assert_eq!(
            cdr.queue.as_deref(),
            Some("support"),
            "answered from support"
        );

        // The engine offers the re-queued caller to 1002; its answer moves leg B only.
        let out = offer_1002(&mut h, contact);
        let invite2 = methods(&out, PHONE2, &Method::Invite).remove(0);
        let out = h.send(PHONE2, &reply(&invite2, "200 OK", &sdp(52000)));
        assert!(
            !out.iter().any(|(a, _)| a.to_string() == CARRIER),
            "the caller is not answered twice"
        );
        assert!(matches!(h.routing()[..], [Input::OfferAccepted { .. }]));
        assert_eq!(
            h.core.media.updated.last().map(|u| (u.1, u.2)),
            Some((Leg::B, Some("127.0.0.1:52000".parse().unwrap())))
        );
        assert!(matches!(
            h.core
                .media
                .audio
                .drain(..)
                .map(|(_, c)| c)
                .collect::<Vec<_>>()[..],
            [AudioCommand::Reset]
        ));

        let out = caller_bye(&mut h);
        assert_eq!(methods(&out, PHONE2, &Method::Bye).len(), 1);
        assert!(methods(&out, PHONE, &Method::Bye).is_empty());
        assert!(matches!(h.routing()[..], [Input::ContactEnded { .. }]));
        let cdrs: Vec<CdrRow> = std::iter::from_fn(|| h.core.poll_cdr()).collect();
        assert!(
            cdrs.iter().all(|c| c.agent.as_deref() == Some("1002")),
            "{cdrs:?}"
        );
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn refer_to_an_agent_rings_that_agent_and_releases_the_transferor_on_answer() {
        let mut h = Harness::new();
        let (contact, invite) = connected(&mut h);

        let out = refer(&mut h, &invite, "<sip:1002@127.0.0.1:5060;user=phone>");
        assert_eq!(statuses(&out), vec![202]);
        assert_eq!(methods(&out, PHONE, &Method::Notify).len(), 1);
        let invite2 = methods(&out, PHONE2, &Method::Invite).remove(0);
        assert!(
            h.routing().is_empty(),
            "the engine hears nothing while 1002 rings"
        );

        let out = h.send(PHONE2, &reply(&invite2, "200 OK", &sdp(52000)));
        let notify = methods(&out, PHONE, &Method::Notify);
        assert_eq!(
            notify.iter().map(sipfrag).collect::<Vec<_>>(),
            ["SIP/2.0 200 OK"]
        );
        assert_eq!(methods(&out, PHONE, &Method::Bye).len(), 1);
        assert!(!out.iter().any(|(a, _)| a.to_string() == CARRIER));
        assert!(
            matches!(&h.routing()[..], [Input::AssignToAgent { contact: c, agent }]
                if *c == contact && agent.as_str() == "1002"),
            "the contact is 1002's now (the transferor's wrap-up, 1002 busy)"
        );
        assert_eq!(h.core.poll_cdr().unwrap().result, "transferred");

        let out = caller_bye(&mut h);
        assert_eq!(methods(&out, PHONE2, &Method::Bye).len(), 1);
        assert!(
            matches!(&h.routing()[..], [Input::ContactEnded { contact: c }] if *c == contact),
            "the end is 1002's (wrap-up)"
        );
        let cdrs: Vec<CdrRow> = std::iter::from_fn(|| h.core.poll_cdr()).collect();
        assert_eq!(cdrs.len(), 2);
        assert!(cdrs.iter().all(|c| c.agent.as_deref() == Some("1002")));
    }

    #[test]
    fn busy_target_returns_the_caller_to_the_transferor_with_a_failure_notify() {
        let mut h = Harness::new();
        let (_, invite) = connected(&mut h);
        let out = refer(&mut h, &invite, "sip:1002@127.0.0.1");
        let invite2 = methods(&out, PHONE2, &Method::Invite).remove(0);
        h.core.media.audio.clear();
        let out = h.send(PHONE2, &reply(&invite2, "486 Busy Here", ""));
        let notify = methods(&out, PHONE, &Method::Notify);
        assert_eq!(
            notify.iter().map(sipfrag).collect::<Vec<_>>(),
            ["SIP/2.0 486 Busy Here"]
        );
        assert!(methods(&out, PHONE, &Method::Bye).is_empty());
        assert!(h.routing().is_empty());
        assert!(matches!(
            h.core
                .media
                .audio
                .drain(..)
                .map(|(_, c)| c)
                .collect::<Vec<_>>()[..],
            [AudioCommand::Reset]
        ));
        // Still the transferor's call: its BYE ends it.
        let out = caller_bye(&mut h);
        assert_eq!(methods(&out, PHONE, &Method::Bye).len(), 1);
    }

    #[test]
    fn transferor_hanging_up_early_then_target_failing_requeues_the_caller() {
        let mut h = Harness::new();
        let (contact, invite) = connected(&mut h);
        let out = refer(&mut h, &invite, "<sip:1002@127.0.0.1>");
        let invite2 = methods(&out, PHONE2, &Method::Invite).remove(0);
        let out = h.send(
            PHONE,
            &format!(
                "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKtb\nMax-Forwards: 70\nFrom: {};tag=ph\nTo: {}\nCall-ID: {}\nCSeq: 3 BYE\nContent-Length: 0\n\n",
                header(&invite, &HeaderName::To),
                header(&invite, &HeaderName::From),
                header(&invite, &HeaderName::CallId),
            ),
        );
        assert_eq!(statuses(&out), vec![200]);
        assert!(
            out.iter().all(|(a, _)| a.to_string() != CARRIER),
            "the caller stays"
        );
        let out = h.send(PHONE2, &reply(&invite2, "480 Temporarily Unavailable", ""));
        assert!(methods(&out, PHONE, &Method::Notify).is_empty());
        assert!(matches!(
            &h.routing()[..],
            [Input::Transfer { contact: c, queue }] if *c == contact && queue.as_str() == "support"
        ));
        assert_eq!(h.core.active_calls(), 1);
    }

    #[test]
    fn unknown_targets_attended_transfer_and_the_callers_refer_are_refused() {
        let mut h = Harness::new();
        let (_, invite) = connected(&mut h);
        assert_eq!(
            statuses(&refer(&mut h, &invite, "<sip:nobody@x>")),
            vec![404]
        );
        // A number with no trunk for the tenant: accepted, then a failure NOTIFY, and the
        // transferor keeps the caller.
        let out = refer(&mut h, &invite, "<sip:+4989999@x>");
        assert_eq!(statuses(&out), vec![202]);
        assert_eq!(
            methods(&out, PHONE, &Method::Notify)
                .iter()
                .map(sipfrag)
                .collect::<Vec<_>>(),
            ["SIP/2.0 100 Trying", "SIP/2.0 503 Service Unavailable"]
        );
        assert!(methods(&out, PHONE, &Method::Bye).is_empty());
        assert_eq!(
            statuses(&refer(
                &mut h,
                &invite,
                "<sip:1002@x?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>"
            )),
            vec![404],
            "Replaces naming no dialog of ours"
        );
        assert_eq!(statuses(&refer(&mut h, &invite, "garbage")), vec![400]);
        let out = h.send(
            CARRIER,
            "REFER sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcr\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKxfer@carrier\nCSeq: 3 REFER\nRefer-To: <sip:1002@x>\nContent-Length: 0\n\n",
        );
        assert_eq!(statuses(&out), vec![403]);
        assert_eq!(h.core.active_calls(), 1);
    }

    #[test]
    fn api_transfer_to_queue_and_agent() {
        let mut h = Harness::new();
        let (contact, _) = connected(&mut h);
        let req = |target| ControlRequest {
            tenant: TENANT,
            contact,
            control: CallControl::Transfer { target },
        };
        let now = h.now();
        assert!(matches!(
            h.core
                .handle_control(now, req(TransferTarget::Number("+4930".into()))),
            Err(ControlError::Unsupported(_))
        ));
        assert!(matches!(
            h.core
                .handle_control(now, req(TransferTarget::Queue(QueueId::new("nope")))),
            Err(ControlError::Unsupported(_))
        ));
        h.core
            .handle_control(now, req(TransferTarget::Agent(AgentId::new("1002"))))
            .unwrap();
        let out = h.out();
        assert_eq!(methods(&out, PHONE2, &Method::Invite).len(), 1);
        assert!(
            methods(&out, PHONE, &Method::Notify).is_empty(),
            "no REFER, no NOTIFY"
        );
        assert!(matches!(
            h.core
                .handle_control(now, req(TransferTarget::Queue(QueueId::new("sales")))),
            Err(ControlError::Unsupported(_))
        ));
    }

    #[test]
    fn refer_to_header_forms() {
        let p = |s: &str| parse_refer_to(s.as_bytes());
        assert_eq!(p("<sip:1002@h>").unwrap().user, "1002");
        assert_eq!(p("sip:sales@h;transport=udp").unwrap().user, "sales");
        assert_eq!(
            p("\"Bob\" <sips:%2B4930@h:5061;user=phone>").unwrap().user,
            "+4930"
        );
        assert_eq!(p("<tel:+4930123>").unwrap().user, "+4930123");
        let r = p("<sip:1002@h?Replaces=c%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>").unwrap();
        assert_eq!(r.replaces.as_deref(), Some("c@h;to-tag=1;from-tag=2"));
        for bad in [
            "",
            "<sip:@h>",
            "<sip:1002@h",
            "http://x",
            "<sip:%zz@h>",
            "<tel:>",
        ] {
            assert!(p(bad).is_none(), "{bad}");
        }
    }

    /// 1001's phone calls 1002 (digest-challenged with 407), 1002 answers: the consultation.
    fn consult(h: &mut Harness) -> (Message, String) {
        let out = dial_from_phone(h, "1002");
        assert_eq!(statuses(&out), vec![100, 180]);
        let to_1002 = methods(&out, PHONE2, &Method::Invite).remove(0);
        assert!(header(&to_1002, &HeaderName::From).contains("sip:1001@"));
        let out = h.send(PHONE2, &reply(&to_1002, "200 OK", &sdp(52000)));
        let ok = out
            .iter()
            .find(|(a, m)| a.to_string() == PHONE && m.status() == Some(200))
            .unwrap()
            .1
            .clone();
        let to = header(&ok, &HeaderName::To);
        let tag = to.split("tag=").nth(1).unwrap().to_owned();
        assert_eq!(
            busy_reports(&h.routing()),
            [("1001", true), ("1001", true), ("1002", true)],
            "no contact for an internal call: only both agents' phones are busy"
        );
        (to_1002, tag)
    }

    /// The routing inputs, which must all be `AgentBusy`, as (agent, busy).
    fn busy_reports(inputs: &[Input]) -> Vec<(&str, bool)> {
        inputs
            .iter()
            .map(|i| match i {
                Input::AgentBusy { agent, busy } => (agent.as_str(), *busy),
                other => panic!("not an AgentBusy: {other:?}"),
            })
            .collect()
    }

    /// 1001's phone dials `user`, is challenged with 407 and dials again with digest; returns
    /// what went out after the second INVITE.
    fn dial_from_phone(h: &mut Harness, user: &str) -> Vec<(SocketAddr, Message)> {
        let body = sdp(41000);
        let invite = |auth: Option<&str>, cseq: u32| {
            let mut s = format!(
                "INVITE sip:{user}@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKcons{cseq}\nMax-Forwards: 70\nFrom: <sip:1001@127.0.0.1>;tag=cph\nTo: <sip:{user}@127.0.0.1>\nCall-ID: consult@phone\nCSeq: {cseq} INVITE\nContact: <sip:1001@{PHONE}>\nContent-Type: application/sdp\n"
            );
            if let Some(a) = auth {
                s.push_str(&format!("Proxy-Authorization: {a}\n"));
            }
            s.push_str(&format!("Content-Length: {}\n\n{body}", body.len()));
            s
        };
        let out = h.send(PHONE, &invite(None, 1));
        assert_eq!(statuses(&out), vec![100, 407]);
        let challenge = out[1]
            .1
            .headers_named(&HeaderName::ProxyAuthenticate)
            .next()
            .unwrap()
            .clone();
        let auth = answer_challenge(
            &challenge,
            &ClientCredentials {
                username: "1001",
                password: "pw1001",
            },
            "INVITE",
            &format!("sip:{user}@127.0.0.1"),
            "cc",
            1,
        )
        .unwrap();
        h.send(PHONE, &invite(Some(&auth), 2))
    }

    #[test]
    fn internal_call_to_a_busy_colleague_gets_the_busy_status() {
        let mut h = Harness::new();
        connected(&mut h);
        let out = dial_from_phone(&mut h, "1002");
        let to_1002 = methods(&out, PHONE2, &Method::Invite).remove(0);
        let out = h.send(PHONE2, &reply(&to_1002, "486 Busy Here", ""));
        assert!(
            out.iter()
                .any(|(a, m)| a.to_string() == PHONE && m.status() == Some(486)),
            "the calling phone hears busy"
        );
        assert_eq!(
            busy_reports(&h.routing()),
            [("1001", true), ("1001", false)],
            "no contact; 1001's phone was busy while it dialled"
        );
        assert_eq!(h.core.active_calls(), 1);
    }

    #[test]
    fn attended_transfer_after_consulting_a_queue_ends_both_contacts_in_the_engine() {
        let mut h = Harness::new();
        let (x_contact, invite) = connected(&mut h);
        dial_from_phone(&mut h, "sales");
        let y_contact = h
            .routing()
            .into_iter()
            .find_map(|i| match i {
                Input::NewContact(n) => Some(n.id),
                _ => None,
            })
            .unwrap();
        let out = offer_1002(&mut h, y_contact);
        let to_1002 = methods(&out, PHONE2, &Method::Invite).remove(0);
        let out = h.send(PHONE2, &reply(&to_1002, "200 OK", &sdp(52000)));
        let ok = out
            .iter()
            .find(|(a, m)| a.to_string() == PHONE && m.status() == Some(200))
            .unwrap()
            .1
            .clone();
        let to = header(&ok, &HeaderName::To);
        let ytag = to.split("tag=").nth(1).unwrap().to_owned();
        assert!(matches!(h.routing()[..], [Input::OfferAccepted { .. }]));

        let out = refer(
            &mut h,
            &invite,
            &format!(
                "<sip:sales@127.0.0.1?Replaces=consult%40phone%3Bto-tag%3D{ytag}%3Bfrom-tag%3Dcph>"
            ),
        );
        assert_eq!(statuses(&out), vec![202]);
        assert_eq!(methods(&out, PHONE2, &Method::Invite).len(), 1, "re-INVITE");
        let inputs = h.routing();
        assert!(
            matches!(&inputs[..], [
                Input::ContactEnded { contact: y1 },
                Input::WrapUpEnded { contact: y2 },
                Input::AssignToAgent { contact: x, agent },
            ] if *y1 == y_contact && *y2 == y_contact && *x == x_contact && agent.as_str() == "1002"),
            "the consultation ends without wrap-up, the customer is 1002's: {inputs:?}"
        );
        assert_eq!(h.core.active_calls(), 1);
    }

    #[test]
    fn agent_phone_dialling_a_queue_name_enters_that_queue_after_digest() {
        let mut h = Harness::new();
        connected(&mut h);
        let out = dial_from_phone(&mut h, "sales");
        assert_eq!(statuses(&out)[0], 100);
        let queued: Vec<Input> = h.routing();
        assert!(
            queued.iter().any(|i| matches!(i, Input::NewContact(n)
                if n.queue.as_str() == "sales"
                    && n.attributes.get("caller").map(String::as_str) == Some("1001"))),
            "{queued:?}"
        );
        assert_eq!(h.core.active_calls(), 2);
    }

    #[test]
    fn internal_call_needs_digest_and_a_registered_callee() {
        let mut h = Harness::new();
        connected(&mut h);
        let out = h.send(
            PHONE,
            "INVITE sip:1002@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKbad\nMax-Forwards: 70\nFrom: <sip:1001@127.0.0.1>;tag=b\nTo: <sip:1002@127.0.0.1>\nCall-ID: bad@phone\nCSeq: 1 INVITE\nProxy-Authorization: Digest username=\"1001\", realm=\"zentrale\", nonce=\"x\", uri=\"sip:1002@127.0.0.1\", response=\"00\"\nContent-Length: 0\n\n",
        );
        assert_eq!(
            statuses(&out),
            vec![100, 407],
            "forged credentials are challenged again"
        );
        let (_, _) = consult(&mut h);
        assert_eq!(h.core.active_calls(), 2);
    }

    #[test]
    fn attended_transfer_connects_the_caller_with_the_consulted_colleague() {
        let mut h = Harness::new();
        let (contact, invite) = connected(&mut h);
        let x_media = h.core.media.live[0];
        let (to_1002, ytag) = consult(&mut h);
        h.core.media.audio.clear();

        let out = refer(
            &mut h,
            &invite,
            &format!(
                "<sip:1002@127.0.0.1?Replaces=consult%40phone%3Bto-tag%3D{ytag}%3Bfrom-tag%3Dcph>"
            ),
        );
        assert_eq!(statuses(&out), vec![202]);
        let notifies = methods(&out, PHONE, &Method::Notify);
        assert_eq!(
            notifies.iter().map(sipfrag).collect::<Vec<_>>(),
            ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
        );
        assert_eq!(
            methods(&out, PHONE, &Method::Bye).len(),
            2,
            "both of 1001's dialogs end"
        );
        let reinvite = methods(&out, PHONE2, &Method::Invite).remove(0);
        assert_eq!(
            header(&reinvite, &HeaderName::CallId),
            header(&to_1002, &HeaderName::CallId),
            "the colleague's own dialog is re-INVITEd"
        );
        assert!(header(&reinvite, &HeaderName::To).contains("tag=ph"));
        assert!(cseq(&reinvite) > 1);
        let inputs = h.routing();
        let (last, busy) = inputs.split_last().unwrap();
        assert!(
            matches!(last, Input::AssignToAgent { contact: c, agent }
                if *c == contact && agent.as_str() == "1002"),
            "the contact is the colleague's now: {inputs:?}"
        );
        let busy = busy_reports(busy);
        assert!(
            busy.contains(&("1002", false)) && busy.contains(&("1001", false)),
            "the consultation no longer occupies either phone, before the assignment: {busy:?}"
        );
        assert!(
            h.core
                .media
                .audio
                .iter()
                .any(|(id, c)| *id == x_media && matches!(c, AudioCommand::Reset))
        );
        assert_eq!(h.core.active_calls(), 1, "the consultation call is gone");
        let cdrs: Vec<CdrRow> = std::iter::from_fn(|| h.core.poll_cdr()).collect();
        assert!(
            cdrs.iter().any(|c| c.result == "transferred"
                && c.agent.as_deref() == Some("1001")
                && c.transfer.as_deref() == Some("attended:1002")),
            "{cdrs:?}"
        );

        // The colleague's phone answers the re-INVITE from its new port: ACK, and leg B moves.
        let out = h.send(PHONE2, &reply(&reinvite, "200 OK", &sdp(52002)));
        let ack = methods(&out, PHONE2, &Method::Ack);
        assert_eq!(ack.len(), 1);
        assert_eq!(cseq(&ack[0]), cseq(&reinvite));
        assert_eq!(
            h.core.media.updated.last().copied(),
            Some((x_media, Leg::B, Some("127.0.0.1:52002".parse().unwrap())))
        );

        let out = caller_bye(&mut h);
        let bye = methods(&out, PHONE2, &Method::Bye);
        assert_eq!(bye.len(), 1);
        assert!(cseq(&bye[0]) > cseq(&reinvite));
        assert!(
            matches!(&h.routing()[..], [Input::ContactEnded { contact: c }] if *c == contact),
            "the end is the colleague's (wrap-up)"
        );
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn an_internal_calls_end_frees_both_agents_in_the_engine() {
        let mut h = Harness::new();
        connected(&mut h);
        let (_, ytag) = consult(&mut h);
        let out = h.send(
            PHONE,
            &format!(
                "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKconsbye\nMax-Forwards: 70\nFrom: <sip:1001@127.0.0.1>;tag=cph\nTo: <sip:1002@127.0.0.1>;tag={ytag}\nCall-ID: consult@phone\nCSeq: 3 BYE\nContent-Length: 0\n\n"
            ),
        );
        assert_eq!(methods(&out, PHONE2, &Method::Bye).len(), 1);
        let inputs = h.routing();
        let mut busy = busy_reports(&inputs);
        busy.sort_unstable();
        assert_eq!(
            busy,
            [("1001", false), ("1002", false)],
            "both phones are free again, with no contact and no wrap-up"
        );
        assert_eq!(h.core.active_calls(), 1, "the customer's call goes on");
    }

    #[test]
    fn replaces_for_someone_elses_dialog_is_forbidden() {
        let mut h = Harness::new();
        let (_, invite) = connected(&mut h);
        let (_, ytag) = consult(&mut h);
        let out = refer(
            &mut h,
            &invite,
            "<sip:1002@127.0.0.1?Replaces=consult%40phone%3Bto-tag%3Dwrong%3Bfrom-tag%3Dcph>",
        );
        assert_eq!(statuses(&out), vec![403]);
        assert!(!ytag.is_empty());
        assert_eq!(h.core.active_calls(), 2);
    }
}
