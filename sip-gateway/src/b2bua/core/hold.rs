//! Hold and resume of a connected call.
//!
//! Media is anchored in our relay, so holding is a media decision of ours, not a negotiation
//! between the two phones: the held party hears music from the relay
//! ([`AudioCommand::Play`] with music only), the holding party hears nothing
//! ([`AudioCommand::Hears`] with the empty set), and resume returns the call to the plain
//! zero-copy bridge ([`AudioCommand::Reset`]). The other side's dialog is never touched.
//!
//! Two ways in:
//! - A re-INVITE from either phone whose offer is `a=sendonly`, `a=inactive` or `c=0.0.0.0`
//!   (RFC 3264 section 8.4, and the RFC 2543 style). core/reinvite.rs answers its SDP
//!   (`recvonly`/`inactive`) and hands the offered direction to [`B2bua::hold_after_reinvite`];
//!   a later offer with `sendrecv`/`recvonly` from the same leg resumes.
//! - The control API ([`B2bua::control_hold`], [`B2bua::control_resume`]): the agent desktop
//!   holds the caller. We play the music and mute the agent's leg, and send **no** re-INVITE,
//!   neither to the caller (media is anchored: the carrier's stream keeps flowing and simply
//!   carries music) nor to the agent's phone. A `sendonly` re-INVITE to the phone would only
//!   light its hold lamp, at the cost of an offer/answer exchange with a phone that may then
//!   re-offer on its own and a second source of truth for "is this call held"; the desktop that
//!   asked shows the state instead.
//!
//! The music is the queue's (`[queues.<q>.media] music`), looked up in the caller-experience
//! prompt library (core/queue_media.rs, built-ins plus the tenant's uploads), else that
//! library's `hold_music`; if even that is missing, the compiled-in loop, decoded once per
//! process. Prompts are immutable `Arc`s shared by every held call.

use std::sync::{Arc, OnceLock};

use super::{B2bua, CallKey, CallState, MediaPort, Now};
use crate::audio::prompt::{COMMON, Prompt, PromptLibrary};
use crate::b2bua::control::ControlError;
use crate::media::{AudioCommand, Leg, LegSet};
use crate::sdp::{Direction, SessionDescription};

/// The `tag` of the music play, echoed by a `PlayDone` that never comes (music loops).
pub(super) const HOLD_MUSIC_TAG: u64 = 0x686f_6c64; // "hold"

/// The built-in hold music, decoded once per process (`None` when the compiled-in library
/// cannot be read, which its own tests rule out; hold then is silence, logged).
pub(super) fn builtin_hold_music() -> Option<Arc<Prompt>> {
    static MUSIC: OnceLock<Option<Arc<Prompt>>> = OnceLock::new();
    MUSIC
        .get_or_init(|| match PromptLibrary::builtin() {
            Ok(lib) => match lib.get(COMMON, "hold_music") {
                Ok(p) => Some(Arc::new(p.clone())),
                Err(e) => {
                    tracing::error!("no built-in hold music: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::error!("built-in prompts unreadable, hold will be silent: {e}");
                None
            }
        })
        .clone()
}

/// Whether an SDP offer puts the call on hold: `sendonly`/`inactive`, or the old
/// `c=0.0.0.0` convention.
pub(super) fn offer_holds(offered: Option<Direction>, offer: &[u8]) -> bool {
    if matches!(offered, Some(Direction::SendOnly | Direction::Inactive)) {
        return true;
    }
    SessionDescription::parse(offer).is_ok_and(|sdp| {
        sdp.audio_index()
            .and_then(|i| {
                sdp.media[i]
                    .connection
                    .as_ref()
                    .or(sdp.connection.as_ref())
                    .map(|c| c.address.is_unspecified())
            })
            .unwrap_or(false)
    })
}

fn other(leg: Leg) -> Leg {
    match leg {
        Leg::A => Leg::B,
        _ => Leg::A,
    }
}

impl<M: MediaPort> B2bua<M> {
    /// After a re-INVITE on `leg` was answered: hold when its offer says so, resume when the
    /// leg that held offers to send again. An offer-less re-INVITE (`offered` = `None`)
    /// changes nothing.
    pub(super) fn hold_after_reinvite(
        &mut self,
        key: CallKey,
        leg: Leg,
        offered: Option<Direction>,
        offer: &[u8],
    ) {
        if offered.is_none() {
            return;
        }
        let holds = offer_holds(offered, offer);
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        match (holds, call.held_by) {
            (true, Some(h)) if h == leg => {} // a refresh of the same hold
            (true, _) => self.start_hold(key, leg),
            (false, Some(h)) if h == leg => self.end_hold(key),
            (false, _) => {}
        }
    }

    /// The agent desktop holds the caller (see the module docs: no re-INVITE is sent).
    pub(crate) fn control_hold(&mut self, _now: Now, key: CallKey) -> Result<(), ControlError> {
        let call = self.calls.get(&key).ok_or(ControlError::NoSuchCall)?;
        if call.state != CallState::Connected || call.winner.is_none() {
            return Err(ControlError::NotConnected);
        }
        if call.held_by.is_none() {
            self.start_hold(key, Leg::B);
        }
        Ok(())
    }

    /// Ends a hold, whoever started it.
    pub(crate) fn control_resume(&mut self, _now: Now, key: CallKey) -> Result<(), ControlError> {
        let call = self.calls.get(&key).ok_or(ControlError::NoSuchCall)?;
        if call.state != CallState::Connected || call.winner.is_none() {
            return Err(ControlError::NotConnected);
        }
        if call.held_by.is_some() {
            self.end_hold(key);
        }
        Ok(())
    }

    /// The music the held party of this call hears: the queue's, else the default loop.
    pub(super) fn hold_music_for(&mut self, key: CallKey) -> Option<Arc<Prompt>> {
        let name = self
            .queue_media_of(key)
            .and_then(|m| m.music)
            .unwrap_or_else(|| "hold_music".to_owned());
        self.prompts_named(key, &[name.as_str()])
            .pop()
            .or_else(builtin_hold_music)
    }

    /// `holder` put the call on hold: the other party hears music, the holder silence.
    pub(super) fn start_hold(&mut self, key: CallKey, holder: Leg) {
        let music = self.hold_music_for(key);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.held_by = Some(holder);
        let id = call.media.id;
        tracing::info!(contact = %call.contact, ?holder, "call on hold");
        self.media.audio(
            id,
            AudioCommand::Play {
                leg: other(holder),
                items: Vec::new(),
                music,
                tag: HOLD_MUSIC_TAG,
            },
        );
        self.media.audio(
            id,
            AudioCommand::Hears {
                leg: holder,
                from: LegSet::EMPTY,
            },
        );
    }

    /// Back to the plain bridge.
    pub(super) fn end_hold(&mut self, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.held_by = None;
        let id = call.media.id;
        tracing::info!(contact = %call.contact, "call resumed");
        self.media.audio(id, AudioCommand::Reset);
        // A supervisor on the call keeps their mode (Reset cleared it; core/supervise.rs).
        self.supervisor_after_reset(key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::SocketAddr;

    use super::super::tests::{CARRIER, Harness, PHONE, TENANT, reply, sdp, statuses};
    use super::*;
    use crate::b2bua::control::{CallControl, ControlRequest};
    use crate::sip::{HeaderName, Message};
    use acd_core::ContactId;

    fn header(m: &Message, name: &HeaderName) -> String {
        String::from_utf8_lossy(m.headers_named(name).next().unwrap()).into_owned()
    }

    /// A call answered by 1001's phone; returns the contact and our INVITE to the phone.
    fn connected(h: &mut Harness) -> (ContactId, Message) {
        h.register();
        h.routing();
        let (_, contact) = h.invite("z9hG4bKhold1");
        let invite = h.offer(contact, 1)[0].1.clone();
        h.send(PHONE, &reply(&invite, "200 OK", &sdp(50000)));
        h.routing();
        h.core.media.audio.clear();
        (contact, invite)
    }

    /// A re-INVITE from the agent's phone in its dialog with us, with `direction` in the SDP.
    fn phone_reinvite(
        h: &mut Harness,
        invite: &Message,
        cseq: u32,
        direction: &str,
    ) -> Vec<(SocketAddr, Message)> {
        let body = format!("{}a={direction}\r\n", sdp(50000));
        h.send(
            PHONE,
            &format!(
                "INVITE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKre{cseq}\nMax-Forwards: 70\nFrom: {};tag=ph\nTo: {}\nCall-ID: {}\nCSeq: {cseq} INVITE\nContact: <sip:1001@{PHONE}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
                header(invite, &HeaderName::To),
                header(invite, &HeaderName::From),
                header(invite, &HeaderName::CallId),
                body.len()
            ),
        )
    }

    /// The final response among what went out.
    fn ok(out: &[(SocketAddr, Message)]) -> &Message {
        &out.iter()
            .find(|(_, m)| m.status().is_some_and(|s| s >= 200))
            .unwrap()
            .1
    }

    fn audio(h: &mut Harness) -> Vec<AudioCommand> {
        h.core.media.audio.drain(..).map(|(_, c)| c).collect()
    }

    #[test]
    fn agent_phone_hold_plays_music_to_the_caller_and_resume_restores_the_bridge() {
        let mut h = Harness::new();
        let (_, invite) = connected(&mut h);

        let out = phone_reinvite(&mut h, &invite, 2, "sendonly");
        assert_eq!(statuses(&out), vec![100, 200]);
        let answer = String::from_utf8_lossy(ok(&out).body()).into_owned();
        assert!(answer.contains("a=recvonly"), "{answer}");
        assert!(out.iter().all(|(a, _)| a.to_string() == PHONE));
        let cmds = audio(&mut h);
        assert!(
            matches!(&cmds[..], [
                AudioCommand::Play { leg: Leg::A, items, music: Some(_), .. },
                AudioCommand::Hears { leg: Leg::B, from },
            ] if items.is_empty() && *from == LegSet::EMPTY),
            "{cmds:?}"
        );
        // Refreshing the hold changes nothing.
        phone_reinvite(&mut h, &invite, 3, "sendonly");
        assert!(audio(&mut h).is_empty());

        let out = phone_reinvite(&mut h, &invite, 4, "sendrecv");
        assert!(String::from_utf8_lossy(ok(&out).body()).contains("a=sendrecv"));
        assert!(matches!(audio(&mut h)[..], [AudioCommand::Reset]));
    }

    #[test]
    fn inactive_and_zero_address_offers_are_holds_too() {
        let mut h = Harness::new();
        let (_, invite) = connected(&mut h);
        let out = phone_reinvite(&mut h, &invite, 2, "inactive");
        assert!(String::from_utf8_lossy(ok(&out).body()).contains("a=inactive"));
        assert!(matches!(
            audio(&mut h)[..],
            [AudioCommand::Play { leg: Leg::A, .. }, _]
        ));
        phone_reinvite(&mut h, &invite, 3, "sendrecv");
        assert!(matches!(audio(&mut h)[..], [AudioCommand::Reset]));

        assert!(offer_holds(
            Some(Direction::SendRecv),
            sdp(4000)
                .replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
                .as_bytes()
        ));
        assert!(!offer_holds(
            Some(Direction::SendRecv),
            sdp(4000).as_bytes()
        ));
        assert!(!offer_holds(Some(Direction::RecvOnly), b"garbage"));
    }

    #[test]
    fn caller_hold_plays_music_to_the_agent() {
        let mut h = Harness::new();
        connected(&mut h);
        let body = format!("{}a=sendonly\r\n", sdp(40000));
        let out = h.send(
            CARRIER,
            &format!(
                "INVITE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKcre\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKhold1@carrier\nCSeq: 2 INVITE\nContact: <sip:c@{CARRIER}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
                body.len()
            ),
        );
        assert_eq!(statuses(&out), vec![100, 200]);
        assert!(matches!(
            &audio(&mut h)[..],
            [
                AudioCommand::Play { leg: Leg::B, .. },
                AudioCommand::Hears { leg: Leg::A, .. }
            ]
        ));
    }

    #[test]
    fn api_hold_and_resume_need_a_connected_call_and_send_no_sip() {
        let mut h = Harness::new();
        h.register();
        h.routing();
        let (_, contact) = h.invite("z9hG4bKhold2");
        let req = |control| ControlRequest {
            tenant: TENANT,
            contact,
            control,
        };
        let now = h.now();
        assert_eq!(
            h.core.handle_control(now, req(CallControl::Hold)),
            Err(ControlError::NotConnected)
        );
        let invite = h.offer(contact, 1)[0].1.clone();
        h.send(PHONE, &reply(&invite, "200 OK", &sdp(50000)));
        h.core.media.audio.clear();
        let now = h.now();
        h.core.handle_control(now, req(CallControl::Hold)).unwrap();
        h.core.handle_control(now, req(CallControl::Hold)).unwrap();
        assert!(h.out().is_empty(), "no re-INVITE to anyone");
        assert!(matches!(
            audio(&mut h)[..],
            [
                AudioCommand::Play { leg: Leg::A, .. },
                AudioCommand::Hears { leg: Leg::B, .. }
            ]
        ));
        h.core
            .handle_control(now, req(CallControl::Resume))
            .unwrap();
        h.core
            .handle_control(now, req(CallControl::Resume))
            .unwrap();
        assert!(matches!(audio(&mut h)[..], [AudioCommand::Reset]));
    }

    #[test]
    fn builtin_hold_music_is_there() {
        assert!(builtin_hold_music().is_some_and(|m| m.duration_ms() > 1000));
    }
}
