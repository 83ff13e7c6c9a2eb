//! SIP parser micro-benchmark: parse + validate a realistic trunk INVITE (carrier-style headers,
//! Record-Route, P-Asserted-Identity with a tel: URI, an SDP body), and read the fields the
//! transaction and dialog layers read on every message (top Via branch, Call-ID, CSeq, tags).
//!
//! Run: `cargo bench -p sip-gateway --bench sip_parse` (release profile). Prints messages/s over
//! the whole run and p50/p99/p999 per message from an HdrHistogram (each sample times a batch
//! of 64 messages, so the clock read does not dominate, and is divided by 64).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use sip_gateway::sip::{Limits, Message, Policy, Verdict, validate};

const INVITE: &str = "INVITE sip:+4930123456789@192.0.2.10:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-524287-1---8f3c2a1d9e7b6c5a;rport\r\n\
Via: SIP/2.0/UDP 198.51.100.21:5060;received=198.51.100.21;branch=z9hG4bKa1b2c3d4e5\r\n\
Record-Route: <sip:198.51.100.20;lr;ftag=as5e6d7c8b>\r\n\
Max-Forwards: 69\r\n\
From: \"+49 89 1234567\" <sip:+49891234567@carrier.example.net;user=phone>;tag=as5e6d7c8b\r\n\
To: <sip:+4930123456789@192.0.2.10;user=phone>\r\n\
Call-ID: 3c26f8a47b1d4e2f9a0b5c6d7e8f9012@198.51.100.20\r\n\
CSeq: 102 INVITE\r\n\
Contact: <sip:+49891234567@198.51.100.20:5060;transport=udp>\r\n\
P-Asserted-Identity: <tel:+49891234567>\r\n\
Diversion: <sip:+4930999@carrier.example.net>;reason=unconditional;counter=1\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: CarrierSBC 9.1\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 232\r\n\
\r\n\
v=0\r\n\
o=- 1691234567 1691234567 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.30\r\n\
t=0 0\r\n\
m=audio 31000 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

const BATCH: u64 = 64;

fn one(bytes: &Bytes, limits: &Limits, policy: &Policy) -> usize {
    let m = Message::parse_datagram(bytes.clone(), limits).expect("the bench INVITE parses");
    assert!(matches!(validate(&m, policy), Verdict::Accept));
    let via = m.top_via().ok().flatten().expect("has a Via");
    let from = m.from().ok().flatten().expect("has From");
    via.branch().map_or(0, Bytes::len)
        + m.call_id().ok().flatten().map_or(0, |c| c.len())
        + m.cseq().ok().flatten().map_or(0, |c| c.seq as usize)
        + from.tag().map_or(0, Bytes::len)
}

/// This process's user+system CPU time in seconds from /proc (clock ticks of 10 ms), so the
/// throughput can also be stated per CPU-second, which other load on the machine does not skew.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    let bytes = Bytes::from_static(INVITE.as_bytes());
    let limits = Limits::default();
    let policy = Policy::default();
    // Warm-up.
    for _ in 0..20_000 {
        black_box(one(&bytes, &limits, &policy));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("valid bounds");
    let samples = 20_000u64;
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..BATCH {
            black_box(one(black_box(&bytes), &limits, &policy));
        }
        let per_msg = t.elapsed().as_nanos() as u64 / BATCH;
        hist.record(per_msg.max(1)).expect("in range");
    }
    let elapsed = start.elapsed();
    let cpu = cpu_start.zip(cpu_seconds()).map(|(a, b)| b - a);
    let n = samples * BATCH;
    println!(
        "sip_parse: parse + validate + read Via/Call-ID/CSeq/From-tag of a {}-byte trunk INVITE",
        bytes.len()
    );
    println!(
        "messages: {n} in {:.3} s on one thread",
        elapsed.as_secs_f64()
    );
    println!(
        "throughput: {:.0} messages/s",
        n as f64 / elapsed.as_secs_f64()
    );
    if let Some(cpu) = cpu {
        println!(
            "cpu: {cpu:.2} s of CPU time; {:.0} messages per CPU-second",
            n as f64 / cpu
        );
    }
    println!(
        "per message (batch mean of {BATCH}): p50 {} ns, p99 {} ns, p999 {} ns, max {} ns",
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
}
