//! End to end: callback in queue. The queue's escalation offers a callback after a second;
//! the caller hears "press 1 for a callback" (a 1300 Hz prompt override here, so the test
//! knows when it plays), presses 1 by RFC 4733, hears the confirmation and is hung up by
//! zentrale — and the contact keeps its place: the queue log shows the callback and no
//! abandon, and when an agent logs in the engine reserves it for the callback.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::caller_media::{MediaCaller, classify, put_routing, tone_wav, write_prompt};

const OFFER_PROMPT: f64 = 1300.0;

#[test]
fn pressing_one_ends_the_call_but_the_contact_keeps_waiting() {
    let server = Server::start_prepared("qm-callback", (45600, 45799), "", |data| {
        write_prompt(
            data,
            "en",
            "press_1_callback",
            &tone_wav(OFFER_PROMPT, 1500),
        );
    });
    put_routing(
        &server,
        &[(
            "queues",
            "support",
            r#"{"strategy":"longest_idle","escalation":[{"after_s":1,"action":"offer_callback"}],"media":{"music":"hold_music","language":"en"}}"#,
        )],
    );
    let caller = MediaCaller::call(server.sip, "100", 53040, 53042);
    let mut heard = Vec::new();
    let until = Instant::now() + Duration::from_secs(15);
    while classify(&heard, &[OFFER_PROMPT])
        .iter()
        .filter(|(_, t)| t.is_some())
        .count()
        < 10
    {
        assert!(Instant::now() < until, "the callback offer never played");
        heard.extend(caller.listen(Duration::from_millis(200)));
    }
    caller.rtp_digit('1');
    caller.await_bye(Duration::from_secs(15));

    let log = server.wait_queue_log("the callback request", |log| {
        log.iter().any(|(e, _)| e == "callback")
    });
    assert!(
        !log.iter().any(|(e, _)| e == "abandon"),
        "the contact must not be abandoned: {log:?}"
    );
    // The contact is still in the queue: an agent who logs in is reserved for it (the engine
    // asks the gateway to dial the customer back; the dial-out itself is the trunk side's).
    common::register_from(&server, "1001", 53044, 53046);
    server.wait_queue_log("the agent reserved for the callback", |log| {
        log.iter()
            .any(|(e, a)| e == "offer" && a.as_deref() == Some("1001"))
    });
}
