//! End to end: an admin uploads a 16 kHz WAV of a pure 700 Hz tone as the tenant's prompt
//! `my_music` over the API, sets the demo queue's music to it over the routing API, and a
//! caller to the queue hears 700 Hz — proving the upload, its conversion to 8 kHz (the
//! Goertzel detector at the far end finds 700 Hz only if the resampling kept the pitch) and
//! that the gateway applied the new prompt without a restart; after a DELETE the next caller
//! no longer hears it. The caller is a plain RTP
//! socket (tests/common/caller_media.rs); every wait is bounded.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use common::caller_media::{MediaCaller, classify, dump_log, put_routing};

const MUSIC: f64 = 700.0;

/// A 16 kHz mono 16-bit PCM WAV of `freq`, `ms` long.
fn wav_16k(freq: f64, ms: u32) -> Vec<u8> {
    let rate = 16_000u32;
    let samples: Vec<i16> = (0..rate * ms / 1000)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            (10_000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect();
    let data = (samples.len() * 2) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

/// PUTs a WAV body; returns (status, body).
fn put_wav(addr: &str, path: &str, token: &str, wav: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\n\r\n",
        wav.len()
    )
    .unwrap();
    s.write_all(wav).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn uploaded_16khz_music_is_heard_by_the_next_caller_without_restart() {
    let server = Server::start("prompt-upload", (48800, 48999));
    let token = server.admin_token();
    let models_before = server.count_lines("SIP model updated");

    let (status, body) = put_wav(
        &server.http,
        "/api/v1/prompts/en/my_music",
        &token,
        &wav_16k(MUSIC, 3000),
    );
    assert_eq!(status, 201, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["sample_rate"], 16_000, "{info}");
    assert_eq!(info["duration_ms"], 3000, "{info}");
    server.wait_for("tenant prompts changed");
    // The gateway swapped in the model with the new prompt set.
    server.wait_for_more("SIP model updated", models_before);
    // Stored under the tenant's directory, no temporary file left behind.
    let tenants = server.dir.join("data/prompts/tenants");
    let files: Vec<_> = walk(&tenants);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with("en/my_music.wav"), "{files:?}");

    put_routing(
        &server,
        &[(
            "queues",
            "support",
            r#"{"strategy":"longest_idle","wrap_up_s":0,"media":{"music":"my_music","language":"en"}}"#,
        )],
    );

    // No agent: the caller is answered at once and waits with the uploaded music.
    let caller = MediaCaller::call(server.sip, "100", 58000, 58002);
    let mut heard = Vec::new();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        heard.extend(caller.listen(Duration::from_millis(200)));
        let music = classify(&heard, &[MUSIC, 440.0, 1000.0])
            .iter()
            .filter(|(_, t)| *t == Some(MUSIC))
            .count();
        if music >= 50 {
            break;
        }
        if Instant::now() >= until {
            dump_log(&server, "prompt");
            panic!(
                "the uploaded music was not heard: {music} frames of 700 Hz in {} frames",
                heard.len()
            );
        }
    }
    caller.bye();

    // Deleted while running: the next caller no longer hears it (no operator or built-in
    // prompt is called `my_music`, so the queue falls back to the greeting-less silence).
    let before = server.count_lines("tenant prompts changed");
    let models_before = server.count_lines("SIP model updated");
    let (status, body) = common::http(
        &server.http,
        "DELETE",
        "/api/v1/prompts/en/my_music",
        Some(&token),
        "",
    );
    assert_eq!(status, 204, "{body}");
    server.wait_for_more("tenant prompts changed", before);
    server.wait_for_more("SIP model updated", models_before);
    assert!(walk(&tenants).is_empty(), "the file is gone");
    let caller = MediaCaller::call(server.sip, "100", 58004, 58006);
    let heard = caller.listen(Duration::from_secs(2));
    let music = classify(&heard, &[MUSIC, 440.0, 1000.0])
        .iter()
        .filter(|(_, t)| *t == Some(MUSIC))
        .count();
    assert_eq!(music, 0, "the deleted upload is not played");
    caller.bye();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
