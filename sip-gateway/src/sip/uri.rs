//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), kept as the exact bytes that arrived.
//!
//! A URI is parsed into ranges over its own raw `Bytes`, never rebuilt from parts: re-serialising
//! returns the original octets, so `%`-escapes survive a B2BUA hop unchanged (the double-escaping
//! bug measured in rsipstack cannot happen by construction). Unescaping is offered only as an
//! explicit accessor for comparisons.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;

/// Why a URI was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The URI was empty or had no `scheme:` prefix.
    #[error("URI has no scheme")]
    NoScheme,
    /// The URI contains white space or control characters (e.g. `sip:a@b; lr`).
    #[error("URI contains white space or a control character")]
    WhiteSpace,
    /// A `%` was not followed by two hex digits in a part where escapes are defined.
    #[error("bad %-escape in URI")]
    BadEscape,
    /// The host part is missing or contains characters a host cannot contain.
    #[error("bad host in URI")]
    BadHost,
    /// The port is not a decimal number in 0..=65535.
    #[error("bad port in URI")]
    BadPort,
    /// A user part character is not allowed there, or there are several `@`.
    #[error("bad user part in URI")]
    BadUser,
    /// A `;param` is empty or has a character not allowed in URI parameters.
    #[error("bad URI parameter")]
    BadParam,
    /// The tel: number is empty or has characters a telephone-subscriber cannot contain.
    #[error("bad tel: number")]
    BadTelNumber,
}

/// The URI scheme. Schemes other than sip/sips/tel are kept opaque (RFC 4475 §3.3.4: an
/// unknown scheme in a header is not an error; in the Request-URI it earns a 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Any other scheme; the URI is opaque.
    Other,
}

/// A parsed host: what kind it is matters for Via `received` comparison and for DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A domain name.
    Domain,
    /// A dotted IPv4 address.
    Ipv4,
    /// A bracketed IPv6 reference, `[...]`.
    Ipv6,
}

/// A URI with the ranges of its parts. Cloning is cheap (reference-counted buffer).
#[derive(Clone, PartialEq, Eq)]
pub struct Uri {
    raw: Bytes,
    scheme: Scheme,
    user: Option<Range<usize>>,
    password: Option<Range<usize>>,
    host: Range<usize>,
    host_kind: HostKind,
    port: Option<u16>,
    /// Everything after the host/port up to `?` (starts with `;`), may be empty.
    params: Range<usize>,
    /// After `?`, without the `?`.
    headers: Option<Range<usize>>,
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uri({})", String::from_utf8_lossy(&self.raw))
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.raw))
    }
}

/// A byte class as a 256-entry table: the scanners run per byte, and a table lookup beats
/// searching a list of punctuation for every character.
const fn class(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric();
        c += 1;
    }
    let unreserved = b"-_.!~*'()";
    let mut i = 0;
    while i < unreserved.len() {
        t[unreserved[i] as usize] = true;
        i += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

static USER: [bool; 256] = class(b"&=+$,;?/");
static PASSWORD: [bool; 256] = class(b"&=+$,");
static PARAM_OR_EQ: [bool; 256] = class(b"[]/:&+$=");
static HEADER: [bool; 256] = class(b"[]/?:+$=&");

fn is_user_char(c: u8) -> bool {
    USER[usize::from(c)]
}

fn is_password_char(c: u8) -> bool {
    PASSWORD[usize::from(c)]
}

fn is_param_or_eq(c: u8) -> bool {
    PARAM_OR_EQ[usize::from(c)]
}

fn is_header_char(c: u8) -> bool {
    HEADER[usize::from(c)]
}

/// Checks that every byte is allowed by `allowed` or is a well-formed `%HH` escape.
fn check_escaped(s: &[u8], allowed: fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'%' {
            if i + 2 >= s.len() {
                return false;
            }
            if !(s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if allowed(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Decodes `%HH` escapes; borrows when there are none. Invalid escapes are kept literally.
pub fn unescape(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                // h and l are < 16, so the value fits a byte.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Parses a host (domain, IPv4 or `[IPv6]`) and returns its kind.
pub(crate) fn parse_host(h: &[u8]) -> Result<HostKind, UriError> {
    if h.is_empty() {
        return Err(UriError::BadHost);
    }
    if h[0] == b'[' {
        if h.len() < 3 || h[h.len() - 1] != b']' {
            return Err(UriError::BadHost);
        }
        let inner = std::str::from_utf8(&h[1..h.len() - 1]).map_err(|_| UriError::BadHost)?;
        if inner.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(HostKind::Ipv6);
        }
        // RFC 5118 §4.10: RFC 3261's ABNF allowed `2001:db8:::192.0.2.1`; tolerate it.
        if inner.contains(":::") {
            let fixed = inner.replacen(":::", "::", 1);
            if fixed.parse::<std::net::Ipv6Addr>().is_ok() {
                return Ok(HostKind::Ipv6);
            }
        }
        return Err(UriError::BadHost);
    }
    if h.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        let s = std::str::from_utf8(h).map_err(|_| UriError::BadHost)?;
        return s
            .parse::<std::net::Ipv4Addr>()
            .map(|_| HostKind::Ipv4)
            .map_err(|_| UriError::BadHost);
    }
    let ok = h
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
        && h[0] != b'.'
        && h[0] != b'-';
    if ok {
        Ok(HostKind::Domain)
    } else {
        Err(UriError::BadHost)
    }
}

/// Splits `host[:port]` where host may be an `[IPv6]` reference.
pub(crate) fn split_hostport(hp: &[u8]) -> Result<(usize, Option<u16>), UriError> {
    let host_end = if hp.first() == Some(&b'[') {
        match memchr::memchr(b']', hp) {
            Some(i) => i + 1,
            None => return Err(UriError::BadHost),
        }
    } else {
        memchr::memchr(b':', hp).unwrap_or(hp.len())
    };
    if host_end == hp.len() {
        return Ok((host_end, None));
    }
    if hp[host_end] != b':' {
        return Err(UriError::BadHost);
    }
    let p = &hp[host_end + 1..];
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return Err(UriError::BadPort);
    }
    let port: u32 = p.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0'));
    let port = u16::try_from(port).map_err(|_| UriError::BadPort)?;
    Ok((host_end, Some(port)))
}

impl Uri {
    /// Parses a URI from exactly these bytes (no surrounding `<>` or white space).
    pub fn parse(raw: Bytes) -> Result<Uri, UriError> {
        let s = &raw[..];
        if s.iter().any(|c| *c <= b' ' || *c == 0x7f) {
            return Err(UriError::WhiteSpace);
        }
        let colon = memchr::memchr(b':', s).ok_or(UriError::NoScheme)?;
        let scheme_s = &s[..colon];
        if scheme_s.is_empty()
            || !scheme_s[0].is_ascii_alphabetic()
            || !scheme_s
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
        {
            return Err(UriError::NoScheme);
        }
        let scheme = if scheme_s.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_s.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_s.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let start = colon + 1;
        match scheme {
            Scheme::Sip | Scheme::Sips => Self::parse_sip(raw.clone(), scheme, start),
            Scheme::Tel => Self::parse_tel(raw.clone(), start),
            Scheme::Other => {
                if start == s.len() {
                    return Err(UriError::NoScheme);
                }
                Ok(Uri {
                    scheme,
                    user: None,
                    password: None,
                    host: start..s.len(),
                    host_kind: HostKind::Domain,
                    port: None,
                    params: s.len()..s.len(),
                    headers: None,
                    raw,
                })
            }
        }
    }

    fn parse_sip(raw: Bytes, scheme: Scheme, start: usize) -> Result<Uri, UriError> {
        let s = &raw[..];
        // '@' is not allowed unescaped anywhere but as the userinfo delimiter (user, password,
        // params and headers all exclude it), so the first '@' ends the userinfo.
        let (user, password, host_start) = match memchr::memchr(b'@', &s[start..]) {
            Some(at) => {
                let at = start + at;
                if memchr::memchr(b'@', &s[at + 1..]).is_some() {
                    return Err(UriError::BadUser);
                }
                let ui = start..at;
                let (user, password) = match memchr::memchr(b':', &s[ui.clone()]) {
                    Some(c) => (start..start + c, Some(start + c + 1..at)),
                    None => (ui, None),
                };
                if user.is_empty() || !check_escaped(&s[user.clone()], is_user_char) {
                    return Err(UriError::BadUser);
                }
                if let Some(p) = &password
                    && !check_escaped(&s[p.clone()], is_password_char)
                {
                    return Err(UriError::BadUser);
                }
                (Some(user), password, at + 1)
            }
            None => (None, None, start),
        };
        let rest = &s[host_start..];
        let hp_end = rest
            .iter()
            .position(|c| *c == b';' || *c == b'?')
            .unwrap_or(rest.len());
        let (host_len, port) = split_hostport(&rest[..hp_end])?;
        let host = host_start..host_start + host_len;
        let host_kind = parse_host(&s[host.clone()])?;
        let after = host_start + hp_end;
        let q = memchr::memchr(b'?', &s[after..]).map(|i| after + i);
        let params = after..q.unwrap_or(s.len());
        let headers = q.map(|q| q + 1..s.len());
        // Each ;param must be non-empty: `sip:h;;` is malformed.
        let p = &s[params.clone()];
        if !p.is_empty() {
            for part in p[1..].split(|c| *c == b';') {
                if part.is_empty() || !check_escaped(part, is_param_or_eq) {
                    return Err(UriError::BadParam);
                }
            }
        }
        if let Some(h) = &headers
            && !check_escaped(&s[h.clone()], is_header_char)
        {
            return Err(UriError::BadParam);
        }
        Ok(Uri {
            raw,
            scheme,
            user,
            password,
            host,
            host_kind,
            port,
            params,
            headers,
        })
    }

    fn parse_tel(raw: Bytes, start: usize) -> Result<Uri, UriError> {
        let s = &raw[..];
        let end = memchr::memchr(b';', &s[start..])
            .map(|i| start + i)
            .unwrap_or(s.len());
        let num = &s[start..end];
        let ok = !num.is_empty()
            && num
                .iter()
                .all(|c| c.is_ascii_hexdigit() || b"+-.()*#pPwW".contains(c) || *c == b'%');
        if !ok {
            return Err(UriError::BadTelNumber);
        }
        let p = &s[end..];
        if !p.is_empty() {
            for part in p[1..].split(|c| *c == b';') {
                if part.is_empty() || !check_escaped(part, is_param_or_eq) {
                    return Err(UriError::BadParam);
                }
            }
        }
        Ok(Uri {
            scheme: Scheme::Tel,
            user: Some(start..end),
            password: None,
            host: end..end,
            host_kind: HostKind::Domain,
            port: None,
            params: end..s.len(),
            headers: None,
            raw,
        })
    }

    /// The exact bytes the URI was parsed from.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The raw buffer (cheap clone).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The user part as it arrived (escapes intact); for tel: the number.
    pub fn user(&self) -> Option<&[u8]> {
        self.user.clone().map(|r| &self.raw[r])
    }

    /// The user part with `%HH` decoded, for comparisons (RFC 3261 §19.1.4).
    pub fn user_unescaped(&self) -> Option<Cow<'_, [u8]>> {
        self.user().map(unescape)
    }

    /// The password part, if any (deprecated in SIP, but legal syntax).
    pub fn password(&self) -> Option<&[u8]> {
        self.password.clone().map(|r| &self.raw[r])
    }

    /// The host (with brackets for IPv6); empty for tel:, the opaque part for other schemes.
    pub fn host(&self) -> &[u8] {
        &self.raw[self.host.clone()]
    }

    /// What kind of host it is.
    pub fn host_kind(&self) -> HostKind {
        self.host_kind
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// URI parameters as `(name, value)` pairs, raw.
    pub fn params(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let p = &self.raw[self.params.clone()];
        let p = if p.is_empty() { p } else { &p[1..] };
        p.split(|c| *c == b';')
            .filter(|x| !x.is_empty())
            .map(|part| match memchr::memchr(b'=', part) {
                Some(e) => (&part[..e], Some(&part[e + 1..])),
                None => (part, None),
            })
    }

    /// The value of a URI parameter (case-insensitive name); `Some(None)` for a flag like `lr`.
    pub fn param(&self, name: &str) -> Option<Option<&[u8]>> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The `?headers` part, raw, if any.
    pub fn headers(&self) -> Option<&[u8]> {
        self.headers.clone().map(|r| &self.raw[r])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn uri(s: &'static str) -> Result<Uri, UriError> {
        Uri::parse(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn sip_sips_tel_and_opaque_schemes() {
        let u = uri("sips:alice:secret@[2001:db8::1]:5061;transport=tls?Subject=hi").unwrap();
        assert_eq!(u.scheme(), Scheme::Sips);
        assert_eq!(u.user(), Some(&b"alice"[..]));
        assert_eq!(u.password(), Some(&b"secret"[..]));
        assert_eq!(
            (u.host(), u.host_kind(), u.port()),
            (&b"[2001:db8::1]"[..], HostKind::Ipv6, Some(5061))
        );
        assert_eq!(u.param("TRANSPORT"), Some(Some(&b"tls"[..])));
        assert_eq!(u.headers(), Some(&b"Subject=hi"[..]));
        let t = uri("tel:+49-30-1234567;phone-context=example.com").unwrap();
        assert_eq!(
            (t.scheme(), t.user()),
            (Scheme::Tel, Some(&b"+49-30-1234567"[..]))
        );
        assert_eq!(uri("urn:service:sos").unwrap().scheme(), Scheme::Other);
    }

    #[test]
    fn escapes_round_trip_and_unescape_on_request() {
        let u = uri("sip:1234%23@example.com").unwrap();
        assert_eq!(u.as_bytes(), b"sip:1234%23@example.com");
        assert_eq!(u.to_string(), "sip:1234%23@example.com");
        assert_eq!(u.user_unescaped().unwrap().as_ref(), b"1234#");
    }

    #[test]
    fn malformed_uris_are_typed_errors() {
        assert_eq!(uri("sip:2001:db8::10").unwrap_err(), UriError::BadPort);
        assert_eq!(uri("sip:a@b; lr").unwrap_err(), UriError::WhiteSpace);
        assert_eq!(uri("<sip:a@b>").unwrap_err(), UriError::NoScheme);
        assert_eq!(uri("sip:a%4@b").unwrap_err(), UriError::BadUser);
        assert_eq!(uri("sip:a@b;;lr").unwrap_err(), UriError::BadParam);
        assert_eq!(uri("sip:a@b:99999").unwrap_err(), UriError::BadPort);
        assert_eq!(uri("sip:a@[::1").unwrap_err(), UriError::BadHost);
        assert_eq!(uri("sip:a@b@c").unwrap_err(), UriError::BadUser);
        assert_eq!(uri("tel:").unwrap_err(), UriError::BadTelNumber);
        assert_eq!(uri("sip:").unwrap_err(), UriError::BadHost);
    }
}
