//! Carrier trunks, sans-IO: the model of a trunk, registration at the carrier, OPTIONS health
//! probing, and the choice of a trunk for an outbound call.
//!
//! # Layout
//! - this file: [`TrunkModel`] (what the binary configures per tenant), [`TrunkSecret`],
//!   [`pick_challenge`] / [`authorize`] (the client side of digest for REGISTER and INVITE);
//! - [`register`]: one registration at one carrier ([`register::Registration`]): REGISTER with
//!   digest, refresh before expiry, exponential back-off on failure;
//! - [`probe`]: OPTIONS health probing ([`probe::Probe`]): up/down after N results in a row.
//!
//! # Design
//! Like the rest of the SIP core these are plain state machines: requests come out as
//! [`crate::sip::Message`]s for the caller (the B2BUA) to send through its transaction layer,
//! responses and transaction time-outs go back in, time is an argument, and every timer is a
//! `poll_timeout` deadline. So a test drives a registration through challenges, refreshes and
//! back-off in microseconds with a fake clock, and the B2BUA owns the only transaction layer
//! (one place for retransmissions, one socket set). A trunk's state survives a model update
//! when its configuration did not change (`b2bua/core/trunks.rs`).

use std::net::SocketAddr;

use crate::sip::auth::{Algorithm, ClientCredentials, answer_challenge, parse_digest};
use crate::sip::transaction::TransportKind;

pub mod probe;
pub mod register;

/// A trunk password. Held in memory only and redacted from `Debug` (the carrier's realm is not
/// known before its first challenge, so unlike an agent's secret it cannot be kept as HA1).
#[derive(Clone, PartialEq, Eq)]
pub struct TrunkSecret(String);

impl TrunkSecret {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> TrunkSecret {
        TrunkSecret(password.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TrunkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrunkSecret(..)")
    }
}

/// Digest credentials at a carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkCredentials {
    /// The user name the carrier gave us.
    pub username: String,
    /// Its password.
    pub password: TrunkSecret,
}

/// One carrier trunk of a tenant, as the binary hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkModel {
    /// The trunk's name (crm-api's key; DIDs refer to it).
    pub name: String,
    /// The carrier's host as configured (written into Request-URIs and To of REGISTER).
    pub host: String,
    /// Addresses the host resolved to, first one used for requests; INVITEs from any of them
    /// are attributed to this trunk.
    pub addresses: Vec<SocketAddr>,
    /// Transport for requests to the carrier.
    pub transport: TransportKind,
    /// Digest credentials (for REGISTER and for challenged INVITEs), if the carrier needs any.
    pub credentials: Option<TrunkCredentials>,
    /// Whether zentrale registers at the carrier.
    pub register: bool,
    /// Concurrent calls allowed on the trunk, both directions (0 = unlimited).
    pub max_channels: u32,
}

impl TrunkModel {
    /// Where requests to the carrier go.
    pub fn peer_address(&self) -> Option<SocketAddr> {
        self.addresses.first().copied()
    }

    /// `sip:<host>[:port]` of the carrier (REGISTER's Request-URI).
    pub fn domain_uri(&self) -> String {
        match self.peer_address() {
            Some(a) if a.port() != 5060 => format!("sip:{}:{}", self.host, a.port()),
            _ => format!("sip:{}", self.host),
        }
    }

    /// `sip:<number>@<host>[:port]`: where an outbound call to `number` is sent.
    pub fn number_uri(&self, number: &str) -> String {
        let user: String = number
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "+-.*#".contains(*c))
            .collect();
        match self.peer_address() {
            Some(a) if a.port() != 5060 => format!("sip:{user}@{}:{}", self.host, a.port()),
            _ => format!("sip:{user}@{}", self.host),
        }
    }
}

/// Of the challenges in a 401/407 (one per `WWW-Authenticate`/`Proxy-Authenticate` field),
/// the one to answer: SHA-256 before MD5 (RFC 8760 section 2.4), unknown algorithms skipped.
pub fn pick_challenge<'a>(challenges: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut best: Option<(&[u8], bool)> = None;
    for c in challenges {
        let Ok(p) = parse_digest(c) else { continue };
        let alg = p.get("algorithm").unwrap_or("MD5");
        let sha = alg.eq_ignore_ascii_case(Algorithm::Sha256.token());
        if !sha && !alg.eq_ignore_ascii_case(Algorithm::Md5.token()) {
            continue;
        }
        if best.is_none_or(|(_, s)| sha && !s) {
            best = Some((c, sha));
        }
    }
    best.map(|(c, _)| c)
}

/// The header line answering a challenge: `(name, value)` with name `Authorization` for a 401
/// and `Proxy-Authorization` for a 407. `None` when we have no credentials or cannot answer.
pub fn authorize(
    status: u16,
    challenges: impl Iterator<Item = impl AsRef<[u8]>>,
    credentials: Option<&TrunkCredentials>,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> Option<(&'static [u8], String)> {
    let creds = credentials?;
    let owned: Vec<Vec<u8>> = challenges.map(|c| c.as_ref().to_vec()).collect();
    let challenge = pick_challenge(owned.iter().map(Vec::as_slice))?;
    let value = answer_challenge(
        challenge,
        &ClientCredentials {
            username: &creds.username,
            password: creds.password.expose(),
        },
        method,
        uri,
        cnonce,
        1,
    )
    .ok()?;
    let name: &'static [u8] = if status == 407 {
        b"Proxy-Authorization"
    } else {
        b"Authorization"
    };
    Some((name, value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sha256_challenge_is_preferred_and_garbage_is_skipped() {
        let md5 = b"Digest realm=\"c\", nonce=\"n1\", qop=\"auth\"".as_slice();
        let sha = b"Digest realm=\"c\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth\"".as_slice();
        let bad = b"Basic realm=\"c\"".as_slice();
        assert_eq!(pick_challenge([md5, bad, sha].into_iter()), Some(sha));
        assert_eq!(pick_challenge([bad, md5].into_iter()), Some(md5));
        assert_eq!(pick_challenge([bad].into_iter()), None);
    }

    #[test]
    fn authorize_names_the_header_by_status_and_needs_credentials() {
        let creds = TrunkCredentials {
            username: "acct".into(),
            password: TrunkSecret::new("pw"),
        };
        let ch = [b"Digest realm=\"c\", nonce=\"n\", qop=\"auth\"".to_vec()];
        let (name, value) =
            authorize(407, ch.iter(), Some(&creds), "INVITE", "sip:1@c", "cn").unwrap();
        assert_eq!(name, b"Proxy-Authorization");
        assert!(value.starts_with("Digest username=\"acct\""), "{value}");
        assert!(authorize(401, ch.iter(), None, "INVITE", "sip:1@c", "cn").is_none());
        assert_eq!(format!("{:?}", creds.password), "TrunkSecret(..)");
    }

    #[test]
    fn uris_carry_the_port_only_when_not_5060() {
        let mut t = TrunkModel {
            name: "t".into(),
            host: "carrier.example".into(),
            addresses: vec!["192.0.2.1:5060".parse().unwrap()],
            transport: TransportKind::Udp,
            credentials: None,
            register: false,
            max_channels: 0,
        };
        assert_eq!(t.domain_uri(), "sip:carrier.example");
        assert_eq!(t.number_uri("+49 30 1234"), "sip:+49301234@carrier.example");
        t.addresses = vec!["192.0.2.1:5080".parse().unwrap()];
        assert_eq!(t.number_uri("100"), "sip:100@carrier.example:5080");
    }
}
