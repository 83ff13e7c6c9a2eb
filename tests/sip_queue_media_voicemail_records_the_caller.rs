//! End to end: voicemail. Queue `support` sends arrivals to voicemail when no agent is logged
//! in; the caller is answered, hears "leave a message" and the beep (a 1000 Hz tone), speaks
//! (a 600 Hz tone here) and hangs up. The message lands in
//! `<data_dir>/voicemail/<tenant>/<contact>.wav` holding the caller's tone (and not the beep).
//! (That the caller's CDR row carries the file as its recording is a unit test in
//! sip-gateway's core/voicemail.rs.)
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Server;
use common::caller_media::{MediaCaller, classify, frame_tone, put_routing};

const BEEP: f64 = 1000.0;
const VOICE: f64 = 600.0;

fn wav_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(wav_files(&p));
            } else if p.extension().is_some_and(|x| x == "wav") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn caller_leaves_a_message_that_is_recorded_to_a_file() {
    let server = Server::start("qm-voicemail", (45800, 45999));
    put_routing(
        &server,
        &[(
            "queues",
            "support",
            r#"{"strategy":"longest_idle","no_agents_action":"voicemail","media":{"language":"en","voicemail_max_s":30}}"#,
        )],
    );
    let caller = MediaCaller::call(server.sip, "100", 53050, 53052);
    // Wait for the beep to start and end.
    let mut heard = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        heard.extend(caller.listen(Duration::from_millis(100)));
        let tones = classify(&heard, &[BEEP]);
        let beeps = tones.iter().filter(|(_, t)| *t == Some(BEEP)).count();
        if beeps >= 10 && tones.last().is_some_and(|(_, t)| t.is_none()) {
            break;
        }
        assert!(
            Instant::now() < until,
            "never heard the beep ({beeps} beep frames)"
        );
    }
    caller.send_tone(VOICE, Duration::from_secs(2));
    caller.bye();

    // The recording thread finishes the file after the call ends: poll for it.
    let dir = server.dir.join("data").join("voicemail");
    let until = Instant::now() + Duration::from_secs(15);
    let samples = loop {
        let files = wav_files(&dir);
        if let Some(f) = files.first()
            && let Ok(bytes) = std::fs::read(f)
            && let Ok(s) = sip_gateway::audio::wav::read_as_8k_mono(std::io::Cursor::new(bytes))
            && s.len() >= 8000
        {
            assert_eq!(files.len(), 1, "{files:?}");
            break s;
        }
        assert!(
            Instant::now() < until,
            "no voicemail file under {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Frame by frame (the file is the jitter buffer's output: 20 ms frames).
    let frames: Vec<Option<f64>> = samples
        .chunks(160)
        .map(|f| frame_tone(f, &[VOICE, BEEP], 0.005))
        .collect();
    let voice = frames.iter().filter(|t| **t == Some(VOICE)).count();
    let beep = frames.iter().filter(|t| **t == Some(BEEP)).count();
    println!(
        "voicemail: {} ms, {voice} frames of the caller's tone, {beep} of the beep",
        samples.len() / 8
    );
    assert!(
        voice >= 75,
        "the message holds at least 1.5 s of the caller's tone: {voice} frames"
    );
    assert_eq!(beep, 0, "the beep is not part of the message");
    server.wait_queue_log("the refusal to voicemail", |log| {
        log.iter().any(|(e, _)| e == "refused")
    });
}
