//! Supervisor listen, whisper and barge: a third leg (C) on a connected call.
//!
//! `Monitor { supervisor, mode }` rings every registered phone of the supervisor exactly as an
//! offer rings an agent's phones (the same [`Branch`] records, the same first-2xx-wins fork with
//! CANCEL to the others), but offering the relay's leg-C port, reserved with
//! [`MediaPort::add_leg`] before the INVITE goes out. On the 2xx the relay learns the phone's
//! address and the hearing matrix is set:
//!
//! | mode    | caller (A) hears | agent (B) hears | supervisor (C) hears |
//! |---------|------------------|-----------------|----------------------|
//! | listen  | B                | A               | A + B                |
//! | whisper | B                | A + C           | A + B                |
//! | barge   | B + C            | A + C           | A + B                |
//!
//! The mode switches at any time — by API (`Monitor` again with the same supervisor) or by the
//! supervisor pressing 1 (listen), 2 (whisper) or 3 (barge) on the phone (DTMF detection is on
//! for leg C) — by sending the matrix again; nothing is torn down. The supervisor hanging up
//! (BYE), `StopMonitor`, or leg C going silent restores the plain bridge and removes leg C;
//! the call ending BYEs (or CANCELs) the supervisor.
//!
//! The supervisor's dialog is kept apart from the call's agent branches (its own index by
//! transaction and Call-ID) so nothing in the agent path — winner selection, offer results for
//! the engine, CDR rows — ever mistakes it for an agent.

use std::collections::HashMap;

use acd_core::{AgentId, OfferId};
use bytes::Bytes;
use rand::Rng;

use super::{
    B2bua, Branch, BranchState, CallKey, CallState, MediaPort, Now, contact_uri, phone_address,
};
use crate::audio::mix::SupervisorMode;
use crate::b2bua::control::ControlError;
use crate::media::{AudioCommand, Leg, LegSet, LegSetup, MediaEvent, MediaSessionId};
use crate::sdp::{LocalMedia, SessionDescription};
use crate::sip::transaction::{Peer, TxId};
use crate::sip::{HeaderName, Message, response_to_source};

/// The supervisor attached to (or being rung for) one call.
#[derive(Debug)]
pub(super) struct Monitor {
    /// Who monitors.
    pub(super) supervisor: AgentId,
    /// How (applied when the phone answers, and on every switch).
    pub(super) mode: SupervisorMode,
    /// One per registered phone of the supervisor; the first 2xx wins.
    legs: Vec<Branch>,
    /// The answering phone.
    winner: Option<usize>,
}

/// Finds the supervisor dialogs by transaction and by Call-ID.
#[derive(Debug, Default)]
pub(super) struct MonitorIndex {
    by_tx: HashMap<TxId, CallKey>,
    by_call_id: HashMap<Bytes, CallKey>,
}

/// The hearing matrix of a mode: what A and B hear (C always hears A + B).
fn hearing(mode: SupervisorMode) -> (LegSet, LegSet) {
    match mode {
        SupervisorMode::Listen => (LegSet::of(&[Leg::B]), LegSet::of(&[Leg::A])),
        SupervisorMode::Whisper => (LegSet::of(&[Leg::B]), LegSet::of(&[Leg::A, Leg::C])),
        SupervisorMode::Barge => (LegSet::of(&[Leg::B, Leg::C]), LegSet::of(&[Leg::A, Leg::C])),
    }
}

/// The mode a key on the supervisor's phone selects.
pub(super) fn mode_for_digit(digit: char) -> Option<SupervisorMode> {
    match digit {
        '1' => Some(SupervisorMode::Listen),
        '2' => Some(SupervisorMode::Whisper),
        '3' => Some(SupervisorMode::Barge),
        _ => None,
    }
}

impl<M: MediaPort> B2bua<M> {
    /// Starts monitoring, or switches the mode of the same supervisor.
    pub(crate) fn monitor(
        &mut self,
        now: Now,
        key: CallKey,
        supervisor: AgentId,
        mode: SupervisorMode,
    ) -> Result<(), ControlError> {
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(ControlError::NoSuchCall);
        };
        if call.state != CallState::Connected {
            return Err(ControlError::NotConnected);
        }
        if let Some(m) = call.monitor.as_mut() {
            if m.supervisor != supervisor {
                return Err(ControlError::AlreadyMonitored);
            }
            m.mode = mode;
            let joined = m.winner.is_some();
            let id = call.media.id;
            if joined {
                self.apply_hearing(id, mode);
            }
            return Ok(());
        }
        let own_call = call
            .winner
            .and_then(|w| call.branches.get(w))
            .is_some_and(|b| b.agent == supervisor);
        if own_call {
            return Err(ControlError::Unsupported("monitoring one's own call"));
        }
        let (tenant, media_id, codecs, caller) = (
            call.tenant,
            call.media.id,
            call.agent_codecs.clone(),
            call.caller_number.clone(),
        );
        let bindings: Vec<(Bytes, Peer)> = self
            .index
            .agents
            .get(&(tenant, supervisor.clone()))
            .map(|ext| {
                self.registrar
                    .bindings(ext, now.mono)
                    .into_iter()
                    .map(|b| (b.contact.clone(), phone_address(&b.contact, b.source)))
                    .collect()
            })
            .unwrap_or_default();
        if bindings.is_empty() {
            return Err(ControlError::NoPhone);
        }
        // The leg's setup before its answer: our own offer, with no peer address yet.
        let provisional = SessionDescription::offer(
            LocalMedia {
                address: self.config.media_address,
                port: 9,
            },
            0,
            &codecs,
            101,
        );
        let Some(mut setup) = LegSetup::from_sdp(&provisional) else {
            return Err(ControlError::Unsupported("no codec for the third leg"));
        };
        setup.peer = None;
        setup.rtcp_peer = None;
        let ports = match self.media.add_leg(media_id, setup) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(?media_id, "no third leg: {e}");
                return Err(ControlError::NoMedia);
            }
        };
        let sdp = SessionDescription::offer(
            LocalMedia {
                address: self.config.media_address,
                port: ports.rtp,
            },
            self.rng.random::<u32>().into(),
            &codecs,
            101,
        )
        .to_string();
        let display = if caller.is_empty() {
            "monitor".to_owned()
        } else {
            format!("monitor-{caller}")
        };
        let mut legs = Vec::new();
        for (target, peer) in bindings {
            let Some((tx, invite, call_id)) =
                self.invite_phone(now, &target, peer, &display, &sdp, false, &supervisor)
            else {
                continue;
            };
            self.monitors.by_tx.insert(tx, key);
            self.monitors.by_call_id.insert(call_id.clone(), key);
            legs.push(Branch {
                offer: OfferId(uuid::Uuid::nil()),
                agent: supervisor.clone(),
                tx,
                invite,
                peer,
                call_id,
                state: BranchState::Calling,
                remote_to: None,
                remote_target: None,
                withdrawn: false,
                last_status: 0,
            });
        }
        if legs.is_empty() {
            self.media.remove_leg(media_id, Leg::C);
            return Err(ControlError::NoPhone);
        }
        tracing::info!(%supervisor, ?mode, "ringing the supervisor");
        if let Some(call) = self.calls.get_mut(&key) {
            call.monitor = Some(Monitor {
                supervisor,
                mode,
                legs,
                winner: None,
            });
        }
        Ok(())
    }

    /// Ends monitoring on request.
    pub(crate) fn stop_monitor(&mut self, now: Now, key: CallKey) -> Result<(), ControlError> {
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(ControlError::NoSuchCall);
        };
        let Some(monitor) = call.monitor.take() else {
            return Err(ControlError::NotMonitored);
        };
        let id = call.media.id;
        self.release_monitor(now, monitor, true);
        self.restore_bridge(id);
        Ok(())
    }

    /// Sends the matrix of `mode`. A party that put the call on hold keeps hearing nothing
    /// (core/hold.rs); the held party hears its music whatever the matrix says.
    fn apply_hearing(&mut self, id: MediaSessionId, mode: SupervisorMode) {
        let (a, b) = hearing(mode);
        let holder = self
            .by_media
            .get(&id)
            .and_then(|k| self.calls.get(k))
            .and_then(|c| c.held_by);
        for (leg, from) in [(Leg::A, a), (Leg::B, b)] {
            if holder != Some(leg) {
                self.media.audio(id, AudioCommand::Hears { leg, from });
            }
        }
        self.media.audio(
            id,
            AudioCommand::Hears {
                leg: Leg::C,
                from: LegSet::of(&[Leg::A, Leg::B]),
            },
        );
    }

    /// Hook after something returned the call to the plain bridge ([`AudioCommand::Reset`],
    /// e.g. the end of a hold) while a supervisor is on it: their mode and keys again.
    pub(super) fn supervisor_after_reset(&mut self, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let id = call.media.id;
        let Some(mode) = call
            .monitor
            .as_ref()
            .filter(|m| m.winner.is_some())
            .map(|m| m.mode)
        else {
            return;
        };
        self.apply_hearing(id, mode);
        self.media.audio(
            id,
            AudioCommand::DetectDtmf {
                leg: Leg::C,
                on: true,
            },
        );
    }

    /// The plain bridge again, leg C gone.
    fn restore_bridge(&mut self, id: MediaSessionId) {
        self.media.audio(
            id,
            AudioCommand::Hears {
                leg: Leg::A,
                from: LegSet::of(&[Leg::B]),
            },
        );
        self.media.audio(
            id,
            AudioCommand::Hears {
                leg: Leg::B,
                from: LegSet::of(&[Leg::A]),
            },
        );
        self.media.audio(
            id,
            AudioCommand::Hears {
                leg: Leg::C,
                from: LegSet::EMPTY,
            },
        );
        self.media.audio(
            id,
            AudioCommand::DetectDtmf {
                leg: Leg::C,
                on: false,
            },
        );
        self.media.remove_leg(id, Leg::C);
    }

    /// Ends the supervisor's dialogs: BYE to the answered phone (unless `bye` is false: it hung
    /// up itself), CANCEL to ringing ones (a late 2xx then gets ACK and BYE as an orphan).
    fn release_monitor(&mut self, now: Now, monitor: Monitor, bye: bool) {
        for (i, b) in monitor.legs.into_iter().enumerate() {
            self.monitors.by_tx.remove(&b.tx);
            self.monitors.by_call_id.remove(&b.call_id);
            if monitor.winner == Some(i) {
                if bye
                    && let (Some(to), Some(target)) = (b.remote_to.clone(), b.remote_target.clone())
                {
                    self.send_bye(now, &b.invite, &to, &target, b.peer);
                }
            } else if matches!(b.state, BranchState::Calling | BranchState::Ringing) {
                let cancel = crate::sip::transaction::build_cancel(&b.invite);
                if let Ok(m) = Message::parse_datagram(cancel, &self.limits) {
                    let _ = self.tl.send_request(now.mono, m, b.peer);
                }
                self.orphans.insert(b.tx, b);
            }
        }
    }

    /// Hook in `handle_response`: a response to a supervisor INVITE. Returns whether it was one.
    pub(super) fn supervisor_response(&mut self, now: Now, tx: TxId, resp: &Message) -> bool {
        let Some(&key) = self.monitors.by_tx.get(&tx) else {
            return false;
        };
        let Some(code) = resp.status() else {
            return true;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            self.monitors.by_tx.remove(&tx);
            return true;
        };
        let id = call.media.id;
        let Some(monitor) = call.monitor.as_mut() else {
            return true;
        };
        let Some(i) = monitor.legs.iter().position(|b| b.tx == tx) else {
            return true;
        };
        match code {
            100..=199 => {
                if monitor.legs[i].state == BranchState::Calling {
                    monitor.legs[i].state = BranchState::Ringing;
                }
            }
            200..=299 => {
                let to = resp
                    .single(&HeaderName::To, "To")
                    .ok()
                    .flatten()
                    .cloned()
                    .unwrap_or_default();
                let b = &monitor.legs[i];
                let target = contact_uri(resp).unwrap_or_else(|| {
                    b.invite
                        .request_line()
                        .map(|r| r.uri_raw.clone())
                        .unwrap_or_default()
                });
                let (invite, peer) = (b.invite.clone(), b.peer);
                if b.state == BranchState::Won {
                    // A retransmitted 2xx: our ACK was lost.
                    self.send_ack(&invite, &to, &target, peer);
                    return true;
                }
                if monitor.winner.is_some() {
                    monitor.legs[i].state = BranchState::Done;
                    self.send_ack(&invite, &to, &target, peer);
                    self.send_bye(now, &invite, &to, &target, peer);
                    return true;
                }
                monitor.winner = Some(i);
                let mode = monitor.mode;
                let b = &mut monitor.legs[i];
                b.state = BranchState::Won;
                b.remote_to = Some(to.clone());
                b.remote_target = Some(target.clone());
                let others: Vec<(Message, Peer)> = monitor
                    .legs
                    .iter_mut()
                    .enumerate()
                    .filter(|(j, b)| {
                        *j != i && matches!(b.state, BranchState::Calling | BranchState::Ringing)
                    })
                    .map(|(_, b)| {
                        b.withdrawn = true;
                        (b.invite.clone(), b.peer)
                    })
                    .collect();
                self.send_ack(&invite, &to, &target, peer);
                if let Ok(sdp) = SessionDescription::parse(resp.body())
                    && let Some(setup) = LegSetup::from_sdp(&sdp)
                {
                    self.media.update_leg(id, Leg::C, setup);
                }
                self.apply_hearing(id, mode);
                self.media.audio(
                    id,
                    AudioCommand::DetectDtmf {
                        leg: Leg::C,
                        on: true,
                    },
                );
                for (inv, p) in others {
                    let cancel = crate::sip::transaction::build_cancel(&inv);
                    if let Ok(m) = Message::parse_datagram(cancel, &self.limits) {
                        let _ = self.tl.send_request(now.mono, m, p);
                    }
                }
                tracing::info!(?mode, "supervisor joined the call");
            }
            _ => self.supervisor_leg_failed(now, key, i, code),
        }
        true
    }

    /// A supervisor phone refused (or timed out); when none is left ringing, monitoring ends.
    fn supervisor_leg_failed(&mut self, now: Now, key: CallKey, i: usize, code: u16) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let id = call.media.id;
        let Some(monitor) = call.monitor.as_mut() else {
            return;
        };
        if let Some(b) = monitor.legs.get_mut(i)
            && b.state != BranchState::Won
        {
            b.state = BranchState::Done;
            b.last_status = code;
        }
        let over =
            monitor.winner.is_none() && monitor.legs.iter().all(|b| b.state == BranchState::Done);
        if over && let Some(monitor) = call.monitor.take() {
            tracing::info!(supervisor = %monitor.supervisor, code, "supervisor did not answer");
            self.release_monitor(now, monitor, false);
            self.media.remove_leg(id, Leg::C);
        }
    }

    /// Hook for transaction timeouts of supervisor INVITEs.
    pub(super) fn supervisor_timeout(&mut self, now: Now, tx: TxId) -> bool {
        let Some(&key) = self.monitors.by_tx.get(&tx) else {
            return false;
        };
        let i = self
            .calls
            .get(&key)
            .and_then(|c| c.monitor.as_ref())
            .and_then(|m| m.legs.iter().position(|b| b.tx == tx));
        if let Some(i) = i {
            self.supervisor_leg_failed(now, key, i, 408);
        }
        true
    }

    /// Hook for terminated transactions.
    pub(super) fn supervisor_tx_terminated(&mut self, tx: TxId) {
        self.monitors.by_tx.remove(&tx);
    }

    /// Hook in the BYE handler: the supervisor hung up. Returns whether the BYE was theirs.
    pub(super) fn supervisor_bye(
        &mut self,
        now: Now,
        tx: TxId,
        req: &Message,
        source: Peer,
    ) -> bool {
        let Some(call_id) = req.call_id().ok().flatten() else {
            return false;
        };
        let Some(&key) = self.monitors.by_call_id.get(&call_id) else {
            return false;
        };
        let tag = self.token();
        let ok = response_to_source(req, Some(source.addr), 200, "OK", Some(tag.as_bytes()));
        self.respond(now, tx, ok.finish());
        let Some(call) = self.calls.get_mut(&key) else {
            self.monitors.by_call_id.remove(&call_id);
            return true;
        };
        let id = call.media.id;
        if let Some(monitor) = call.monitor.take() {
            tracing::info!(supervisor = %monitor.supervisor, "supervisor hung up");
            self.release_monitor(now, monitor, false);
            self.restore_bridge(id);
        }
        true
    }

    /// Hook for media events: DTMF and silence on leg C are the supervisor's business, not the
    /// call's. Returns whether the event was consumed.
    pub(super) fn supervisor_media_event(&mut self, now: Now, event: &MediaEvent) -> bool {
        let (id, digit) = match *event {
            MediaEvent::Dtmf {
                id,
                leg: Leg::C,
                digit,
            } => (id, Some(digit)),
            MediaEvent::RtpTimeout { id, leg: Leg::C } => (id, None),
            _ => return false,
        };
        let Some(&key) = self.by_media.get(&id) else {
            return true;
        };
        match digit {
            Some(d) => {
                let Some(mode) = mode_for_digit(d) else {
                    return true;
                };
                let joined = self
                    .calls
                    .get_mut(&key)
                    .and_then(|c| c.monitor.as_mut())
                    .filter(|m| m.winner.is_some())
                    .map(|m| m.mode = mode)
                    .is_some();
                if joined {
                    tracing::info!(?mode, "supervisor switched mode by DTMF");
                    self.apply_hearing(id, mode);
                }
            }
            None => {
                // Only a joined supervisor's phone can fall silent; one still ringing sends
                // nothing yet.
                let joined = self
                    .calls
                    .get(&key)
                    .and_then(|c| c.monitor.as_ref())
                    .is_some_and(|m| m.winner.is_some());
                if joined {
                    tracing::info!(?id, "no RTP from the supervisor: ending monitoring");
                    let _ = self.stop_monitor(now, key);
                }
            }
        }
        true
    }

    /// Hook when the call ends: the supervisor's dialogs end with it.
    pub(super) fn supervisor_on_end(&mut self, now: Now, call: &mut super::Call) {
        if let Some(monitor) = call.monitor.take() {
            self.release_monitor(now, monitor, true);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::sip::Method;
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use acd_core::{ContactId, QueueId};
    use uuid::Uuid;

    use super::super::tests::{CARRIER, Harness, PHONE, TENANT, reply, sdp};
    use super::*;
    use crate::b2bua::control::{CallControl, CallPhase, ControlRequest};
    use crate::b2bua::model::{AgentSip, GatewayModel, SipSecret, TenantModel};
    use crate::sip::auth::{ClientCredentials, answer_challenge};

    const SUPERVISOR: &str = "127.0.0.1:5092";

    /// A harness with agents 1001 (the call's agent) and 1002 (the supervisor), both phones
    /// registered, and a call connected to 1001.
    fn connected() -> (Harness, ContactId) {
        let mut h = Harness::new();
        let agent = |id: &str| AgentSip {
            agent: AgentId::new(id),
            extension: id.into(),
            secret: SipSecret::from_password(id, "zentrale", &format!("pw{id}")),
        };
        h.core.set_model(&Arc::new(GatewayModel {
            tenants: vec![TenantModel {
                tenant: TENANT,
                dids: HashMap::from([("100".to_owned(), QueueId::new("support"))]),
                agents: vec![agent("1001"), agent("1002")],
                media: Default::default(),
                trunks: Default::default(),
            }],
        }));
        h.register();
        register_supervisor(&mut h);
        h.routing();
        let (_, contact) = h.invite("z9hG4bKsup1");
        let out = h.offer(contact, 1);
        let invite = out[0].1.clone();
        h.send(PHONE, &reply(&invite, "200 OK", &sdp(50000)));
        h.routing();
        h.core.media.audio.clear();
        (h, contact)
    }

    fn register_supervisor(h: &mut Harness) {
        let req = |auth: Option<&str>| {
            let n = auth.map_or(1, |_| 2);
            let mut s = format!(
                "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {SUPERVISOR};branch=z9hG4bKs{n};rport\nMax-Forwards: 70\nFrom: <sip:1002@127.0.0.1>;tag=s\nTo: <sip:1002@127.0.0.1>\nCall-ID: reg@supervisor\nCSeq: {n} REGISTER\nContact: <sip:1002@{SUPERVISOR}>\nExpires: 600\n"
            );
            if let Some(a) = auth {
                s.push_str(&format!("Authorization: {a}\n"));
            }
            s.push_str("Content-Length: 0\n\n");
            s
        };
        let out = h.send(SUPERVISOR, &req(None));
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
        let out = h.send(SUPERVISOR, &req(Some(&auth)));
        assert_eq!(out[0].1.status(), Some(200));
    }

    fn control(
        h: &mut Harness,
        contact: ContactId,
        control: CallControl,
    ) -> Result<(), ControlError> {
        h.ms += 10;
        let now = h.now();
        h.core.handle_control(
            now,
            ControlRequest {
                tenant: TENANT,
                contact,
                control,
            },
        )
    }

    fn hears(h: &Harness) -> HashMap<Leg, LegSet> {
        let mut m = HashMap::new();
        for (_, cmd) in &h.core.media.audio {
            if let AudioCommand::Hears { leg, from } = cmd {
                m.insert(*leg, *from);
            }
        }
        m
    }

    fn to(out: &[(SocketAddr, Message)], addr: &str, method: Method) -> Option<Message> {
        out.iter()
            .find(|(a, m)| a.to_string() == addr && m.method() == Some(&method))
            .map(|(_, m)| m.clone())
    }

    #[test]
    fn whisper_rings_the_supervisor_and_sets_the_hearing_matrix_on_answer() {
        let (mut h, contact) = connected();
        control(
            &mut h,
            contact,
            CallControl::Monitor {
                supervisor: AgentId::new("1002"),
                mode: SupervisorMode::Whisper,
            },
        )
        .unwrap();
        let out = h.out();
        let invite = to(&out, SUPERVISOR, Method::Invite).expect("the supervisor's phone rings");
        let offered = String::from_utf8_lossy(invite.body()).into_owned();
        assert!(
            offered.contains("m=audio 30004 RTP/AVP 0"),
            "leg C's port: {offered}"
        );
        assert!(hears(&h).is_empty(), "nothing changes before the answer");
        let listed = h.core.calls_snapshot(TENANT);
        assert_eq!(
            listed[0].monitored_by,
            Some((AgentId::new("1002"), SupervisorMode::Whisper))
        );

        // A ringing supervisor sends no RTP yet: the relay's silence report changes nothing.
        let id = h.core.media.live[0];
        let now = h.now();
        h.core
            .handle_media_event(now, MediaEvent::RtpTimeout { id, leg: Leg::C });
        assert!(h.out().is_empty());
        assert!(h.core.calls_snapshot(TENANT)[0].monitored_by.is_some());

        let out = h.send(SUPERVISOR, &reply(&invite, "200 OK", &sdp(52000)));
        assert!(
            to(&out, SUPERVISOR, Method::Ack).is_some(),
            "2xx acknowledged"
        );
        assert!(
            out.iter().all(|(a, _)| a.to_string() != CARRIER),
            "the caller sees nothing"
        );
        let m = hears(&h);
        assert_eq!(
            m[&Leg::A],
            LegSet::of(&[Leg::B]),
            "the caller never hears a whisper"
        );
        assert_eq!(m[&Leg::B], LegSet::of(&[Leg::A, Leg::C]));
        assert_eq!(m[&Leg::C], LegSet::of(&[Leg::A, Leg::B]));
        assert!(
            h.core
                .media
                .updated
                .iter()
                .any(|(_, leg, peer)| *leg == Leg::C
                    && *peer == Some("127.0.0.1:52000".parse().unwrap()))
        );
        assert!(h.core.media.audio.iter().any(|(_, c)| matches!(
            c,
            AudioCommand::DetectDtmf {
                leg: Leg::C,
                on: true
            }
        )));

        // Switch to barge by API, then back to listen by the supervisor's key 1.
        control(
            &mut h,
            contact,
            CallControl::Monitor {
                supervisor: AgentId::new("1002"),
                mode: SupervisorMode::Barge,
            },
        )
        .unwrap();
        assert!(h.out().is_empty(), "a switch sends no SIP");
        assert_eq!(hears(&h)[&Leg::A], LegSet::of(&[Leg::B, Leg::C]));
        let id = h.core.media.live[0];
        let now = h.now();
        h.core.handle_media_event(
            now,
            MediaEvent::Dtmf {
                id,
                leg: Leg::C,
                digit: '1',
            },
        );
        let m = hears(&h);
        assert_eq!(m[&Leg::A], LegSet::of(&[Leg::B]));
        assert_eq!(m[&Leg::B], LegSet::of(&[Leg::A]));
        assert_eq!(
            h.core.calls_snapshot(TENANT)[0].monitored_by,
            Some((AgentId::new("1002"), SupervisorMode::Listen))
        );

        // The caller hangs up: agent and supervisor get BYE.
        let out = h.send(
            CARRIER,
            "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbyes\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKsup1@carrier\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        );
        assert!(to(&out, PHONE, Method::Bye).is_some());
        assert!(
            to(&out, SUPERVISOR, Method::Bye).is_some(),
            "the supervisor is released"
        );
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn supervisor_hanging_up_restores_the_bridge_and_the_call_goes_on() {
        let (mut h, contact) = connected();
        control(
            &mut h,
            contact,
            CallControl::Monitor {
                supervisor: AgentId::new("1002"),
                mode: SupervisorMode::Barge,
            },
        )
        .unwrap();
        let invite = to(&h.out(), SUPERVISOR, Method::Invite).unwrap();
        h.send(SUPERVISOR, &reply(&invite, "200 OK", &sdp(52000)));
        let call_id =
            String::from_utf8_lossy(&invite.call_id().ok().flatten().unwrap()).into_owned();
        let out = h.send(
            SUPERVISOR,
            &format!(
                "BYE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {SUPERVISOR};branch=z9hG4bKsbye\nMax-Forwards: 70\nFrom: <sip:1002@127.0.0.1>;tag=ph\nTo: <sip:monitor@127.0.0.1>;tag=x\nCall-ID: {call_id}\nCSeq: 5 BYE\nContent-Length: 0\n\n"
            ),
        );
        assert_eq!(out.len(), 1, "only the 200 to the supervisor: {out:?}");
        assert_eq!(out[0].1.status(), Some(200));
        let m = hears(&h);
        assert_eq!(m[&Leg::A], LegSet::of(&[Leg::B]));
        assert_eq!(m[&Leg::B], LegSet::of(&[Leg::A]));
        assert_eq!(m[&Leg::C], LegSet::EMPTY);
        let listed = h.core.calls_snapshot(TENANT);
        assert_eq!(listed[0].phase, CallPhase::Connected);
        assert_eq!(listed[0].monitored_by, None);
        assert_eq!(
            control(&mut h, contact, CallControl::StopMonitor),
            Err(ControlError::NotMonitored)
        );
    }

    #[test]
    fn refusals_name_the_reason() {
        let (mut h, contact) = connected();
        let other_tenant = h.core.handle_control(
            h.now(),
            ControlRequest {
                tenant: Uuid::from_u128(0xbad),
                contact,
                control: CallControl::Hangup,
            },
        );
        assert_eq!(
            other_tenant,
            Err(ControlError::NoSuchCall),
            "tenants never see each other"
        );
        let own = control(
            &mut h,
            contact,
            CallControl::Monitor {
                supervisor: AgentId::new("1001"),
                mode: SupervisorMode::Listen,
            },
        );
        assert!(matches!(own, Err(ControlError::Unsupported(_))));
        let nobody = control(
            &mut h,
            contact,
            CallControl::Monitor {
                supervisor: AgentId::new("9999"),
                mode: SupervisorMode::Listen,
            },
        );
        assert_eq!(nobody, Err(ControlError::NoPhone));
        let (_, queued) = h.invite("z9hG4bKsup2");
        let early = control(
            &mut h,
            queued,
            CallControl::Monitor {
                supervisor: AgentId::new("1002"),
                mode: SupervisorMode::Listen,
            },
        );
        assert_eq!(early, Err(ControlError::NotConnected));
        // A declined supervisor call ends the attempt and frees leg C.
        control(
            &mut h,
            contact,
            CallControl::Monitor {
                supervisor: AgentId::new("1002"),
                mode: SupervisorMode::Listen,
            },
        )
        .unwrap();
        let invite = to(&h.out(), SUPERVISOR, Method::Invite).unwrap();
        h.send(SUPERVISOR, &reply(&invite, "603 Decline", ""));
        assert_eq!(h.core.calls_snapshot(TENANT)[0].monitored_by, None);
        // Hang-up by API ends the connected call; the queued one gets a final answer.
        control(&mut h, contact, CallControl::Hangup).unwrap();
        let out = h.out();
        assert!(to(&out, PHONE, Method::Bye).is_some());
        assert!(to(&out, CARRIER, Method::Bye).is_some());
        control(&mut h, queued, CallControl::Hangup).unwrap();
        assert!(h.out().iter().any(|(_, m)| m.status() == Some(480)));
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn a_hold_keeps_the_holder_muted_and_the_resume_brings_the_supervisor_back() {
        let (mut h, contact) = connected();
        let whisper = CallControl::Monitor {
            supervisor: AgentId::new("1002"),
            mode: SupervisorMode::Whisper,
        };
        control(&mut h, contact, whisper).unwrap();
        let invite = to(&h.out(), SUPERVISOR, Method::Invite).unwrap();
        h.send(SUPERVISOR, &reply(&invite, "200 OK", &sdp(52000)));
        control(&mut h, contact, CallControl::Hold).unwrap();
        h.core.media.audio.clear();
        // A switch during the hold leaves the holding agent (B) hearing nothing.
        let barge = CallControl::Monitor {
            supervisor: AgentId::new("1002"),
            mode: SupervisorMode::Barge,
        };
        control(&mut h, contact, barge).unwrap();
        let m = hears(&h);
        assert!(!m.contains_key(&Leg::B), "the holder stays muted: {m:?}");
        assert_eq!(m[&Leg::A], LegSet::of(&[Leg::B, Leg::C]));
        h.core.media.audio.clear();
        control(&mut h, contact, CallControl::Resume).unwrap();
        assert!(matches!(h.core.media.audio[0].1, AudioCommand::Reset));
        let m = hears(&h);
        assert_eq!(
            m[&Leg::B],
            LegSet::of(&[Leg::A, Leg::C]),
            "barge again after the resume"
        );
        assert!(h.core.media.audio.iter().any(|(_, c)| matches!(
            c,
            AudioCommand::DetectDtmf {
                leg: Leg::C,
                on: true
            }
        )));
    }

    #[test]
    fn the_caller_never_hears_the_supervisor_unless_barging() {
        for mode in [SupervisorMode::Listen, SupervisorMode::Whisper] {
            let (a, _) = hearing(mode);
            assert!(!a.contains(Leg::C), "{mode:?}");
        }
        let (a, b) = hearing(SupervisorMode::Barge);
        assert!(a.contains(Leg::C) && b.contains(Leg::C));
        let (_, b) = hearing(SupervisorMode::Whisper);
        assert!(b.contains(Leg::C) && b.contains(Leg::A));
        let (_, b) = hearing(SupervisorMode::Listen);
        assert!(!b.contains(Leg::C));
    }

    #[test]
    fn keys_one_two_three_select_the_modes() {
        assert_eq!(mode_for_digit('1'), Some(SupervisorMode::Listen));
        assert_eq!(mode_for_digit('2'), Some(SupervisorMode::Whisper));
        assert_eq!(mode_for_digit('3'), Some(SupervisorMode::Barge));
        assert_eq!(mode_for_digit('#'), None);
    }
}
