//! RFC 3261 §17 transactions driven on both sides with a fake clock and a lossy fake network.
//!
//! A UAC layer and a UAS layer exchange real wire bytes (serialised, then parsed again); the
//! network drops chosen packets, and the tests check when retransmissions happen (timers A, E,
//! G, the 2xx resend), which timeouts fire (B, F, H) and the final states (D, I, J, K, L, M).
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip_gateway::sip::message::{Limits, Message, MessageBuilder, Method, response_to_source};
use sip_gateway::sip::transaction::{
    Event, Peer, TimerConfig, TransactionLayer, TransportKind, TxId, TxState, build_cancel,
    new_branch,
};

const UAC: &str = "127.0.0.1:5070";
const UAS: &str = "127.0.0.1:5060";

fn peer(addr: &str, transport: TransportKind) -> Peer {
    Peer {
        addr: addr.parse::<SocketAddr>().unwrap(),
        transport,
    }
}

/// Loss model: (from_uac, packet index in that direction, bytes) → lost?
type DropRule = Box<dyn FnMut(bool, usize, &Bytes) -> bool>;

/// Both sides, the fake clock, and a record of every packet put on the wire.
struct Net {
    now: Instant,
    start: Instant,
    uac: TransactionLayer,
    uas: TransactionLayer,
    transport: TransportKind,
    drop: DropRule,
    sent: [usize; 2],
    /// (seconds since start, from_uac, first line) of every packet sent.
    wire: Vec<(f64, bool, String)>,
    uac_events: Vec<Event>,
    uas_events: Vec<Event>,
}

impl Net {
    fn new(transport: TransportKind) -> Net {
        let now = Instant::now();
        Net {
            now,
            start: now,
            uac: TransactionLayer::new(TimerConfig::default()),
            uas: TransactionLayer::new(TimerConfig::default()),
            transport,
            drop: Box::new(|_, _, _| false),
            sent: [0, 0],
            wire: Vec::new(),
            uac_events: Vec::new(),
            uas_events: Vec::new(),
        }
    }

    fn secs(&self) -> f64 {
        (self.now - self.start).as_secs_f64()
    }

    /// Moves packets until both sides are quiet at the current time.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.uac.poll_transmit() {
                moved = true;
                self.deliver(true, t.bytes);
            }
            while let Some(t) = self.uas.poll_transmit() {
                moved = true;
                self.deliver(false, t.bytes);
            }
            while let Some(e) = self.uac.poll_event() {
                self.uac_events.push(e);
            }
            while let Some(e) = self.uas.poll_event() {
                self.uas_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver(&mut self, from_uac: bool, bytes: Bytes) {
        let dir = usize::from(!from_uac);
        let idx = self.sent[dir];
        self.sent[dir] += 1;
        let first =
            String::from_utf8_lossy(&bytes[..bytes.iter().position(|c| *c == b'\r').unwrap()])
                .into_owned();
        self.wire.push((self.secs(), from_uac, first));
        if (self.drop)(from_uac, idx, &bytes) {
            return;
        }
        let msg = Message::parse_datagram(bytes, &Limits::default()).unwrap();
        let now = self.now;
        if from_uac {
            self.uas.handle_message(now, msg, peer(UAC, self.transport));
        } else {
            self.uac.handle_message(now, msg, peer(UAS, self.transport));
        }
    }

    /// Advances the fake clock timer by timer until `until` (seconds since start).
    fn run_until(&mut self, until: f64) {
        let end = self.start + Duration::from_secs_f64(until);
        self.settle();
        loop {
            let next = [self.uac.poll_timeout(), self.uas.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.uac.handle_timeout(now);
                    self.uas.handle_timeout(now);
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn send(&mut self, req: Bytes) -> TxId {
        let msg = Message::parse_datagram(req, &Limits::default()).unwrap();
        let now = self.now;
        let id = self
            .uac
            .send_request(now, msg, peer(UAS, self.transport))
            .unwrap();
        self.settle();
        id
    }

    fn respond(&mut self, tx: TxId, code: u16, reason: &str) {
        let req = self.uas.request(tx).unwrap().clone();
        let resp = response_to_source(&req, None, code, reason, Some(b"uas-tag")).finish();
        let now = self.now;
        self.uas.respond(now, tx, resp).unwrap();
        self.settle();
    }

    fn times(&self, from_uac: bool, starts: &str) -> Vec<f64> {
        self.wire
            .iter()
            .filter(|(_, f, l)| *f == from_uac && l.starts_with(starts))
            .map(|(t, _, _)| *t)
            .collect()
    }

    fn server_tx(&self, method: &str) -> TxId {
        self.uas_events
            .iter()
            .find_map(|e| match e {
                Event::Request { tx, request, .. }
                    if request.method().unwrap().as_bytes() == method.as_bytes() =>
                {
                    Some(*tx)
                }
                _ => None,
            })
            .unwrap()
    }

    fn responses(&self, tx: TxId) -> Vec<u16> {
        self.uac_events
            .iter()
            .filter_map(|e| match e {
                Event::Response { tx: t, response } if *t == tx => response.status(),
                _ => None,
            })
            .collect()
    }
}

fn request(method: &str, branch: u64, cseq: u32) -> Bytes {
    let m = Method::from_token(method.as_bytes(), &Bytes::new());
    MessageBuilder::request(&m, b"sip:1001@127.0.0.1")
        .header(
            b"Via",
            format!("SIP/2.0/UDP {UAC};branch={};rport", new_branch(branch)).as_bytes(),
        )
        .header(b"Max-Forwards", b"70")
        .header(b"From", b"<sip:carrier@127.0.0.1>;tag=uac-tag")
        .header(b"To", b"<sip:1001@127.0.0.1>")
        .header(b"Call-ID", b"call-1@127.0.0.1")
        .header(b"CSeq", format!("{cseq} {method}").as_bytes())
        .finish()
}

fn timeouts(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Timeout { .. }))
        .count()
}

#[test]
fn invite_rejected_over_udp_gets_100_ack_and_all_timers_run_out() {
    let mut n = Net::new(TransportKind::Udp);
    let c = n.send(request("INVITE", 1, 1));
    let s = n.server_tx("INVITE");
    // 100 Trying was sent at once by the server transaction.
    assert_eq!(n.responses(c), [100]);
    assert_eq!(n.uac.state(c), Some(TxState::Proceeding));
    n.respond(s, 486, "Busy Here");
    assert_eq!(n.responses(c), [100, 486]);
    // The client transaction generated the ACK; it went to the server transaction.
    let ack = n
        .wire
        .iter()
        .find(|(_, f, l)| *f && l.starts_with("ACK"))
        .unwrap();
    assert_eq!(ack.2, "ACK sip:1001@127.0.0.1 SIP/2.0");
    assert_eq!(n.uas.state(s), Some(TxState::Confirmed));
    assert_eq!(n.uac.state(c), Some(TxState::Completed));
    // Timer I = T4 = 5 s, Timer D = 32 s.
    n.run_until(4.9);
    assert_eq!(n.uas.state(s), Some(TxState::Confirmed));
    n.run_until(5.1);
    assert_eq!(n.uas.state(s), None);
    n.run_until(31.9);
    assert_eq!(n.uac.state(c), Some(TxState::Completed));
    n.run_until(32.1);
    assert_eq!(n.uac.state(c), None);
    assert!(n.uac.is_empty() && n.uas.is_empty());
    // Nothing was retransmitted: one INVITE, one 100, one 486, one ACK.
    assert_eq!(n.wire.len(), 4);
    assert_eq!(timeouts(&n.uac_events) + timeouts(&n.uas_events), 0);
}

#[test]
fn lost_invites_are_retransmitted_with_timer_a_doubling() {
    let mut n = Net::new(TransportKind::Udp);
    n.drop = Box::new(|from_uac, idx, _| from_uac && idx < 3);
    let c = n.send(request("INVITE", 2, 1));
    n.run_until(10.0);
    assert_eq!(n.times(true, "INVITE"), [0.0, 0.5, 1.5, 3.5]);
    // The fourth copy got through: one server transaction, one 100, Timer A stopped.
    assert_eq!(n.uas.len(), 1);
    assert_eq!(n.responses(c), [100]);
    assert_eq!(n.times(false, "SIP/2.0 100"), [3.5]);
}

#[test]
fn timer_b_times_out_an_unanswered_invite_after_64_t1() {
    let mut n = Net::new(TransportKind::Udp);
    n.drop = Box::new(|from_uac, _, _| from_uac);
    let c = n.send(request("INVITE", 3, 1));
    n.run_until(40.0);
    assert_eq!(
        n.times(true, "INVITE"),
        [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    );
    assert_eq!(timeouts(&n.uac_events), 1);
    assert_eq!(n.uac.state(c), None);
}

#[test]
fn a_ringing_invite_outlives_timer_b_and_ends_only_at_timer_c() {
    let mut n = Net::new(TransportKind::Udp);
    let c = n.send(request("INVITE", 30, 1));
    let s = n.server_tx("INVITE");
    n.respond(s, 180, "Ringing");
    assert_eq!(n.uac.state(c), Some(TxState::Proceeding));
    // A phone may ring longer than 64*T1 = 32 s: Timer B applies to Calling only.
    n.run_until(120.0);
    assert_eq!(n.uac.state(c), Some(TxState::Proceeding));
    assert_eq!(timeouts(&n.uac_events), 0);
    // A final answer after two minutes still completes the call.
    n.respond(s, 200, "OK");
    assert_eq!(n.responses(c), [100, 180, 200]);
}

#[test]
fn a_ringing_invite_without_final_answer_times_out_after_timer_c() {
    let mut n = Net::new(TransportKind::Udp);
    let c = n.send(request("INVITE", 31, 1));
    let s = n.server_tx("INVITE");
    n.respond(s, 180, "Ringing");
    n.run_until(180.0);
    assert_eq!(timeouts(&n.uac_events), 0);
    n.run_until(182.0);
    assert_eq!(timeouts(&n.uac_events), 1);
    assert_eq!(n.uac.state(c), None);
}

#[test]
fn timer_e_caps_at_t2_and_timer_f_times_out_a_non_invite() {
    let mut n = Net::new(TransportKind::Udp);
    n.drop = Box::new(|from_uac, _, _| from_uac);
    let c = n.send(request("OPTIONS", 4, 1));
    n.run_until(40.0);
    assert_eq!(
        n.times(true, "OPTIONS"),
        [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert_eq!(timeouts(&n.uac_events), 1);
    assert_eq!(n.uac.state(c), None);
}

#[test]
fn non_invite_completes_and_absorbs_retransmissions() {
    let mut n = Net::new(TransportKind::Udp);
    // The first 200 is lost: the client retransmits, the server resends its 200.
    n.drop = Box::new(|from_uac, idx, _| !from_uac && idx == 0);
    let c = n.send(request("REGISTER", 5, 1));
    let s = n.server_tx("REGISTER");
    n.respond(s, 200, "OK");
    n.run_until(0.6);
    assert_eq!(n.times(true, "REGISTER"), [0.0, 0.5]);
    assert_eq!(n.times(false, "SIP/2.0 200"), [0.0, 0.5]);
    assert_eq!(n.responses(c), [200]);
    // The server saw one request, however many copies arrived.
    assert_eq!(
        n.uas_events
            .iter()
            .filter(|e| matches!(e, Event::Request { .. }))
            .count(),
        1
    );
    // Timer K = T4 on the client, Timer J = 64*T1 on the server.
    n.run_until(5.4);
    assert_eq!(n.uac.state(c), Some(TxState::Completed));
    n.run_until(5.6);
    assert_eq!(n.uac.state(c), None);
    n.run_until(31.9);
    assert_eq!(n.uas.state(s), Some(TxState::Completed));
    n.run_until(32.1);
    assert_eq!(n.uas.state(s), None);
}

#[test]
fn lost_ack_makes_the_server_resend_its_final_response_with_timer_g() {
    let mut n = Net::new(TransportKind::Udp);
    // Lose the first two ACKs (client packets 1 and 2; packet 0 is the INVITE).
    n.drop = Box::new(|from_uac, idx, _| from_uac && (idx == 1 || idx == 2));
    let c = n.send(request("INVITE", 6, 1));
    let s = n.server_tx("INVITE");
    n.respond(s, 480, "Temporarily Unavailable");
    n.run_until(10.0);
    assert_eq!(n.times(false, "SIP/2.0 480"), [0.0, 0.5, 1.5]);
    assert_eq!(n.times(true, "ACK"), [0.0, 0.5, 1.5]);
    // The TU saw the 480 once; the retransmissions were answered inside the transaction.
    assert_eq!(n.responses(c), [100, 480]);
    // ACK arrived at 1.5 s: Confirmed, then Timer I (5 s) ends it.
    assert_eq!(n.uas.state(s), None);
    assert_eq!(timeouts(&n.uas_events), 0);
}

#[test]
fn timer_h_fires_when_the_ack_never_comes() {
    let mut n = Net::new(TransportKind::Udp);
    n.drop = Box::new(|from_uac, idx, _| from_uac && idx >= 1);
    let _c = n.send(request("INVITE", 7, 1));
    let s = n.server_tx("INVITE");
    n.respond(s, 603, "Decline");
    n.run_until(40.0);
    // Timer G doubles up to T2 = 4 s, Timer H ends it at 32 s.
    assert_eq!(
        n.times(false, "SIP/2.0 603"),
        [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert_eq!(timeouts(&n.uas_events), 1);
    assert_eq!(n.uas.state(s), None);
}

#[test]
fn a_2xx_is_resent_until_the_dialog_acks_it_and_the_ack_reaches_the_tu() {
    let mut n = Net::new(TransportKind::Udp);
    // Lose the first 200 (server packet 1; packet 0 is the 100).
    n.drop = Box::new(|from_uac, idx, _| !from_uac && idx == 1);
    let c = n.send(request("INVITE", 8, 1));
    let s = n.server_tx("INVITE");
    n.respond(s, 200, "OK");
    assert_eq!(n.uas.state(s), Some(TxState::Accepted));
    n.run_until(0.6);
    assert_eq!(n.responses(c), [100, 200]);
    assert_eq!(n.uac.state(c), Some(TxState::Accepted));
    // The dialog layer (here: the test) ACKs the 2xx in a new transaction-less request.
    let mut ack = request("ACK", 9, 1).to_vec();
    let ack_s = String::from_utf8(ack.clone()).unwrap().replace(
        "To: <sip:1001@127.0.0.1>",
        "To: <sip:1001@127.0.0.1>;tag=uas-tag",
    );
    ack.clear();
    ack.extend_from_slice(ack_s.as_bytes());
    n.uac
        .send_stateless(peer(UAS, TransportKind::Udp), Bytes::from(ack));
    n.run_until(10.0);
    let acks: Vec<_> = n
        .uas_events
        .iter()
        .filter_map(|e| match e {
            Event::Ack { invite_tx, .. } => Some(*invite_tx),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [Some(s)]);
    // 200 sent at 0 (lost) and 0.5; after the ACK no more copies.
    assert_eq!(n.times(false, "SIP/2.0 200"), [0.0, 0.5]);
    // Timer L (server, from its 2xx at 0 s) and Timer M (client, from the 2xx it got at
    // 0.5 s) are 64*T1.
    n.run_until(32.1);
    assert!(n.uas.is_empty());
    assert_eq!(n.uac.state(c), Some(TxState::Accepted));
    n.run_until(32.6);
    assert!(n.uac.is_empty());
}

#[test]
fn reliable_transport_never_retransmits_and_ends_at_once() {
    let mut n = Net::new(TransportKind::Tcp);
    let c = n.send(request("INVITE", 10, 1));
    let s = n.server_tx("INVITE");
    n.respond(s, 486, "Busy Here");
    n.run_until(0.0);
    // Timers D and I are zero on reliable transports.
    assert_eq!(n.uac.state(c), None);
    assert_eq!(n.uas.state(s), None);
    let r = n.send(request("OPTIONS", 11, 2));
    n.run_until(31.0);
    // No Timer E on TCP: the OPTIONS went once; Timer F still guards it.
    assert_eq!(n.times(true, "OPTIONS"), [0.0]);
    assert_eq!(n.uac.state(r), Some(TxState::Trying));
    n.run_until(32.1);
    assert_eq!(n.uac.state(r), None);
    assert_eq!(timeouts(&n.uac_events), 1);
}

#[test]
fn retransmitted_invite_gets_the_last_provisional_and_cancel_finds_its_invite() {
    let mut n = Net::new(TransportKind::Udp);
    // Lose the 100 so the client retransmits its INVITE.
    n.drop = Box::new(|from_uac, idx, _| !from_uac && idx == 0);
    let c = n.send(request("INVITE", 12, 1));
    n.run_until(0.6);
    assert_eq!(n.times(false, "SIP/2.0 100"), [0.0, 0.5]);
    assert_eq!(
        n.uas_events
            .iter()
            .filter(|e| matches!(e, Event::Request { .. }))
            .count(),
        1
    );
    let s = n.server_tx("INVITE");
    let invite = n.uac.request(c).unwrap().clone();
    let _cancel_tx = n.send(build_cancel(&invite));
    let cancels = n
        .uas_events
        .iter()
        .find_map(|e| match e {
            Event::Request {
                request, cancels, ..
            } if request.method() == Some(&Method::Cancel) => Some(*cancels),
            _ => None,
        })
        .unwrap();
    assert_eq!(cancels, Some(s));
}

#[test]
fn responses_carry_received_and_rport_for_nat() {
    let mut n = Net::new(TransportKind::Udp);
    let _c = n.send(request("INVITE", 13, 1));
    // The 100 was built by the transaction with the source stamped into the top Via.
    let s = n.server_tx("INVITE");
    let req = n.uas.request(s).unwrap().clone();
    let resp = response_to_source(
        &req,
        Some("192.0.2.7:40000".parse().unwrap()),
        180,
        "Ringing",
        Some(b"t"),
    )
    .finish();
    let text = String::from_utf8(resp.to_vec()).unwrap();
    assert!(
        text.contains(&format!(
            "Via: SIP/2.0/UDP {UAC};branch={};rport=40000;received=192.0.2.7\r\n",
            new_branch(13)
        )),
        "{text}"
    );
}
