//! The strict gate every message from the network passes before anything acts on it.
//!
//! [`validate`] turns a parsed [`Message`] into a [`Verdict`]: accept, reject with a status
//! (for requests, answered statelessly by [`Rejection::response`]), or drop with a reason to
//! log (responses are never answered, RFC 3261 §8.1.3.3). The checks and their order follow
//! RFC 3261 §8.2 and the expectations of RFC 4475; where RFC 4475 allows either a liberal or a
//! strict reading we pick strict, because a B2BUA that forwards a sloppy message makes the
//! next hop's problem ours.

use bytes::Bytes;

use super::header::{HeaderError, is_token};
use super::message::{Defect, HeaderName, Message, MessageBuilder, Method, response_to};
use super::uri::Scheme;

/// What this element supports; used to pick 501/415/416/420/406.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Methods we handle; others get 501 with an Allow header.
    pub allowed_methods: Vec<Method>,
    /// Option tags we support (Require of anything else gets 420).
    pub supported_extensions: Vec<&'static str>,
    /// Body types we accept, as `(type, subtype)`; others get 415 with Accept.
    pub accepted_content_types: Vec<(&'static str, &'static str)>,
    /// True when the message came over UDP: a body shorter than Content-Length is then 400
    /// (on a stream the framer waits for the missing octets instead).
    pub datagram: bool,
    /// True for a proxy (Max-Forwards 0 → 483). A B2BUA is a UAS and processes such requests.
    pub proxy: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_methods: vec![
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
                Method::Register,
                Method::Prack,
                Method::Info,
                Method::Update,
                Method::Refer,
                Method::Notify,
            ],
            supported_extensions: vec!["100rel", "timer", "replaces", "path", "outbound"],
            accepted_content_types: vec![
                ("application", "sdp"),
                ("multipart", "mixed"),
                ("application", "dtmf-relay"),
                ("application", "dtmf"),
                ("message", "sipfrag"),
            ],
            datagram: true,
            proxy: false,
        }
    }
}

/// A request we refuse: status, reason phrase and the extra headers the status calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Status code (4xx/5xx).
    pub status: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// Why, for the log.
    pub detail: String,
    /// Headers the status requires (Allow for 501, Unsupported for 420, Accept for 415).
    pub extra_headers: Vec<(&'static str, Bytes)>,
}

impl Rejection {
    fn new(status: u16, reason: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason,
            detail: detail.into(),
            extra_headers: Vec::new(),
        }
    }

    /// Builds the stateless response to `req` (Via/From/To/Call-ID/CSeq copied as they are,
    /// a To tag added). Usable on a request whose headers were only partly understood.
    pub fn response(&self, req: &Message, to_tag: &[u8]) -> Bytes {
        let mut b = response_to(req, self.status, self.reason, Some(to_tag));
        for (n, v) in &self.extra_headers {
            b = b.header(n.as_bytes(), v);
        }
        b.finish()
    }
}

/// The outcome of validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Well-formed: hand to the transaction layer.
    Accept,
    /// A request to answer with this status (statelessly) and not process further.
    Reject(Rejection),
    /// Not answered (a bad response, or too little of a request to answer); log the reason.
    Drop(String),
}

fn version_ok(v: &[u8]) -> Result<(), Rejection> {
    // SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT; any other shape is a syntax error (400),
    // a well-formed other version is 505 (RFC 4475 §3.1.2.16).
    let well_formed = v.len() > 4 && v[..4].eq_ignore_ascii_case(b"SIP/") && {
        let r = &v[4..];
        match memchr::memchr(b'.', r) {
            Some(d) => {
                d > 0
                    && d + 1 < r.len()
                    && r[..d].iter().all(u8::is_ascii_digit)
                    && r[d + 1..].iter().all(u8::is_ascii_digit)
            }
            None => false,
        }
    };
    if !well_formed {
        return Err(Rejection::new(400, "Bad Request", "malformed SIP version"));
    }
    if !v[4..].eq(b"2.0") {
        return Err(Rejection::new(
            505,
            "Version Not Supported",
            "SIP version is not 2.0",
        ));
    }
    Ok(())
}

fn bad(e: &HeaderError) -> Rejection {
    Rejection::new(400, "Bad Request", e.to_string())
}

/// Checks a message; see the module docs.
pub fn validate(msg: &Message, policy: &Policy) -> Verdict {
    if msg.is_request() {
        match validate_request(msg, policy) {
            Ok(()) => Verdict::Accept,
            Err(r) => {
                // Without any Via there is no transaction to answer; a malformed Via is still
                // copied into the 400, which the transport sends back to the source address.
                if msg.headers_named(&HeaderName::Via).next().is_none() {
                    Verdict::Drop(format!("{} (no usable Via to answer)", r.detail))
                } else {
                    Verdict::Reject(r)
                }
            }
        }
    } else {
        match validate_response(msg) {
            Ok(()) => Verdict::Accept,
            Err(e) => Verdict::Drop(e),
        }
    }
}

fn validate_response(msg: &Message) -> Result<(), String> {
    let Some(sl) = msg.status_line() else {
        return Err("not a response".into());
    };
    if !sl.version.eq_ignore_ascii_case(b"SIP/2.0") {
        return Err("response version is not SIP/2.0".into());
    }
    if !(100..=699).contains(&sl.code) {
        return Err(format!("status code {} out of range", sl.code));
    }
    if let Some(d) = msg.defects().first() {
        return Err(format!("framing defect {d:?}"));
    }
    let e = |e: HeaderError| e.to_string();
    msg.top_via().map_err(e)?.ok_or("no Via")?;
    msg.vias().map_err(e)?;
    msg.from().map_err(e)?.ok_or("no From")?;
    msg.to().map_err(e)?.ok_or("no To")?;
    msg.call_id().map_err(e)?.ok_or("no Call-ID")?;
    msg.cseq().map_err(e)?.ok_or("no CSeq")?;
    Ok(())
}

fn validate_request(msg: &Message, policy: &Policy) -> Result<(), Rejection> {
    let Some(rl) = msg.request_line() else {
        return Err(Rejection::new(400, "Bad Request", "not a request"));
    };
    version_ok(&rl.version)?;
    for d in msg.defects() {
        let detail = match d {
            Defect::BadHeaderLine(n) => format!("malformed header line {n}"),
            Defect::MissingEmptyLine => "header section not closed by an empty line".to_string(),
            Defect::BadContentLength => "malformed or repeated Content-Length".to_string(),
            Defect::ContentLengthExceedsBody {
                declared,
                available,
            } => {
                if !policy.datagram {
                    continue;
                }
                format!("Content-Length {declared} but only {available} octets of body")
            }
        };
        return Err(Rejection::new(400, "Bad Request", detail));
    }
    // Mandatory headers (RFC 3261 §8.1.1). Max-Forwards is optional for RFC 2543 peers
    // (RFC 4475 §3.4.1) but checked when present.
    let vias = msg.vias().map_err(|e| bad(&e))?;
    if vias.is_empty() {
        return Err(Rejection::new(400, "Bad Request", "missing Via"));
    }
    msg.from()
        .map_err(|e| bad(&e))?
        .ok_or_else(|| Rejection::new(400, "Bad Request", "missing From"))?;
    msg.to()
        .map_err(|e| bad(&e))?
        .ok_or_else(|| Rejection::new(400, "Bad Request", "missing To"))?;
    msg.call_id()
        .map_err(|e| bad(&e))?
        .ok_or_else(|| Rejection::new(400, "Bad Request", "missing Call-ID"))?;
    let cseq = msg
        .cseq()
        .map_err(|e| bad(&e))?
        .ok_or_else(|| Rejection::new(400, "Bad Request", "missing CSeq"))?;
    let max_forwards = msg.max_forwards().map_err(|e| bad(&e))?;
    msg.contacts().map_err(|e| bad(&e))?;
    msg.routes().map_err(|e| bad(&e))?;
    msg.record_routes().map_err(|e| bad(&e))?;
    let content_type = msg.content_type().map_err(|e| bad(&e))?;
    msg.expires().map_err(|e| bad(&e))?;
    // Request-URI: no white space, no <>, a scheme.
    let uri = match msg.request_uri() {
        Some(Ok(u)) => u,
        Some(Err(e)) => {
            return Err(Rejection::new(
                400,
                "Bad Request",
                format!("malformed Request-URI: {e}"),
            ));
        }
        None => return Err(Rejection::new(400, "Bad Request", "no Request-URI")),
    };
    if !is_token(rl.method.as_bytes()) {
        return Err(Rejection::new(400, "Bad Request", "malformed method"));
    }
    // Unknown method: 501 before the CSeq comparison (RFC 4475 §3.1.2.18 prefers 501).
    if !policy.allowed_methods.contains(&rl.method) {
        let mut r = Rejection::new(
            501,
            "Not Implemented",
            format!("method {} not supported", rl.method),
        );
        r.extra_headers.push(("Allow", allow_value(policy)));
        return Err(r);
    }
    if cseq.method.as_ref() != rl.method.as_bytes() {
        return Err(Rejection::new(
            400,
            "Bad Request",
            "CSeq method does not match the request method",
        ));
    }
    match uri.scheme() {
        Scheme::Sip | Scheme::Sips | Scheme::Tel => {}
        _ => {
            return Err(Rejection::new(
                416,
                "Unsupported URI Scheme",
                "Request-URI scheme not supported",
            ));
        }
    }
    if uri.headers().is_some() {
        // RFC 4475 §3.1.2.11: escaped headers in a Request-URI must never be acted upon.
        return Err(Rejection::new(400, "Bad Request", "headers in Request-URI"));
    }
    if max_forwards == Some(0) && policy.proxy && rl.method != Method::Options {
        return Err(Rejection::new(483, "Too Many Hops", "Max-Forwards is 0"));
    }
    if rl.method != Method::Ack && rl.method != Method::Cancel {
        let unsupported: Vec<Bytes> = msg
            .tokens(&HeaderName::Require)
            .into_iter()
            .filter(|t| {
                !policy
                    .supported_extensions
                    .iter()
                    .any(|s| t.eq_ignore_ascii_case(s.as_bytes()))
            })
            .collect();
        if !unsupported.is_empty() {
            let mut r = Rejection::new(420, "Bad Extension", "unsupported Require option tags");
            r.extra_headers.push(("Unsupported", join(&unsupported)));
            return Err(r);
        }
    }
    if !msg.body().is_empty() {
        let ok = match &content_type {
            Some(ct) => policy.accepted_content_types.iter().any(|(k, s)| {
                ct.kind.eq_ignore_ascii_case(k.as_bytes())
                    && ct.subtype.eq_ignore_ascii_case(s.as_bytes())
            }),
            // RFC 3261 §20.15: a body without Content-Type; we cannot interpret it.
            None => false,
        };
        if !ok {
            let mut r = Rejection::new(415, "Unsupported Media Type", "body type not supported");
            let accept: Vec<Bytes> = policy
                .accepted_content_types
                .iter()
                .map(|(k, s)| Bytes::from(format!("{k}/{s}")))
                .collect();
            r.extra_headers.push(("Accept", join(&accept)));
            return Err(r);
        }
    }
    if rl.method == Method::Invite {
        let accept = msg.accept().map_err(|e| bad(&e))?;
        if !accept.is_empty() && !accept.iter().any(|a| a.matches("application", "sdp")) {
            let mut r = Rejection::new(406, "Not Acceptable", "Accept excludes application/sdp");
            r.extra_headers
                .push(("Accept", Bytes::from_static(b"application/sdp")));
            return Err(r);
        }
    }
    Ok(())
}

fn join(items: &[Bytes]) -> Bytes {
    let mut v = Vec::new();
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(t);
    }
    Bytes::from(v)
}

fn allow_value(policy: &Policy) -> Bytes {
    let methods: Vec<Bytes> = policy
        .allowed_methods
        .iter()
        .map(|m| Bytes::copy_from_slice(m.as_bytes()))
        .collect();
    join(&methods)
}

/// Convenience for a reply that is not a validation failure (e.g. 200 to OPTIONS, 100 Trying).
pub fn simple_response(
    req: &Message,
    status: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
) -> MessageBuilder {
    response_to(req, status, reason, to_tag)
}
