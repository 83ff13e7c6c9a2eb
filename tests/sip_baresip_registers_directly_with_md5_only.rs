//! baresip 1.0.0 (Debian's, libre 1.1.0) registering *directly*, without the MD5-only proxy
//! that `common/baresip.rs` puts in front of it in the other baresip tests. zentrale's default
//! 401 carries two challenges (MD5 and SHA-256, RFC 8760); libre aborts on the SHA-256 one
//! ("Register: Function not implemented") instead of answering the MD5 one. An operator with
//! such phones sets `sip.digest_algorithms = ["MD5"]`: this test runs zentrale so and proves the
//! phone registers with digest, and that the challenge offers MD5 alone.
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
fn baresip_registers_directly_when_the_registrar_offers_md5_only() {
    let server = Server::start_with(
        "baresip-direct",
        (48792, 48799),
        "[sip]\ndigest_algorithms = [\"MD5\"]\n",
    );
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
    // The SIP trace (-s) shows the challenge and the digest answer: MD5 only, in the demo
    // tenant's realm.
    let log = phone.log();
    assert!(
        log.contains("realm=\"demo.zentrale\"") && log.contains("algorithm=MD5"),
        "no MD5 challenge in baresip's trace:\n{log}"
    );
    assert!(!log.contains("SHA-256"), "SHA-256 offered:\n{log}");
    assert!(
        log.contains("Authorization: Digest"),
        "baresip never answered the challenge:\n{log}"
    );
}
