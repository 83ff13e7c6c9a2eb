//! The registrar with digest: phones register, refresh, add contacts, unregister and lapse;
//! stale nonces are re-challenged; password guessing from one source is cut off. Driven with
//! a fake clock; the phone side computes its answers with the client half of `sip::auth`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip_gateway::sip::auth::{ClientCredentials, DigestServer, answer_challenge, parse_digest};
use sip_gateway::sip::message::{HeaderName, Limits, Message};
use sip_gateway::sip::registrar::{
    RegisterAction, Registrar, RegistrarConfig, RegistrarEvent, register_request,
};
use sip_gateway::sip::transaction::{Peer, TransportKind};
use sip_gateway::sip::{Policy, Verdict, validate};

fn phone(ip: &str) -> Peer {
    Peer {
        addr: format!("{ip}:5062").parse().unwrap(),
        transport: TransportKind::Udp,
    }
}

fn passwords(user: &str) -> Option<String> {
    match user {
        "1001" => Some("demo1001".into()),
        "1002" => Some("demo1002".into()),
        _ => None,
    }
}

fn parse(b: Bytes) -> Message {
    Message::parse_datagram(b, &Limits::default()).unwrap()
}

struct Fixture {
    reg: Registrar,
    t0: Instant,
    wall0: u64,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            reg: Registrar::new(
                RegistrarConfig::default(),
                DigestServer::new("zentrale", b"registrar test key", 300),
            ),
            t0: Instant::now(),
            wall0: 1_800_000_000,
        }
    }

    fn at(&mut self, secs: u64, req: Bytes, from: Peer) -> (u16, Message) {
        let msg = parse(req);
        assert_eq!(validate(&msg, &Policy::default()), Verdict::Accept);
        match self.reg.handle_register(
            self.t0 + Duration::from_secs(secs),
            self.wall0 + secs,
            &msg,
            from,
            passwords,
        ) {
            RegisterAction::Respond { status, bytes } => (status, parse(bytes)),
            RegisterAction::Drop(why) => panic!("dropped: {why}"),
        }
    }

    /// REGISTER, get challenged, answer with `password` using the challenge of `alg_index`
    /// (0 = SHA-256, 1 = MD5). Returns the final status and response.
    #[allow(clippy::too_many_arguments)]
    fn login(
        &mut self,
        secs: u64,
        user: &str,
        password: &str,
        contact: &str,
        expires: u32,
        cseq: u32,
        from: Peer,
        alg_index: usize,
    ) -> (u16, Message) {
        let req = register_request(
            "sip:zentrale",
            user,
            "zentrale",
            contact,
            expires,
            &format!("cid-{user}"),
            cseq,
            &format!("z9hG4bK{cseq}a"),
            None,
        );
        let (status, resp) = self.at(secs, req, from);
        assert_eq!(status, 401);
        let challenges: Vec<&Bytes> = resp.headers_named(&HeaderName::WwwAuthenticate).collect();
        assert_eq!(challenges.len(), 2);
        let creds = ClientCredentials {
            username: user,
            password,
        };
        let auth = answer_challenge(
            challenges[alg_index],
            &creds,
            "REGISTER",
            "sip:zentrale",
            "phone-cnonce",
            1,
        )
        .unwrap();
        let req = register_request(
            "sip:zentrale",
            user,
            "zentrale",
            contact,
            expires,
            &format!("cid-{user}"),
            cseq + 1,
            &format!("z9hG4bK{cseq}b"),
            Some(&auth),
        );
        self.at(secs, req, from)
    }
}

fn contact_count(m: &Message) -> usize {
    m.headers_named(&HeaderName::Contact).count()
}

#[test]
fn a_phone_registers_with_md5_or_sha256_and_its_nat_source_is_kept() {
    let mut f = Fixture::new();
    let (s, resp) = f.login(
        0,
        "1001",
        "demo1001",
        "<sip:1001@192.168.1.20:5060>",
        600,
        1,
        phone("203.0.113.5"),
        1,
    );
    assert_eq!(s, 200);
    assert_eq!(contact_count(&resp), 1);
    let c = resp.headers_named(&HeaderName::Contact).next().unwrap();
    assert_eq!(c.as_ref(), b"<sip:1001@192.168.1.20:5060>;expires=600");
    let b = f.reg.bindings("1001", f.t0);
    assert_eq!(b.len(), 1);
    // The phone is reached where its REGISTER came from, not at its private Contact.
    assert_eq!(b[0].source, phone("203.0.113.5"));
    assert_eq!(
        f.reg.poll_event(),
        Some(RegistrarEvent::Registered {
            aor: "1001".into(),
            contact: Bytes::from_static(b"sip:1001@192.168.1.20:5060")
        })
    );
    // SHA-256 (the first challenge) works the same way.
    let (s, _) = f.login(
        1,
        "1002",
        "demo1002",
        "<sip:1002@192.168.1.21>",
        600,
        1,
        phone("203.0.113.6"),
        0,
    );
    assert_eq!(s, 200);
}

#[test]
fn several_contacts_per_agent_refresh_unregister_and_expiry() {
    let mut f = Fixture::new();
    let p = phone("198.51.100.9");
    assert_eq!(
        f.login(0, "1001", "demo1001", "<sip:1001@10.0.0.2>", 600, 1, p, 1)
            .0,
        200
    );
    let (s, resp) = f.login(
        0,
        "1001",
        "demo1001",
        "<sip:1001@10.0.0.3;transport=tcp>",
        120,
        10,
        p,
        1,
    );
    assert_eq!(s, 200);
    assert_eq!(contact_count(&resp), 2);
    // The 120 s contact lapses first.
    assert_eq!(f.reg.poll_timeout(), Some(f.t0 + Duration::from_secs(120)));
    while f.reg.poll_event().is_some() {}
    f.reg.handle_timeout(f.t0 + Duration::from_secs(121));
    assert_eq!(
        f.reg.poll_event(),
        Some(RegistrarEvent::Expired {
            aor: "1001".into(),
            contact: Bytes::from_static(b"sip:1001@10.0.0.3;transport=tcp")
        })
    );
    assert_eq!(
        f.reg
            .bindings("1001", f.t0 + Duration::from_secs(121))
            .len(),
        1
    );
    // Un-register the other with Expires: 0.
    let (s, resp) = f.login(200, "1001", "demo1001", "<sip:1001@10.0.0.2>", 0, 20, p, 1);
    assert_eq!(s, 200);
    assert_eq!(contact_count(&resp), 0);
    assert!(
        f.reg
            .bindings("1001", f.t0 + Duration::from_secs(200))
            .is_empty()
    );
    assert_eq!(
        f.reg.poll_event(),
        Some(RegistrarEvent::Unregistered {
            aor: "1001".into(),
            contact: Bytes::from_static(b"sip:1001@10.0.0.2")
        })
    );
    // Contact: * with Expires: 0 removes everything.
    assert_eq!(
        f.login(
            300,
            "1001",
            "demo1001",
            "<sip:1001@10.0.0.4>",
            600,
            30,
            p,
            1
        )
        .0,
        200
    );
    let (s, _) = f.login(301, "1001", "demo1001", "*", 0, 40, p, 1);
    assert_eq!(s, 200);
    assert!(
        f.reg
            .bindings("1001", f.t0 + Duration::from_secs(301))
            .is_empty()
    );
}

#[test]
fn too_brief_intervals_get_423_and_long_ones_are_shortened() {
    let mut f = Fixture::new();
    let p = phone("198.51.100.10");
    let (s, resp) = f.login(0, "1001", "demo1001", "<sip:1001@10.0.0.2>", 30, 1, p, 1);
    assert_eq!(s, 423);
    assert_eq!(
        resp.headers_named(&HeaderName::MinExpires)
            .next()
            .unwrap()
            .as_ref(),
        b"60"
    );
    let (s, resp) = f.login(
        0,
        "1001",
        "demo1001",
        "<sip:1001@10.0.0.2>",
        86_400,
        3,
        p,
        1,
    );
    assert_eq!(s, 200);
    assert!(
        resp.headers_named(&HeaderName::Contact)
            .next()
            .unwrap()
            .ends_with(b";expires=3600")
    );
}

#[test]
fn an_expired_nonce_is_rechallenged_with_stale_true() {
    let mut f = Fixture::new();
    let p = phone("198.51.100.11");
    let req = register_request(
        "sip:zentrale",
        "1001",
        "zentrale",
        "<sip:1001@10.0.0.2>",
        600,
        "cid",
        1,
        "z9hG4bK1",
        None,
    );
    let (_, resp) = f.at(0, req, p);
    let ch = resp
        .headers_named(&HeaderName::WwwAuthenticate)
        .nth(1)
        .unwrap()
        .clone();
    let creds = ClientCredentials {
        username: "1001",
        password: "demo1001",
    };
    let auth = answer_challenge(&ch, &creds, "REGISTER", "sip:zentrale", "cn", 1).unwrap();
    // Answered 400 s later; nonces live 300 s.
    let req = register_request(
        "sip:zentrale",
        "1001",
        "zentrale",
        "<sip:1001@10.0.0.2>",
        600,
        "cid",
        2,
        "z9hG4bK2",
        Some(&auth),
    );
    let (s, resp) = f.at(400, req, p);
    assert_eq!(s, 401);
    let fresh = resp
        .headers_named(&HeaderName::WwwAuthenticate)
        .next()
        .unwrap();
    assert_eq!(parse_digest(fresh).unwrap().get("stale"), Some("true"));
    // A stale nonce is not a failed guess: the phone can go on.
    assert_eq!(
        f.login(401, "1001", "demo1001", "<sip:1001@10.0.0.2>", 600, 3, p, 1)
            .0,
        200
    );
}

#[test]
fn password_guessing_from_one_source_is_cut_off_and_released_later() {
    let mut f = Fixture::new();
    let attacker = phone("192.0.2.66");
    for i in 0..5 {
        assert_eq!(
            f.login(
                i,
                "1001",
                "guess",
                "<sip:1001@10.0.0.9>",
                600,
                10 * i as u32 + 1,
                attacker,
                1
            )
            .0,
            401
        );
    }
    let req = register_request(
        "sip:zentrale",
        "1001",
        "zentrale",
        "<sip:1001@10.0.0.9>",
        600,
        "x",
        99,
        "z9hG4bK99",
        None,
    );
    let msg = parse(req.clone());
    let t = f.t0 + Duration::from_secs(6);
    assert!(matches!(
        f.reg
            .handle_register(t, f.wall0 + 6, &msg, attacker, passwords),
        RegisterAction::Drop(_)
    ));
    // The real phone elsewhere is not affected.
    assert_eq!(
        f.login(
            6,
            "1001",
            "demo1001",
            "<sip:1001@10.0.0.2>",
            600,
            100,
            phone("198.51.100.12"),
            1
        )
        .0,
        200
    );
    // After the 60 s window the source is heard again.
    f.reg.handle_timeout(f.t0 + Duration::from_secs(70));
    assert_eq!(f.at(70, req, attacker).0, 401);
}

#[test]
fn unknown_auth_scheme_and_wrong_user_are_refused() {
    let mut f = Fixture::new();
    // RFC 4475 §3.3.7 regaut01: an unknown scheme gets a Digest challenge.
    let raw = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475/regaut01.dat"),
    )
    .unwrap();
    let (s, resp) = f.at(0, Bytes::from(raw), phone("192.0.2.253"));
    assert_eq!(s, 401);
    assert!(
        resp.headers_named(&HeaderName::WwwAuthenticate)
            .next()
            .unwrap()
            .starts_with(b"Digest ")
    );
    // 1002's valid credentials cannot register 1001's AOR.
    let p = phone("198.51.100.13");
    let req = register_request(
        "sip:zentrale",
        "1001",
        "zentrale",
        "<sip:1001@10.0.0.2>",
        600,
        "c",
        1,
        "z9hG4bKw1",
        None,
    );
    let (_, resp) = f.at(0, req, p);
    let ch = resp
        .headers_named(&HeaderName::WwwAuthenticate)
        .next()
        .unwrap()
        .clone();
    let auth = answer_challenge(
        &ch,
        &ClientCredentials {
            username: "1002",
            password: "demo1002",
        },
        "REGISTER",
        "sip:zentrale",
        "c",
        1,
    )
    .unwrap();
    let req = register_request(
        "sip:zentrale",
        "1001",
        "zentrale",
        "<sip:1001@10.0.0.2>",
        600,
        "c",
        2,
        "z9hG4bKw2",
        Some(&auth),
    );
    assert_eq!(f.at(0, req, p).0, 403);
}

#[test]
fn keepalives_are_due_per_binding_source_when_configured() {
    let mut f = Fixture::new();
    f.reg = Registrar::new(
        RegistrarConfig {
            keepalive_interval: Some(Duration::from_secs(25)),
            ..RegistrarConfig::default()
        },
        DigestServer::new("zentrale", b"registrar test key", 300),
    );
    let p = phone("203.0.113.40");
    assert_eq!(
        f.login(
            0,
            "1001",
            "demo1001",
            "<sip:1001@192.168.0.5>",
            120,
            1,
            p,
            1
        )
        .0,
        200
    );
    assert_eq!(f.reg.poll_timeout(), Some(f.t0 + Duration::from_secs(25)));
    f.reg.handle_timeout(f.t0 + Duration::from_secs(24));
    assert_eq!(f.reg.poll_keepalive(), None);
    f.reg.handle_timeout(f.t0 + Duration::from_secs(25));
    assert_eq!(f.reg.poll_keepalive(), Some(p));
    assert_eq!(f.reg.poll_keepalive(), None);
    assert_eq!(f.reg.poll_timeout(), Some(f.t0 + Duration::from_secs(50)));
    // After expiry no more keep-alives: the binding is gone.
    f.reg.handle_timeout(f.t0 + Duration::from_secs(121));
    while f.reg.poll_keepalive().is_some() {}
    assert_eq!(f.reg.poll_timeout(), None);
    // The ping is what the parser treats as a keep-alive.
    assert_eq!(
        Message::parse_datagram(
            Bytes::from_static(sip_gateway::sip::registrar::KEEPALIVE_PING),
            &Limits::default()
        )
        .unwrap_err(),
        sip_gateway::sip::ParseError::Empty
    );
}
