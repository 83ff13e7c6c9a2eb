//! RFC 4475 (SIP torture messages) and RFC 5118 (IPv6) against the parser and the validator.
//!
//! Every message of the two RFCs is read from tests/data/rfc4475 (see SOURCE.md there); valid
//! ones must be accepted (or get the policy answer the RFC names, e.g. 501 for an unknown
//! method) with the expected fields, invalid ones must get the right 4xx/5xx or be dropped.
//! A proptest then throws random and mutated messages at parser and validator: nothing panics.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sip_gateway::sip::{
    Contacts, HeaderName, Limits, Message, ParseError, Policy, Scheme, Verdict, validate,
};

fn data(name: &str) -> Bytes {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rfc4475")
        .join(name);
    Bytes::from(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Accept,
    Status(u16),
    Drop,
}

fn outcome(name: &str) -> (Option<Message>, Expect) {
    match Message::parse_datagram(data(name), &Limits::default()) {
        Err(_) => (None, Expect::Drop),
        Ok(m) => {
            let v = validate(&m, &Policy::default());
            let e = match &v {
                Verdict::Accept => Expect::Accept,
                Verdict::Reject(r) => Expect::Status(r.status),
                Verdict::Drop(_) => Expect::Drop,
            };
            (Some(m), e)
        }
    }
}

fn parsed(name: &str) -> Message {
    let (m, e) = outcome(name);
    assert_eq!(e, Expect::Accept, "{name} should be accepted");
    m.unwrap()
}

/// The verdict for every file of the index (RFC section in the comment).
const TABLE: &[(&str, Expect)] = &[
    ("wsinv.dat", Expect::Accept),           // 3.1.1.1
    ("intmeth.dat", Expect::Status(501)),    // 3.1.1.2 valid, unknown method at an endpoint
    ("esc01.dat", Expect::Accept),           // 3.1.1.3
    ("escnull.dat", Expect::Accept),         // 3.1.1.4
    ("esc02.dat", Expect::Status(501)),      // 3.1.1.5 valid, unknown method RE%47IST%45R
    ("lwsdisp.dat", Expect::Accept),         // 3.1.1.6
    ("longreq.dat", Expect::Accept),         // 3.1.1.7
    ("dblreq.dat", Expect::Accept),          // 3.1.1.8
    ("semiuri.dat", Expect::Accept),         // 3.1.1.9
    ("transports.dat", Expect::Accept),      // 3.1.1.10
    ("mpart01.dat", Expect::Status(501)),    // 3.1.1.11 valid; MESSAGE is not a method we serve
    ("unreason.dat", Expect::Accept),        // 3.1.1.12
    ("noreason.dat", Expect::Accept),        // 3.1.1.13
    ("badinv01.dat", Expect::Status(400)),   // 3.1.2.1
    ("clerr.dat", Expect::Status(400)),      // 3.1.2.2
    ("ncl.dat", Expect::Status(400)),        // 3.1.2.3
    ("scalar02.dat", Expect::Status(400)),   // 3.1.2.4
    ("scalarlg.dat", Expect::Drop),          // 3.1.2.5 response: discard
    ("quotbal.dat", Expect::Status(400)),    // 3.1.2.6
    ("ltgtruri.dat", Expect::Status(400)),   // 3.1.2.7
    ("lwsruri.dat", Expect::Status(400)),    // 3.1.2.8
    ("lwsstart.dat", Expect::Status(400)),   // 3.1.2.9
    ("trws.dat", Expect::Status(400)),       // 3.1.2.10
    ("escruri.dat", Expect::Status(400)),    // 3.1.2.11
    ("baddate.dat", Expect::Accept),         // 3.1.2.12 Date does not matter to us
    ("regbadct.dat", Expect::Status(400)),   // 3.1.2.13
    ("badaspec.dat", Expect::Status(400)),   // 3.1.2.14
    ("baddn.dat", Expect::Status(400)),      // 3.1.2.15
    ("badvers.dat", Expect::Status(505)),    // 3.1.2.16
    ("mismatch01.dat", Expect::Status(400)), // 3.1.2.17
    ("mismatch02.dat", Expect::Status(501)), // 3.1.2.18
    ("bigcode.dat", Expect::Drop),           // 3.1.2.19 response: drop
    ("badbranch.dat", Expect::Accept),       // 3.2.1 handled by RFC 2543 matching
    ("insuf.dat", Expect::Status(400)),      // 3.3.1
    ("unkscm.dat", Expect::Status(416)),     // 3.3.2
    ("novelsc.dat", Expect::Status(416)),    // 3.3.3
    ("unksm2.dat", Expect::Accept),          // 3.3.4
    ("bext01.dat", Expect::Status(420)),     // 3.3.5
    ("invut.dat", Expect::Status(415)),      // 3.3.6
    ("regaut01.dat", Expect::Accept),        // 3.3.7 (the registrar then answers 401)
    ("multi01.dat", Expect::Status(400)),    // 3.3.8
    ("mcl01.dat", Expect::Status(400)),      // 3.3.9
    ("bcast.dat", Expect::Accept),           // 3.3.10 (transport must not send to broadcast)
    ("zeromf.dat", Expect::Accept),          // 3.3.11 a UAS processes Max-Forwards 0
    ("cparam01.dat", Expect::Accept),        // 3.3.12
    ("cparam02.dat", Expect::Accept),        // 3.3.13
    ("regescrt.dat", Expect::Accept),        // 3.3.14
    ("sdp01.dat", Expect::Status(406)),      // 3.3.15
    ("inv2543.dat", Expect::Accept),         // 3.4.1
    ("rfc5118/wire-crlf/ipv6-good.dat", Expect::Accept),
    ("rfc5118/wire-crlf/ipv6-bad.dat", Expect::Status(400)),
    ("rfc5118/wire-crlf/port-ambiguous.dat", Expect::Accept),
    ("rfc5118/wire-crlf/port-unambiguous.dat", Expect::Accept),
    (
        "rfc5118/wire-crlf/via-received-param-with-delim.dat",
        Expect::Accept,
    ),
    (
        "rfc5118/wire-crlf/via-received-param-no-delim.dat",
        Expect::Accept,
    ),
    ("rfc5118/wire-crlf/ipv6-in-sdp.dat", Expect::Accept),
    ("rfc5118/wire-crlf/mult-ip-in-header.dat", Expect::Accept),
    ("rfc5118/wire-crlf/mult-ip-in-sdp.dat", Expect::Accept),
    ("rfc5118/wire-crlf/ipv4-mapped-ipv6.dat", Expect::Accept),
    (
        "rfc5118/wire-crlf/ipv6-bug-abnf-3-colons.dat",
        Expect::Accept,
    ),
    (
        "rfc5118/wire-crlf/ipv6-correct-abnf-2-colons.dat",
        Expect::Accept,
    ),
];

#[test]
fn every_torture_message_gets_the_expected_verdict() {
    let mut wrong = Vec::new();
    for (name, want) in TABLE {
        let (_, got) = outcome(name);
        if got != *want {
            wrong.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "mismatches:\n{}", wrong.join("\n"));
}

#[test]
fn the_table_covers_every_file_of_the_index() {
    let index = String::from_utf8(data("index.tsv").to_vec()).unwrap();
    for line in index.lines().skip(1) {
        let file = line.split('\t').next().unwrap();
        let wire = file.replace("rfc5118/", "rfc5118/wire-crlf/");
        assert!(
            TABLE.iter().any(|(n, _)| *n == file || *n == wire),
            "{file} missing from the table"
        );
    }
}

#[test]
fn rejections_carry_the_headers_their_status_requires() {
    for (name, header) in [
        ("intmeth.dat", "Allow"),
        ("bext01.dat", "Unsupported"),
        ("invut.dat", "Accept"),
    ] {
        let m = Message::parse_datagram(data(name), &Limits::default()).unwrap();
        let Verdict::Reject(r) = validate(&m, &Policy::default()) else {
            panic!("{name} not rejected")
        };
        let resp = Message::parse_datagram(r.response(&m, b"zt1"), &Limits::default()).unwrap();
        assert_eq!(resp.status(), Some(r.status));
        assert!(
            resp.headers()
                .iter()
                .any(|h| h.raw_name.as_ref() == header.as_bytes()),
            "{name}: {header} missing"
        );
        // The response echoes the request's transaction identifiers byte for byte.
        assert_eq!(resp.call_id().unwrap(), m.call_id().unwrap());
        assert_eq!(resp.cseq().unwrap(), m.cseq().unwrap());
        assert_eq!(
            resp.top_via().unwrap().unwrap().branch(),
            m.top_via().unwrap().unwrap().branch()
        );
        assert_eq!(resp.to().unwrap().unwrap().tag().unwrap().as_ref(), b"zt1");
    }
    let m = Message::parse_datagram(data("bext01.dat"), &Limits::default()).unwrap();
    let Verdict::Reject(r) = validate(&m, &Policy::default()) else {
        panic!()
    };
    assert_eq!(
        r.extra_headers[0].1.as_ref(),
        b"nothingSupportsThis, nothingSupportsThisEither"
    );
}

#[test]
fn a_400_can_be_built_from_a_half_understood_request() {
    // quotbal's To is unparseable; the 400 still copies it verbatim with the other identifiers.
    let m = Message::parse_datagram(data("quotbal.dat"), &Limits::default()).unwrap();
    let Verdict::Reject(r) = validate(&m, &Policy::default()) else {
        panic!()
    };
    let wire = r.response(&m, b"x");
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"), "{text}");
    assert!(
        text.contains("To: \"Mr. J. User <sip:j.user@example.com>\r\n"),
        "{text}"
    );
    assert!(text.contains("Call-ID: quotbal.aksdj\r\n"));
    assert!(text.contains("Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\r\n"));
}

#[test]
fn wsinv_folding_compact_forms_and_escaped_quotes() {
    let m = parsed("wsinv.dat");
    let to = m.to().unwrap().unwrap();
    assert_eq!(to.uri.as_bytes(), b"sip:vivekg@chair-dnrc.example.com");
    assert_eq!(to.tag().unwrap().as_ref(), b"1918181833n");
    let from = m.from().unwrap().unwrap();
    assert_eq!(from.display_name().unwrap(), br#"J Rosenberg \""#);
    assert_eq!(from.tag().unwrap().as_ref(), b"98asjd8");
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    assert_eq!(
        m.call_id().unwrap().unwrap().as_ref(),
        b"wsinv.ndaksdj@192.0.2.1"
    );
    let cseq = m.cseq().unwrap().unwrap();
    assert_eq!((cseq.seq, cseq.method.as_ref()), (9, &b"INVITE"[..]));
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].host.as_ref(), b"192.0.2.2");
    assert_eq!(vias[0].branch().unwrap().as_ref(), b"390skdjuw");
    assert_eq!(vias[1].transport.as_ref(), b"TCP");
    assert_eq!(vias[1].host.as_ref(), b"spindle.example.com");
    assert_eq!(vias[1].branch().unwrap().as_ref(), b"z9hG4bK9ikj8");
    assert_eq!(vias[2].host.as_ref(), b"192.168.255.111");
    assert_eq!(vias[2].branch().unwrap().as_ref(), b"z9hG4bK30239");
    let Some(Contacts::List(c)) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].display_name().unwrap(), br#"Quoted string """#);
    assert_eq!(
        c[0].params.get("newparam").unwrap().unwrap().as_ref(),
        b"newvalue"
    );
    assert!(c[0].params.has("secondparam"));
    assert_eq!(c[0].params.get("q").unwrap().unwrap().as_ref(), b"0.33");
    let routes = m.routes().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].uri.param("lr"), Some(None));
    assert_eq!(
        routes[0].uri.param("unknownwith"),
        Some(Some(&b"value"[..]))
    );
    let nf = m
        .headers()
        .iter()
        .find(|h| h.raw_name.as_ref() == b"NewFangledHeader")
        .unwrap();
    assert_eq!(
        nf.value.as_ref(),
        b"newfangled value continued newfangled value"
    );
    assert_eq!(
        m.headers_named(&HeaderName::Subject)
            .next()
            .unwrap()
            .as_ref(),
        b""
    );
    assert_eq!(m.body().len(), 150);
    assert_eq!(
        m.request_uri().unwrap().unwrap().param("unknownparam"),
        Some(None)
    );
}

#[test]
fn escaped_uris_round_trip_byte_for_byte() {
    let m = parsed("esc01.dat");
    let ruri = m.request_uri().unwrap().unwrap();
    assert_eq!(
        ruri.as_bytes(),
        b"sip:sips%3Auser%40example.com@example.net"
    );
    assert_eq!(
        ruri.user_unescaped().unwrap().as_ref(),
        b"sips:user@example.com"
    );
    assert_eq!(ruri.host(), b"example.net");
    let to = m.to().unwrap().unwrap();
    assert_eq!(to.uri.user_unescaped().unwrap().as_ref(), b"user");
    let from = m.from().unwrap().unwrap();
    assert_eq!(
        from.uri.user_unescaped().unwrap().as_ref(),
        b"I have spaces"
    );
    let Some(Contacts::List(c)) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].uri.as_bytes(),
        b"sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"
    );
    // Re-serialising and re-parsing changes nothing.
    let again = Message::parse_datagram(m.to_bytes(), &Limits::default()).unwrap();
    assert_eq!(
        again.request_uri().unwrap().unwrap().as_bytes(),
        ruri.as_bytes()
    );
    assert_eq!(again.contacts().unwrap(), m.contacts().unwrap());
    assert_eq!(again.body(), m.body());

    let m = parsed("escnull.dat");
    let to = m.to().unwrap().unwrap();
    assert_eq!(to.uri.user_unescaped().unwrap().as_ref(), b"null-\0-null");
    let Some(Contacts::List(c)) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].uri.user_unescaped().unwrap().as_ref(), b"\0\0");
}

#[test]
fn odd_but_valid_messages_yield_their_fields() {
    let m = parsed("semiuri.dat");
    let u = m.request_uri().unwrap().unwrap();
    assert_eq!(u.user().unwrap(), b"user;par=u%40example.net");
    assert_eq!(u.host(), b"example.com");

    let m = parsed("transports.dat");
    let t: Vec<_> = m
        .vias()
        .unwrap()
        .iter()
        .map(|v| v.transport.clone())
        .collect();
    assert_eq!(
        t,
        ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"].map(|s| Bytes::from_static(s.as_bytes()))
    );

    let m = parsed("dblreq.dat");
    assert_eq!(m.method().unwrap().as_bytes(), b"REGISTER");
    assert!(m.body().is_empty());
    assert!(!m.raw().windows(6).any(|w| w == b"INVITE"));

    let m = parsed("lwsdisp.dat");
    assert_eq!(
        m.from().unwrap().unwrap().display_name().unwrap(),
        b"caller"
    );

    let m = parsed("longreq.dat");
    assert!(m.call_id().unwrap().unwrap().starts_with(b"longreq."));
    assert!(m.to().unwrap().unwrap().display_name().unwrap().len() > 80);

    let (m, _) = outcome("mpart01.dat");
    assert_eq!(m.unwrap().body().len(), 553);

    let m = parsed("unreason.dat");
    assert_eq!(m.status(), Some(200));
    assert!(std::str::from_utf8(&m.status_line().unwrap().reason).is_ok());
    let m = parsed("noreason.dat");
    assert_eq!(m.status(), Some(100));
    assert!(m.status_line().unwrap().reason.is_empty());

    let m = parsed("unksm2.dat");
    assert_eq!(m.to().unwrap().unwrap().uri.scheme(), Scheme::Other);

    let m = parsed("cparam01.dat");
    let Some(Contacts::List(c)) = m.contacts().unwrap() else {
        panic!()
    };
    // addr-spec form: `;unknownparam` is a header parameter, not a URI parameter.
    assert!(c[0].params.has("unknownparam"));
    assert_eq!(c[0].uri.param("unknownparam"), None);
    let m = parsed("cparam02.dat");
    let Some(Contacts::List(c)) = m.contacts().unwrap() else {
        panic!()
    };
    assert!(!c[0].params.has("unknownparam"));
    assert_eq!(c[0].uri.param("unknownparam"), Some(None));

    let m = parsed("regescrt.dat");
    let Some(Contacts::List(c)) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].uri.headers().unwrap(),
        b"Route=%3Csip:sip.example.com%3E"
    );

    let m = parsed("inv2543.dat");
    assert_eq!(m.max_forwards().unwrap(), None);
    assert!(!m.top_via().unwrap().unwrap().has_rfc3261_branch());
    let m = parsed("badbranch.dat");
    assert!(!m.top_via().unwrap().unwrap().has_rfc3261_branch());
}

#[test]
fn ipv6_references() {
    let m = parsed("rfc5118/wire-crlf/port-ambiguous.dat");
    let u = m.request_uri().unwrap().unwrap();
    assert_eq!((u.host(), u.port()), (&b"[2001:db8::10:5070]"[..], None));
    let m = parsed("rfc5118/wire-crlf/port-unambiguous.dat");
    let u = m.request_uri().unwrap().unwrap();
    assert_eq!((u.host(), u.port()), (&b"[2001:db8::10]"[..], Some(5070)));
    let m = parsed("rfc5118/wire-crlf/via-received-param-with-delim.dat");
    assert!(
        m.vias()
            .unwrap()
            .iter()
            .any(|v| v.received().is_some_and(|r| r.starts_with(b"[")))
    );
    let m = parsed("rfc5118/wire-crlf/via-received-param-no-delim.dat");
    assert!(
        m.vias()
            .unwrap()
            .iter()
            .any(|v| v.received().is_some_and(|r| r.starts_with(b"2001:")))
    );
    let m = parsed("rfc5118/wire-crlf/mult-ip-in-header.dat");
    assert_eq!(m.top_via().unwrap().unwrap().port, Some(6050));
}

#[test]
fn framing_errors_are_typed() {
    let l = Limits::default();
    assert_eq!(
        Message::parse_datagram(data("bigcode.dat"), &l).unwrap_err(),
        ParseError::BadStatusCode
    );
    assert_eq!(
        Message::parse_datagram(Bytes::from_static(b"\r\n\r\n"), &l).unwrap_err(),
        ParseError::Empty
    );
    let big = Bytes::from(vec![b'a'; 70_000]);
    assert_eq!(
        Message::parse_datagram(big, &l).unwrap_err(),
        ParseError::TooLarge(65536)
    );
    let mut many = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        Message::parse_datagram(Bytes::from(many), &l).unwrap_err(),
        ParseError::TooManyHeaders(128)
    );
    let mut long = b"OPTIONS sip:a@b SIP/2.0\r\nX-Long: ".to_vec();
    long.extend(std::iter::repeat_n(b'v', 9000));
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        Message::parse_datagram(Bytes::from(long), &l).unwrap_err(),
        ParseError::HeaderTooLong(8192)
    );
}

#[test]
fn stream_framing_waits_for_the_body_and_splits_pipelined_messages() {
    let l = Limits::default();
    let one = data("esc01.dat");
    let two = data("wsinv.dat");
    let mut all = BytesMut::new();
    all.extend_from_slice(b"\r\n\r\n"); // keep-alive first
    all.extend_from_slice(&one);
    all.extend_from_slice(&two);
    // Feed byte by byte: every message comes out exactly once, whole.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in all.iter() {
        buf.extend_from_slice(&[*b]);
        while let Some(m) = Message::parse_stream(&mut buf, &l).unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].raw(), &one);
    assert_eq!(got[1].body().len(), 150);
    assert!(buf.is_empty());
    // Negative Content-Length on a stream loses framing: the connection must close.
    let mut ncl = BytesMut::from(&data("ncl.dat")[..]);
    assert_eq!(
        Message::parse_stream(&mut ncl, &l).unwrap_err(),
        ParseError::StreamContentLength
    );
}

fn corpus() -> Vec<Bytes> {
    TABLE.iter().map(|(n, _)| data(n)).collect()
}

fn check_no_panic(bytes: Bytes) {
    let l = Limits::default();
    if let Ok(m) = Message::parse_datagram(bytes.clone(), &l) {
        let v = validate(&m, &Policy::default());
        if let Verdict::Reject(r) = v {
            let _ = r.response(&m, b"t");
        }
        let _ = m.to_bytes();
        let _ = (m.vias(), m.contacts(), m.routes(), m.accept(), m.expires());
    }
    let mut buf = BytesMut::from(&bytes[..]);
    while let Ok(Some(_)) = Message::parse_stream(&mut buf, &l) {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_no_panic(Bytes::from(bytes));
    }

    #[test]
    fn mutated_torture_messages_never_panic(
        which in 0usize..62,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..12),
    ) {
        let c = corpus();
        let mut m = c[which % c.len()].to_vec();
        for (pos, byte, op) in edits {
            if m.is_empty() { break; }
            let p = pos % m.len();
            match op {
                0 => m[p] = byte,
                1 => { m.remove(p); }
                2 => m.insert(p, byte),
                // Splice in SIP-significant characters where they hurt most.
                _ => m.insert(p, { let s = b";:<>\",@%[] \r\n"; s[usize::from(byte) % s.len()] }),
            }
        }
        check_no_panic(Bytes::from(m));
    }
}

#[test]
fn every_accepted_message_survives_serialise_and_parse() {
    let l = Limits::default();
    for (name, want) in TABLE {
        if *want != Expect::Accept {
            continue;
        }
        let m = Message::parse_datagram(data(name), &l).unwrap();
        let again = Message::parse_datagram(m.to_bytes(), &l).unwrap();
        assert_eq!(again.start_line(), m.start_line(), "{name}");
        assert_eq!(again.vias().unwrap(), m.vias().unwrap(), "{name}");
        assert_eq!(again.from().unwrap(), m.from().unwrap(), "{name}");
        assert_eq!(again.to().unwrap(), m.to().unwrap(), "{name}");
        assert_eq!(again.contacts().unwrap(), m.contacts().unwrap(), "{name}");
        assert_eq!(again.body(), m.body(), "{name}");
        assert_eq!(
            validate(&again, &Policy::default()),
            Verdict::Accept,
            "{name}"
        );
    }
}
