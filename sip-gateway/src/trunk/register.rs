//! Registration at a carrier (RFC 3261 section 10, as a UAC), sans-IO.
//!
//! One [`Registration`] per trunk with `register = true`. It produces REGISTER requests for the
//! caller to send through its transaction layer and consumes their responses:
//!
//! - `401`/`407` → the same REGISTER again with CSeq + 1 and an `Authorization` /
//!   `Proxy-Authorization` answering the challenge (SHA-256 preferred, qop=auth). A second
//!   challenge in a row is a failure unless it says `stale=true` (RFC 7616 section 3.3);
//! - `423 Interval Too Brief` → again at once with the carrier's `Min-Expires`;
//! - `2xx` → registered for the granted expiry (our Contact's `expires` parameter, else the
//!   `Expires` header, else what we asked for); the refresh is due at half of it, but never
//!   later than `margin` before it lapses;
//! - anything else (`403`, `5xx`, a transaction time-out) → back-off: the next attempt after
//!   `backoff_initial × 2^(failures-1)`, capped at `backoff_max`, so a misconfigured trunk does
//!   not hammer the carrier and a carrier that comes back is retried within `backoff_max`.
//!
//! The state is queried with [`Registration::status`] (the B2BUA logs every change and exposes
//! the statuses of all trunks).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::auth::parse_digest;
use crate::sip::transaction::new_branch;
use crate::sip::{Contacts, HeaderName, Limits, Message, MessageBuilder, Method};

use super::{TrunkModel, authorize};

/// Timings of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// Expiry we ask for, seconds.
    pub expires: u32,
    /// Refresh at least this long before the binding lapses.
    pub margin: Duration,
    /// First back-off after a failure.
    pub backoff_initial: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            expires: 3600,
            margin: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationStatus {
    /// Not yet tried.
    Idle,
    /// A REGISTER is on its way (first attempt, refresh or challenge answer).
    Registering,
    /// The carrier accepted us.
    Registered {
        /// Granted expiry, seconds.
        expires: u32,
        /// When the binding lapses.
        until: Instant,
    },
    /// The last attempt failed; the next one is scheduled.
    Failed {
        /// The carrier's status (`408` for no answer).
        status: u16,
        /// Failures in a row.
        failures: u32,
        /// When the next attempt is made.
        retry_at: Instant,
    },
}

/// One trunk's registration; see the module docs.
#[derive(Debug)]
pub struct Registration {
    trunk: TrunkModel,
    local: SocketAddr,
    config: RegistrationConfig,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// When the next REGISTER is due (None while one is in flight).
    next_at: Option<Instant>,
    in_flight: bool,
    /// The REGISTER in flight already answered a challenge.
    answered_challenge: bool,
    expires: u32,
    failures: u32,
    status: RegistrationStatus,
    limits: Limits,
}

impl Registration {
    /// A registration of `trunk` with our address `local` (Via, Contact); the first REGISTER
    /// is due at `now`. `token` makes Call-ID and tag unique (random from the caller).
    pub fn new(
        trunk: TrunkModel,
        local: SocketAddr,
        config: RegistrationConfig,
        token: u64,
        now: Instant,
    ) -> Registration {
        Registration {
            call_id: format!("reg-{token:016x}@zentrale"),
            from_tag: format!("{:08x}", token as u32),
            trunk,
            local,
            expires: config.expires,
            config,
            cseq: 0,
            next_at: Some(now),
            in_flight: false,
            answered_challenge: false,
            failures: 0,
            status: RegistrationStatus::Idle,
            limits: Limits::default(),
        }
    }

    /// The trunk registered.
    pub fn trunk(&self) -> &TrunkModel {
        &self.trunk
    }

    /// Where it stands.
    pub fn status(&self) -> &RegistrationStatus {
        &self.status
    }

    /// When [`Self::handle_timeout`] must run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight { None } else { self.next_at }
    }

    /// Starts the next REGISTER when it is due; `random` feeds the branch.
    pub fn handle_timeout(&mut self, now: Instant, random: u64) -> Option<Message> {
        match self.next_at {
            Some(at) if at <= now && !self.in_flight => {}
            _ => return None,
        }
        self.answered_challenge = false;
        let msg = self.build(random, None)?;
        self.in_flight = true;
        self.next_at = None;
        if !matches!(self.status, RegistrationStatus::Registered { .. }) {
            self.status = RegistrationStatus::Registering;
        }
        Some(msg)
    }

    /// A response to our REGISTER; may return the next request to send (challenge answer,
    /// 423 retry). `random` feeds branch and cnonce.
    pub fn handle_response(
        &mut self,
        now: Instant,
        resp: &Message,
        random: u64,
    ) -> Option<Message> {
        let code = resp.status()?;
        if code < 200 || !self.in_flight {
            return None;
        }
        self.in_flight = false;
        match code {
            200..=299 => {
                let granted = granted_expiry(resp, self.local).unwrap_or(self.expires);
                if granted == 0 {
                    // The carrier dropped our binding at once: treat like a failure.
                    self.fail(now, code);
                    return None;
                }
                let lifetime = Duration::from_secs(u64::from(granted));
                let refresh = (lifetime / 2).min(lifetime.saturating_sub(self.config.margin));
                let refresh = refresh.max(Duration::from_secs(1));
                self.failures = 0;
                self.next_at = Some(now + refresh);
                let was = matches!(self.status, RegistrationStatus::Registered { .. });
                self.status = RegistrationStatus::Registered {
                    expires: granted,
                    until: now + lifetime,
                };
                if !was {
                    tracing::info!(trunk = %self.trunk.name, granted, "registered at the carrier");
                }
                None
            }
            401 | 407 => {
                let name = if code == 401 {
                    HeaderName::WwwAuthenticate
                } else {
                    HeaderName::ProxyAuthenticate
                };
                let stale = resp.headers_named(&name).any(|c| {
                    parse_digest(c)
                        .ok()
                        .and_then(|p| p.get("stale").map(|s| s.eq_ignore_ascii_case("true")))
                        .unwrap_or(false)
                });
                if self.answered_challenge && !stale {
                    tracing::warn!(trunk = %self.trunk.name, "carrier refused our credentials");
                    self.fail(now, code);
                    return None;
                }
                let uri = self.trunk.domain_uri();
                let cnonce = format!("{random:016x}");
                let Some(auth) = authorize(
                    code,
                    resp.headers_named(&name),
                    self.trunk.credentials.as_ref(),
                    "REGISTER",
                    &uri,
                    &cnonce,
                ) else {
                    tracing::warn!(trunk = %self.trunk.name, "cannot answer the carrier's challenge (no credentials or unsupported digest)");
                    self.fail(now, code);
                    return None;
                };
                self.answered_challenge = true;
                let msg = self.build(random.rotate_left(17), Some(auth))?;
                self.in_flight = true;
                Some(msg)
            }
            423 => {
                let min = resp
                    .single(&HeaderName::MinExpires, "Min-Expires")
                    .ok()
                    .flatten()
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok());
                match min {
                    Some(m) if m > self.expires && m <= 86_400 => {
                        self.expires = m;
                        let msg = self.build(random, None)?;
                        self.in_flight = true;
                        Some(msg)
                    }
                    _ => {
                        self.fail(now, code);
                        None
                    }
                }
            }
            _ => {
                self.fail(now, code);
                None
            }
        }
    }

    /// The REGISTER got no final response (transaction time-out) or could not be sent.
    pub fn handle_failure(&mut self, now: Instant) {
        if self.in_flight {
            self.in_flight = false;
            self.fail(now, 408);
        }
    }

    /// A REGISTER with `Expires: 0` removing our binding (shutdown, trunk removed).
    pub fn unregister(&mut self, random: u64) -> Option<Message> {
        self.expires = 0;
        self.next_at = None;
        self.in_flight = false;
        self.status = RegistrationStatus::Idle;
        self.build(random, None)
    }

    fn fail(&mut self, now: Instant, status: u16) {
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.saturating_sub(1).min(16);
        let backoff = self
            .config
            .backoff_initial
            .saturating_mul(1u32 << shift)
            .min(self.config.backoff_max);
        let retry_at = now + backoff;
        self.next_at = Some(retry_at);
        tracing::warn!(trunk = %self.trunk.name, status, failures = self.failures, ?backoff, "registration at the carrier failed");
        self.status = RegistrationStatus::Failed {
            status,
            failures: self.failures,
            retry_at,
        };
    }

    fn build(&mut self, random: u64, auth: Option<(&'static [u8], String)>) -> Option<Message> {
        let peer = self.trunk.peer_address()?;
        let _ = peer;
        self.cseq += 1;
        let user = self
            .trunk
            .credentials
            .as_ref()
            .map_or("zentrale", |c| c.username.as_str())
            .to_owned();
        let transport = match self.trunk.transport {
            crate::sip::transaction::TransportKind::Tcp => "TCP",
            crate::sip::transaction::TransportKind::Tls => "TLS",
            _ => "UDP",
        };
        let aor = format!("<sip:{user}@{}>", self.trunk.host);
        let uri = self.trunk.domain_uri();
        let mut b = MessageBuilder::request(&Method::Register, uri.as_bytes())
            .header(
                b"Via",
                format!(
                    "SIP/2.0/{transport} {};branch={};rport",
                    self.local,
                    new_branch(random)
                )
                .as_bytes(),
            )
            .header(b"Max-Forwards", b"70")
            .header(b"From", format!("{aor};tag={}", self.from_tag).as_bytes())
            .header(b"To", aor.as_bytes())
            .header(b"Call-ID", self.call_id.as_bytes())
            .header(b"CSeq", format!("{} REGISTER", self.cseq).as_bytes())
            .header(
                b"Contact",
                format!("<sip:{user}@{}>", self.local).as_bytes(),
            )
            .header(b"Expires", self.expires.to_string().as_bytes());
        if let Some((name, value)) = auth {
            b = b.header(name, value.as_bytes());
        }
        let bytes = b.header(b"User-Agent", b"zentrale").finish();
        match Message::parse_datagram(bytes, &self.limits) {
            Ok(m) => Some(m),
            Err(e) => {
                // Only a host or user name our own parser refuses gets here (validated by crm-api).
                tracing::warn!(trunk = %self.trunk.name, "cannot build a REGISTER: {e}");
                None
            }
        }
    }
}

/// The expiry the registrar granted our contact: its `expires` parameter, else `Expires`.
fn granted_expiry(resp: &Message, local: SocketAddr) -> Option<u32> {
    let ours = local.to_string();
    if let Ok(Some(Contacts::List(list))) = resp.contacts() {
        let mine = list
            .iter()
            .find(|c| String::from_utf8_lossy(c.uri.raw()).contains(&ours))
            .or(list.first());
        if let Some(e) = mine
            .and_then(|c| c.params.get("expires").flatten())
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        {
            return Some(e);
        }
    }
    resp.expires().ok().flatten()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sip::auth::{DigestServer, parse_digest};
    use crate::sip::transaction::TransportKind;
    use crate::trunk::{TrunkCredentials, TrunkSecret};

    fn trunk() -> TrunkModel {
        TrunkModel {
            name: "carrier1".into(),
            host: "127.0.0.1".into(),
            addresses: vec!["127.0.0.1:5080".parse().unwrap()],
            transport: TransportKind::Udp,
            credentials: Some(TrunkCredentials {
                username: "acct".into(),
                password: TrunkSecret::new("secret"),
            }),
            register: true,
            max_channels: 0,
        }
    }

    fn reply(req: &Message, status: &str, extra: &str) -> Message {
        let mut s = format!("SIP/2.0 {status}\r\n");
        for n in [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            let v = req.headers_named(&n).next().unwrap();
            s.push_str(&format!(
                "{}: {}\r\n",
                String::from_utf8_lossy(n.canonical()),
                String::from_utf8_lossy(v)
            ));
        }
        s.push_str(extra);
        s.push_str("Content-Length: 0\r\n\r\n");
        Message::parse_datagram(bytes::Bytes::from(s), &Limits::default()).unwrap()
    }

    fn header(m: &Message, name: &str) -> Option<String> {
        m.headers()
            .iter()
            .find(|h| h.name.canonical().eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    }

    #[test]
    fn challenge_answered_then_refreshed_at_half_the_granted_expiry() {
        let t0 = Instant::now();
        let local = "127.0.0.1:5060".parse().unwrap();
        let mut r = Registration::new(trunk(), local, RegistrationConfig::default(), 1, t0);
        assert_eq!(r.poll_timeout(), Some(t0));
        let first = r.handle_timeout(t0, 11).unwrap();
        assert_eq!(header(&first, "CSeq").as_deref(), Some("1 REGISTER"));
        assert!(header(&first, "Authorization").is_none());
        assert_eq!(r.poll_timeout(), None, "nothing due while in flight");

        let server = DigestServer::new("carrier", b"k", 300);
        let [sha, md5] = server.challenges(1000, false);
        let challenge = reply(
            &first,
            "401 Unauthorized",
            &format!("WWW-Authenticate: {md5}\r\nWWW-Authenticate: {sha}\r\n"),
        );
        let second = r.handle_response(t0, &challenge, 12).unwrap();
        assert_eq!(header(&second, "CSeq").as_deref(), Some("2 REGISTER"));
        assert_eq!(header(&second, "Call-ID"), header(&first, "Call-ID"));
        let auth = header(&second, "Authorization").unwrap();
        let p = parse_digest(auth.as_bytes()).unwrap();
        assert_eq!(p.get("algorithm"), Some("SHA-256"));
        assert_eq!(p.get("username"), Some("acct"));
        assert_eq!(p.get("uri"), Some("sip:127.0.0.1:5080"));
        server
            .verify(1000, "REGISTER", &p, "secret")
            .expect("the carrier accepts our answer");

        let ok = reply(
            &second,
            "200 OK",
            "Contact: <sip:acct@127.0.0.1:5060>;expires=120\r\n",
        );
        assert!(r.handle_response(t0, &ok, 13).is_none());
        assert!(matches!(
            r.status(),
            RegistrationStatus::Registered { expires: 120, .. }
        ));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert!(r.handle_timeout(t0 + Duration::from_secs(59), 14).is_none());
        let refresh = r.handle_timeout(t0 + Duration::from_secs(60), 15).unwrap();
        assert_eq!(header(&refresh, "CSeq").as_deref(), Some("3 REGISTER"));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap_and_success_resets() {
        let t0 = Instant::now();
        let config = RegistrationConfig {
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(30),
            ..RegistrationConfig::default()
        };
        let mut r = Registration::new(trunk(), "127.0.0.1:5060".parse().unwrap(), config, 2, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for (i, status) in [
            "403 Forbidden",
            "503 Service Unavailable",
            "",
            "500 Oops",
            "",
        ]
        .iter()
        .enumerate()
        {
            let req = r.handle_timeout(now, i as u64).unwrap();
            if status.is_empty() {
                r.handle_failure(now);
            } else {
                assert!(
                    r.handle_response(now, &reply(&req, status, ""), 0)
                        .is_none()
                );
            }
            let next = r.poll_timeout().unwrap();
            waits.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(waits, vec![5, 10, 20, 30, 30]);
        assert!(matches!(
            r.status(),
            RegistrationStatus::Failed {
                status: 408,
                failures: 5,
                ..
            }
        ));
        let req = r.handle_timeout(now, 9).unwrap();
        r.handle_response(now, &reply(&req, "200 OK", "Expires: 3600\r\n"), 0);
        assert!(matches!(
            r.status(),
            RegistrationStatus::Registered { expires: 3600, .. }
        ));
        assert_eq!(r.poll_timeout(), Some(now + Duration::from_secs(1800)));
    }

    #[test]
    fn a_second_challenge_is_a_failure_unless_stale_and_423_raises_the_expiry() {
        let t0 = Instant::now();
        let mut r = Registration::new(
            trunk(),
            "127.0.0.1:5060".parse().unwrap(),
            RegistrationConfig::default(),
            3,
            t0,
        );
        let ch = "WWW-Authenticate: Digest realm=\"c\", nonce=\"n\", qop=\"auth\"\r\n";
        let req = r.handle_timeout(t0, 1).unwrap();
        let req = r
            .handle_response(t0, &reply(&req, "401 Unauthorized", ch), 2)
            .unwrap();
        let stale =
            "WWW-Authenticate: Digest realm=\"c\", nonce=\"n2\", qop=\"auth\", stale=true\r\n";
        let req = r
            .handle_response(t0, &reply(&req, "401 Unauthorized", stale), 3)
            .expect("stale nonce: answer again");
        assert!(
            r.handle_response(t0, &reply(&req, "401 Unauthorized", ch), 4)
                .is_none()
        );
        assert!(matches!(
            r.status(),
            RegistrationStatus::Failed { status: 401, .. }
        ));

        let mut r = Registration::new(
            trunk(),
            "127.0.0.1:5060".parse().unwrap(),
            RegistrationConfig {
                expires: 60,
                ..RegistrationConfig::default()
            },
            4,
            t0,
        );
        let req = r.handle_timeout(t0, 1).unwrap();
        let again = r
            .handle_response(
                t0,
                &reply(&req, "423 Interval Too Brief", "Min-Expires: 600\r\n"),
                2,
            )
            .unwrap();
        assert_eq!(header(&again, "Expires").as_deref(), Some("600"));
    }

    #[test]
    fn no_credentials_means_a_challenge_cannot_be_answered() {
        let t0 = Instant::now();
        let mut t = trunk();
        t.credentials = None;
        let mut r = Registration::new(
            t,
            "127.0.0.1:5060".parse().unwrap(),
            RegistrationConfig::default(),
            5,
            t0,
        );
        let req = r.handle_timeout(t0, 1).unwrap();
        let ch = "WWW-Authenticate: Digest realm=\"c\", nonce=\"n\"\r\n";
        assert!(
            r.handle_response(t0, &reply(&req, "401 Unauthorized", ch), 2)
                .is_none()
        );
        assert!(matches!(r.status(), RegistrationStatus::Failed { .. }));
    }
}
