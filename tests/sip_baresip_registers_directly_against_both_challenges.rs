//! Interoperability gap, kept as an ignored test until zentrale can fix it: baresip 1.0.0
//! (Debian's, libre 1.1.0) registering *directly* — without the MD5-only proxy that
//! `common/baresip.rs` puts in front of it. zentrale's 401 carries two challenges (MD5 and
//! SHA-256, RFC 8760); libre aborts on the SHA-256 one ("Register: Function not implemented",
//! ENOSYS) instead of answering the MD5 one, so the phone never registers. Run it with
//! `cargo test --test sip_baresip_registers_directly_against_both_challenges -- --ignored`
//! once the registrar's offered algorithms are configurable (or chosen per phone).
//!
//! Ports: RTP 48792-48799 (zentrale; unused), 48780-48789 (baresip); SIP 57060-57061
//! (baresip, TLS on +1), 57065 (unused proxy), 57066 (ctrl_tcp).
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "common/baresip.rs"]
mod baresip;
mod common;

use std::time::Duration;

use baresip::{Baresip, Ports, write_tone_wav};
use common::Server;

#[test]
#[ignore = "known gap: libre 1.1.0 rejects a 401 that also offers SHA-256 (see module docs)"]
fn baresip_registers_when_offered_md5_and_sha256() {
    let server = Server::start("baresip-direct", (48792, 48799));
    let dir = server.dir.join("baresip");
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("tone-600.wav");
    write_tone_wav(&wav, 600.0, 1_000);
    let phone = Baresip::start_account(
        &dir,
        server.sip,
        &format!(
            "<sip:1001@{}>;auth_pass=demo1001;answermode=auto",
            server.sip
        ),
        Ports {
            sip: 57060,
            proxy: 57065,
            ctrl: 57066,
            rtp: (48780, 48789),
        },
        &wav,
    );
    phone.expect_log("[1 binding]", Duration::from_secs(15));
}
