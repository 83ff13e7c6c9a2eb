//! Calls from an agent's registered phone to a colleague's extension: the consultation leg of
//! an attended transfer (and plain internal calls).
//!
//! Until now zentrale only took INVITEs to DIDs. An INVITE whose Request-URI names an
//! extension and whose From names an extension of the same tenant is an internal call: it is
//! authenticated like a REGISTER (digest, but challenged with `407 Proxy-Authenticate` in the
//! agent's tenant realm, verified against the same HA1 the registrar uses, with nonces of the
//! same key), anchored in the relay like every call (both legs through it, so a later REFER
//! with `Replaces` can move the colleague's leg onto another call's relay port), and rung on
//! the colleague's registered phones through the ordinary fork. acd-core never sees it: it is
//! no contact of a queue (the engine is told nothing, `engine_released` is set from the
//! start), its branches ring under [`outbound::NO_OFFER`], and its CDR queue is `internal`.
//!
//! An agent's phone may also dial a queue (by name, or one of its DIDs): after the same
//! digest check the call takes the ordinary queue path (the engine queues it like any caller,
//! with the agent's extension as the caller number), skipping the carrier admission checks.
//! That is how an agent consults a queue before an attended transfer to it.
//!
//! # Busy agents
//! An agent on an internal call is busy for routing although the engine has no contact for
//! it: the gateway tells acd-core with `Input::AgentBusy` (the engine then offers that agent
//! no voice contact, so a queue call does not ring into the conversation and bounce with
//! 486). The caller's agent is busy from the INVITE (their phone is in use, dialling), the
//! callee's from the answer; both are freed when the call ends, or when an attended transfer
//! moves the callee onto the customer's call (core/transfer.rs, which then assigns the
//! customer's contact to the callee). The state is derived, never stored: after each change
//! the gateway sends, for each agent concerned, whether any live internal call still
//! involves them; the engine's input is idempotent, so repeating a value costs nothing and
//! an agent on two internal calls (a consultation while on another) stays busy until the
//! last ends.
//!
//! Only INVITEs from the caller extension's own registered phone (the address it registered
//! from, or its Contact's) count: a carrier whose caller id looks like an extension, or an
//! extension calling another tenant's extension, goes the DID way (usually 404).

use acd_core::{AgentId, ContactId, Input, QueueId};
use bytes::Bytes;
use rand::Rng;

use super::{B2bua, Call, CallKey, CallState, MediaPort, Now, outbound, user_of};
use crate::media::{LegSetup, PayloadTypes};
use crate::sdp::{Codec, LocalMedia, SessionDescription};
use crate::sip::auth::{DigestServer, parse_digest};
use crate::sip::transaction::{Peer, TxId};
use crate::sip::{HeaderName, Message, response_to_source};

/// What [`B2bua::internal_invite`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// Answered here (a challenge, a refusal, or an internal call started).
    Handled,
    /// An authenticated agent's phone dialled this queue: the queue path takes it, without
    /// the trunk admission meant for carriers.
    Queue(uuid::Uuid, QueueId),
    /// Not from an agent's phone: the DID path.
    NotInternal,
}

/// The CDR queue of internal calls.
pub(super) const INTERNAL_QUEUE: &str = "internal";

impl<M: MediaPort> B2bua<M> {
    /// Hook at the top of `new_call`: takes the INVITE when it is an internal call (see the
    /// module docs), or says which queue an agent's phone dialled (by name or DID) so the
    /// ordinary queue path takes it without the carrier checks.
    pub(super) fn internal_invite(
        &mut self,
        now: Now,
        tx: TxId,
        req: &Message,
        source: Peer,
    ) -> Route {
        let target = req
            .request_uri()
            .and_then(Result::ok)
            .and_then(|u| {
                u.user_unescaped()
                    .map(|u| String::from_utf8_lossy(&u).into_owned())
            })
            .unwrap_or_default();
        let caller = user_of(req.from().ok().flatten().as_ref());
        let Some((tenant, c_agent, secret)) = self.index.extensions.get(&caller).cloned() else {
            return Route::NotInternal;
        };
        // Only the caller's own registered phone: a carrier whose caller id happens to look
        // like an extension is not challenged (it goes the DID way).
        let from_phone = self.registrar.bindings(&caller, now.mono).iter().any(|b| {
            b.source.addr.ip() == source.addr.ip()
                || super::phone_address(&b.contact, b.source).addr.ip() == source.addr.ip()
        });
        if !from_phone {
            return Route::NotInternal;
        }
        let destination = match self.index.extensions.get(&target) {
            Some((t, agent, _)) if *t == tenant => Some(agent.clone()),
            Some(_) => return Route::NotInternal,
            None => None,
        };
        let queue = match (&destination, self.resolve_transfer_target(tenant, &target)) {
            (None, Some(super::transfer::Resolved::Queue(q))) => Some(q),
            (None, _) => return Route::NotInternal,
            _ => None,
        };
        // Digest, challenged as a proxy would (RFC 3261 section 22.3).
        let digest = DigestServer::new(self.config.realm.clone(), &self.config.nonce_key, 300);
        let now_secs = now.wall_ms / 1000;
        let verdict = req
            .headers_named(&HeaderName::ProxyAuthorization)
            .find_map(|v| parse_digest(v).ok())
            .map(|creds| {
                digest
                    .verify_ha1(now_secs, "INVITE", &creds, secret.ha1())
                    .map(|a| a.username == caller)
            });
        match verdict {
            Some(Ok(true)) => {}
            other => {
                let stale = matches!(other, Some(Err(crate::sip::auth::AuthError::Stale)));
                if other.is_some() && !stale {
                    tracing::info!(%caller, %source.addr, "internal INVITE with wrong credentials");
                }
                let tag = self.token();
                let mut b = response_to_source(
                    req,
                    Some(source.addr),
                    407,
                    "Proxy Authentication Required",
                    Some(tag.as_bytes()),
                );
                for alg in self.config.registrar.algorithms.clone() {
                    let v = digest.challenge_in(secret.realm(), now_secs, alg, stale);
                    b = b.header(b"Proxy-Authenticate", v.as_bytes());
                }
                self.respond(now, tx, b.finish());
                return Route::Handled;
            }
        }
        let Some(t_agent) = destination else {
            tracing::info!(%caller, queue = ?queue, "agent phone calls a queue");
            return queue.map_or(Route::NotInternal, |q| Route::Queue(tenant, q));
        };
        if self.registrar.bindings(&target, now.mono).is_empty() {
            self.simple(now, tx, req, source, 480, "Temporarily Unavailable");
            return Route::Handled;
        }
        self.start_internal_call(
            now, tx, req, source, tenant, c_agent, t_agent, caller, target,
        );
        Route::Handled
    }

    #[allow(clippy::too_many_arguments)]
    fn start_internal_call(
        &mut self,
        now: Now,
        tx: TxId,
        req: &Message,
        source: Peer,
        tenant: uuid::Uuid,
        caller_agent: AgentId,
        target_agent: AgentId,
        caller: String,
        target: String,
    ) {
        let offer = match SessionDescription::parse(req.body()) {
            Ok(o) if !req.body().is_empty() => o,
            _ => {
                self.simple(now, tx, req, source, 488, "Not Acceptable Here");
                return;
            }
        };
        let Some(caller_setup) = LegSetup::from_sdp(&offer) else {
            self.simple(now, tx, req, source, 488, "Not Acceptable Here");
            return;
        };
        let callee_side = LegSetup {
            peer: None,
            rtcp_peer: None,
            payload_types: PayloadTypes::of(&[0, 8, 101]),
            telephone_event: Some(101),
            codec: None,
        };
        let media = match self.media.add_call(caller_setup, callee_side) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("no media ports for an internal call: {e}");
                self.simple(now, tx, req, source, 503, "Service Unavailable");
                return;
            }
        };
        let answer = match offer.answer(
            &[Codec::Pcmu, Codec::Pcma, Codec::TelephoneEvent],
            LocalMedia {
                address: self.config.media_address,
                port: media.leg_a.rtp,
            },
            self.rng.random::<u32>().into(),
        ) {
            Ok(a) => a,
            Err(_) => {
                self.media.remove_call(media.id);
                self.simple(now, tx, req, source, 488, "Not Acceptable Here");
                return;
            }
        };
        let mut agent_codecs = vec![answer.audio.codec];
        if answer.telephone_event.is_some() {
            agent_codecs.push(Codec::TelephoneEvent);
        }
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let contact =
            ContactId(uuid::Builder::from_unix_timestamp_millis(now.wall_ms, &random).into_uuid());
        let local_tag = self.token();
        let call_id = req.call_id().ok().flatten().unwrap_or_default();
        let caller_contact = super::contact_uri(req).unwrap_or_else(|| {
            req.request_line()
                .map(|r| r.uri_raw.clone())
                .unwrap_or_default()
        });
        let ringing = response_to_source(
            req,
            Some(source.addr),
            180,
            "Ringing",
            Some(local_tag.as_bytes()),
        )
        .copy_headers(req, &HeaderName::RecordRoute)
        .header(b"Contact", self.our_contact().as_bytes())
        .finish();
        self.respond(now, tx, ringing);
        let key = CallKey(self.next_call);
        self.next_call += 1;
        tracing::info!(%caller, %target, %caller_agent, "internal call");
        self.by_contact.insert(contact, key);
        self.by_call_id
            .insert(call_id.clone(), (key, super::LegRef::Caller));
        self.by_invite_tx.insert(tx, key);
        self.by_media.insert(media.id, key);
        self.calls.insert(
            key,
            Call {
                tenant,
                contact,
                queue: QueueId::new(INTERNAL_QUEUE),
                invite_tx: tx,
                invite: req.clone(),
                source,
                local_tag,
                call_id,
                caller_contact,
                caller_number: caller,
                dialled: target,
                media,
                answer_sdp: Bytes::from(answer.sdp.to_string()),
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
                engine_released: true,
                agent_since_ms: None,
                transfer_cseq: 1,
            },
        );
        self.offer(now, tenant, outbound::NO_OFFER, contact, target_agent);
        // `offer` reports a phone it could not ring to the engine, which never heard of this.
        self.routing.retain(|(_, i)| {
            !matches!(i, Input::OfferRejected { offer, .. } if *offer == outbound::NO_OFFER)
        });
        let ringing = self.calls.get(&key).is_some_and(|c| !c.branches.is_empty());
        if !ringing {
            self.internal_failed(now, key, 480);
        } else {
            self.internal_busy_sync(tenant, &[caller_agent]);
        }
    }

    /// Whether `call` is an internal call between agents' phones (no contact of a queue).
    fn is_internal(call: &Call) -> bool {
        call.engine_released && call.queue.as_str() == INTERNAL_QUEUE
    }

    /// The agents an internal call occupies: the caller's (by extension) and, once
    /// answered, the callee's. Empty for any other call.
    pub(super) fn internal_agents(&self, call: &Call) -> Vec<AgentId> {
        if !Self::is_internal(call) {
            return Vec::new();
        }
        let mut agents = Vec::with_capacity(2);
        if let Some((t, a, _)) = self.index.extensions.get(&call.caller_number)
            && *t == call.tenant
        {
            agents.push(a.clone());
        }
        if let Some(b) = call.winner.and_then(|w| call.branches.get(w))
            && !agents.contains(&b.agent)
        {
            agents.push(b.agent.clone());
        }
        agents
    }

    /// Tells the engine, for each of `agents`, whether a live internal call still occupies
    /// them (see the module docs). Scans the calls: internal calls are rare events.
    pub(super) fn internal_busy_sync(&mut self, tenant: uuid::Uuid, agents: &[AgentId]) {
        for agent in agents {
            let busy = self
                .calls
                .values()
                .any(|c| c.tenant == tenant && self.internal_agents(c).contains(agent));
            self.routing.push_back((
                tenant,
                Input::AgentBusy {
                    agent: agent.clone(),
                    busy,
                },
            ));
        }
    }

    /// Hook of `branch_answered`: the callee of an internal call answered and is busy now.
    pub(super) fn internal_answered(&mut self, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let agents = self.internal_agents(call);
        if !agents.is_empty() {
            let tenant = call.tenant;
            self.internal_busy_sync(tenant, &agents);
        }
    }

    /// Hook of `finish` (the call is already out of `calls`): an internal call's agents
    /// are free unless another internal call holds them.
    pub(super) fn internal_call_gone(&mut self, call: &Call) {
        let agents = self.internal_agents(call);
        if !agents.is_empty() {
            self.internal_busy_sync(call.tenant, &agents);
        }
    }

    /// Whether `key` is an internal call still ringing (no answer yet).
    pub(super) fn is_ringing_internal(&self, key: CallKey) -> bool {
        self.calls.get(&key).is_some_and(|c| {
            c.engine_released
                && c.winner.is_none()
                && !c.requeued
                && c.queue.as_str() == INTERNAL_QUEUE
        })
    }

    /// Every phone of the callee refused: the caller's INVITE gets the status.
    pub(super) fn internal_failed(&mut self, now: Now, key: CallKey, code: u16) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let (tx, invite, source, tag) = (
            call.invite_tx,
            call.invite.clone(),
            call.source,
            call.local_tag.clone(),
        );
        let reason = match code {
            486 => "Busy Here",
            603 => "Decline",
            408 => "Request Timeout",
            _ => "Temporarily Unavailable",
        };
        let b = response_to_source(
            &invite,
            Some(source.addr),
            code,
            reason,
            Some(tag.as_bytes()),
        );
        self.respond(now, tx, b.finish());
        self.finish(now, key, "failed");
    }
}
