//! Typed views of SIP header values (RFC 3261 §20 and §25.1), parsed on demand.
//!
//! The message keeps every header as raw bytes; these types are built only when a caller asks
//! (a B2BUA reads Via, CSeq, Call-ID and tags on every message but most other headers never),
//! and they hold `Bytes` slices of the same buffer, so no text is copied.

use bytes::Bytes;
use smallvec::SmallVec;

use super::uri::{HostKind, Uri, UriError, parse_host, split_hostport};

/// Why a header value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A header that must appear at most once appeared several times (RFC 4475 §3.3.8).
    #[error("header {0} appears more than once")]
    Multiple(&'static str),
    /// The header value does not follow its grammar.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The header's URI is malformed.
    #[error("bad URI in {0} header: {1}")]
    BadUri(&'static str, UriError),
    /// A number is out of the range the RFC allows (CSeq ≥ 2³¹, Max-Forwards > 255, ...).
    #[error("value out of range in {0} header")]
    OutOfRange(&'static str),
}

/// `token` characters (RFC 3261 §25.1).
pub fn is_token_char(c: u8) -> bool {
    TOKEN[usize::from(c)]
}

static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let extra = b"-.!%*_+`'~";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// True when `s` is a non-empty token.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|c| is_token_char(*c))
}

fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Trims spaces and tabs on both sides.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|c| !is_ws(*c)).unwrap_or(s.len());
    let end = s.iter().rposition(|c| !is_ws(*c)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Length of a quoted string starting at `s[0] == '"'`, including both quotes.
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            // CR/LF cannot appear in a quoted string once folding is undone.
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

/// Splits a comma-separated header value, ignoring commas inside quotes and `<...>`.
/// Empty elements are returned (as empty slices) so callers can reject `a,,b`; `None` when a
/// quote or `<` is not closed.
pub fn split_commas(v: &[u8]) -> Option<SmallVec<[&[u8]; 4]>> {
    let mut out = SmallVec::new();
    // Fast path: without quotes or angle brackets every comma separates (most Via values).
    if memchr::memchr3(b'"', b'<', b'>', v).is_none() {
        let mut start = 0;
        for i in memchr::memchr_iter(b',', v) {
            out.push(trim(&v[start..i]));
            start = i + 1;
        }
        out.push(trim(&v[start..]));
        return Some(out);
    }
    let mut start = 0;
    let mut i = 0;
    let mut in_angle = false;
    while i < v.len() {
        match v[i] {
            b'"' => {
                i += quoted_len(&v[i..])?;
                continue;
            }
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                out.push(trim(&v[start..i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if in_angle {
        return None;
    }
    out.push(trim(&v[start..]));
    Some(out)
}

/// Generic `;name[=value]` parameters, values kept raw (a quoted value keeps its quotes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub SmallVec<[(Bytes, Option<Bytes>); 4]>);

impl Params {
    /// Value of the first parameter with this name (case-insensitive); `Some(None)` for a flag.
    pub fn get(&self, name: &str) -> Option<Option<&Bytes>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_ref())
    }

    /// True when the parameter is present (with or without value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses `*( LWS ";" LWS name [LWS "=" LWS value] )` from `s` to its end.
pub(crate) fn parse_params(
    buf: &Bytes,
    s: &[u8],
    what: &'static str,
) -> Result<Params, HeaderError> {
    let bad = || HeaderError::Malformed(what);
    let mut out = Params::default();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && is_ws(s[*i]) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == s.len() {
            return Ok(out);
        }
        if s[i] != b';' {
            return Err(bad());
        }
        i += 1;
        skip_ws(&mut i);
        let ns = i;
        while i < s.len() && is_token_char(s[i]) {
            i += 1;
        }
        if ns == i {
            return Err(bad());
        }
        let name = buf.slice_ref(&s[ns..i]);
        skip_ws(&mut i);
        if i < s.len() && s[i] == b'=' {
            i += 1;
            skip_ws(&mut i);
            let vs = i;
            if i < s.len() && s[i] == b'"' {
                i += quoted_len(&s[i..]).ok_or_else(bad)?;
            } else if i < s.len() && s[i] == b'[' {
                i += memchr::memchr(b']', &s[i..]).ok_or_else(bad)? + 1;
            } else {
                while i < s.len() && (is_token_char(s[i]) || s[i] == b':') {
                    i += 1;
                }
            }
            if vs == i {
                return Err(bad());
            }
            out.0.push((name, Some(buf.slice_ref(&s[vs..i]))));
        } else {
            out.0.push((name, None));
        }
    }
}

/// Removes the quotes and backslash escapes of a quoted string; a token is returned as is.
pub fn unquote(s: &[u8]) -> Vec<u8> {
    if s.len() < 2 || s[0] != b'"' {
        return s.to_vec();
    }
    let inner = &s[1..s.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' && i + 1 < inner.len() {
            out.push(inner[i + 1]);
            i += 2;
        } else {
            out.push(inner[i]);
            i += 1;
        }
    }
    out
}

/// A `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route, Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as it appeared (quoted strings keep quotes and escapes).
    pub display_name_raw: Option<Bytes>,
    /// The URI (bytes exactly as sent).
    pub uri: Uri,
    /// True when the URI was enclosed in `<>`.
    pub angle: bool,
    /// Header parameters after the URI (tag, expires, q, ...).
    pub params: Params,
}

impl NameAddr {
    /// Parses one name-addr / addr-spec (with parameters).
    pub fn parse(buf: &Bytes, v: &[u8], what: &'static str) -> Result<NameAddr, HeaderError> {
        let bad = || HeaderError::Malformed(what);
        let v = trim(v);
        let mut i = 0;
        let mut display = None;
        if v.first() == Some(&b'"') {
            let q = quoted_len(v).ok_or_else(bad)?;
            display = Some(buf.slice_ref(&v[..q]));
            i = q;
            while i < v.len() && is_ws(v[i]) {
                i += 1;
            }
            if v.get(i) != Some(&b'<') {
                return Err(bad());
            }
        } else if let Some(lt) = memchr::memchr(b'<', v) {
            // A display name of tokens separated by LWS; `caller<sip:..>` is accepted
            // (RFC 4475 §3.1.1.6), `Bell, Alexander <..>` is not (§3.1.2.15).
            let d = trim(&v[..lt]);
            if !d.is_empty() {
                if !d.split(|c| is_ws(*c)).all(|t| t.is_empty() || is_token(t)) {
                    return Err(bad());
                }
                display = Some(buf.slice_ref(d));
            }
            i = lt;
        }
        let (uri_bytes, rest, angle) = if v.get(i) == Some(&b'<') {
            let gt = memchr::memchr(b'>', &v[i..]).ok_or_else(bad)? + i;
            (&v[i + 1..gt], &v[gt + 1..], true)
        } else {
            // addr-spec: the URI cannot contain ';', ',' or '?' (RFC 3261 §20.10), so header
            // parameters start at the first ';'.
            let end = v
                .iter()
                .position(|c| *c == b';' || is_ws(*c))
                .unwrap_or(v.len());
            let u = &v[..end];
            if u.contains(&b'?') || u.contains(&b',') {
                return Err(bad());
            }
            (u, &v[end..], false)
        };
        let uri = Uri::parse(buf.slice_ref(uri_bytes)).map_err(|e| HeaderError::BadUri(what, e))?;
        let params = parse_params(buf, rest, what)?;
        Ok(NameAddr {
            display_name_raw: display,
            uri,
            angle,
            params,
        })
    }

    /// The display name with quotes and escapes removed.
    pub fn display_name(&self) -> Option<Vec<u8>> {
        self.display_name_raw.as_deref().map(unquote)
    }

    /// The `tag` parameter (dialog identification).
    pub fn tag(&self) -> Option<&Bytes> {
        self.params.get("tag").flatten()
    }
}

/// One Via header value (RFC 3261 §20.42, RFC 3581 rport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The protocol version as written (`2.0`).
    pub version: Bytes,
    /// The transport token (`UDP`, `TCP`, `TLS`, `WS`, or an unknown one).
    pub transport: Bytes,
    /// The sent-by host (IPv6 with brackets).
    pub host: Bytes,
    /// The sent-by host's kind.
    pub host_kind: HostKind,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    /// All parameters.
    pub params: Params,
}

/// The RFC 3261 branch prefix that promises a globally unique branch (§8.1.1.7).
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

impl Via {
    /// Parses one Via value.
    pub fn parse(buf: &Bytes, v: &[u8]) -> Result<Via, HeaderError> {
        let bad = || HeaderError::Malformed("Via");
        let v = trim(v);
        // sent-protocol = name LWS "/" LWS version LWS "/" LWS transport, LWS allowed around "/".
        let mut parts: SmallVec<[&[u8]; 3]> = SmallVec::new();
        let mut i = 0;
        for n in 0..3 {
            while i < v.len() && is_ws(v[i]) {
                i += 1;
            }
            let s = i;
            while i < v.len() && is_token_char(v[i]) {
                i += 1;
            }
            if s == i {
                return Err(bad());
            }
            parts.push(&v[s..i]);
            while i < v.len() && is_ws(v[i]) {
                i += 1;
            }
            if n < 2 {
                if v.get(i) != Some(&b'/') {
                    return Err(bad());
                }
                i += 1;
            }
        }
        if !parts[0].eq_ignore_ascii_case(b"SIP") {
            return Err(bad());
        }
        let rest = &v[i..];
        let hp_end = rest
            .iter()
            .position(|c| *c == b';' || is_ws(*c))
            .unwrap_or(rest.len());
        let hp = &rest[..hp_end];
        let (hl, port) = split_hostport(hp).map_err(|e| HeaderError::BadUri("Via", e))?;
        let host_kind = parse_host(&hp[..hl]).map_err(|e| HeaderError::BadUri("Via", e))?;
        let params = parse_params(buf, &rest[hp_end..], "Via")?;
        for (n, val) in &params.0 {
            if n.eq_ignore_ascii_case(b"branch") && val.as_ref().is_none_or(|b| !is_token(b)) {
                return Err(bad());
            }
            if n.eq_ignore_ascii_case(b"received") {
                let ok = val.as_ref().is_some_and(|r| {
                    parse_host(r).is_ok()
                        || std::str::from_utf8(r)
                            .is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
                });
                if !ok {
                    return Err(bad());
                }
            }
        }
        Ok(Via {
            version: buf.slice_ref(parts[1]),
            transport: buf.slice_ref(parts[2]),
            host: buf.slice_ref(&hp[..hl]),
            host_kind,
            port,
            params,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&Bytes> {
        self.params.get("branch").flatten()
    }

    /// True when the branch starts with the RFC 3261 magic cookie.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    /// `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&Bytes> {
        self.params.get("received").flatten()
    }

    /// `rport`: `None` absent, `Some(None)` requested (no value), `Some(Some(p))` filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| std::str::from_utf8(p).ok()?.parse::<u16>().ok()))
    }
}

/// The CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number, < 2³¹.
    pub seq: u32,
    /// The method token.
    pub method: Bytes,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(buf: &Bytes, v: &[u8]) -> Result<CSeq, HeaderError> {
        let v = trim(v);
        let d = v
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(v.len());
        let m = trim(&v[d..]);
        if d == 0 || m.len() == v.len() - d || !is_token(m) {
            return Err(HeaderError::Malformed("CSeq"));
        }
        let seq = parse_decimal(&v[..d]).ok_or(HeaderError::OutOfRange("CSeq"))?;
        if seq >= 1 << 31 {
            return Err(HeaderError::OutOfRange("CSeq"));
        }
        Ok(CSeq {
            // Checked < 2^31 above.
            seq: seq as u32,
            method: buf.slice_ref(m),
        })
    }
}

/// Parses all-digit text into a u64, `None` on overflow or a non-digit.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// The Contact header: `*` or a list of addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (REGISTER: remove all bindings).
    Star,
    /// One or more addresses, in order.
    List(Vec<NameAddr>),
}

/// A media type such as `application/sdp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// Top-level type, e.g. `application`.
    pub kind: Bytes,
    /// Subtype, e.g. `sdp`.
    pub subtype: Bytes,
    /// Parameters (boundary, charset, ...).
    pub params: Params,
}

impl MediaType {
    /// Parses `type/subtype *(;param)`.
    pub fn parse(buf: &Bytes, v: &[u8], what: &'static str) -> Result<MediaType, HeaderError> {
        let v = trim(v);
        let slash = memchr::memchr(b'/', v).ok_or(HeaderError::Malformed(what))?;
        let kind = trim(&v[..slash]);
        let rest = &v[slash + 1..];
        let st_end = rest.iter().position(|c| *c == b';').unwrap_or(rest.len());
        let subtype = trim(&rest[..st_end]);
        if !is_token(kind) || !is_token(subtype) {
            return Err(HeaderError::Malformed(what));
        }
        Ok(MediaType {
            kind: buf.slice_ref(kind),
            subtype: buf.slice_ref(subtype),
            params: parse_params(buf, &rest[st_end..], what)?,
        })
    }

    /// True when this is `type/subtype` (case-insensitive); `*` in self matches anything.
    pub fn matches(&self, kind: &str, subtype: &str) -> bool {
        (self.kind.as_ref() == b"*" || self.kind.eq_ignore_ascii_case(kind.as_bytes()))
            && (self.subtype.as_ref() == b"*"
                || self.subtype.eq_ignore_ascii_case(subtype.as_bytes()))
    }
}
