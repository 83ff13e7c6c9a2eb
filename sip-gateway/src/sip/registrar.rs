//! The registrar for agents' desk phones (RFC 3261 §10.3), sans-IO.
//!
//! [`Registrar::handle_register`] takes a validated REGISTER, the source it came from and the
//! time, and returns the response to send (or a reason to drop it). It authenticates with
//! digest ([`super::auth::DigestServer`]: MD5 and SHA-256, stale nonces), keeps several contacts
//! per address-of-record, each with its own expiry, the source address and transport it
//! registered from (a phone behind NAT is reached there, not at its private Contact), and
//! removes bindings on `Expires: 0`, `Contact: *` or expiry ([`Registrar::handle_timeout`]).
//! Failed authentications are counted per source IP; a source over the limit is dropped
//! without an answer until its window passes, so password guessing costs the guesser time
//! and costs us no hashing.
//!
//! Two clocks come in as arguments: `now: Instant` for expiry, and `wall_secs` (seconds of a
//! clock shared by all nodes) for the nonces, which must survive a restart.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::auth::{Algorithm, AuthError, DigestHa1, DigestServer, parse_digest};
use super::header::Contacts;
use super::message::{HeaderName, Message, MessageBuilder, response_to_source};
use super::transaction::Peer;

/// Registrar settings.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Shortest registration accepted (shorter gets 423 with Min-Expires).
    pub min_expires: u32,
    /// Longest registration granted (longer requests are shortened).
    pub max_expires: u32,
    /// Used when the REGISTER names no expiry.
    pub default_expires: u32,
    /// Most contacts one AOR may hold (desk phone, softphone, mobile...).
    pub max_contacts_per_aor: usize,
    /// Failed authentications allowed per source IP within `failure_window`.
    pub max_auth_failures: u32,
    /// The window for counting failures; a blocked source is released when it passes.
    pub failure_window: Duration,
    /// Digest algorithms offered, one challenge each, in this order (RFC 8760 §2.4: clients
    /// take the first they support; some simply take the first).
    pub algorithms: Vec<Algorithm>,
    /// When set, every binding asks for a keep-alive to its source this often, so the NAT
    /// binding in front of a phone stays open (drain them with [`Registrar::poll_keepalive`]
    /// and send [`KEEPALIVE_PING`]). Off by default.
    pub keepalive_interval: Option<Duration>,
}

/// The keep-alive payload: an empty line pair, which SIP parsers skip (RFC 5626 §3.5.1 uses
/// it on streams; on UDP it still refreshes the NAT mapping) and ours reports as
/// [`super::message::ParseError::Empty`].
pub const KEEPALIVE_PING: &[u8] = b"\r\n\r\n";

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts_per_aor: 10,
            max_auth_failures: 5,
            failure_window: Duration::from_secs(60),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            keepalive_interval: None,
        }
    }
}

/// One registered contact of an AOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as the phone sent it.
    pub contact: Bytes,
    /// When it lapses.
    pub expires_at: Instant,
    /// Where the REGISTER came from: requests to this phone go here (NAT).
    pub source: Peer,
    /// Call-ID of the registering REGISTER (RFC 3261 §10.3 step 7 ordering).
    pub call_id: Bytes,
    /// CSeq of the registering REGISTER.
    pub cseq: u32,
    /// When the next NAT keep-alive to `source` is due (with keep-alives configured).
    pub next_keepalive: Option<Instant>,
}

/// Changes the B2BUA and acd-core want to know about (a phone coming and going).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrarEvent {
    /// A new contact for an AOR.
    Registered {
        /// The AOR's user (the agent's extension).
        aor: String,
        /// The contact URI.
        contact: Bytes,
    },
    /// A contact was removed by its phone.
    Unregistered {
        /// The AOR's user.
        aor: String,
        /// The contact URI.
        contact: Bytes,
    },
    /// A contact lapsed without refresh.
    Expired {
        /// The AOR's user.
        aor: String,
        /// The contact URI.
        contact: Bytes,
    },
}

/// What to do with a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterAction {
    /// Send this response to the source.
    Respond {
        /// Status code (for logs and tests).
        status: u16,
        /// The wire bytes.
        bytes: Bytes,
    },
    /// Send nothing (the source is rate-limited); log the reason.
    Drop(&'static str),
}

#[derive(Debug, Default)]
struct Failures {
    times: VecDeque<Instant>,
}

/// The registrar; see the module docs.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    digest: DigestServer,
    bindings: HashMap<String, Vec<Binding>>,
    failures: HashMap<IpAddr, Failures>,
    events: VecDeque<RegistrarEvent>,
    keepalives: VecDeque<Peer>,
    to_tag: Bytes,
}

impl Registrar {
    /// A registrar authenticating against `digest`'s realm.
    pub fn new(config: RegistrarConfig, digest: DigestServer) -> Registrar {
        Registrar {
            config,
            digest,
            bindings: HashMap::new(),
            failures: HashMap::new(),
            events: VecDeque::new(),
            keepalives: VecDeque::new(),
            to_tag: Bytes::from_static(b"zreg"),
        }
    }

    /// Current bindings of an AOR (by user part), not expired at `now`.
    pub fn bindings(&self, aor: &str, now: Instant) -> Vec<&Binding> {
        self.bindings
            .get(aor)
            .map(|v| v.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default()
    }

    /// Next change for the TU.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RegistrarEvent> {
        self.events.pop_front()
    }

    /// The next binding expiry.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bindings
            .values()
            .flat_map(|v| {
                v.iter()
                    .flat_map(|b| [Some(b.expires_at), b.next_keepalive])
            })
            .flatten()
            .min()
    }

    /// Next source to send a [`KEEPALIVE_PING`] to (queued by [`Self::handle_timeout`]).
    #[must_use]
    pub fn poll_keepalive(&mut self) -> Option<Peer> {
        self.keepalives.pop_front()
    }

    /// Removes lapsed bindings and forgets old failure counts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let events = &mut self.events;
        if let Some(every) = self.config.keepalive_interval {
            for b in self.bindings.values_mut().flatten() {
                if b.next_keepalive.is_some_and(|t| t <= now) && b.expires_at > now {
                    self.keepalives.push_back(b.source);
                    b.next_keepalive = Some(now + every);
                }
            }
        }
        self.bindings.retain(|aor, list| {
            list.retain(|b| {
                let alive = b.expires_at > now;
                if !alive {
                    events.push_back(RegistrarEvent::Expired {
                        aor: aor.clone(),
                        contact: b.contact.clone(),
                    });
                }
                alive
            });
            !list.is_empty()
        });
        let window = self.config.failure_window;
        self.failures.retain(|_, f| {
            while f
                .times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                f.times.pop_front();
            }
            !f.times.is_empty()
        });
    }

    fn blocked(&mut self, ip: IpAddr, now: Instant) -> bool {
        let window = self.config.failure_window;
        match self.failures.get_mut(&ip) {
            Some(f) => {
                while f
                    .times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= window)
                {
                    f.times.pop_front();
                }
                f.times.len() >= self.config.max_auth_failures as usize
            }
            None => false,
        }
    }

    fn fail(&mut self, ip: IpAddr, now: Instant) {
        self.failures.entry(ip).or_default().times.push_back(now);
    }

    fn reply(
        &self,
        req: &Message,
        source: Peer,
        status: u16,
        reason: &str,
        extra: &[(&[u8], Vec<u8>)],
    ) -> RegisterAction {
        let mut b = response_to_source(req, Some(source.addr), status, reason, Some(&self.to_tag));
        for (n, v) in extra {
            b = b.header(n, v);
        }
        RegisterAction::Respond {
            status,
            bytes: b.finish(),
        }
    }

    fn challenge(
        &self,
        req: &Message,
        source: Peer,
        realm: &str,
        wall_secs: u64,
        stale: bool,
    ) -> RegisterAction {
        let headers: Vec<(&[u8], Vec<u8>)> = self
            .config
            .algorithms
            .iter()
            .map(|a| {
                let v = self
                    .digest
                    .challenge_in(realm, wall_secs, *a, stale)
                    .into_bytes();
                (&b"WWW-Authenticate"[..], v)
            })
            .collect();
        self.reply(req, source, 401, "Unauthorized", &headers)
    }

    /// Handles a REGISTER that passed [`super::validate`]. `password_of` returns the SIP
    /// password of a user (the agent's extension), `None` for unknown users; every user is in
    /// the [`DigestServer`]'s own realm. Stored credentials use [`Self::handle_register_ha1`].
    pub fn handle_register(
        &mut self,
        now: Instant,
        wall_secs: u64,
        req: &Message,
        source: Peer,
        password_of: impl Fn(&str) -> Option<String>,
    ) -> RegisterAction {
        let realm = self.digest.realm().to_owned();
        self.handle_register_ha1(now, wall_secs, req, source, |user| {
            password_of(user).map(|p| DigestHa1::from_password(user, &realm, &p))
        })
    }

    /// Handles a REGISTER that passed [`super::validate`], verifying against stored HA1.
    /// `credentials_of` returns a user's HA1 material and realm (`None` for unknown users).
    /// The challenge names the realm of the AOR's user (the tenant that owns the extension), or
    /// the [`DigestServer`]'s realm for unknown users, so a phone learns nothing from the
    /// challenge that it could not learn by trying.
    pub fn handle_register_ha1(
        &mut self,
        now: Instant,
        wall_secs: u64,
        req: &Message,
        source: Peer,
        credentials_of: impl Fn(&str) -> Option<DigestHa1>,
    ) -> RegisterAction {
        let ip = source.addr.ip();
        if self.blocked(ip, now) {
            return RegisterAction::Drop("too many failed authentications from this source");
        }
        // The AOR is the To URI's user part.
        let Some(aor) = req.to().ok().flatten().and_then(|t| {
            t.uri
                .user_unescaped()
                .map(|u| String::from_utf8_lossy(&u).into_owned())
        }) else {
            return self.reply(req, source, 404, "Not Found", &[]);
        };
        let realm = credentials_of(&aor)
            .filter(DigestHa1::is_well_formed)
            .map_or_else(|| self.digest.realm().to_owned(), |c| c.realm);
        let Some(auth) = req.headers_named(&HeaderName::Authorization).next() else {
            return self.challenge(req, source, &realm, wall_secs, false);
        };
        let creds = match parse_digest(auth) {
            Ok(c) => c,
            // An unknown scheme (RFC 4475 §3.3.7) or garbage: offer Digest.
            Err(_) => return self.challenge(req, source, &realm, wall_secs, false),
        };
        let Some(username) = DigestServer::username(&creds).map(str::to_string) else {
            return self.challenge(req, source, &realm, wall_secs, false);
        };
        let Some(ha1) = credentials_of(&username).filter(DigestHa1::is_well_formed) else {
            self.fail(ip, now);
            return self.challenge(req, source, &realm, wall_secs, false);
        };
        match self.digest.verify_ha1(wall_secs, "REGISTER", &creds, &ha1) {
            Ok(_) => {}
            Err(AuthError::Stale) => return self.challenge(req, source, &realm, wall_secs, true),
            Err(_) => {
                self.fail(ip, now);
                return self.challenge(req, source, &realm, wall_secs, false);
            }
        }
        if username != aor {
            return self.reply(req, source, 403, "Forbidden", &[]);
        }
        let (Ok(Some(call_id)), Ok(Some(cseq))) = (req.call_id(), req.cseq()) else {
            return self.reply(req, source, 400, "Bad Request", &[]);
        };
        let header_expires = req.expires().ok().flatten();
        match req.contacts() {
            Ok(None) => {}
            Ok(Some(Contacts::Star)) => {
                if header_expires != Some(0) {
                    return self.reply(req, source, 400, "Bad Request", &[]);
                }
                for b in self.bindings.remove(&aor).unwrap_or_default() {
                    self.events.push_back(RegistrarEvent::Unregistered {
                        aor: aor.clone(),
                        contact: b.contact,
                    });
                }
            }
            Ok(Some(Contacts::List(list))) => {
                // Check everything before changing anything (RFC 3261 §10.3 is all-or-nothing).
                let mut plan = Vec::with_capacity(list.len());
                for c in &list {
                    let e = c
                        .params
                        .get("expires")
                        .flatten()
                        .map(|v| {
                            super::header::parse_decimal(v)
                                .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX))
                        })
                        .or(header_expires)
                        .unwrap_or(self.config.default_expires);
                    if e != 0 && e < self.config.min_expires {
                        let min = self.config.min_expires.to_string().into_bytes();
                        return self.reply(
                            req,
                            source,
                            423,
                            "Interval Too Brief",
                            &[(b"Min-Expires", min)],
                        );
                    }
                    let existing = self
                        .bindings
                        .get(&aor)
                        .and_then(|v| v.iter().find(|b| b.contact.as_ref() == c.uri.as_bytes()));
                    if let Some(b) = existing
                        && b.call_id == call_id
                        && b.cseq >= cseq.seq
                    {
                        return self.reply(req, source, 500, "Server Internal Error", &[]);
                    }
                    plan.push((c.uri.raw().clone(), e.min(self.config.max_expires)));
                }
                let current = self.bindings.get(&aor).map_or(0, Vec::len);
                let added = plan
                    .iter()
                    .filter(|(u, e)| {
                        *e > 0
                            && !self
                                .bindings
                                .get(&aor)
                                .is_some_and(|v| v.iter().any(|b| b.contact == *u))
                    })
                    .count();
                if current + added > self.config.max_contacts_per_aor {
                    return self.reply(req, source, 403, "Forbidden", &[]);
                }
                let list = self.bindings.entry(aor.clone()).or_default();
                for (uri, e) in plan {
                    let pos = list.iter().position(|b| b.contact == uri);
                    if e == 0 {
                        if let Some(p) = pos {
                            list.remove(p);
                            self.events.push_back(RegistrarEvent::Unregistered {
                                aor: aor.clone(),
                                contact: uri,
                            });
                        }
                        continue;
                    }
                    let b = Binding {
                        contact: uri.clone(),
                        expires_at: now + Duration::from_secs(u64::from(e)),
                        source,
                        call_id: call_id.clone(),
                        cseq: cseq.seq,
                        next_keepalive: self.config.keepalive_interval.map(|i| now + i),
                    };
                    match pos {
                        Some(p) => list[p] = b,
                        None => {
                            list.push(b);
                            self.events.push_back(RegistrarEvent::Registered {
                                aor: aor.clone(),
                                contact: uri,
                            });
                        }
                    }
                }
                if list.is_empty() {
                    self.bindings.remove(&aor);
                }
            }
            Err(_) => return self.reply(req, source, 400, "Bad Request", &[]),
        }
        // 200 lists every current binding with its remaining lifetime.
        let contacts: Vec<(&[u8], Vec<u8>)> = self
            .bindings(&aor, now)
            .into_iter()
            .map(|b| {
                let left = b.expires_at.saturating_duration_since(now).as_secs();
                let mut v = b"<".to_vec();
                v.extend_from_slice(&b.contact);
                v.extend_from_slice(format!(">;expires={left}").as_bytes());
                (&b"Contact"[..], v)
            })
            .collect();
        self.reply(req, source, 200, "OK", &contacts)
    }
}

/// A REGISTER as a phone would send it (tests, the demo and trunk registration use it).
// Every argument is one header's value; a builder would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn register_request(
    registrar_uri: &str,
    user: &str,
    domain: &str,
    contact: &str,
    expires: u32,
    call_id: &str,
    cseq: u32,
    branch: &str,
    authorization: Option<&str>,
) -> Bytes {
    let mut b =
        MessageBuilder::request(&super::message::Method::Register, registrar_uri.as_bytes())
            .header(
                b"Via",
                format!("SIP/2.0/UDP {domain};branch={branch};rport").as_bytes(),
            )
            .header(b"Max-Forwards", b"70")
            .header(
                b"From",
                format!("<sip:{user}@{domain}>;tag=ph{cseq}").as_bytes(),
            )
            .header(b"To", format!("<sip:{user}@{domain}>").as_bytes())
            .header(b"Call-ID", call_id.as_bytes())
            .header(b"CSeq", format!("{cseq} REGISTER").as_bytes())
            .header(b"Contact", contact.as_bytes())
            .header(b"Expires", expires.to_string().as_bytes());
    if let Some(a) = authorization {
        b = b.header(b"Authorization", a.as_bytes());
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sip::auth::{ClientCredentials, answer_challenge};
    use crate::sip::message::Limits;
    use crate::sip::transaction::TransportKind;

    /// Two tenants on one node: 1001 in `acme.zentrale`, 2001 in `beta.zentrale`.
    fn credentials(user: &str) -> Option<DigestHa1> {
        match user {
            "1001" => Some(DigestHa1::from_password(
                "1001",
                "acme.zentrale",
                "acme-pw-1",
            )),
            "2001" => Some(DigestHa1::from_password(
                "2001",
                "beta.zentrale",
                "beta-pw-1",
            )),
            _ => None,
        }
    }

    fn send(reg: &mut Registrar, t0: Instant, req: Bytes) -> (u16, Message) {
        let msg = Message::parse_datagram(req, &Limits::default()).unwrap();
        let source = Peer {
            addr: "192.0.2.7:5062".parse().unwrap(),
            transport: TransportKind::Udp,
        };
        match reg.handle_register_ha1(t0, 1_800_000_000, &msg, source, credentials) {
            RegisterAction::Respond { status, bytes } => (
                status,
                Message::parse_datagram(bytes, &Limits::default()).unwrap(),
            ),
            RegisterAction::Drop(why) => panic!("dropped: {why}"),
        }
    }

    fn register(reg: &mut Registrar, user: &str, password: &str) -> (String, u16) {
        let t0 = Instant::now();
        let contact = format!("<sip:{user}@192.0.2.7:5062>");
        let req = |cseq, auth: Option<&str>| {
            register_request(
                "sip:zentrale",
                user,
                "zentrale",
                &contact,
                600,
                "cid",
                cseq,
                &format!("z9hG4bK{cseq}"),
                auth,
            )
        };
        let (status, resp) = send(reg, t0, req(1, None));
        assert_eq!(status, 401);
        let ch = resp
            .headers_named(&HeaderName::WwwAuthenticate)
            .next()
            .unwrap()
            .clone();
        let realm = parse_digest(&ch).unwrap().get("realm").unwrap().to_owned();
        let creds = ClientCredentials {
            username: user,
            password,
        };
        let auth = answer_challenge(&ch, &creds, "REGISTER", "sip:zentrale", "cn", 1).unwrap();
        (realm, send(reg, t0, req(2, Some(&auth))).0)
    }

    fn registrar() -> Registrar {
        Registrar::new(
            RegistrarConfig::default(),
            DigestServer::new("zentrale", b"key", 300),
        )
    }

    #[test]
    fn the_challenge_names_the_realm_of_the_tenant_owning_the_extension() {
        let mut reg = registrar();
        assert_eq!(
            register(&mut reg, "1001", "acme-pw-1"),
            ("acme.zentrale".to_owned(), 200)
        );
        assert_eq!(
            register(&mut reg, "2001", "beta-pw-1"),
            ("beta.zentrale".to_owned(), 200)
        );
        // Wrong password: challenged again. Unknown extension: the node's default realm.
        assert_eq!(
            register(&mut reg, "2001", "acme-pw-1"),
            ("beta.zentrale".to_owned(), 401)
        );
        assert_eq!(
            register(&mut reg, "3001", "whatever"),
            ("zentrale".to_owned(), 401)
        );
    }
}
