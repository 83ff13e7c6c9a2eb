//! SDP (RFC 4566) for audio calls, and the RFC 3264 offer/answer that anchors media.
//!
//! zentrale is a B2BUA with anchored media: every SDP that crosses it is parsed, its
//! connection address and audio port are replaced by the relay's own (so both parties send
//! RTP to zentrale), and the answer's codec is picked from what we relay (PCMU, PCMA and
//! RFC 4733 telephone-event). Only what that needs is modelled as types; other attributes are
//! kept verbatim so nothing a peer sends is lost when the description is rebuilt.
//!
//! The parser is strict and bounded because SDP arrives from the network: every limit below
//! is checked before anything is stored, malformed input is a typed [`SdpError`] and no input
//! panics (a proptest feeds it random text). Lines may end in CRLF or a bare LF, which real
//! phones send; everything else follows the grammar of RFC 4566 section 9.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Largest SDP body accepted, in bytes; real audio offers are well under 2 KiB.
pub const MAX_SDP_LEN: usize = 16 * 1024;
/// Largest single line accepted, in bytes.
pub const MAX_LINE_LEN: usize = 1024;
/// Most `m=` sections accepted in one description.
pub const MAX_MEDIA: usize = 16;
/// Most attributes accepted per section (session or media).
pub const MAX_ATTRIBUTES: usize = 64;
/// Most formats accepted on one `m=` line.
pub const MAX_FORMATS: usize = 32;

/// Why an SDP body was rejected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is larger than [`MAX_SDP_LEN`].
    #[error("SDP body of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The body is not UTF-8 text.
    #[error("SDP body is not UTF-8")]
    NotUtf8,
    /// A line is longer than [`MAX_LINE_LEN`].
    #[error("SDP line {line} is too long")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
    },
    /// A line is not of the form `<letter>=<value>`.
    #[error("SDP line {line} is malformed")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
    },
    /// A line type that RFC 4566 does not define, or one in a place it may not appear.
    #[error("SDP line {line} of type '{kind}' is not allowed there")]
    UnexpectedLine {
        /// 1-based line number.
        line: usize,
        /// The line's type letter.
        kind: char,
    },
    /// A mandatory line (`v=`, `o=`, `s=`, `t=`) is missing.
    #[error("SDP is missing its mandatory '{0}=' line")]
    Missing(char),
    /// `v=` is not 0.
    #[error("SDP version is not 0")]
    Version,
    /// A field has a value outside its grammar (address, port, number, token).
    #[error("SDP field {field} on line {line} is invalid")]
    InvalidField {
        /// 1-based line number.
        line: usize,
        /// Which field, e.g. `"c= address"`.
        field: &'static str,
    },
    /// A media section has no connection address, neither its own nor a session-level one.
    #[error("media section {0} has no connection address")]
    NoConnection(usize),
    /// A count limit (media sections, attributes, formats) was exceeded.
    #[error("SDP exceeds the limit on {0}")]
    TooMany(&'static str),
    /// The offer has no audio stream with a codec we relay: answer 488.
    #[error("no audio stream with a supported codec in the offer")]
    NoCommonCodec,
    /// The `fmtp` event list of telephone-event is malformed.
    #[error("telephone-event list is malformed")]
    EventList,
}

/// The network address of a `c=` line (`IN IP4` or `IN IP6`, unicast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// Where media is sent; `0.0.0.0` is the RFC 2543 way of saying "on hold".
    pub address: IpAddr,
}

/// The `o=` line: who created the session and which version of it this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user name, `-` when there is none.
    pub username: String,
    /// Session id, unique per originator.
    pub session_id: u64,
    /// Incremented on every change (re-INVITE with new SDP).
    pub session_version: u64,
    /// The originator's address.
    pub address: IpAddr,
}

/// The media direction attributes of RFC 3264 section 5.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways (the default when no attribute is present).
    #[default]
    SendRecv,
    /// The describing party only sends (puts the other on hold).
    SendOnly,
    /// The describing party only receives.
    RecvOnly,
    /// No media either way.
    Inactive,
}

impl Direction {
    /// The direction an answer must take for an offer with this one (RFC 3264 section 6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_name(name: &str) -> Option<Direction> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// An `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The RTP payload type it describes.
    pub payload_type: u8,
    /// Encoding name as sent (compared case-insensitively).
    pub encoding: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count, when given.
    pub channels: Option<u8>,
}

/// An `a=fmtp:<pt> <parameters>` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    /// The RTP payload type it describes.
    pub payload_type: u8,
    /// Format parameters, verbatim.
    pub parameters: String,
}

/// The `a=rtcp:` attribute of RFC 3605: RTCP not on the RTP port + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpAttribute {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the media's.
    pub connection: Option<Connection>,
}

/// Any other attribute, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The name before `:`.
    pub name: String,
    /// The value after `:`, if any.
    pub value: Option<String>,
}

/// The kind of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaKind {
    /// `audio`: the only kind zentrale relays.
    Audio,
    /// Anything else (`video`, `application`, ...): always rejected with port 0 in answers.
    Other(String),
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// The media kind.
    pub kind: MediaKind,
    /// The RTP port; 0 means the stream is rejected or disabled.
    pub port: u16,
    /// The transport protocol, e.g. `RTP/AVP`.
    pub protocol: String,
    /// The format list; for RTP protocols these are payload type numbers.
    pub formats: Vec<String>,
    /// A media-level `c=` line.
    pub connection: Option<Connection>,
    /// `a=rtpmap` attributes.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` attributes.
    pub fmtps: Vec<Fmtp>,
    /// `a=ptime` (packet duration in ms).
    pub ptime: Option<u32>,
    /// `a=maxptime` in ms.
    pub maxptime: Option<u32>,
    /// A direction attribute at media level.
    pub direction: Option<Direction>,
    /// `a=rtcp`.
    pub rtcp: Option<RtcpAttribute>,
    /// Other attributes, verbatim.
    pub attributes: Vec<Attribute>,
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` line.
    pub session_name: String,
    /// The session-level `c=` line.
    pub connection: Option<Connection>,
    /// The first `t=` line (start, stop); `0 0` for the usual unbounded session.
    pub timing: (u64, u64),
    /// A direction attribute at session level.
    pub direction: Option<Direction>,
    /// Other session-level attributes, verbatim.
    pub attributes: Vec<Attribute>,
    /// The `m=` sections in order.
    pub media: Vec<MediaDescription>,
}

/// The codecs zentrale relays without transcoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// RFC 4733 DTMF events (dynamic payload type).
    TelephoneEvent,
}

impl Codec {
    fn encoding(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::TelephoneEvent => "telephone-event",
        }
    }

    fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::TelephoneEvent => None,
        }
    }
}

/// A negotiated payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec.
    pub codec: Codec,
    /// The payload type the offerer chose for it.
    pub payload_type: u8,
}

/// Where our side of an anchored stream lives: the relay's address and RTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address written into `c=` and `o=` (the public one when behind NAT).
    pub address: IpAddr,
    /// Our RTP port; RTCP is this + 1.
    pub port: u16,
}

/// The result of answering an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The answer to send back.
    pub sdp: SessionDescription,
    /// The voice codec chosen.
    pub audio: Negotiated,
    /// The telephone-event payload type, if the offer had one.
    pub telephone_event: Option<Negotiated>,
    /// Where the offerer wants to receive RTP, `None` when on hold (`0.0.0.0`) or port 0.
    pub remote_rtp: Option<SocketAddr>,
    /// The direction of the answer.
    pub direction: Direction,
}

/// Plain RTP profiles the relay can carry. SRTP (`RTP/SAVP`) keys are negotiated end to end
/// in SDP (`a=crypto`), which an anchoring B2BUA cannot pass through without terminating
/// SRTP itself, so such streams are refused rather than answered wrongly.
fn is_relayed_protocol(protocol: &str) -> bool {
    protocol == "RTP/AVP" || protocol == "RTP/AVPF"
}

fn is_rtp_protocol(protocol: &str) -> bool {
    protocol.starts_with("RTP/")
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b) || b == b'/')
}

/// Text that may be written back verbatim without breaking the line structure.
fn is_line_text(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

struct LineCtx {
    line: usize,
}

impl LineCtx {
    fn invalid(&self, field: &'static str) -> SdpError {
        SdpError::InvalidField {
            line: self.line,
            field,
        }
    }

    fn number<T: std::str::FromStr>(&self, s: &str, field: &'static str) -> Result<T, SdpError> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.invalid(field));
        }
        s.parse().map_err(|_| self.invalid(field))
    }

    fn address(&self, nettype: &str, addrtype: &str, addr: &str) -> Result<IpAddr, SdpError> {
        if nettype != "IN" {
            return Err(self.invalid("network type"));
        }
        let ip: IpAddr = match addrtype {
            "IP4" => addr
                .parse::<std::net::Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| self.invalid("IPv4 address"))?,
            "IP6" => addr
                .parse::<std::net::Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| self.invalid("IPv6 address"))?,
            _ => return Err(self.invalid("address type")),
        };
        Ok(ip)
    }

    fn connection(&self, value: &str) -> Result<Connection, SdpError> {
        let mut parts = value.split(' ');
        let (Some(net), Some(kind), Some(addr), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(self.invalid("c= line"));
        };
        // Multicast with TTL/count suffixes never occurs on a telephone call; refusing
        // it keeps "the address" a single unicast destination.
        let address = self.address(net, kind, addr)?;
        if address.is_multicast() {
            return Err(self.invalid("c= multicast address"));
        }
        Ok(Connection { address })
    }
}

fn parse_attribute(ctx: &LineCtx, value: &str) -> Result<(String, Option<String>), SdpError> {
    let (name, val) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (value, None),
    };
    if !is_token(name) {
        return Err(ctx.invalid("attribute name"));
    }
    Ok((name.to_owned(), val.map(str::to_owned)))
}

fn parse_payload_type(ctx: &LineCtx, s: &str) -> Result<u8, SdpError> {
    let pt: u8 = ctx.number(s, "payload type")?;
    if pt > 127 {
        return Err(ctx.invalid("payload type"));
    }
    Ok(pt)
}

/// Applies one `a=` line to a media section.
fn media_attribute(
    ctx: &LineCtx,
    m: &mut MediaDescription,
    name: String,
    value: Option<String>,
) -> Result<(), SdpError> {
    if m.rtpmaps.len() + m.fmtps.len() + m.attributes.len() >= MAX_ATTRIBUTES {
        return Err(SdpError::TooMany("attributes"));
    }
    if let Some(d) = Direction::from_name(&name) {
        if value.is_some() {
            return Err(ctx.invalid("direction attribute"));
        }
        m.direction = Some(d);
        return Ok(());
    }
    match (name.as_str(), value) {
        ("rtpmap", Some(v)) => {
            let (pt, rest) = v.split_once(' ').ok_or_else(|| ctx.invalid("rtpmap"))?;
            let payload_type = parse_payload_type(ctx, pt)?;
            let mut it = rest.split('/');
            let encoding = it.next().unwrap_or_default();
            if !is_token(encoding) {
                return Err(ctx.invalid("rtpmap encoding"));
            }
            let clock_rate: u32 = ctx.number(it.next().unwrap_or_default(), "rtpmap clock rate")?;
            let channels = match it.next() {
                Some(c) => Some(ctx.number::<u8>(c, "rtpmap channels")?),
                None => None,
            };
            if it.next().is_some() || clock_rate == 0 {
                return Err(ctx.invalid("rtpmap"));
            }
            m.rtpmaps.push(RtpMap {
                payload_type,
                encoding: encoding.to_owned(),
                clock_rate,
                channels,
            });
        }
        ("fmtp", Some(v)) => {
            let (pt, params) = v.split_once(' ').ok_or_else(|| ctx.invalid("fmtp"))?;
            let payload_type = parse_payload_type(ctx, pt)?;
            m.fmtps.push(Fmtp {
                payload_type,
                parameters: params.to_owned(),
            });
        }
        ("ptime", Some(v)) => m.ptime = Some(ctx.number(&v, "ptime")?),
        ("maxptime", Some(v)) => m.maxptime = Some(ctx.number(&v, "maxptime")?),
        ("rtcp", Some(v)) => {
            let mut it = v.split(' ');
            let port: u16 = ctx.number(it.next().unwrap_or_default(), "rtcp port")?;
            let connection = match (it.next(), it.next(), it.next(), it.next()) {
                (None, ..) => None,
                (Some(n), Some(k), Some(a), None) => Some(Connection {
                    address: ctx.address(n, k, a)?,
                }),
                _ => return Err(ctx.invalid("rtcp")),
            };
            m.rtcp = Some(RtcpAttribute { port, connection });
        }
        ("rtpmap" | "fmtp" | "ptime" | "maxptime" | "rtcp", None) => {
            return Err(ctx.invalid("attribute value"));
        }
        (_, value) => m.attributes.push(Attribute { name, value }),
    }
    Ok(())
}

fn parse_media_line(ctx: &LineCtx, value: &str) -> Result<MediaDescription, SdpError> {
    let mut it = value.split(' ');
    let kind = it.next().unwrap_or_default();
    let port_field = it.next().unwrap_or_default();
    let protocol = it.next().unwrap_or_default();
    if !is_token(kind) || !is_token(protocol) {
        return Err(ctx.invalid("m= line"));
    }
    // `<port>/<count>` is only meaningful for layered multicast; one port is all we relay.
    let port: u16 = ctx.number(port_field, "m= port")?;
    let mut formats = Vec::new();
    for f in it {
        if formats.len() >= MAX_FORMATS {
            return Err(SdpError::TooMany("formats"));
        }
        if !is_token(f) {
            return Err(ctx.invalid("m= format"));
        }
        if is_rtp_protocol(protocol) {
            parse_payload_type(ctx, f)?;
        }
        formats.push(f.to_owned());
    }
    if formats.is_empty() {
        return Err(ctx.invalid("m= formats"));
    }
    Ok(MediaDescription {
        kind: if kind == "audio" {
            MediaKind::Audio
        } else {
            MediaKind::Other(kind.to_owned())
        },
        port,
        protocol: protocol.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        maxptime: None,
        direction: None,
        rtcp: None,
        attributes: Vec::new(),
    })
}

impl SessionDescription {
    /// Parses an SDP body strictly (see the module docs for the limits).
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        if body.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge(body.len()));
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        // The section state: which line types may come next (RFC 4566 section 5 order).
        #[derive(PartialEq, PartialOrd, Clone, Copy)]
        enum Stage {
            Start,
            Version,
            Origin,
            Name,
            Connection,
            Timing,
            Attributes,
            Media,
        }
        let mut stage = Stage::Start;
        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut timing = None;
        let mut direction = None;
        let mut attributes: Vec<Attribute> = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();

        let text = text.strip_suffix('\n').unwrap_or(text);
        for (idx, raw) in text.split('\n').enumerate() {
            let ctx = LineCtx { line: idx + 1 };
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.len() > MAX_LINE_LEN {
                return Err(SdpError::LineTooLong { line: ctx.line });
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(SdpError::MalformedLine { line: ctx.line });
            }
            if !is_line_text(line) || line.contains('\t') {
                return Err(SdpError::MalformedLine { line: ctx.line });
            }
            let kind = bytes[0] as char;
            let value = &line[2..];
            let unexpected = SdpError::UnexpectedLine {
                line: ctx.line,
                kind,
            };
            match (kind, stage) {
                ('v', Stage::Start) => {
                    if value != "0" {
                        return Err(SdpError::Version);
                    }
                    stage = Stage::Version;
                }
                ('o', Stage::Version) => {
                    let mut it = value.split(' ');
                    let (Some(user), Some(id), Some(ver), Some(net), Some(kind), Some(addr), None) = (
                        it.next(),
                        it.next(),
                        it.next(),
                        it.next(),
                        it.next(),
                        it.next(),
                        it.next(),
                    ) else {
                        return Err(ctx.invalid("o= line"));
                    };
                    if user.is_empty() {
                        return Err(ctx.invalid("o= username"));
                    }
                    origin = Some(Origin {
                        username: user.to_owned(),
                        session_id: ctx.number(id, "o= session id")?,
                        session_version: ctx.number(ver, "o= session version")?,
                        address: ctx.address(net, kind, addr)?,
                    });
                    stage = Stage::Origin;
                }
                ('s', Stage::Origin) => {
                    session_name = Some(value.to_owned());
                    stage = Stage::Name;
                }
                // i= u= e= p= carry nothing media needs; RFC 4566 allows them here.
                ('i' | 'u' | 'e' | 'p', Stage::Name) => {}
                ('c', Stage::Name) => {
                    connection = Some(ctx.connection(value)?);
                    stage = Stage::Connection;
                }
                ('b', Stage::Name | Stage::Connection) => {}
                ('t', Stage::Name | Stage::Connection | Stage::Timing) => {
                    let (start, stop) = value.split_once(' ').ok_or_else(|| ctx.invalid("t="))?;
                    let t = (ctx.number(start, "t= start")?, ctx.number(stop, "t= stop")?);
                    timing.get_or_insert(t);
                    stage = Stage::Timing;
                }
                ('r' | 'z', Stage::Timing) => {}
                ('k', Stage::Timing) => stage = Stage::Attributes,
                ('a', Stage::Timing | Stage::Attributes) => {
                    stage = Stage::Attributes;
                    let (name, val) = parse_attribute(&ctx, value)?;
                    if let Some(d) = Direction::from_name(&name) {
                        direction = Some(d);
                    } else {
                        if attributes.len() >= MAX_ATTRIBUTES {
                            return Err(SdpError::TooMany("attributes"));
                        }
                        attributes.push(Attribute { name, value: val });
                    }
                }
                ('m', Stage::Timing | Stage::Attributes | Stage::Media) => {
                    if media.len() >= MAX_MEDIA {
                        return Err(SdpError::TooMany("media sections"));
                    }
                    media.push(parse_media_line(&ctx, value)?);
                    stage = Stage::Media;
                }
                ('i' | 'b' | 'k', Stage::Media) => {}
                ('c', Stage::Media) => {
                    let m = media.last_mut().ok_or(unexpected)?;
                    if m.connection.is_some() {
                        return Err(ctx.invalid("second media c= line"));
                    }
                    m.connection = Some(ctx.connection(value)?);
                }
                ('a', Stage::Media) => {
                    let m = media.last_mut().ok_or(unexpected)?;
                    let (name, val) = parse_attribute(&ctx, value)?;
                    media_attribute(&ctx, m, name, val)?;
                }
                _ => return Err(unexpected),
            }
        }
        if stage < Stage::Version {
            return Err(SdpError::Missing('v'));
        }
        let origin = origin.ok_or(SdpError::Missing('o'))?;
        let session_name = session_name.ok_or(SdpError::Missing('s'))?;
        let timing = timing.ok_or(SdpError::Missing('t'))?;
        for (i, m) in media.iter().enumerate() {
            if m.connection.is_none() && connection.is_none() {
                return Err(SdpError::NoConnection(i));
            }
        }
        Ok(SessionDescription {
            origin,
            session_name,
            connection,
            timing,
            direction,
            attributes,
            media,
        })
    }

    /// The connection address that applies to media section `index`.
    pub fn media_connection(&self, index: usize) -> Option<Connection> {
        self.media.get(index)?.connection.or(self.connection)
    }

    /// The effective direction of media section `index` (media level over session level).
    pub fn media_direction(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(|m| m.direction)
            .or(self.direction)
            .unwrap_or_default()
    }

    /// Where the describing party receives RTP for media section `index`; `None` when the
    /// port is 0 or the address is unspecified (RFC 2543 hold).
    pub fn rtp_destination(&self, index: usize) -> Option<SocketAddr> {
        let m = self.media.get(index)?;
        let c = self.media_connection(index)?;
        if m.port == 0 || c.address.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(c.address, m.port))
    }

    /// Where the describing party receives RTCP for media section `index`: `a=rtcp` when
    /// present (RFC 3605), else the RTP port + 1.
    pub fn rtcp_destination(&self, index: usize) -> Option<SocketAddr> {
        let rtp = self.rtp_destination(index)?;
        let m = self.media.get(index)?;
        match m.rtcp {
            Some(RtcpAttribute { port, connection }) => Some(SocketAddr::new(
                connection.map_or(rtp.ip(), |c| c.address),
                port,
            )),
            None => Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?)),
        }
    }

    /// The index of the first audio section with a non-zero port, the one we relay.
    pub fn audio_index(&self) -> Option<usize> {
        self.media.iter().position(|m| {
            m.kind == MediaKind::Audio && m.port != 0 && is_relayed_protocol(&m.protocol)
        })
    }

    /// Rewrites every address and the relayed audio port to ours so the peer sends its
    /// media to the relay (media anchoring). Other sections are disabled (port 0), since
    /// the relay carries only the one audio stream; the origin version is incremented
    /// because the description changed. Old-style hold (`c=0.0.0.0`) is kept as such.
    pub fn anchor(&mut self, local: LocalMedia) {
        let audio = self.audio_index();
        let hold = audio
            .and_then(|i| self.media_connection(i))
            .is_some_and(|c| c.address.is_unspecified());
        let address = if hold {
            unspecified_like(local.address)
        } else {
            local.address
        };
        self.origin.address = local.address;
        self.origin.session_version = self.origin.session_version.wrapping_add(1);
        if self.connection.is_some() {
            self.connection = Some(Connection { address });
        }
        for (i, m) in self.media.iter_mut().enumerate() {
            if Some(i) == audio {
                m.port = local.port;
                m.connection = Some(Connection { address });
                m.rtcp = None;
            } else {
                m.port = 0;
                if m.connection.is_some() {
                    m.connection = Some(Connection { address });
                }
            }
            // ICE candidates and crypto describe the peer's transport, not ours; the relay
            // keeps RTCP on its own port, so it must not offer rtcp-mux on the peer's behalf.
            m.attributes.retain(|a| {
                !matches!(
                    a.name.as_str(),
                    "candidate" | "crypto" | "ice-ufrag" | "ice-pwd" | "rtcp-mux"
                )
            });
        }
    }

    /// Builds an offer for one audio stream at `local` with `codecs` in preference order
    /// (used when zentrale originates a leg, e.g. to an agent's phone).
    pub fn offer(
        local: LocalMedia,
        session_id: u64,
        codecs: &[Codec],
        telephone_event_pt: u8,
    ) -> SessionDescription {
        let mut media = MediaDescription {
            kind: MediaKind::Audio,
            port: local.port,
            protocol: "RTP/AVP".to_owned(),
            formats: Vec::new(),
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            ptime: Some(20),
            maxptime: None,
            direction: Some(Direction::SendRecv),
            rtcp: None,
            attributes: Vec::new(),
        };
        for &codec in codecs {
            let pt = codec.static_payload_type().unwrap_or(telephone_event_pt);
            push_codec(&mut media, codec, pt, None);
        }
        SessionDescription {
            origin: Origin {
                username: "zentrale".to_owned(),
                session_id,
                session_version: 1,
                address: local.address,
            },
            session_name: "zentrale".to_owned(),
            connection: Some(Connection {
                address: local.address,
            }),
            timing: (0, 0),
            direction: None,
            attributes: Vec::new(),
            media: vec![media],
        }
    }

    /// Answers this offer (RFC 3264 section 6): the first audio stream gets the offerer's
    /// most preferred codec among `supported` plus telephone-event if both sides have it,
    /// at our address and port; every other stream is rejected with port 0.
    pub fn answer(
        &self,
        supported: &[Codec],
        local: LocalMedia,
        session_id: u64,
    ) -> Result<Answer, SdpError> {
        let mut chosen = None;
        for (index, m) in self.media.iter().enumerate() {
            if m.kind != MediaKind::Audio || m.port == 0 || !is_relayed_protocol(&m.protocol) {
                continue;
            }
            let audio = m.formats.iter().find_map(|f| {
                let pt = f.parse::<u8>().ok()?;
                let codec = m.codec_of(pt)?;
                (codec != Codec::TelephoneEvent && supported.contains(&codec)).then_some(
                    Negotiated {
                        codec,
                        payload_type: pt,
                    },
                )
            });
            if let Some(audio) = audio {
                let te = m.formats.iter().find_map(|f| {
                    let pt = f.parse::<u8>().ok()?;
                    (m.codec_of(pt)? == Codec::TelephoneEvent
                        && supported.contains(&Codec::TelephoneEvent))
                    .then_some(Negotiated {
                        codec: Codec::TelephoneEvent,
                        payload_type: pt,
                    })
                });
                chosen = Some((index, audio, te));
                break;
            }
        }
        let (index, audio, te) = chosen.ok_or(SdpError::NoCommonCodec)?;
        let direction = self.media_direction(index).answer();
        let mut media = Vec::with_capacity(self.media.len());
        for (i, m) in self.media.iter().enumerate() {
            let mut a = MediaDescription {
                kind: m.kind.clone(),
                port: 0,
                protocol: m.protocol.clone(),
                formats: Vec::new(),
                connection: None,
                rtpmaps: Vec::new(),
                fmtps: Vec::new(),
                ptime: None,
                maxptime: None,
                direction: None,
                rtcp: None,
                attributes: Vec::new(),
            };
            if i == index {
                a.port = local.port;
                a.ptime = m.ptime.or(Some(20));
                a.direction = Some(direction);
                push_codec(&mut a, audio.codec, audio.payload_type, None);
                if let Some(te) = te {
                    let fmtp = m.fmtp_of(te.payload_type);
                    push_codec(&mut a, te.codec, te.payload_type, fmtp);
                }
            } else {
                // A rejected stream echoes the offered formats (RFC 3264 section 6).
                a.formats = m.formats.clone();
            }
            media.push(a);
        }
        let sdp = SessionDescription {
            origin: Origin {
                username: "zentrale".to_owned(),
                session_id,
                session_version: 1,
                address: local.address,
            },
            session_name: "zentrale".to_owned(),
            connection: Some(Connection {
                address: local.address,
            }),
            timing: (0, 0),
            direction: None,
            attributes: Vec::new(),
            media,
        };
        Ok(Answer {
            sdp,
            audio,
            telephone_event: te,
            remote_rtp: self.rtp_destination(index),
            direction,
        })
    }
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

fn push_codec(m: &mut MediaDescription, codec: Codec, pt: u8, fmtp: Option<&str>) {
    m.formats.push(pt.to_string());
    m.rtpmaps.push(RtpMap {
        payload_type: pt,
        encoding: codec.encoding().to_owned(),
        clock_rate: 8000,
        channels: None,
    });
    if codec == Codec::TelephoneEvent {
        m.fmtps.push(Fmtp {
            payload_type: pt,
            parameters: fmtp.unwrap_or("0-16").to_owned(),
        });
    }
}

impl MediaDescription {
    /// Which of our codecs payload type `pt` is, per its rtpmap or the static table.
    pub fn codec_of(&self, pt: u8) -> Option<Codec> {
        match self.rtpmaps.iter().find(|r| r.payload_type == pt) {
            Some(r) if r.clock_rate == 8000 && r.channels.unwrap_or(1) == 1 => {
                let e = r.encoding.as_str();
                if e.eq_ignore_ascii_case("PCMU") {
                    Some(Codec::Pcmu)
                } else if e.eq_ignore_ascii_case("PCMA") {
                    Some(Codec::Pcma)
                } else if e.eq_ignore_ascii_case("telephone-event") {
                    Some(Codec::TelephoneEvent)
                } else {
                    None
                }
            }
            Some(_) => None,
            None => match pt {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            },
        }
    }

    /// The fmtp parameters of payload type `pt`.
    pub fn fmtp_of(&self, pt: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|f| f.payload_type == pt)
            .map(|f| f.parameters.as_str())
    }

    /// The RTP payload types of this section (empty for non-RTP protocols).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }
}

/// The set of DTMF events of a telephone-event `fmtp` (RFC 4733 section 7.1.1), e.g.
/// `0-15,66` as a bitmap over event codes 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventSet([u64; 4]);

impl EventSet {
    /// Parses a comma-separated list of events and ranges.
    pub fn parse(list: &str) -> Result<EventSet, SdpError> {
        let mut set = EventSet::default();
        if list.len() > 256 {
            return Err(SdpError::EventList);
        }
        for item in list.split(',') {
            let num = |s: &str| -> Result<u8, SdpError> {
                if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SdpError::EventList);
                }
                s.parse().map_err(|_| SdpError::EventList)
            };
            let (lo, hi) = match item.trim().split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(item.trim())?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(SdpError::EventList);
            }
            for e in lo..=hi {
                set.0[usize::from(e / 64)] |= 1 << (e % 64);
            }
        }
        Ok(set)
    }

    /// Whether event code `event` is in the set.
    pub fn contains(&self, event: u8) -> bool {
        self.0[usize::from(event / 64)] & (1 << (event % 64)) != 0
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "IN IP4 {a}"),
            IpAddr::V6(a) => write!(f, "IN IP6 {a}"),
        }
    }
}

fn write_attribute(f: &mut fmt::Formatter<'_>, a: &Attribute) -> fmt::Result {
    match &a.value {
        Some(v) => write!(f, "a={}:{}\r\n", a.name, v),
        None => write!(f, "a={}\r\n", a.name),
    }
}

impl fmt::Display for SessionDescription {
    /// Writes the description in RFC 4566 order with CRLF line ends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        let oc = Connection { address: o.address };
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} {}\r\n",
            o.username, o.session_id, o.session_version, oc
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        write!(f, "t={} {}\r\n", self.timing.0, self.timing.1)?;
        if let Some(d) = self.direction {
            write!(f, "a={}\r\n", d.name())?;
        }
        for a in &self.attributes {
            write_attribute(f, a)?;
        }
        for m in &self.media {
            let kind = match &m.kind {
                MediaKind::Audio => "audio",
                MediaKind::Other(k) => k.as_str(),
            };
            write!(f, "m={} {} {}", kind, m.port, m.protocol)?;
            for fmt in &m.formats {
                write!(f, " {fmt}")?;
            }
            write!(f, "\r\n")?;
            if let Some(c) = &m.connection {
                write!(f, "c={c}\r\n")?;
            }
            for r in &m.rtpmaps {
                write!(
                    f,
                    "a=rtpmap:{} {}/{}",
                    r.payload_type, r.encoding, r.clock_rate
                )?;
                if let Some(ch) = r.channels {
                    write!(f, "/{ch}")?;
                }
                write!(f, "\r\n")?;
            }
            for p in &m.fmtps {
                write!(f, "a=fmtp:{} {}\r\n", p.payload_type, p.parameters)?;
            }
            if let Some(p) = m.ptime {
                write!(f, "a=ptime:{p}\r\n")?;
            }
            if let Some(p) = m.maxptime {
                write!(f, "a=maxptime:{p}\r\n")?;
            }
            if let Some(r) = &m.rtcp {
                write!(f, "a=rtcp:{}", r.port)?;
                if let Some(c) = &r.connection {
                    write!(f, " {c}")?;
                }
                write!(f, "\r\n")?;
            }
            if let Some(d) = m.direction {
                write!(f, "a={}\r\n", d.name())?;
            }
            for a in &m.attributes {
                write_attribute(f, a)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const OFFER: &str = "v=0\r\n\
o=carrier 2890844526 2890842807 IN IP4 203.0.113.5\r\n\
s=-\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 8 0 18 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
m=video 51372 RTP/AVP 99\r\n\
a=rtpmap:99 H264/90000\r\n";

    fn local() -> LocalMedia {
        LocalMedia {
            address: "192.0.2.10".parse().unwrap(),
            port: 30000,
        }
    }

    #[test]
    fn parses_a_carrier_offer() {
        let sdp = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.origin.session_id, 2890844526);
        assert_eq!(sdp.media.len(), 2);
        let a = &sdp.media[0];
        assert_eq!(a.kind, MediaKind::Audio);
        assert_eq!(a.formats, ["8", "0", "18", "101"]);
        assert_eq!(a.ptime, Some(20));
        assert_eq!(a.codec_of(101), Some(Codec::TelephoneEvent));
        assert_eq!(a.codec_of(18), None);
        assert_eq!(a.fmtp_of(101), Some("0-15"));
        assert_eq!(
            sdp.rtp_destination(0),
            Some("203.0.113.5:49170".parse().unwrap())
        );
        assert_eq!(
            sdp.rtcp_destination(0),
            Some("203.0.113.5:49171".parse().unwrap())
        );
    }

    #[test]
    fn answer_takes_the_offerers_first_supported_codec_and_rejects_video() {
        let offer = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let ans = offer
            .answer(
                &[Codec::Pcmu, Codec::Pcma, Codec::TelephoneEvent],
                local(),
                7,
            )
            .unwrap();
        assert_eq!(ans.audio.codec, Codec::Pcma);
        assert_eq!(ans.telephone_event.unwrap().payload_type, 101);
        assert_eq!(ans.direction, Direction::SendRecv);
        let text = ans.sdp.to_string();
        assert!(text.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{text}");
        assert!(text.contains("c=IN IP4 192.0.2.10\r\n"));
        assert!(text.contains("a=fmtp:101 0-15\r\n"));
        assert!(text.contains("m=video 0 RTP/AVP 99\r\n"));
        // The answer we build parses back to the same structure.
        let back = SessionDescription::parse(text.as_bytes()).unwrap();
        assert_eq!(back, ans.sdp);
    }

    #[test]
    fn answer_only_offers_codecs_we_support() {
        let offer = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let ans = offer.answer(&[Codec::Pcmu], local(), 7).unwrap();
        assert_eq!(ans.audio.codec, Codec::Pcmu);
        assert_eq!(ans.telephone_event, None);
        let only_g729 = OFFER.replace("RTP/AVP 8 0 18 101", "RTP/AVP 18");
        let offer = SessionDescription::parse(only_g729.as_bytes()).unwrap();
        assert_eq!(
            offer.answer(&[Codec::Pcmu, Codec::Pcma], local(), 7),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn static_payload_types_need_no_rtpmap() {
        let s = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns= \r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\n";
        let offer = SessionDescription::parse(s.as_bytes()).unwrap();
        let ans = offer.answer(&[Codec::Pcmu], local(), 1).unwrap();
        assert_eq!(
            ans.audio,
            Negotiated {
                codec: Codec::Pcmu,
                payload_type: 0
            }
        );
        assert_eq!(ans.sdp.media[0].fmtps, []);
    }

    #[test]
    fn direction_of_the_answer_mirrors_the_offer() {
        for (offer, answer) in [
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
            ("sendrecv", Direction::SendRecv),
        ] {
            let s = OFFER.replace("a=sendrecv", &format!("a={offer}"));
            let ans = SessionDescription::parse(s.as_bytes())
                .unwrap()
                .answer(&[Codec::Pcma], local(), 1)
                .unwrap();
            assert_eq!(ans.direction, answer);
            assert!(
                ans.sdp
                    .to_string()
                    .contains(&format!("a={}\r\n", answer.name()))
            );
        }
        // Session-level direction applies when the media has none.
        let s = OFFER
            .replace("a=sendrecv\r\n", "")
            .replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
        let ans = SessionDescription::parse(s.as_bytes())
            .unwrap()
            .answer(&[Codec::Pcma], local(), 1)
            .unwrap();
        assert_eq!(ans.direction, Direction::RecvOnly);
    }

    #[test]
    fn ipv6_and_rtcp_attribute() {
        let s = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 0\r\na=rtcp:5010 IN IP6 2001:db8::2\r\n";
        let sdp = SessionDescription::parse(s.as_bytes()).unwrap();
        assert_eq!(
            sdp.rtp_destination(0),
            Some("[2001:db8::1]:5004".parse().unwrap())
        );
        assert_eq!(
            sdp.rtcp_destination(0),
            Some("[2001:db8::2]:5010".parse().unwrap())
        );
        let text = sdp.to_string();
        assert_eq!(SessionDescription::parse(text.as_bytes()).unwrap(), sdp);
    }

    #[test]
    fn anchoring_rewrites_addresses_and_port() {
        let mut sdp = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        sdp.media[0].rtcp = Some(RtcpAttribute {
            port: 1,
            connection: None,
        });
        sdp.anchor(local());
        assert_eq!(
            sdp.rtp_destination(0),
            Some("192.0.2.10:30000".parse().unwrap())
        );
        assert_eq!(
            sdp.rtcp_destination(0),
            Some("192.0.2.10:30001".parse().unwrap())
        );
        assert_eq!(sdp.origin.session_version, 2890842808);
        assert_eq!(sdp.media[1].port, 0);
        let text = sdp.to_string();
        assert!(!text.contains("203.0.113.5"), "{text}");
        // Codecs are forwarded unchanged so the far end negotiates end to end.
        assert!(text.contains("m=audio 30000 RTP/AVP 8 0 18 101\r\n"));
    }

    #[test]
    fn old_style_hold_stays_hold_after_anchoring() {
        let s = OFFER.replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0");
        let mut sdp = SessionDescription::parse(s.as_bytes()).unwrap();
        assert_eq!(sdp.rtp_destination(0), None);
        sdp.anchor(local());
        assert_eq!(sdp.rtp_destination(0), None);
    }

    #[test]
    fn offer_builder_round_trips() {
        let sdp = SessionDescription::offer(
            local(),
            42,
            &[Codec::Pcmu, Codec::Pcma, Codec::TelephoneEvent],
            101,
        );
        let text = sdp.to_string();
        assert!(text.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"), "{text}");
        assert!(text.contains("a=fmtp:101 0-16\r\n"));
        assert_eq!(SessionDescription::parse(text.as_bytes()).unwrap(), sdp);
    }

    #[test]
    fn lf_only_line_ends_are_accepted() {
        let s = OFFER.replace("\r\n", "\n");
        assert_eq!(
            SessionDescription::parse(s.as_bytes()).unwrap(),
            SessionDescription::parse(OFFER.as_bytes()).unwrap()
        );
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let cases: &[(&str, SdpError)] = &[
            ("", SdpError::MalformedLine { line: 1 }),
            ("v=1\r\n", SdpError::Version),
            ("v=0\r\n", SdpError::Missing('o')),
            (
                "v=0\r\ns=-\r\n",
                SdpError::UnexpectedLine { line: 2, kind: 's' },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n",
                SdpError::NoConnection(0),
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.400\r\nt=0 0\r\n",
                SdpError::InvalidField {
                    line: 4,
                    field: "IPv4 address",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\n",
                SdpError::InvalidField {
                    line: 6,
                    field: "m= port",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 7 RTP/AVP 200\r\n",
                SdpError::InvalidField {
                    line: 6,
                    field: "payload type",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 7 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
                SdpError::InvalidField {
                    line: 7,
                    field: "rtpmap clock rate",
                },
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 224.2.1.1/127\r\nt=0 0\r\n",
                SdpError::InvalidField {
                    line: 4,
                    field: "IPv4 address",
                },
            ),
            ("v=0\r\nX=1\r\n", SdpError::MalformedLine { line: 2 }),
        ];
        for (input, err) in cases {
            assert_eq!(
                SessionDescription::parse(input.as_bytes()).as_ref(),
                Err(err),
                "{input:?}"
            );
        }
        assert_eq!(
            SessionDescription::parse(&vec![b'a'; MAX_SDP_LEN + 1]),
            Err(SdpError::TooLarge(MAX_SDP_LEN + 1))
        );
        let many = format!("{}{}", OFFER, "a=x\r\n".repeat(MAX_ATTRIBUTES));
        assert_eq!(
            SessionDescription::parse(many.as_bytes()),
            Err(SdpError::TooMany("attributes"))
        );
    }

    /// SDP as SIPp's built-in uac scenario sends it.
    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    /// SDP in the shape baresip sends (bandwidth, ssrc, rtcp-mux, label).
    const BARESIP_OFFER: &str = "v=0\r\no=- 1921542537 2112624593 IN IP4 192.168.1.10\r\n\
s=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 10954 RTP/AVP 9 0 8 101\r\nb=AS:64\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\na=label:1\r\n\
a=ssrc:1476317185 cname:1b1a2c3d-0001\r\na=rtcp-mux\r\na=ptime:20\r\n";

    #[test]
    fn real_user_agent_offers() {
        let sipp = SessionDescription::parse(SIPP_OFFER.as_bytes()).unwrap();
        let ans = sipp
            .answer(&[Codec::Pcma, Codec::Pcmu], local(), 1)
            .unwrap();
        assert_eq!(ans.audio.codec, Codec::Pcmu);
        assert_eq!(ans.remote_rtp, Some("127.0.0.1:6000".parse().unwrap()));

        let mut baresip = SessionDescription::parse(BARESIP_OFFER.as_bytes()).unwrap();
        let ans = baresip
            .answer(
                &[Codec::Pcmu, Codec::Pcma, Codec::TelephoneEvent],
                local(),
                1,
            )
            .unwrap();
        // G.722 comes first but is not relayed; PCMU is the first we take.
        assert_eq!(ans.audio.codec, Codec::Pcmu);
        assert_eq!(ans.telephone_event.unwrap().payload_type, 101);
        assert!(!ans.sdp.to_string().contains("rtcp-mux"));
        baresip.anchor(local());
        let text = baresip.to_string();
        assert!(!text.contains("rtcp-mux"), "{text}");
        assert!(text.contains("a=ssrc:1476317185 cname:1b1a2c3d-0001\r\n"));
    }

    #[test]
    fn srtp_only_offers_are_refused() {
        let s = OFFER.replace("m=audio 49170 RTP/AVP", "m=audio 49170 RTP/SAVP");
        let offer = SessionDescription::parse(s.as_bytes()).unwrap();
        assert_eq!(offer.audio_index(), None);
        assert_eq!(
            offer.answer(&[Codec::Pcmu], local(), 1),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn telephone_event_lists() {
        let set = EventSet::parse("0-15,66").unwrap();
        assert!(set.contains(0) && set.contains(15) && set.contains(66));
        assert!(!set.contains(16));
        assert!(EventSet::parse("0-16").unwrap().contains(16));
        assert_eq!(EventSet::parse("5-3"), Err(SdpError::EventList));
        assert_eq!(EventSet::parse("0-256"), Err(SdpError::EventList));
        assert_eq!(EventSet::parse(""), Err(SdpError::EventList));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = SessionDescription::parse(&body);
        }

        #[test]
        fn random_lines_never_panic(lines in proptest::collection::vec(
            "[vosctmab]=[ -~]{0,40}", 0..20)) {
            let body = lines.join("\r\n");
            if let Ok(sdp) = SessionDescription::parse(body.as_bytes()) {
                // Whatever parses must survive being written and parsed again.
                let _ = sdp.answer(&[Codec::Pcmu, Codec::TelephoneEvent], local(), 1);
                let text = sdp.to_string();
                prop_assert_eq!(SessionDescription::parse(text.as_bytes()), Ok(sdp));
            }
        }

        #[test]
        fn mutated_offers_never_panic(pos in 0usize..OFFER.len(), byte in any::<u8>()) {
            let mut body = OFFER.as_bytes().to_vec();
            body[pos] = byte;
            if let Ok(sdp) = SessionDescription::parse(&body) {
                let _ = sdp.answer(&[Codec::Pcma], local(), 1);
                let text = sdp.to_string();
                prop_assert_eq!(SessionDescription::parse(text.as_bytes()), Ok(sdp));
            }
        }
    }
}
