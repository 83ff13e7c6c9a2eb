//! SIP message model, parser and serializer (RFC 3261 §7, §25).
//!
//! A parsed [`Message`] owns one `Bytes` buffer; the start line, header names, header values
//! and body are slices of it (a folded header value is the one exception: it is unfolded into
//! a small buffer of its own). Typed views (Via, From, CSeq, ...) are parsed on demand from
//! those slices, so a message that is only routed never pays for headers nobody reads.
//!
//! Parsing is split in two levels on purpose. *Framing* (start line, header lines, body length)
//! decides whether the bytes are a SIP message at all; a failure there is a [`ParseError`] and
//! the datagram is dropped. Everything finer (a bad URI, a broken Via, a Content-Length that
//! disagrees with the body) is recorded as a [`Defect`] or found by the typed accessors, so
//! [`super::validate`] can still answer such a request with a 4xx that copies its Via, From,
//! To, Call-ID and CSeq.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{
    CSeq, Contacts, HeaderError, MediaType, NameAddr, Via, is_token, parse_decimal, split_commas,
    trim,
};
use super::uri::{Uri, UriError};

/// Size limits applied while parsing; everything above is refused before more work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message (start line, headers and body) in octets.
    pub max_message_size: usize,
    /// Most header fields (after unfolding) in one message.
    pub max_headers: usize,
    /// Longest header field, folded lines included, in octets.
    pub max_header_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 * 1024,
            max_headers: 128,
            max_header_len: 8 * 1024,
        }
    }
}

/// Why bytes could not be framed as a SIP message (the datagram is dropped, the stream closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing but CRLF keep-alives (RFC 5626) or nothing at all.
    #[error("empty message (keep-alive)")]
    Empty,
    /// The message is larger than [`Limits::max_message_size`].
    #[error("message larger than {0} octets")]
    TooLarge(usize),
    /// More header fields than [`Limits::max_headers`].
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// One header field longer than [`Limits::max_header_len`].
    #[error("header field longer than {0} octets")]
    HeaderTooLong(usize),
    /// The header section never ends with an empty line.
    #[error("header section not terminated")]
    Unterminated,
    /// The first line is neither a Request-Line nor a Status-Line.
    #[error("malformed start line")]
    BadStartLine,
    /// A Status-Line whose code is not three digits (RFC 4475 §3.1.2.19).
    #[error("malformed status code")]
    BadStatusCode,
    /// On a stream, Content-Length is missing, repeated or not a number, so framing is lost.
    #[error("stream message without a usable Content-Length")]
    StreamContentLength,
}

/// A problem found while framing that still leaves a message worth answering with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Defect {
    /// A header line had no `name:` (line number, 1-based, counting the start line).
    BadHeaderLine(usize),
    /// Content-Length is negative, not a number, or appears more than once (RFC 4475 §3.1.2.3, §3.3.9).
    BadContentLength,
    /// The header section was not closed by an empty line (the datagram ended first).
    MissingEmptyLine,
    /// Content-Length says more octets than the datagram carries (RFC 4475 §3.1.2.2).
    ContentLengthExceedsBody {
        /// What the header said.
        declared: usize,
        /// What arrived.
        available: usize,
    },
}

/// Request methods; unknown methods are kept as their token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// PUBLISH (RFC 3903)
    Publish,
    /// INFO (RFC 6086)
    Info,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// UPDATE (RFC 3311)
    Update,
    /// Any other token (case-sensitive, RFC 3261 §7.1).
    Extension(Bytes),
}

impl Method {
    /// Maps a token to a method; method names are case-sensitive.
    pub fn from_token(t: &[u8], buf: &Bytes) -> Method {
        match t {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            b"INFO" => Method::Info,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"UPDATE" => Method::Update,
            other => Method::Extension(buf.slice_ref(other)),
        }
    }

    /// The method token.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Options => b"OPTIONS",
            Method::Register => b"REGISTER",
            Method::Prack => b"PRACK",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Notify => b"NOTIFY",
            Method::Publish => b"PUBLISH",
            Method::Info => b"INFO",
            Method::Refer => b"REFER",
            Method::Message => b"MESSAGE",
            Method::Update => b"UPDATE",
            Method::Extension(b) => b,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

macro_rules! header_names {
    ($( $variant:ident => $canon:literal $(, $compact:literal)? ;)*) => {
        /// Header names we know, matched case-insensitively, compact forms folded in.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = $canon]
                $variant,
            )*
            /// Any other header, by its name as written.
            Other(Bytes),
        }

        impl HeaderName {
            /// Classifies a header name (full or compact form, any case).
            pub fn from_bytes(n: &[u8], buf: &Bytes) -> HeaderName {
                $(
                    if n.eq_ignore_ascii_case($canon.as_bytes()) $(|| n.eq_ignore_ascii_case($compact.as_bytes()))? {
                        return HeaderName::$variant;
                    }
                )*
                HeaderName::Other(buf.slice_ref(n))
            }

            /// The canonical (long) name.
            pub fn canonical(&self) -> &[u8] {
                match self {
                    $( HeaderName::$variant => $canon.as_bytes(), )*
                    HeaderName::Other(b) => b,
                }
            }
        }
    };
}

header_names! {
    Via => "Via", "v";
    From => "From", "f";
    To => "To", "t";
    CallId => "Call-ID", "i";
    CSeq => "CSeq";
    Contact => "Contact", "m";
    MaxForwards => "Max-Forwards";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    ContentEncoding => "Content-Encoding", "e";
    Route => "Route";
    RecordRoute => "Record-Route";
    Expires => "Expires";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", "k";
    Unsupported => "Unsupported";
    Allow => "Allow";
    Accept => "Accept";
    Subject => "Subject", "s";
    Event => "Event", "o";
    AllowEvents => "Allow-Events", "u";
    ReferTo => "Refer-To", "r";
    ReferredBy => "Referred-By", "b";
    SessionExpires => "Session-Expires", "x";
    AcceptContact => "Accept-Contact", "a";
    RejectContact => "Reject-Contact", "j";
    RequestDisposition => "Request-Disposition", "d";
    Identity => "Identity", "y";
    Timestamp => "Timestamp";
    UserAgent => "User-Agent";
    Server => "Server";
    RetryAfter => "Retry-After";
    MinExpires => "Min-Expires";
}

/// One header field: its name as written and its value with surrounding white space trimmed
/// and folding undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The classified name.
    pub name: HeaderName,
    /// The name exactly as written (for byte-faithful forwarding).
    pub raw_name: Bytes,
    /// The value.
    pub value: Bytes,
}

/// The first line of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// The method.
    pub method: Method,
    /// The Request-URI bytes between the two separating spaces, unparsed (may be malformed).
    pub uri_raw: Bytes,
    /// The version token, e.g. `SIP/2.0`.
    pub version: Bytes,
}

/// The first line of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// The version token, e.g. `SIP/2.0`.
    pub version: Bytes,
    /// Status code, 100..=699 once validated (the parser accepts any three digits).
    pub code: u16,
    /// Reason phrase (may be empty, may be UTF-8).
    pub reason: Bytes,
}

/// Request or response start line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// A request.
    Request(RequestLine),
    /// A response.
    Response(StatusLine),
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    raw: Bytes,
    start: StartLine,
    headers: Vec<Header>,
    body: Bytes,
    defects: Vec<Defect>,
}

/// Where a line ends: (end of content, start of next line). Accepts bare LF as well as CRLF.
fn line_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = memchr::memchr(b'\n', &buf[from..])? + from;
    let end = if nl > from && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

/// Finds the end of the header section: index just past the empty line.
fn header_section_end(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let (end, next) = line_end(buf, pos)?;
        if end == pos {
            return Some(next);
        }
        pos = next;
    }
}

fn skip_leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .position(|c| *c != b'\r' && *c != b'\n')
        .unwrap_or(buf.len())
}

impl Message {
    /// Parses one UDP datagram. Octets after the Content-Length body are ignored
    /// (RFC 3261 §18.3, RFC 4475 §3.1.1.8); without Content-Length the body is the rest.
    pub fn parse_datagram(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        if buf.len() > limits.max_message_size {
            return Err(ParseError::TooLarge(limits.max_message_size));
        }
        let skip = skip_leading_crlf(&buf);
        if skip == buf.len() {
            return Err(ParseError::Empty);
        }
        let buf = buf.slice(skip..);
        // A datagram that ends after a complete header line but without the empty line is
        // still framed by the datagram itself; it is answered with 400 rather than dropped.
        let (head_end, missing_empty_line) = match header_section_end(&buf) {
            Some(e) => (e, false),
            None if buf.ends_with(b"\n") => (buf.len(), true),
            None => return Err(ParseError::Unterminated),
        };
        let mut msg = Self::parse_head(&buf, head_end, limits)?;
        if missing_empty_line {
            msg.defects.push(Defect::MissingEmptyLine);
        }
        let available = buf.len() - head_end;
        let cl = msg.framing_content_length();
        let body_len = match cl {
            Ok(Some(n)) if n <= available => n,
            Ok(Some(n)) => {
                msg.defects.push(Defect::ContentLengthExceedsBody {
                    declared: n,
                    available,
                });
                available
            }
            Ok(None) => available,
            Err(()) => {
                msg.defects.push(Defect::BadContentLength);
                available
            }
        };
        msg.body = buf.slice(head_end..head_end + body_len);
        msg.raw = buf.slice(..head_end + body_len);
        Ok(msg)
    }

    /// Parses one message from the front of a stream buffer (TCP/TLS). Returns `Ok(None)` when
    /// more bytes are needed; on success the message's bytes are split off `buf`. Leading CRLF
    /// keep-alives are consumed. Errors mean framing is lost and the connection must close.
    pub fn parse_stream(
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Message>, ParseError> {
        let skip = skip_leading_crlf(buf);
        let _ = buf.split_to(skip);
        if buf.is_empty() {
            return Ok(None);
        }
        let Some(head_end) = header_section_end(buf) else {
            if buf.len() > limits.max_message_size {
                return Err(ParseError::TooLarge(limits.max_message_size));
            }
            return Ok(None);
        };
        if head_end > limits.max_message_size {
            return Err(ParseError::TooLarge(limits.max_message_size));
        }
        // Parse the head from a copy-free view first to learn the body length.
        let head = Bytes::copy_from_slice(&buf[..head_end]);
        let probe = Self::parse_head(&head, head_end, limits)?;
        let n = match probe.framing_content_length() {
            Ok(Some(n)) => n,
            _ => return Err(ParseError::StreamContentLength),
        };
        if head_end + n > limits.max_message_size {
            return Err(ParseError::TooLarge(limits.max_message_size));
        }
        if buf.len() < head_end + n {
            return Ok(None);
        }
        let bytes = buf.split_to(head_end + n).freeze();
        let mut msg = Self::parse_head(&bytes, head_end, limits)?;
        msg.body = bytes.slice(head_end..);
        msg.raw = bytes;
        Ok(Some(msg))
    }

    /// The Content-Length for framing: `Ok(None)` absent, `Err` repeated or malformed.
    fn framing_content_length(&self) -> Result<Option<usize>, ()> {
        let mut it = self.headers_named(&HeaderName::ContentLength);
        let Some(first) = it.next() else {
            return Ok(None);
        };
        if it.next().is_some() {
            return Err(());
        }
        let n = parse_decimal(trim(first)).ok_or(())?;
        usize::try_from(n).map(Some).map_err(|_| ())
    }

    fn parse_head(buf: &Bytes, head_end: usize, limits: &Limits) -> Result<Message, ParseError> {
        // The start line.
        let (sl_end, mut pos) = line_end(buf, 0).ok_or(ParseError::Unterminated)?;
        let sl = &buf[..sl_end];
        if sl.len() > limits.max_header_len {
            return Err(ParseError::HeaderTooLong(limits.max_header_len));
        }
        let start = Self::parse_start_line(buf, sl)?;
        let mut headers: Vec<Header> = Vec::with_capacity(16);
        let mut defects = Vec::new();
        let mut line_no = 1;
        // Header lines, with folding: a line starting with SP/HT continues the previous field.
        while pos < head_end {
            let (end, next) = line_end(buf, pos).ok_or(ParseError::Unterminated)?;
            if end == pos {
                break;
            }
            line_no += 1;
            let line_start = pos;
            let mut field_end = end;
            let mut after = next;
            let mut folded = false;
            while after < head_end && matches!(buf[after], b' ' | b'\t') {
                let (e, n) = line_end(buf, after).ok_or(ParseError::Unterminated)?;
                if e == after {
                    break;
                }
                folded = true;
                field_end = e;
                after = n;
                line_no += 1;
            }
            if field_end - line_start > limits.max_header_len {
                return Err(ParseError::HeaderTooLong(limits.max_header_len));
            }
            pos = after;
            let field = &buf[line_start..field_end];
            let Some(colon) = memchr::memchr(b':', field) else {
                defects.push(Defect::BadHeaderLine(line_no));
                continue;
            };
            let name = trim(&field[..colon]);
            if !is_token(name) {
                defects.push(Defect::BadHeaderLine(line_no));
                continue;
            }
            let raw_value = &field[colon + 1..];
            let value = if folded {
                // Unfold: each CRLF + leading white space becomes one SP (RFC 3261 §7.3.1).
                let mut v = Vec::with_capacity(raw_value.len());
                for (k, part) in raw_value.split(|c| *c == b'\n').enumerate() {
                    let part = part.strip_suffix(b"\r").unwrap_or(part);
                    let part = trim(part);
                    if part.is_empty() {
                        continue;
                    }
                    if k > 0 && !v.is_empty() {
                        v.push(b' ');
                    }
                    v.extend_from_slice(part);
                }
                Bytes::from(v)
            } else {
                buf.slice_ref(trim(raw_value))
            };
            if headers.len() == limits.max_headers {
                return Err(ParseError::TooManyHeaders(limits.max_headers));
            }
            headers.push(Header {
                name: HeaderName::from_bytes(name, buf),
                raw_name: buf.slice_ref(name),
                value,
            });
        }
        Ok(Message {
            raw: buf.clone(),
            start,
            headers,
            body: Bytes::new(),
            defects,
        })
    }

    fn parse_start_line(buf: &Bytes, sl: &[u8]) -> Result<StartLine, ParseError> {
        if sl.len() >= 4 && sl[..4].eq_ignore_ascii_case(b"SIP/") {
            // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
            let sp = memchr::memchr(b' ', sl).ok_or(ParseError::BadStartLine)?;
            let rest = &sl[sp + 1..];
            if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
                return Err(ParseError::BadStatusCode);
            }
            if rest.len() > 3 && rest[3] != b' ' {
                return Err(ParseError::BadStatusCode);
            }
            let code = rest[..3]
                .iter()
                .fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
            let reason = if rest.len() > 4 { &rest[4..] } else { &[][..] };
            return Ok(StartLine::Response(StatusLine {
                version: buf.slice_ref(&sl[..sp]),
                code,
                reason: buf.slice_ref(reason),
            }));
        }
        // Request-Line = Method SP Request-URI SP SIP-Version. The URI is what lies between
        // the first and the last SP; if it has white space of its own, validation answers 400.
        let first = memchr::memchr(b' ', sl).ok_or(ParseError::BadStartLine)?;
        let last = memchr::memrchr(b' ', sl).ok_or(ParseError::BadStartLine)?;
        if first == last {
            return Err(ParseError::BadStartLine);
        }
        let method = &sl[..first];
        if !is_token(method) {
            return Err(ParseError::BadStartLine);
        }
        Ok(StartLine::Request(RequestLine {
            method: Method::from_token(method, buf),
            uri_raw: buf.slice_ref(&sl[first + 1..last]),
            version: buf.slice_ref(&sl[last + 1..]),
        }))
    }

    /// The bytes of the message as framed (excludes octets after the body in a datagram).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The start line.
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    /// The request line, if a request.
    pub fn request_line(&self) -> Option<&RequestLine> {
        match &self.start {
            StartLine::Request(r) => Some(r),
            StartLine::Response(_) => None,
        }
    }

    /// The status line, if a response.
    pub fn status_line(&self) -> Option<&StatusLine> {
        match &self.start {
            StartLine::Response(s) => Some(s),
            StartLine::Request(_) => None,
        }
    }

    /// The request method, if a request.
    pub fn method(&self) -> Option<&Method> {
        self.request_line().map(|r| &r.method)
    }

    /// The status code, if a response.
    pub fn status(&self) -> Option<u16> {
        self.status_line().map(|s| s.code)
    }

    /// The Request-URI, parsed.
    pub fn request_uri(&self) -> Option<Result<Uri, UriError>> {
        self.request_line().map(|r| Uri::parse(r.uri_raw.clone()))
    }

    /// All header fields in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Framing defects found while parsing (validation turns them into 400).
    pub fn defects(&self) -> &[Defect] {
        &self.defects
    }

    /// Values of every field with this name, in order.
    pub fn headers_named<'a>(
        &'a self,
        name: &'a HeaderName,
    ) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.headers
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| &h.value)
    }

    /// The value of the only field with this name: `Ok(None)` if absent, error if repeated.
    pub fn single<'a>(
        &'a self,
        name: &'a HeaderName,
        what: &'static str,
    ) -> Result<Option<&'a Bytes>, HeaderError> {
        let mut it = self.headers_named(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(HeaderError::Multiple(what));
        }
        Ok(first)
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Every Via value, top first (several fields and comma lists flattened).
    pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
        let mut out = Vec::with_capacity(2);
        for v in self.headers_named(&HeaderName::Via) {
            for part in split_commas(v).ok_or(HeaderError::Malformed("Via"))? {
                if part.is_empty() {
                    return Err(HeaderError::Malformed("Via"));
                }
                out.push(Via::parse(v, part)?);
            }
        }
        Ok(out)
    }

    /// The topmost Via, parsed (transaction matching and response routing use only this one).
    pub fn top_via(&self) -> Result<Option<Via>, HeaderError> {
        let Some(v) = self.headers_named(&HeaderName::Via).next() else {
            return Ok(None);
        };
        let parts = split_commas(v).ok_or(HeaderError::Malformed("Via"))?;
        match parts.first() {
            Some(p) if !p.is_empty() => Via::parse(v, p).map(Some),
            _ => Err(HeaderError::Malformed("Via")),
        }
    }

    fn name_addr(
        &self,
        name: &HeaderName,
        what: &'static str,
    ) -> Result<Option<NameAddr>, HeaderError> {
        match self.single(name, what)? {
            Some(v) => NameAddr::parse(v, v, what).map(Some),
            None => Ok(None),
        }
    }

    /// The From header.
    pub fn from(&self) -> Result<Option<NameAddr>, HeaderError> {
        self.name_addr(&HeaderName::From, "From")
    }

    /// The To header.
    pub fn to(&self) -> Result<Option<NameAddr>, HeaderError> {
        self.name_addr(&HeaderName::To, "To")
    }

    /// The Call-ID (a non-empty word without white space).
    pub fn call_id(&self) -> Result<Option<Bytes>, HeaderError> {
        match self.single(&HeaderName::CallId, "Call-ID")? {
            Some(v) if v.is_empty() || v.iter().any(|c| *c <= b' ') => {
                Err(HeaderError::Malformed("Call-ID"))
            }
            Some(v) => Ok(Some(v.clone())),
            None => Ok(None),
        }
    }

    /// The CSeq header.
    pub fn cseq(&self) -> Result<Option<CSeq>, HeaderError> {
        match self.single(&HeaderName::CSeq, "CSeq")? {
            Some(v) => CSeq::parse(v, v).map(Some),
            None => Ok(None),
        }
    }

    /// Max-Forwards (0..=255).
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        match self.single(&HeaderName::MaxForwards, "Max-Forwards")? {
            Some(v) => {
                let n = parse_decimal(v).ok_or(HeaderError::Malformed("Max-Forwards"))?;
                u8::try_from(n)
                    .map(Some)
                    .map_err(|_| HeaderError::OutOfRange("Max-Forwards"))
            }
            None => Ok(None),
        }
    }

    /// Content-Length as written (framing problems are in [`Message::defects`]).
    pub fn content_length(&self) -> Result<Option<usize>, HeaderError> {
        match self.single(&HeaderName::ContentLength, "Content-Length")? {
            Some(v) => parse_decimal(v)
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or(HeaderError::Malformed("Content-Length")),
            None => Ok(None),
        }
    }

    /// Content-Type.
    pub fn content_type(&self) -> Result<Option<MediaType>, HeaderError> {
        match self.single(&HeaderName::ContentType, "Content-Type")? {
            Some(v) => MediaType::parse(v, v, "Content-Type").map(Some),
            None => Ok(None),
        }
    }

    /// Every media range of every Accept field.
    pub fn accept(&self) -> Result<Vec<MediaType>, HeaderError> {
        let mut out = Vec::new();
        for v in self.headers_named(&HeaderName::Accept) {
            for part in split_commas(v).ok_or(HeaderError::Malformed("Accept"))? {
                if part.is_empty() {
                    continue;
                }
                out.push(MediaType::parse(v, part, "Accept")?);
            }
        }
        Ok(out)
    }

    /// The Contact header(s): `*` or all addresses in order.
    pub fn contacts(&self) -> Result<Option<Contacts>, HeaderError> {
        let mut list = Vec::new();
        let mut star = false;
        for v in self.headers_named(&HeaderName::Contact) {
            if v.as_ref() == b"*" {
                star = true;
                continue;
            }
            for part in split_commas(v).ok_or(HeaderError::Malformed("Contact"))? {
                if part.is_empty() {
                    return Err(HeaderError::Malformed("Contact"));
                }
                list.push(NameAddr::parse(v, part, "Contact")?);
            }
        }
        match (star, list.is_empty()) {
            (true, true) => Ok(Some(Contacts::Star)),
            (true, false) => Err(HeaderError::Malformed("Contact")),
            (false, true) => Ok(None),
            (false, false) => Ok(Some(Contacts::List(list))),
        }
    }

    fn addr_list(
        &self,
        name: &HeaderName,
        what: &'static str,
    ) -> Result<Vec<NameAddr>, HeaderError> {
        let mut out = Vec::new();
        for v in self.headers_named(name) {
            for part in split_commas(v).ok_or(HeaderError::Malformed(what))? {
                if part.is_empty() {
                    return Err(HeaderError::Malformed(what));
                }
                out.push(NameAddr::parse(v, part, what)?);
            }
        }
        Ok(out)
    }

    /// Route set, top first.
    pub fn routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.addr_list(&HeaderName::Route, "Route")
    }

    /// Record-Route set, top first.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.addr_list(&HeaderName::RecordRoute, "Record-Route")
    }

    /// Expires in seconds; overlarge values saturate at u32::MAX (RFC 3261 §20.19 leaves the
    /// cap to the element; registrars clamp further).
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        match self.single(&HeaderName::Expires, "Expires")? {
            Some(v) if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => {
                Ok(Some(parse_decimal(v).map_or(u32::MAX, |n| {
                    u32::try_from(n).unwrap_or(u32::MAX)
                })))
            }
            Some(_) => Err(HeaderError::Malformed("Expires")),
            None => Ok(None),
        }
    }

    /// Option tags of every field with this name (Require, Proxy-Require, Supported, ...).
    pub fn tokens(&self, name: &HeaderName) -> Vec<Bytes> {
        let mut out = Vec::new();
        for v in self.headers_named(name) {
            for t in v.split(|c| *c == b',') {
                let t = trim(t);
                if !t.is_empty() {
                    out.push(v.slice_ref(t));
                }
            }
        }
        out
    }

    /// Serialises the message: start line, headers as stored (unfolded), a Content-Length
    /// that matches the body, and the body. Header values and URIs are written byte for byte.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.raw.len() + 32);
        match &self.start {
            StartLine::Request(r) => {
                b.put_slice(r.method.as_bytes());
                b.put_u8(b' ');
                b.put_slice(&r.uri_raw);
                b.put_u8(b' ');
                b.put_slice(&r.version);
            }
            StartLine::Response(s) => {
                b.put_slice(&s.version);
                b.put_slice(format!(" {:03} ", s.code).as_bytes());
                b.put_slice(&s.reason);
            }
        }
        b.put_slice(b"\r\n");
        for h in &self.headers {
            if h.name == HeaderName::ContentLength {
                continue;
            }
            b.put_slice(&h.raw_name);
            b.put_slice(b": ");
            b.put_slice(&h.value);
            b.put_slice(b"\r\n");
        }
        b.put_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        b.put_slice(&self.body);
        b.freeze()
    }
}

/// Writes a new message (responses we originate, ACK/CANCEL, requests of the B2BUA).
#[derive(Debug)]
pub struct MessageBuilder {
    buf: BytesMut,
}

impl MessageBuilder {
    /// Starts a request line.
    pub fn request(method: &Method, uri: &[u8]) -> MessageBuilder {
        let mut buf = BytesMut::with_capacity(512);
        buf.put_slice(method.as_bytes());
        buf.put_u8(b' ');
        buf.put_slice(uri);
        buf.put_slice(b" SIP/2.0\r\n");
        MessageBuilder { buf }
    }

    /// Starts a status line.
    pub fn response(code: u16, reason: &str) -> MessageBuilder {
        let mut buf = BytesMut::with_capacity(512);
        buf.put_slice(format!("SIP/2.0 {code:03} {reason}\r\n").as_bytes());
        MessageBuilder { buf }
    }

    /// Appends a header field.
    pub fn header(mut self, name: &[u8], value: &[u8]) -> MessageBuilder {
        self.buf.put_slice(name);
        self.buf.put_slice(b": ");
        self.buf.put_slice(value);
        self.buf.put_slice(b"\r\n");
        self
    }

    /// Copies every field with `name` from `msg`, values unchanged.
    pub fn copy_headers(mut self, msg: &Message, name: &HeaderName) -> MessageBuilder {
        for h in msg.headers.iter().filter(|h| &h.name == name) {
            self = self.header(name.canonical(), &h.value);
        }
        self
    }

    /// Ends the header section with a Content-Length and appends the body.
    pub fn body(mut self, body: &[u8]) -> Bytes {
        self.buf
            .put_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        self.buf.put_slice(body);
        self.buf.freeze()
    }

    /// Ends the message without a body.
    pub fn finish(self) -> Bytes {
        self.body(b"")
    }
}

/// Builds a response to `req` per RFC 3261 §8.2.6: Via (all), From, To (with `to_tag` added
/// when To has none), Call-ID, CSeq and Timestamp copied byte for byte. Works on partially
/// valid requests: fields that are missing are simply not copied.
pub fn response_to(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
) -> MessageBuilder {
    response_to_source(req, None, code, reason, to_tag)
}

/// The top Via value with `received` and a filled-in `rport` for a request that arrived from
/// `source` (RFC 3261 §18.2.1, RFC 3581 §4): `received` is added when the sent-by host is not
/// the source address, `rport` is filled when the client asked for it. Other Via values in the
/// same field are kept byte for byte.
pub fn stamp_top_via(value: &Bytes, source: std::net::SocketAddr) -> Bytes {
    let Some(parts) = split_commas(value) else {
        return value.clone();
    };
    let Some(first) = parts.first().copied() else {
        return value.clone();
    };
    let Ok(via) = Via::parse(value, first) else {
        return value.clone();
    };
    let base = value.as_ptr() as usize;
    let first_start = first.as_ptr() as usize - base;
    let first_end = first_start + first.len();
    let mut out = Vec::with_capacity(value.len() + 40);
    out.extend_from_slice(&value[..first_start]);
    let mut elem = first.to_vec();
    if via.rport() == Some(None)
        && let Some((name, _)) = via
            .params
            .0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"rport"))
    {
        let at = name.as_ptr() as usize - base - first_start + name.len();
        let port = format!("={}", source.port());
        elem.splice(at..at, port.bytes());
    }
    let ip = match source.ip() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    };
    if via.received().is_none() && via.host.as_ref() != ip.as_bytes() {
        elem.extend_from_slice(b";received=");
        elem.extend_from_slice(ip.as_bytes());
    }
    out.extend_from_slice(&elem);
    out.extend_from_slice(&value[first_end..]);
    Bytes::from(out)
}

/// As [`response_to`], with the top Via stamped for the request's `source` (see
/// [`stamp_top_via`]) so the client and any NAT in between can match the response.
pub fn response_to_source(
    req: &Message,
    source: Option<std::net::SocketAddr>,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
) -> MessageBuilder {
    let mut b = MessageBuilder::response(code, reason);
    for (i, v) in req.headers_named(&HeaderName::Via).enumerate() {
        match source {
            Some(src) if i == 0 => b = b.header(b"Via", &stamp_top_via(v, src)),
            _ => b = b.header(b"Via", v),
        }
    }
    let mut b = b.copy_headers(req, &HeaderName::From);
    for to in req.headers_named(&HeaderName::To) {
        let has_tag = NameAddr::parse(to, to, "To")
            .map(|n| n.tag().is_some())
            .unwrap_or(true);
        match to_tag {
            Some(tag) if !has_tag && code > 100 => {
                let mut v = to.to_vec();
                v.extend_from_slice(b";tag=");
                v.extend_from_slice(tag);
                b = b.header(b"To", &v);
            }
            _ => b = b.header(b"To", to),
        }
    }
    b.copy_headers(req, &HeaderName::CallId)
        .copy_headers(req, &HeaderName::CSeq)
        .copy_headers(req, &HeaderName::Timestamp)
}
