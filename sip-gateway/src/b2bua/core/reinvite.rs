//! Re-INVITEs inside an established call: the generic SDP answer and the 200 that carries it.
//!
//! The relay anchors both legs, so a re-INVITE from one side is answered by us alone: the other
//! side never sees it (a B2BUA owns each dialog). The answer must reflect the new offer
//! (RFC 3264 section 8): the codec stays the one negotiated at call set-up (the relay does not
//! transcode), the direction answers the offered one (`sendonly` → `recvonly`, `inactive` →
//! `inactive`, RFC 3264 section 6.1), the port is the relay's port facing that leg, and the
//! `o=` line keeps its session id with the version incremented. The relay learns the leg's
//! new address. Hold and music on hold (core/hold.rs) build on [`ReinviteAnswer::offered`]
//! rather than parsing the offer again; session timers (core/session_timer.rs) add their
//! headers to the 200.

use bytes::Bytes;

use super::{B2bua, CallKey, LegRef, MediaPort, Now};
use crate::media::{Leg, LegSetup};
use crate::sdp::{Direction, LocalMedia, SessionDescription};
use crate::sip::transaction::{Peer, TxId};
use crate::sip::{HeaderName, Message, response_to_source};

/// What [`B2bua::answer_reinvite_sdp`] produced.
#[derive(Debug, Clone)]
pub(super) struct ReinviteAnswer {
    /// Our SDP answer, to send in the 2xx (already stored as the leg's current SDP).
    pub(super) sdp: Bytes,
    /// The direction the peer offered: `SendOnly`/`Inactive` mean it put the call on hold.
    /// `None` when the re-INVITE carried no offer (we re-sent our current SDP as the offer).
    pub(super) offered: Option<Direction>,
    /// The relay leg this dialog is on.
    pub(super) leg: Leg,
}

/// Why a re-INVITE's offer cannot be answered; the SIP status to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReinviteError {
    /// The dialog is not (or no longer) part of a connected call: 481.
    NoDialog,
    /// Unparseable SDP or no codec in common with the one in use: 488.
    NotAcceptable,
}

impl ReinviteError {
    pub(super) fn status(self) -> (u16, &'static str) {
        match self {
            ReinviteError::NoDialog => (481, "Call/Transaction Does Not Exist"),
            ReinviteError::NotAcceptable => (488, "Not Acceptable Here"),
        }
    }
}

impl<M: MediaPort> B2bua<M> {
    /// Answers the SDP `offer` of a re-INVITE (or UPDATE) on `leg` of call `key`; see the
    /// module docs. An empty `offer` gets our current SDP back unchanged (RFC 3264 section 8:
    /// the offer in a 2xx to an offer-less re-INVITE repeats the last one).
    pub(super) fn answer_reinvite_sdp(
        &mut self,
        key: CallKey,
        leg: LegRef,
        offer: &[u8],
    ) -> Result<ReinviteAnswer, ReinviteError> {
        let media_address = self.config.media_address;
        let fallback_session = u64::from(self.rng_u32());
        let call = self.calls.get(&key).ok_or(ReinviteError::NoDialog)?;
        let (relay_leg, port, current) = match leg {
            LegRef::Caller => (Leg::A, call.media.leg_a.rtp, call.answer_sdp.clone()),
            LegRef::Branch(i) => {
                if call.winner != Some(i) {
                    return Err(ReinviteError::NoDialog);
                }
                let ours = match &call.agent_sdp {
                    Some(s) => s.clone(),
                    None => call
                        .branches
                        .get(i)
                        .map(|b| b.invite.body().clone())
                        .unwrap_or_default(),
                };
                (Leg::B, call.media.leg_b.rtp, ours)
            }
        };
        if offer.is_empty() {
            return Ok(ReinviteAnswer {
                sdp: current,
                offered: None,
                leg: relay_leg,
            });
        }
        let parsed = SessionDescription::parse(offer).map_err(|_| ReinviteError::NotAcceptable)?;
        let (session_id, version) = SessionDescription::parse(&current)
            .map(|s| (s.origin.session_id, s.origin.session_version))
            .unwrap_or((fallback_session, 1));
        let mut answer = parsed
            .answer(
                &call.agent_codecs,
                LocalMedia {
                    address: media_address,
                    port,
                },
                session_id,
            )
            .map_err(|_| ReinviteError::NotAcceptable)?;
        answer.sdp.origin.session_version = version.saturating_add(1);
        let offered = answer.sdp.audio_index().map(|i| parsed.media_direction(i));
        let sdp = Bytes::from(answer.sdp.to_string());
        let media_id = call.media.id;
        if let Some(call) = self.calls.get_mut(&key) {
            match leg {
                LegRef::Caller => call.answer_sdp = sdp.clone(),
                LegRef::Branch(_) => call.agent_sdp = Some(sdp.clone()),
            }
        }
        // A hold offer may carry `c=0.0.0.0` (RFC 2543 style): keep the latched address then.
        if let Some(setup) = LegSetup::from_sdp(&parsed)
            && setup
                .peer
                .is_some_and(|p| !p.ip().is_unspecified() && p.port() != 0)
        {
            self.media.update_leg(media_id, relay_leg, setup);
        }
        Ok(ReinviteAnswer {
            sdp,
            offered,
            leg: relay_leg,
        })
    }

    /// A re-INVITE or UPDATE (session refresh, hold, new address) on a dialog of a connected
    /// call. An UPDATE without a body is a pure session refresh: 200 without SDP.
    pub(super) fn reinvite(&mut self, now: Now, tx: TxId, req: &Message, source: Peer) {
        let found = req
            .call_id()
            .ok()
            .flatten()
            .and_then(|c| self.by_call_id.get(&c).copied());
        let Some((key, leg)) = found else {
            self.simple(now, tx, req, source, 481, "Call/Transaction Does Not Exist");
            return;
        };
        if self
            .calls
            .get(&key)
            .is_none_or(|c| c.state != super::CallState::Connected)
        {
            // RFC 3261 section 14.1: no re-INVITE before the initial one completed.
            self.simple(now, tx, req, source, 491, "Request Pending");
            return;
        }
        if self.session_too_small(now, tx, req, source) {
            return;
        }
        let update_without_offer =
            req.method() == Some(&crate::sip::Method::Update) && req.body().is_empty();
        if update_without_offer {
            let se = self.session_refreshed(now, key, leg, req);
            let tag = self.calls.get(&key).map(|c| c.local_tag.clone());
            let mut b = response_to_source(
                req,
                Some(source.addr),
                200,
                "OK",
                tag.as_deref().map(str::as_bytes),
            )
            .header(b"Contact", self.our_contact().as_bytes());
            if let Some(se) = se {
                b = b.header(b"Session-Expires", se.as_bytes());
                if super::session_timer::supports_timer(req) {
                    b = b.header(b"Require", b"timer");
                }
            }
            self.respond(now, tx, b.finish());
            return;
        }
        match self.answer_reinvite_sdp(key, leg, req.body()) {
            Ok(answer) => {
                let se = self.session_refreshed(now, key, leg, req);
                tracing::debug!(?leg, offered = ?answer.offered, "re-INVITE answered");
                let tag = self.calls.get(&key).map(|c| c.local_tag.clone());
                let b = response_to_source(
                    req,
                    Some(source.addr),
                    200,
                    "OK",
                    tag.as_deref().map(str::as_bytes),
                )
                .copy_headers(req, &HeaderName::RecordRoute)
                .header(b"Contact", self.our_contact().as_bytes())
                .header(b"Allow", super::ALLOW);
                let b = match se {
                    Some(se) if super::session_timer::supports_timer(req) => b
                        .header(b"Session-Expires", se.as_bytes())
                        .header(b"Require", b"timer"),
                    Some(se) => b.header(b"Session-Expires", se.as_bytes()),
                    None => b,
                };
                let b = b
                    .header(b"Content-Type", b"application/sdp")
                    .body(&answer.sdp);
                self.respond(now, tx, b);
                self.hold_after_reinvite(key, answer.leg, answer.offered, req.body());
            }
            Err(e) => {
                let (code, reason) = e.status();
                self.simple(now, tx, req, source, code, reason);
            }
        }
    }

    fn rng_u32(&mut self) -> u32 {
        rand::Rng::random::<u32>(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::SocketAddr;

    use super::super::tests::{CARRIER, Harness, PHONE, reply, sdp, statuses};
    use crate::media::Leg;
    use crate::sip::{HeaderName, Message, Method};

    /// A connected call: caller at CARRIER, agent at PHONE; returns the INVITE sent to the phone.
    pub(in crate::b2bua::core) fn connected(h: &mut Harness, branch: &str) -> Message {
        h.register();
        h.routing();
        let (_, contact) = h.invite(branch);
        let out = h.offer(contact, 99);
        let invite = out[0].1.clone();
        h.send(PHONE, &reply(&invite, "200 OK", &sdp(50000)));
        h.routing();
        invite
    }

    fn with_direction(port: u16, direction: &str) -> String {
        format!("{}a={direction}\r\n", sdp(port))
    }

    fn reinvite_from_caller(branch: &str, call: &str, cseq: u32, body: &str) -> String {
        format!(
            "INVITE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch={branch}\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: {call}\nCSeq: {cseq} INVITE\nContact: <sip:c@{CARRIER}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
            body.len()
        )
    }

    fn ok_body(out: &[(SocketAddr, Message)]) -> String {
        let ok = out
            .iter()
            .find(|(_, m)| m.status() == Some(200))
            .expect("a 200");
        String::from_utf8_lossy(ok.1.body()).into_owned()
    }

    #[test]
    fn caller_hold_is_answered_recvonly_on_our_port_with_a_new_version_and_moves_the_leg() {
        let mut h = Harness::new();
        connected(&mut h, "z9hG4bKri1");
        let out = h.send(
            CARRIER,
            &reinvite_from_caller(
                "z9hG4bKri1b",
                "z9hG4bKri1@carrier",
                2,
                &with_direction(40010, "sendonly"),
            ),
        );
        assert_eq!(statuses(&out), vec![100, 200]);
        let body = ok_body(&out);
        assert!(body.contains("m=audio 30000 RTP/AVP 0"), "{body}");
        assert!(body.contains("a=recvonly"), "{body}");
        let version: Vec<&str> = body
            .lines()
            .find(|l| l.starts_with("o="))
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(version[2], "2", "o= version incremented: {body}");
        let last = *h.core.media.updated.last().unwrap();
        assert_eq!(
            (last.1, last.2),
            (Leg::A, Some("127.0.0.1:40010".parse().unwrap()))
        );

        // Off hold again: sendrecv, version 3.
        let out = h.send(
            CARRIER,
            &reinvite_from_caller("z9hG4bKri1c", "z9hG4bKri1@carrier", 3, &sdp(40010)),
        );
        let body = ok_body(&out);
        assert!(body.contains("a=sendrecv"), "{body}");
        assert!(
            body.contains("IN IP4 127.0.0.1") && body.contains(" 3 IN IP4"),
            "{body}"
        );
    }

    #[test]
    fn agent_inactive_offer_is_answered_inactive_on_the_agent_port() {
        let mut h = Harness::new();
        let invite = connected(&mut h, "z9hG4bKri2");
        let call_id =
            String::from_utf8_lossy(invite.headers_named(&HeaderName::CallId).next().unwrap())
                .into_owned();
        let from = String::from_utf8_lossy(invite.headers_named(&HeaderName::From).next().unwrap())
            .into_owned();
        let body = with_direction(50000, "inactive");
        let out = h.send(
            PHONE,
            &format!(
                "INVITE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKri2p\nMax-Forwards: 70\nFrom: <sip:1001@{PHONE}>;tag=ph\nTo: {from}\nCall-ID: {call_id}\nCSeq: 5 INVITE\nContact: <sip:1001@{PHONE}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{body}",
                body.len()
            ),
        );
        assert_eq!(statuses(&out), vec![100, 200]);
        let body = ok_body(&out);
        assert!(body.contains("m=audio 30002 RTP/AVP 0"), "{body}");
        assert!(body.contains("a=inactive"), "{body}");
        assert!(
            out.iter().all(|(a, _)| a.to_string() == PHONE),
            "the caller sees nothing"
        );
    }

    #[test]
    fn unknown_dialog_gets_481_and_a_foreign_codec_gets_488() {
        let mut h = Harness::new();
        connected(&mut h, "z9hG4bKri3");
        let out = h.send(
            CARRIER,
            &reinvite_from_caller("z9hG4bKri3b", "nosuch@carrier", 2, &sdp(40010)),
        );
        assert_eq!(statuses(&out), vec![100, 481]);
        let g729 = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40010 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let out = h.send(
            CARRIER,
            &reinvite_from_caller("z9hG4bKri3c", "z9hG4bKri3@carrier", 2, g729),
        );
        assert_eq!(statuses(&out), vec![100, 488]);
        let _ = Method::Invite;
    }
}
