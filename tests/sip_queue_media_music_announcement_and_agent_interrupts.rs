//! End to end: a caller to a queue with media is answered at once and hears the queue's music,
//! then the position announcement; when an agent answers in the middle of the announcement,
//! the prompt stops and the caller hears the agent.
//!
//! The prompts are pure tones so the test can tell them apart: the queue music is 440 Hz and
//! "you are caller number" 1300 Hz (prompt overrides in the data directory, the way an
//! operator replaces built-in prompts). The caller is a small UA in this test; the agent's
//! phone is registered by SIPp and answered by the test's own UA, which talks 1700 Hz.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use common::caller_media::{MediaCaller, classify, put_routing, tone_wav, write_prompt};
use common::ua::{self, is, recv_sip, respond, sdp, sdp_rtp};

const MUSIC: f64 = 440.0;
const ANNOUNCEMENT: f64 = 1300.0;
const AGENT: f64 = 1700.0;
const CALLER: f64 = 1000.0;

#[test]
fn caller_hears_music_then_position_and_the_agent_interrupts_the_prompt() {
    let server = Server::start_prepared("qm-music", (45000, 45199), "", |data| {
        write_prompt(data, "common", "test_music", &tone_wav(MUSIC, 3000));
        write_prompt(data, "en", "caller_number", &tone_wav(ANNOUNCEMENT, 8000));
    });
    server.wait_for("prompt overrides loaded");
    put_routing(
        &server,
        &[(
            "queues",
            "support",
            r#"{"strategy":"longest_idle","wrap_up_s":0,"announce":{"on_entry":false,"every_s":3},"media":{"music":"test_music","language":"en","announce":"position"}}"#,
        )],
    );

    // No agent is logged in: the caller waits, answered at once.
    let caller = MediaCaller::call(server.sip, "100", 53000, 53002);
    let mut heard = Vec::new();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        heard.extend(caller.listen(Duration::from_millis(200)));
        let tones = classify(&heard, &[MUSIC, ANNOUNCEMENT]);
        if tones
            .iter()
            .filter(|(_, t)| *t == Some(ANNOUNCEMENT))
            .count()
            >= 10
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "no position announcement heard; tones: {:?}",
            tones.iter().map(|(_, t)| *t).collect::<Vec<_>>()
        );
    }
    let tones = classify(&heard, &[MUSIC, ANNOUNCEMENT]);
    let first_announcement = tones
        .iter()
        .position(|(_, t)| *t == Some(ANNOUNCEMENT))
        .unwrap();
    let music_before = tones[..first_announcement]
        .iter()
        .filter(|(_, t)| *t == Some(MUSIC))
        .count();
    assert!(
        music_before >= 50,
        "at least a second of music before the announcement, got {music_before} frames"
    );

    // The agent's phone registers now, mid-announcement; it is offered the call at once.
    let agent_sip = UdpSocket::bind("127.0.0.1:53004").unwrap();
    let agent_rtp = UdpSocket::bind("127.0.0.1:53006").unwrap();
    let agent = thread::spawn(move || {
        let (invite, from) = recv_sip(
            &agent_sip,
            Duration::from_secs(20),
            |m| is(m, "INVITE"),
            "the INVITE to the agent",
        );
        respond(&agent_sip, from, &invite, "180 Ringing", "");
        let answered_at = Instant::now();
        respond(&agent_sip, from, &invite, "200 OK", &sdp(53006));
        recv_sip(
            &agent_sip,
            Duration::from_secs(10),
            |m| is(m, "ACK"),
            "the ACK",
        );
        let heard = ua::talk(
            agent_rtp,
            sdp_rtp(invite.body()),
            AGENT,
            Duration::from_secs(2),
            Arc::new(AtomicBool::new(false)),
        )
        .join()
        .unwrap();
        ua::await_bye(&agent_sip, Duration::from_secs(20));
        (answered_at, heard)
    });
    let caller_talk = ua::talk(
        caller.rtp.try_clone().unwrap(),
        caller.relay,
        CALLER,
        Duration::from_secs(5),
        Arc::new(AtomicBool::new(false)),
    );
    common::register_from(&server, "1001", 53004, 53008);
    let heard_by_caller = caller_talk.join().unwrap();
    caller.bye();
    let (answered_at, heard_by_agent) = agent.join().unwrap();

    let tones = classify(&heard_by_caller, &[MUSIC, ANNOUNCEMENT, AGENT]);
    let first_agent = tones
        .iter()
        .position(|(_, t)| *t == Some(AGENT))
        .expect("the caller heard the agent");
    // The announcement was still playing when the agent answered...
    let announcement_before_answer = tones
        .iter()
        .filter(|(at, t)| *at < answered_at && *t == Some(ANNOUNCEMENT))
        .count();
    assert!(
        announcement_before_answer >= 5,
        "the prompt was playing when the agent answered ({announcement_before_answer} frames)"
    );
    // ...and stopped at once: only what was in flight arrives after the 200, and nothing of
    // the prompt or the music once the agent is heard.
    let prompt_after_answer = tones[..first_agent]
        .iter()
        .filter(|(at, t)| *at >= answered_at && t.is_some_and(|f| f != AGENT))
        .count();
    let after_agent: Vec<f64> = tones[first_agent..]
        .iter()
        .filter_map(|(_, t)| *t)
        .collect();
    println!(
        "agent heard {} ms after its 200; {prompt_after_answer} prompt frames in between",
        tones[first_agent]
            .0
            .saturating_duration_since(answered_at)
            .as_millis()
    );
    assert!(
        prompt_after_answer <= 5,
        "the prompt went on for {prompt_after_answer} frames after the agent answered"
    );
    assert!(
        after_agent.iter().all(|f| *f == AGENT),
        "after the agent: {after_agent:?}"
    );
    assert!(
        after_agent.len() >= 50,
        "a second of the agent at least, got {} frames",
        after_agent.len()
    );
    // And the agent hears the caller, not a prompt.
    let agent_tones = classify(&heard_by_agent, &[CALLER, MUSIC, ANNOUNCEMENT]);
    let from_caller = agent_tones
        .iter()
        .filter(|(_, t)| *t == Some(CALLER))
        .count();
    assert!(from_caller >= 50, "agent heard {from_caller} caller frames");
    assert!(
        agent_tones
            .iter()
            .all(|(_, t)| t.is_none() || *t == Some(CALLER)),
        "the agent heard a prompt"
    );
}
