//! Session timers (RFC 4028) on the caller's and the agent's dialog: dead calls are cleared.
//!
//! Negotiation:
//! - caller leg (we are the UAS): an INVITE whose `Session-Expires` is below our `Min-SE`
//!   (90 s, the RFC's floor) gets `422` with `Min-SE`. When the INVITE carries
//!   `Session-Expires`, or says `Supported: timer`, the 200 that bridges the call carries
//!   `Session-Expires: N;refresher=X` (the caller's choice; else `uac` when it supports timers,
//!   which puts the refreshing on the side that asked) and `Require: timer` when the caller
//!   supports it. Without either, no timer (RFC 4028 section 9: we must not impose one on a
//!   UAC that does not know them). A caller answered early (queue media) got its 200 without
//!   the header, so that leg runs without a timer.
//! - agent leg (we are the UAC): our INVITE says `Supported: timer`; when the phone's 200
//!   carries `Session-Expires`, we honour its refresher.
//!
//! Running: a refresh (re-INVITE or UPDATE) received on a leg restarts its timer, and the
//! answer repeats `Session-Expires`. When we are the refresher we send an UPDATE without a body
//! at half the interval (RFC 4028 section 10; UPDATE needs no ACK and no SDP), falling back to
//! a re-INVITE with our current SDP when the peer answers 405/501. When the other side is the
//! refresher and the session expires without a refresh (interval minus min(32 s, interval/3)),
//! or our own refresh fails (408, 481, no answer), the call is dead: both legs get BYE.
//!
//! Timers are deadlines in [`B2bua::poll_timeout`]; a unit test drives expiry with the fake
//! clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use super::{B2bua, CallKey, LegRef, MediaPort, Now, transport_token};
use crate::sip::transaction::{Peer, TxId, new_branch};
use crate::sip::{HeaderName, Message, MessageBuilder, Method, response_to_source};

/// Our Min-SE, seconds (RFC 4028 section 4: at least 90).
pub(super) const MIN_SE: u32 = 90;

/// A leg of a call: `None` the caller, `Some(i)` branch `i`.
type LegKey = (CallKey, Option<usize>);

fn leg_key(key: CallKey, leg: LegRef) -> LegKey {
    match leg {
        LegRef::Caller => (key, None),
        LegRef::Branch(i) => (key, Some(i)),
    }
}

#[derive(Debug)]
struct Timer {
    interval: u32,
    we_refresh: bool,
    /// When the session is dead without a refresh.
    expires_at: Instant,
    /// When we send our refresh (we are the refresher).
    refresh_at: Option<Instant>,
    /// Our refresh in flight: its transaction, and whether it is an INVITE.
    in_flight: Option<(TxId, bool)>,
    /// Our last CSeq in this dialog (agent leg; the caller leg uses the call's counter).
    cseq: u32,
}

impl Timer {
    fn new(now: Instant, interval: u32, we_refresh: bool, cseq: u32) -> Timer {
        let mut t = Timer {
            interval,
            we_refresh,
            expires_at: now,
            refresh_at: None,
            in_flight: None,
            cseq,
        };
        t.restart(now);
        t
    }

    fn restart(&mut self, now: Instant) {
        let secs = u64::from(self.interval);
        self.expires_at = now + Duration::from_secs(secs - (secs / 3).min(32));
        self.refresh_at = self
            .we_refresh
            .then(|| now + Duration::from_secs((secs / 2).max(1)));
    }

    fn next(&self) -> Instant {
        match (self.refresh_at, self.in_flight) {
            (Some(r), None) => r.min(self.expires_at),
            _ => self.expires_at,
        }
    }
}

/// Every running session timer.
#[derive(Debug, Default)]
pub(crate) struct SessionTimers {
    timers: HashMap<LegKey, Timer>,
    by_tx: HashMap<TxId, LegKey>,
}

/// `Session-Expires` of a message: (seconds, refresher is the UAC?).
fn session_expires(msg: &Message) -> Option<(u32, Option<bool>)> {
    let v = msg.headers_named(&HeaderName::SessionExpires).next()?;
    let text = std::str::from_utf8(v).ok()?;
    let mut parts = text.split(';');
    let secs = parts.next()?.trim().parse::<u32>().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().eq_ignore_ascii_case("uac"))
    });
    Some((secs, refresher))
}

/// Whether a request says `Supported: timer` (or requires it).
pub(super) fn supports_timer(msg: &Message) -> bool {
    [HeaderName::Supported, HeaderName::Require]
        .iter()
        .flat_map(|n| msg.headers_named(n).collect::<Vec<_>>())
        .any(|v| {
            v.split(|c| *c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"timer"))
        })
}

fn min_se(msg: &Message) -> Option<u32> {
    let v = msg
        .headers()
        .iter()
        .find(|h| h.name.canonical().eq_ignore_ascii_case(b"Min-SE"))?;
    std::str::from_utf8(&v.value)
        .ok()?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

impl<M: MediaPort> B2bua<M> {
    /// Answers `422` to an INVITE/UPDATE whose `Session-Expires` is below our Min-SE; `true`
    /// when it did (the request is done).
    pub(super) fn session_too_small(
        &mut self,
        now: Now,
        tx: TxId,
        req: &Message,
        source: Peer,
    ) -> bool {
        let Some((secs, _)) = session_expires(req) else {
            return false;
        };
        if secs >= MIN_SE {
            return false;
        }
        let tag = self.token();
        let b = response_to_source(
            req,
            Some(source.addr),
            422,
            "Session Interval Too Small",
            Some(tag.as_bytes()),
        )
        .header(b"Min-SE", MIN_SE.to_string().as_bytes())
        .finish();
        self.respond(now, tx, b);
        true
    }

    /// The `Session-Expires` value for the 200 that answers the caller of call `key`, and the
    /// caller leg's timer started; `None`: no timer on that leg (module docs).
    pub(super) fn session_timer_for_caller(&mut self, now: Now, key: CallKey) -> Option<String> {
        let call = self.calls.get(&key)?;
        let supported = supports_timer(&call.invite);
        let (secs, refresher) = match session_expires(&call.invite) {
            Some((s, r)) => (s.max(MIN_SE).max(min_se(&call.invite).unwrap_or(0)), r),
            None if supported => (1800, None),
            None => return None,
        };
        let uac_refreshes = refresher.unwrap_or(supported) && supported;
        let bye_cseq = call.bye_cseq;
        self.session_timers.timers.insert(
            (key, None),
            Timer::new(now.mono, secs, !uac_refreshes, bye_cseq),
        );
        Some(format!(
            "{secs};refresher={}",
            if uac_refreshes { "uac" } else { "uas" }
        ))
    }

    /// Whether the 200 to the caller must say `Require: timer`.
    pub(super) fn caller_requires_timer(&self, key: CallKey) -> bool {
        self.calls
            .get(&key)
            .is_some_and(|c| supports_timer(&c.invite))
            && self.session_timers.timers.contains_key(&(key, None))
    }

    /// The agent's 2xx on branch `i`: a timer when it carries `Session-Expires`.
    pub(super) fn session_timer_for_agent(
        &mut self,
        now: Now,
        key: CallKey,
        i: usize,
        resp: &Message,
    ) {
        let Some((secs, refresher)) = session_expires(resp) else {
            return;
        };
        let cseq = self
            .calls
            .get(&key)
            .and_then(|c| c.branches.get(i))
            .map_or(1, |b| super::outbound::cseq_of(&b.invite));
        // refresher=uac: we, the agent leg's UAC, refresh.
        let we_refresh = refresher.unwrap_or(false);
        self.session_timers.timers.insert(
            (key, Some(i)),
            Timer::new(now.mono, secs.max(MIN_SE), we_refresh, cseq),
        );
    }

    /// A refresh (re-INVITE, UPDATE) arrived on `leg`: restart its timer. Returns the
    /// `Session-Expires` value for the answer, if the leg has a timer.
    pub(super) fn session_refreshed(
        &mut self,
        now: Now,
        key: CallKey,
        leg: LegRef,
        req: &Message,
    ) -> Option<String> {
        let t = self.session_timers.timers.get_mut(&leg_key(key, leg))?;
        if let Some((secs, refresher)) = session_expires(req) {
            t.interval = secs.max(MIN_SE);
            // The refresher names the UAC of *this* request, i.e. the peer.
            if let Some(uac) = refresher {
                t.we_refresh = !uac;
            }
        }
        t.restart(now.mono);
        Some(format!(
            "{};refresher={}",
            t.interval,
            if t.we_refresh { "uas" } else { "uac" }
        ))
    }

    /// The agent leg's last CSeq (for BYE after our refreshes).
    pub(super) fn session_agent_cseq(&self, key: CallKey, i: usize) -> u32 {
        self.session_timers
            .timers
            .get(&(key, Some(i)))
            .map_or(0, |t| t.cseq)
    }

    /// Forgets the call's timers (hook in `finish`).
    pub(super) fn session_timers_forget(&mut self, key: CallKey) {
        self.session_timers.timers.retain(|k, _| k.0 != key);
        self.session_timers.by_tx.retain(|_, k| k.0 != key);
    }

    pub(super) fn session_timers_poll_timeout(&self) -> Option<Instant> {
        self.session_timers.timers.values().map(Timer::next).min()
    }

    /// Sends due refreshes; clears calls whose session expired.
    pub(super) fn session_timers_timeout(&mut self, now: Now) {
        let due: Vec<(LegKey, bool)> = self
            .session_timers
            .timers
            .iter()
            .filter(|(_, t)| t.next() <= now.mono)
            .map(|(k, t)| (*k, t.expires_at <= now.mono))
            .collect();
        for (k, expired) in due {
            if expired {
                tracing::info!(leg = ?k.1, "session expired without a refresh: clearing the call");
                self.session_timers_forget(k.0);
                self.hang_up(now, k.0, None);
            } else {
                self.send_refresh(now, k, false);
            }
        }
    }

    /// Our refresh on leg `k`: UPDATE, or re-INVITE with our current SDP.
    fn send_refresh(&mut self, now: Now, k: LegKey, invite: bool) {
        let Some(d) = self.dialog_of(k) else {
            self.session_timers.timers.remove(&k);
            return;
        };
        let Some(t) = self.session_timers.timers.get_mut(&k) else {
            return;
        };
        let cseq = match k.1 {
            None => match self.calls.get_mut(&k.0) {
                Some(c) => {
                    c.bye_cseq += 1;
                    c.bye_cseq
                }
                None => return,
            },
            Some(_) => {
                t.cseq += 1;
                t.cseq
            }
        };
        let interval = t.interval;
        let method = if invite {
            Method::Invite
        } else {
            Method::Update
        };
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            transport_token(d.peer.transport),
            self.config.sip_address,
            new_branch(self.rng.random())
        );
        let mut b = MessageBuilder::request(&method, &d.target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70");
        for r in &d.routes {
            b = b.header(b"Route", r);
        }
        b = b
            .header(b"From", &d.local)
            .header(b"To", &d.remote)
            .header(b"Call-ID", &d.call_id)
            .header(b"CSeq", format!("{cseq} {method}").as_bytes())
            .header(b"Contact", self.our_contact().as_bytes())
            .header(b"Supported", b"timer")
            .header(
                b"Session-Expires",
                format!("{interval};refresher=uac").as_bytes(),
            );
        let bytes = if invite {
            b.header(b"Content-Type", b"application/sdp").body(&d.sdp)
        } else {
            b.finish()
        };
        let sent = Message::parse_datagram(bytes, &self.limits)
            .ok()
            .and_then(|m| self.tl.send_request(now.mono, m, d.peer).ok());
        let Some(t) = self.session_timers.timers.get_mut(&k) else {
            return;
        };
        match sent {
            Some(tx) => {
                t.in_flight = Some((tx, invite));
                self.session_timers.by_tx.insert(tx, k);
            }
            None => {
                // Could not even send: try again at the next refresh point.
                t.restart(now.mono);
            }
        }
    }

    /// A response to one of our refreshes; `false` when `tx` is not one.
    pub(super) fn session_refresh_response(&mut self, now: Now, tx: TxId, resp: &Message) -> bool {
        let Some(&k) = self.session_timers.by_tx.get(&tx) else {
            return false;
        };
        let Some(code) = resp.status() else {
            return true;
        };
        if code < 200 {
            return true;
        }
        self.session_timers.by_tx.remove(&tx);
        let was_invite = self
            .session_timers
            .timers
            .get(&k)
            .and_then(|t| t.in_flight)
            .is_some_and(|(_, i)| i);
        if let Some(t) = self.session_timers.timers.get_mut(&k) {
            t.in_flight = None;
        }
        match code {
            200..=299 => {
                if was_invite {
                    self.ack_refresh(k, resp);
                }
                if let Some(t) = self.session_timers.timers.get_mut(&k) {
                    if let Some((secs, _)) = session_expires(resp) {
                        t.interval = secs.max(MIN_SE);
                    }
                    t.restart(now.mono);
                }
            }
            405 | 501 if !was_invite => self.send_refresh(now, k, true),
            422 => {
                if let Some(t) = self.session_timers.timers.get_mut(&k) {
                    t.interval = min_se(resp).unwrap_or(t.interval * 2).clamp(MIN_SE, 86_400);
                }
                self.send_refresh(now, k, was_invite);
            }
            408 | 481 => {
                tracing::info!(code, "session refresh failed: clearing the call");
                self.session_timers_forget(k.0);
                self.hang_up(now, k.0, None);
            }
            _ => {
                // The peer refused this refresh but the dialog lives (491, 500...): try again at
                // the next refresh point; expiry still clears a dead call.
                if let Some(t) = self.session_timers.timers.get_mut(&k) {
                    t.refresh_at = Some(now.mono + Duration::from_secs(2));
                }
            }
        }
        true
    }

    /// Our refresh got no answer; `false` when `tx` is not one.
    pub(super) fn session_refresh_timeout(&mut self, now: Now, tx: TxId) -> bool {
        let Some(k) = self.session_timers.by_tx.remove(&tx) else {
            return false;
        };
        tracing::info!("session refresh unanswered: clearing the call");
        self.session_timers_forget(k.0);
        self.hang_up(now, k.0, None);
        true
    }

    fn ack_refresh(&mut self, k: LegKey, resp: &Message) {
        let Some(d) = self.dialog_of(k) else {
            return;
        };
        let Some(cseq) = resp.cseq().ok().flatten().map(|c| c.seq) else {
            return;
        };
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            transport_token(d.peer.transport),
            self.config.sip_address,
            new_branch(self.rng.random())
        );
        let mut b = MessageBuilder::request(&Method::Ack, &d.target)
            .header(b"Via", via.as_bytes())
            .header(b"Max-Forwards", b"70");
        for r in &d.routes {
            b = b.header(b"Route", r);
        }
        let ack = b
            .header(b"From", &d.local)
            .header(b"To", &d.remote)
            .header(b"Call-ID", &d.call_id)
            .header(b"CSeq", format!("{cseq} ACK").as_bytes())
            .finish();
        self.tl.send_stateless(d.peer, ack);
    }

    /// The dialog of leg `k` as we address requests in it.
    fn dialog_of(&self, k: LegKey) -> Option<Dialog> {
        let call = self.calls.get(&k.0)?;
        match k.1 {
            None => {
                let inv = &call.invite;
                let from = inv
                    .single(&HeaderName::From, "From")
                    .ok()
                    .flatten()?
                    .clone();
                let to = inv.single(&HeaderName::To, "To").ok().flatten()?.clone();
                let mut local = to.to_vec();
                if !local.windows(5).any(|w| w.eq_ignore_ascii_case(b";tag=")) {
                    local.extend_from_slice(b";tag=");
                    local.extend_from_slice(call.local_tag.as_bytes());
                }
                Some(Dialog {
                    target: call.caller_contact.clone(),
                    routes: inv
                        .headers_named(&HeaderName::RecordRoute)
                        .cloned()
                        .collect(),
                    local: Bytes::from(local),
                    remote: from,
                    call_id: call.call_id.clone(),
                    peer: call.source,
                    sdp: call.answer_sdp.clone(),
                })
            }
            Some(i) => {
                let b = call.branches.get(i)?;
                Some(Dialog {
                    target: b.remote_target.clone()?,
                    routes: Vec::new(),
                    local: b
                        .invite
                        .single(&HeaderName::From, "From")
                        .ok()
                        .flatten()?
                        .clone(),
                    remote: b.remote_to.clone()?,
                    call_id: b.call_id.clone(),
                    peer: b.peer,
                    sdp: call
                        .agent_sdp
                        .clone()
                        .unwrap_or_else(|| b.invite.body().clone()),
                })
            }
        }
    }
}

struct Dialog {
    target: Bytes,
    routes: Vec<Bytes>,
    local: Bytes,
    remote: Bytes,
    call_id: Bytes,
    peer: Peer,
    sdp: Bytes,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::SocketAddr;
    use std::time::Duration;

    use acd_core::Input;

    use super::super::tests::{CARRIER, Harness, PHONE, reply, sdp, statuses};
    use crate::sip::{HeaderName, Message, Method};

    fn invite_with(h: &mut Harness, branch: &str, extra: &str) -> Vec<(SocketAddr, Message)> {
        let body = sdp(40000);
        h.send(
            CARRIER,
            &format!(
                "INVITE sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {CARRIER};branch={branch}\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>\nCall-ID: {branch}@carrier\nCSeq: 1 INVITE\nContact: <sip:c@{CARRIER}>\n{extra}Content-Type: application/sdp\nContent-Length: {}\n\n{body}",
                body.len()
            ),
        )
    }

    /// A call connected with these extra INVITE headers; returns the 200 to the caller.
    fn connected(h: &mut Harness, branch: &str, extra: &str) -> Message {
        h.register();
        h.routing();
        invite_with(h, branch, extra);
        let contact = h
            .routing()
            .into_iter()
            .find_map(|i| match i {
                Input::NewContact(n) => Some(n.id),
                _ => None,
            })
            .unwrap();
        let out = h.offer(contact, 77);
        let to_agent = out[0].1.clone();
        assert!(
            to_agent
                .headers_named(&HeaderName::Supported)
                .any(|v| v.as_ref() == b"timer")
        );
        let out = h.send(PHONE, &reply(&to_agent, "200 OK", &sdp(50000)));
        h.routing();
        out.into_iter()
            .find(|(a, m)| a.to_string() == CARRIER && m.status() == Some(200))
            .unwrap()
            .1
    }

    fn advance(h: &mut Harness, secs: u64) -> Vec<(SocketAddr, Message)> {
        h.ms += secs * 1000;
        let now = h.now();
        h.core.handle_timeout(now);
        h.out()
    }

    fn byes(out: &[(SocketAddr, Message)]) -> Vec<String> {
        let mut v: Vec<String> = out
            .iter()
            .filter(|(_, m)| m.method() == Some(&Method::Bye))
            .map(|(a, _)| a.to_string())
            .collect();
        v.sort();
        v
    }

    fn header(m: &Message, n: HeaderName) -> Option<String> {
        m.headers_named(&n)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn too_small_interval_gets_422_with_our_min_se() {
        let mut h = Harness::new();
        let out = invite_with(
            &mut h,
            "z9hG4bKst1",
            "Supported: timer\nSession-Expires: 60\n",
        );
        assert_eq!(statuses(&out), vec![100, 422]);
        let resp = &out[1].1;
        assert!(
            resp.headers()
                .iter()
                .any(|x| x.name.canonical() == b"Min-SE" && x.value.as_ref() == b"90")
        );
        assert_eq!(h.core.active_calls(), 0);
    }

    #[test]
    fn session_expiry_without_refresh_clears_a_dead_call_and_a_refresh_postpones_it() {
        let mut h = Harness::new();
        let ok = connected(
            &mut h,
            "z9hG4bKst2",
            "Supported: timer\nSession-Expires: 120;refresher=uac\n",
        );
        assert_eq!(
            header(&ok, HeaderName::SessionExpires).as_deref(),
            Some("120;refresher=uac")
        );
        assert_eq!(header(&ok, HeaderName::Require).as_deref(), Some("timer"));

        // The caller refreshes at 60 s with an UPDATE: the session lives on.
        assert!(byes(&advance(&mut h, 60)).is_empty());
        let out = h.send(
            CARRIER,
            "UPDATE sip:zentrale@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKst2u\nMax-Forwards: 70\nFrom: <sip:+4930111@carrier>;tag=c\nTo: <sip:100@127.0.0.1>;tag=x\nCall-ID: z9hG4bKst2@carrier\nCSeq: 2 UPDATE\nSupported: timer\nSession-Expires: 120;refresher=uac\nContent-Length: 0\n\n",
        );
        let ok = out.iter().find(|(_, m)| m.status() == Some(200)).unwrap();
        assert!(ok.1.body().is_empty());
        assert_eq!(
            header(&ok.1, HeaderName::SessionExpires).as_deref(),
            Some("120;refresher=uac")
        );
        // 88 s after the refresh (120 - 32) the session is over: BYE both ways.
        assert!(byes(&advance(&mut h, 87)).is_empty());
        let out = advance(&mut h, 1);
        assert_eq!(byes(&out), vec![CARRIER.to_owned(), PHONE.to_owned()]);
        assert!(matches!(h.routing()[..], [Input::ContactEnded { .. }]));
        assert_eq!(h.core.active_calls(), 0);
        assert!(h.core.media.live.is_empty());
    }

    #[test]
    fn as_refresher_we_send_update_at_half_time_and_a_481_ends_the_call() {
        let mut h = Harness::new();
        let ok = connected(&mut h, "z9hG4bKst3", "Session-Expires: 100;refresher=uas\n");
        assert_eq!(
            header(&ok, HeaderName::SessionExpires).as_deref(),
            Some("100;refresher=uas")
        );
        assert!(
            header(&ok, HeaderName::Require).is_none(),
            "caller did not say Supported"
        );
        let out = advance(&mut h, 50);
        let update = out
            .iter()
            .find(|(a, m)| a.to_string() == CARRIER && m.method() == Some(&Method::Update))
            .unwrap()
            .1
            .clone();
        assert_eq!(
            header(&update, HeaderName::CallId).as_deref(),
            Some("z9hG4bKst3@carrier")
        );
        let out = h.send(CARRIER, &reply(&update, "200 OK", ""));
        assert!(byes(&out).is_empty());
        // Refreshed: no expiry at the old deadline (100 - 32 = 68 s after the answer).
        assert!(byes(&advance(&mut h, 20)).is_empty());
        let out = advance(&mut h, 30);
        let update = out
            .iter()
            .find(|(_, m)| m.method() == Some(&Method::Update))
            .unwrap()
            .1
            .clone();
        assert_eq!(
            update.cseq().unwrap().unwrap().seq,
            3,
            "each refresh takes the next CSeq of our side"
        );
        let out = h.send(
            CARRIER,
            &reply(&update, "481 Call/Transaction Does Not Exist", ""),
        );
        assert_eq!(byes(&out), vec![CARRIER.to_owned(), PHONE.to_owned()]);
        assert_eq!(h.core.active_calls(), 0);
        let _ = Duration::ZERO;
    }
}
