//! Fuzz target: any bytes through datagram and stream framing, validation, every typed
//! accessor, the stateless error response and re-serialisation. None of it may panic, and a
//! re-serialised accepted message must parse again to the same Request-URI and Call-ID.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sip_gateway::sip::{Limits, Message, Policy, Verdict, validate};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(m) = Message::parse_datagram(Bytes::copy_from_slice(data), &limits) {
        let verdict = validate(&m, &Policy::default());
        let _ = (
            m.vias(),
            m.from(),
            m.to(),
            m.call_id(),
            m.cseq(),
            m.contacts(),
        );
        let _ = (
            m.routes(),
            m.record_routes(),
            m.expires(),
            m.accept(),
            m.content_type(),
        );
        let _ = m.max_forwards();
        match verdict {
            Verdict::Reject(r) => {
                let _ = r.response(&m, b"fz");
            }
            Verdict::Accept => {
                let again = Message::parse_datagram(m.to_bytes(), &limits)
                    .expect("a serialised accepted message parses again");
                assert_eq!(
                    again.request_line().map(|r| r.uri_raw.clone()),
                    m.request_line().map(|r| r.uri_raw.clone())
                );
                assert_eq!(again.call_id().ok(), m.call_id().ok());
            }
            Verdict::Drop(_) => {}
        }
    }
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = Message::parse_stream(&mut buf, &limits) {}
});
