//! End to end: the RFC 4475 torture messages (and RFC 5118's IPv6 set), malformed datagrams,
//! random bytes and oversized messages are sent to the running server over UDP. Valid requests
//! are answered, invalid ones get a 4xx/5xx or are dropped (never a 2xx), nothing crashes, and
//! afterwards the server still answers OPTIONS and a TCP connection still works.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;

fn data_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-gateway/tests/data/rfc4475")
}

/// Sends `bytes` and collects the status codes that come back within `wait`.
fn exchange(sock: &UdpSocket, to: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u16> {
    sock.send_to(bytes, to).unwrap();
    let mut codes = Vec::new();
    let until = Instant::now() + wait;
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < until {
        sock.set_read_timeout(Some(
            until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let text = &buf[..n];
                if text.starts_with(b"SIP/2.0 ")
                    && n >= 11
                    && let Ok(code) = std::str::from_utf8(&text[8..11]).unwrap_or("0").parse()
                {
                    codes.push(code);
                }
            }
            Err(_) => break,
        }
    }
    codes
}

fn options(to: SocketAddr, from: SocketAddr, n: u32) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKprobe{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{from}>;tag=p{n}\r\nTo: <sip:{to}>\r\nCall-ID: probe{n}@test\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn torture_and_garbage_are_answered_or_dropped_and_serving_continues() {
    let mut server = Server::start_with(
        "torture",
        (41400, 41599),
        "[[sip.listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:0\"\n",
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    let to = server.sip;
    assert!(
        exchange(
            &sock,
            to,
            options(to, me, 1).as_bytes(),
            Duration::from_secs(2)
        )
        .contains(&200)
    );

    let index = std::fs::read_to_string(data_dir().join("index.tsv")).unwrap();
    let mut answered_valid = 0;
    let mut valid_requests = 0;
    for line in index.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, verdict) = (cols[0], cols[4]);
        let path = if file.starts_with("rfc5118/") {
            data_dir().join(file.replace("rfc5118/", "rfc5118/wire-crlf/"))
        } else {
            data_dir().join(file)
        };
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let is_request = !bytes.starts_with(b"SIP/");
        let codes = exchange(&sock, to, &bytes, Duration::from_millis(300));
        let valid = verdict.starts_with("valid") && !verdict.contains("invalid");
        if !valid {
            assert!(
                !codes.iter().any(|c| (200..300).contains(c)),
                "{file}: invalid message got {codes:?}"
            );
        } else if is_request {
            valid_requests += 1;
            if !codes.is_empty() {
                answered_valid += 1;
            }
            assert!(
                !codes.contains(&400),
                "{file}: valid request got 400 ({codes:?})"
            );
        }
    }
    assert!(valid_requests >= 20);
    assert_eq!(
        answered_valid, valid_requests,
        "every valid request gets an answer"
    );

    // Garbage: random bytes, a truncated INVITE, a header bomb, an oversized datagram.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for len in [1usize, 7, 64, 512, 1400, 9000] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sock.send_to(&junk, to).unwrap();
    }
    sock.send_to(b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP", to)
        .unwrap();
    let mut bomb =
        format!("INVITE sip:100@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbomb\r\n");
    for i in 0..400 {
        bomb.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    bomb.push_str("\r\n");
    sock.send_to(bomb.as_bytes(), to).unwrap();
    let mut big = options(to, me, 99).into_bytes();
    big.truncate(big.len() - 4);
    big.extend_from_slice(b"\r\nX-Big: ");
    big.resize(65_000, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    sock.send_to(&big, to).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    assert!(server.alive(), "the server died");
    assert!(
        exchange(
            &sock,
            to,
            options(to, me, 2).as_bytes(),
            Duration::from_secs(2)
        )
        .contains(&200),
        "no 200 to OPTIONS after the torture run"
    );

    // TCP: OPTIONS framed by Content-Length gets 200; a stream that loses framing is closed.
    let tcp_line = server.wait_for("SIP          Tcp ");
    let tcp: SocketAddr = tcp_line.rsplit(' ').next().unwrap().parse().unwrap();
    let mut stream = TcpStream::connect(tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let local = stream.local_addr().unwrap();
    let probe = options(tcp, local, 3).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream.write_all(probe.as_bytes()).unwrap();
    let mut buf = [0u8; 2048];
    let n = stream.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream
        .write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n")
        .unwrap();
    let closed = matches!(stream.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "a stream with broken framing must be closed");
    assert!(server.alive());
}
