//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).
//!
//! Server side: [`DigestServer`] issues challenges and verifies credentials with MD5 or
//! SHA-256 and `qop=auth`. Its nonces carry their own issue time and an HMAC-SHA-256 over it,
//! so the registrar keeps no per-nonce state and any node holding the key can verify them;
//! a nonce past its lifetime is answered with `stale=true` so phones retry without asking the
//! user. The price of statelessness: `nc` is not tracked, so a captured request can be replayed
//! until its nonce expires — keep the lifetime short (minutes).
//!
//! Client side: [`answer_challenge`] computes the Authorization / Proxy-Authorization value for
//! an outbound INVITE or REGISTER that a trunk answered with 401/407.
//!
//! Time is an argument (seconds on any clock that the caller keeps consistent), randomness
//! (the client's cnonce) too: this module does no I/O and reads no clock.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use super::header::{is_token_char, split_commas, trim, unquote};

/// Why credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The Authorization header uses a scheme other than Digest (RFC 4475 §3.3.7).
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    /// The header does not follow the auth-param grammar.
    #[error("malformed credentials")]
    Malformed,
    /// A parameter the algorithm needs is missing.
    #[error("missing parameter {0}")]
    Missing(&'static str),
    /// The algorithm is neither MD5 nor SHA-256.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// The realm is not ours.
    #[error("wrong realm")]
    WrongRealm,
    /// The nonce was not issued by us (bad MAC or format).
    #[error("nonce not issued here")]
    BadNonce,
    /// The nonce was ours but is too old: challenge again with stale=true.
    #[error("nonce expired")]
    Stale,
    /// The response hash does not match (wrong password).
    #[error("wrong response")]
    WrongResponse,
    /// The challenge offers no qop we can use.
    #[error("unsupported qop")]
    UnsupportedQop,
}

/// Digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// MD5 (RFC 2617) — what most desk phones still send.
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token used in headers.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn from_token(t: &[u8]) -> Result<Algorithm, AuthError> {
        if t.eq_ignore_ascii_case(b"MD5") {
            Ok(Algorithm::Md5)
        } else if t.eq_ignore_ascii_case(b"SHA-256") {
            Ok(Algorithm::Sha256)
        } else {
            Err(AuthError::UnsupportedAlgorithm)
        }
    }

    /// Lower-case hex of the hash of `data`.
    pub fn hex_hash(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data)),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data)),
        }
    }
}

/// `auth-param`s of a challenge or credentials, values unquoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthParams(pub Vec<(String, String)>);

impl AuthParams {
    /// The value of a parameter (case-insensitive name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Digest a=b, c="d"` into its params; other schemes are [`AuthError::UnsupportedScheme`].
pub fn parse_digest(value: &[u8]) -> Result<AuthParams, AuthError> {
    let v = trim(value);
    let sp = v
        .iter()
        .position(|c| *c == b' ' || *c == b'\t')
        .unwrap_or(v.len());
    if !v[..sp].eq_ignore_ascii_case(b"Digest") {
        return Err(AuthError::UnsupportedScheme);
    }
    let mut out = AuthParams::default();
    for part in split_commas(&v[sp..]).ok_or(AuthError::Malformed)? {
        if part.is_empty() {
            continue;
        }
        let eq = memchr::memchr(b'=', part).ok_or(AuthError::Malformed)?;
        let name = trim(&part[..eq]);
        let val = trim(&part[eq + 1..]);
        if name.is_empty() || !name.iter().all(|c| is_token_char(*c)) {
            return Err(AuthError::Malformed);
        }
        if val.first() == Some(&b'"') && (val.len() < 2 || val.last() != Some(&b'"')) {
            return Err(AuthError::Malformed);
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let val = String::from_utf8_lossy(&unquote(val)).into_owned();
        out.0.push((name, val));
    }
    Ok(out)
}

/// The response hash of RFC 2617 §3.2.2 / RFC 7616 §3.4.1 (qop=auth, or none for RFC 2069).
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    alg: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let ha1 = alg.hex_hash(format!("{username}:{realm}:{password}").as_bytes());
    response_from_ha1(alg, &ha1, method, uri, nonce, qop)
}

/// As [`digest_response`] from a stored HA1 (so passwords need not be stored in clear).
/// `qop` is `(nc, cnonce)` for qop=auth.
pub fn response_from_ha1(
    alg: Algorithm,
    ha1: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let ha2 = alg.hex_hash(format!("{method}:{uri}").as_bytes());
    match qop {
        Some((nc, cnonce)) => {
            alg.hex_hash(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes())
        }
        None => alg.hex_hash(format!("{ha1}:{nonce}:{ha2}").as_bytes()),
    }
}

/// The registrar's side of digest: stateless nonces, challenges, verification.
#[derive(Clone)]
pub struct DigestServer {
    realm: String,
    key: Vec<u8>,
    nonce_lifetime_secs: u64,
}

impl std::fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("DigestServer")
            .field("realm", &self.realm)
            .field("nonce_lifetime_secs", &self.nonce_lifetime_secs)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The username the credentials were for.
    pub username: String,
}

impl DigestServer {
    /// A server for `realm` whose nonces are signed with `key` (keep it secret; share it
    /// between nodes) and live `nonce_lifetime_secs`.
    pub fn new(realm: impl Into<String>, key: &[u8], nonce_lifetime_secs: u64) -> DigestServer {
        DigestServer {
            realm: realm.into(),
            key: key.to_vec(),
            nonce_lifetime_secs,
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, realm: &str, ts: u64) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(&ts.to_be_bytes());
        m.update(realm.as_bytes());
        m
    }

    /// A nonce issued at `now_secs`: hex(time) + hex(HMAC(time, realm)).
    pub fn nonce(&self, now_secs: u64) -> String {
        self.nonce_in(&self.realm, now_secs)
    }

    /// A nonce for another realm (one per tenant): a nonce of one realm is not valid in another.
    pub fn nonce_in(&self, realm: &str, now_secs: u64) -> String {
        let tag = self.mac(realm, now_secs).finalize().into_bytes();
        format!("{:016x}{}", now_secs, hex::encode(tag))
    }

    /// Checks a nonce: ours and within its lifetime.
    pub fn check_nonce(&self, nonce: &str, now_secs: u64) -> Result<(), AuthError> {
        self.check_nonce_in(&self.realm, nonce, now_secs)
    }

    /// Checks a nonce issued for `realm`.
    pub fn check_nonce_in(&self, realm: &str, nonce: &str, now_secs: u64) -> Result<(), AuthError> {
        if nonce.len() != 16 + 64 || !nonce.is_ascii() {
            return Err(AuthError::BadNonce);
        }
        let ts = u64::from_str_radix(&nonce[..16], 16).map_err(|_| AuthError::BadNonce)?;
        let tag = hex::decode(&nonce[16..]).map_err(|_| AuthError::BadNonce)?;
        // verify_slice compares in constant time.
        self.mac(realm, ts)
            .verify_slice(&tag)
            .map_err(|_| AuthError::BadNonce)?;
        if ts > now_secs.saturating_add(5) {
            return Err(AuthError::BadNonce);
        }
        if now_secs.saturating_sub(ts) > self.nonce_lifetime_secs {
            return Err(AuthError::Stale);
        }
        Ok(())
    }

    /// A WWW-Authenticate / Proxy-Authenticate value.
    pub fn challenge(&self, now_secs: u64, alg: Algorithm, stale: bool) -> String {
        self.challenge_in(&self.realm, now_secs, alg, stale)
    }

    /// A challenge in another realm (the tenant's). `realm` must be quotable (see
    /// [`DigestHa1::is_well_formed`]).
    pub fn challenge_in(&self, realm: &str, now_secs: u64, alg: Algorithm, stale: bool) -> String {
        let mut s = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
            realm,
            self.nonce_in(realm, now_secs),
            alg.token()
        );
        if stale {
            s.push_str(", stale=true");
        }
        s
    }

    /// Challenges for every algorithm we support, SHA-256 first (RFC 8760 §2.4: the client
    /// uses the first it supports; MD5-only phones skip it).
    pub fn challenges(&self, now_secs: u64, stale: bool) -> [String; 2] {
        [
            self.challenge(now_secs, Algorithm::Sha256, stale),
            self.challenge(now_secs, Algorithm::Md5, stale),
        ]
    }

    /// The username in credentials, to look up the password before [`Self::verify`].
    pub fn username(credentials: &AuthParams) -> Option<&str> {
        credentials.get("username")
    }

    /// Verifies parsed credentials for a request with `method`, given the user's password
    /// (in this server's realm). Stored credentials go through [`Self::verify_ha1`].
    pub fn verify(
        &self,
        now_secs: u64,
        method: &str,
        credentials: &AuthParams,
        password: &str,
    ) -> Result<Authenticated, AuthError> {
        let username = credentials
            .get("username")
            .ok_or(AuthError::Missing("username"))?;
        let ha1 = DigestHa1::from_password(username, &self.realm, password);
        self.verify_ha1(now_secs, method, credentials, &ha1)
    }

    /// Verifies parsed credentials against stored HA1 material: the credentials must name
    /// `ha1`'s realm (HA1 is bound to it), carry a nonce this server issued for that realm and
    /// not yet expired, and the response computed from the HA1 of the algorithm they use.
    pub fn verify_ha1(
        &self,
        now_secs: u64,
        method: &str,
        credentials: &AuthParams,
        ha1: &DigestHa1,
    ) -> Result<Authenticated, AuthError> {
        let get = |n: &'static str| credentials.get(n).ok_or(AuthError::Missing(n));
        let username = get("username")?;
        let realm = get("realm")?;
        if realm != ha1.realm {
            return Err(AuthError::WrongRealm);
        }
        let alg = Algorithm::from_token(credentials.get("algorithm").unwrap_or("MD5").as_bytes())?;
        let nonce = get("nonce")?;
        let uri = get("uri")?;
        let response = get("response")?;
        let qop = match credentials.get("qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => Some((get("nc")?, get("cnonce")?)),
            Some(_) => return Err(AuthError::UnsupportedQop),
            // We always challenge with qop=auth; RFC 2069 answers are refused.
            None => return Err(AuthError::Missing("qop")),
        };
        // The MAC is checked before the hash so a forged nonce learns nothing about the password.
        self.check_nonce_in(realm, nonce, now_secs)?;
        let expected = response_from_ha1(alg, ha1.for_algorithm(alg), method, uri, nonce, qop);
        // Compare without an early exit so timing does not reveal how much of a guess matched.
        let ok = expected.len() == response.len()
            && expected
                .bytes()
                .zip(response.to_ascii_lowercase().bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !ok {
            return Err(AuthError::WrongResponse);
        }
        Ok(Authenticated {
            username: username.to_string(),
        })
    }
}

/// What a registrar stores for a user instead of the password: HA1 = H(user:realm:password)
/// for MD5 and SHA-256 (RFC 7616 §3.4.2), and the realm they were computed for. HA1 lets the
/// server verify digest responses without the password, but it is a password-equivalent in
/// its realm, so it is kept out of `Debug` and logs like a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestHa1 {
    /// The realm HA1 is bound to; challenges for this user name it.
    pub realm: String,
    /// Lower-case hex MD5(user:realm:password).
    pub md5: String,
    /// Lower-case hex SHA-256(user:realm:password).
    pub sha256: String,
}

impl std::fmt::Debug for DigestHa1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestHa1")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl DigestHa1 {
    /// HA1 of both algorithms from a password (tests, the demo, config-file users).
    pub fn from_password(user: &str, realm: &str, password: &str) -> DigestHa1 {
        let input = format!("{user}:{realm}:{password}");
        DigestHa1 {
            realm: realm.to_owned(),
            md5: Algorithm::Md5.hex_hash(input.as_bytes()),
            sha256: Algorithm::Sha256.hex_hash(input.as_bytes()),
        }
    }

    /// The HA1 for `alg`.
    pub fn for_algorithm(&self, alg: Algorithm) -> &str {
        match alg {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
        }
    }

    /// Whether the realm can be written into a quoted challenge as is (no quote, backslash
    /// or control character) and the hashes look like hex of the right length.
    pub fn is_well_formed(&self) -> bool {
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        !self.realm.is_empty()
            && self.realm.len() <= 255
            && !self
                .realm
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || b.is_ascii_control())
            && hex(&self.md5, 32)
            && hex(&self.sha256, 64)
    }
}

/// What the UAC needs to answer a challenge.
#[derive(Debug, Clone)]
pub struct ClientCredentials<'a> {
    /// Username at the trunk.
    pub username: &'a str,
    /// Password at the trunk.
    pub password: &'a str,
}

/// Computes the Authorization (for 401) or Proxy-Authorization (for 407) header value for
/// `method` to `uri`, answering the WWW-/Proxy-Authenticate `challenge`. `cnonce` is a fresh
/// random string from the caller; `nc` counts uses of this nonce (1 for the first).
pub fn answer_challenge(
    challenge: &[u8],
    creds: &ClientCredentials<'_>,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, AuthError> {
    let p = parse_digest(challenge)?;
    let realm = p.get("realm").ok_or(AuthError::Missing("realm"))?;
    let nonce = p.get("nonce").ok_or(AuthError::Missing("nonce"))?;
    let alg_token = p.get("algorithm").unwrap_or("MD5");
    let alg = Algorithm::from_token(alg_token.as_bytes())?;
    let qop_auth = match p.get("qop") {
        None => false,
        Some(q) => {
            if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                true
            } else {
                return Err(AuthError::UnsupportedQop);
            }
        }
    };
    let nc_s = format!("{nc:08x}");
    let resp = digest_response(
        alg,
        creds.username,
        realm,
        creds.password,
        method,
        uri,
        nonce,
        qop_auth.then_some((nc_s.as_str(), cnonce)),
    );
    let mut s = format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}",
        creds.username,
        alg.token()
    );
    if qop_auth {
        // Writing to a String cannot fail.
        let _ = write!(s, ", qop=auth, nc={nc_s}, cnonce=\"{cnonce}\"");
    }
    if let Some(opaque) = p.get("opaque") {
        let _ = write!(s, ", opaque=\"{opaque}\"");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rfc2617_md5_vector() {
        // RFC 2617 §3.5.
        let r = digest_response(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_sha256_and_md5_vectors() {
        // RFC 7616 §3.9.1.
        let args = |alg| {
            digest_response(
                alg,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                Some(("00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")),
            )
        };
        assert_eq!(
            args(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert_eq!(args(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
    }

    fn server() -> DigestServer {
        DigestServer::new("zentrale", b"test key", 300)
    }

    fn login(
        alg: Algorithm,
        challenge_at: u64,
        answer_at: u64,
        password: &str,
    ) -> Result<Authenticated, AuthError> {
        let s = server();
        let ch = s.challenge(challenge_at, alg, false);
        let creds = ClientCredentials {
            username: "1001",
            password,
        };
        let auth = answer_challenge(
            ch.as_bytes(),
            &creds,
            "REGISTER",
            "sip:zentrale",
            "c0ffee",
            1,
        )
        .unwrap();
        let p = parse_digest(auth.as_bytes()).unwrap();
        s.verify(answer_at, "REGISTER", &p, "demo1001")
    }

    #[test]
    fn client_answer_verifies_at_the_server_for_both_algorithms() {
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            assert_eq!(login(alg, 1000, 1010, "demo1001").unwrap().username, "1001");
            assert_eq!(
                login(alg, 1000, 1010, "wrong").unwrap_err(),
                AuthError::WrongResponse
            );
        }
    }

    #[test]
    fn an_old_nonce_is_stale_and_a_forged_one_is_refused() {
        assert_eq!(
            login(Algorithm::Md5, 1000, 1301, "demo1001").unwrap_err(),
            AuthError::Stale
        );
        let s = server();
        let mut n = s.nonce(1000);
        // Move the timestamp forward without the key: the MAC no longer matches.
        n.replace_range(..16, &format!("{:016x}", 2000u64));
        assert_eq!(s.check_nonce(&n, 2000).unwrap_err(), AuthError::BadNonce);
        let other = DigestServer::new("zentrale", b"other key", 300);
        assert_eq!(
            other.check_nonce(&s.nonce(1000), 1000).unwrap_err(),
            AuthError::BadNonce
        );
        assert!(s.challenge(5, Algorithm::Md5, true).ends_with("stale=true"));
    }

    #[test]
    fn stored_ha1_verifies_only_in_its_own_realm() {
        let s = server();
        let tenant_realm = "acme.zentrale";
        let ha1 = DigestHa1::from_password("1001", tenant_realm, "secret-pw");
        assert!(ha1.is_well_formed());
        assert!(!format!("{ha1:?}").contains(&ha1.md5));
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let answer = |challenge: &str, password: &str| {
                let creds = ClientCredentials {
                    username: "1001",
                    password,
                };
                let a = answer_challenge(
                    challenge.as_bytes(),
                    &creds,
                    "REGISTER",
                    "sip:acme",
                    "cn",
                    1,
                )
                .unwrap();
                parse_digest(a.as_bytes()).unwrap()
            };
            let ch = s.challenge_in(tenant_realm, 1000, alg, false);
            assert!(ch.contains("realm=\"acme.zentrale\""));
            assert_eq!(
                s.verify_ha1(1001, "REGISTER", &answer(&ch, "secret-pw"), &ha1)
                    .unwrap()
                    .username,
                "1001"
            );
            assert_eq!(
                s.verify_ha1(1001, "REGISTER", &answer(&ch, "guess-pw"), &ha1)
                    .unwrap_err(),
                AuthError::WrongResponse
            );
            // Answered in the server's default realm: HA1 of acme does not apply there.
            let other = s.challenge(1000, alg, false);
            assert_eq!(
                s.verify_ha1(1001, "REGISTER", &answer(&other, "secret-pw"), &ha1)
                    .unwrap_err(),
                AuthError::WrongRealm
            );
        }
        // A nonce issued for one realm is not valid in another.
        let n = s.nonce_in("a.zentrale", 1000);
        assert!(s.check_nonce_in("a.zentrale", &n, 1000).is_ok());
        assert_eq!(
            s.check_nonce_in("b.zentrale", &n, 1000).unwrap_err(),
            AuthError::BadNonce
        );
        let bad = DigestHa1 {
            realm: "x\"y".into(),
            ..ha1
        };
        assert!(!bad.is_well_formed());
    }

    #[test]
    fn unknown_scheme_is_reported_for_a_fresh_challenge() {
        // RFC 4475 §3.3.7 regaut01.
        assert_eq!(
            parse_digest(b"NoOneKnowsThisScheme opaque-data=here").unwrap_err(),
            AuthError::UnsupportedScheme
        );
    }

    #[test]
    fn client_answers_a_trunk_challenge_with_qop_list_and_opaque() {
        let ch = br#"Digest realm="carrier", nonce="abc", opaque="xyz", qop="auth,auth-int", algorithm=MD5"#;
        let creds = ClientCredentials {
            username: "trunk",
            password: "pw",
        };
        let a = answer_challenge(ch, &creds, "INVITE", "sip:+4930123@carrier", "cn", 1).unwrap();
        let p = parse_digest(a.as_bytes()).unwrap();
        assert_eq!(p.get("qop"), Some("auth"));
        assert_eq!(p.get("nc"), Some("00000001"));
        assert_eq!(p.get("opaque"), Some("xyz"));
        let want = digest_response(
            Algorithm::Md5,
            "trunk",
            "carrier",
            "pw",
            "INVITE",
            "sip:+4930123@carrier",
            "abc",
            Some(("00000001", "cn")),
        );
        assert_eq!(p.get("response"), Some(want.as_str()));
        // RFC 2069 style challenge without qop.
        let a = answer_challenge(
            br#"Digest realm="r", nonce="n""#,
            &creds,
            "REGISTER",
            "sip:r",
            "cn",
            1,
        )
        .unwrap();
        assert!(!a.contains("qop"));
    }
}
