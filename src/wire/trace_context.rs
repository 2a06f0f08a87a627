//! W3C Trace Context: the `traceparent` header (which trace and which span a request belongs to)
//! and the `baggage` header (application key-value pairs that travel with it), parsed and
//! validated per the W3C Recommendations "Trace Context" (level 1) and "Propagation format for
//! distributed context: Baggage".
//!
//! # Invariants
//! 1. A [`TraceParent`] never holds an all-zero trace id or parent id, and [`TraceParent::parse`]
//!    never accepts version `ff`: whatever is built or parsed is valid to send.
//! 2. A [`Baggage`] holds at most [`Baggage::MAX_MEMBERS`] members, each with a token key, and
//!    formats to at most [`Baggage::MAX_BYTES`] bytes when built by [`Baggage::parse`]; values are
//!    kept percent-decoded and are percent-encoded again on the way out.

use std::fmt;

/// Why a `traceparent` or `baggage` value was rejected.
///
/// # Examples
///
/// ```
/// use tether::wire::{TraceContextError, TraceParent};
/// let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
/// assert_eq!(TraceParent::parse(zero), Err(TraceContextError::ZeroTraceId));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceContextError {
    /// The `traceparent` value does not have the shape `vv-<32 hex>-<16 hex>-ff`.
    #[error("traceparent is malformed: {0}")]
    MalformedTraceParent(&'static str),
    /// Version `ff`, which the spec forbids.
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    /// A trace id of all zeros, which the spec forbids.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// A parent id of all zeros, which the spec forbids.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
    /// A `baggage` list member that is not `key=value` with a token key and valid octets.
    #[error("baggage member {index} is malformed: {reason}")]
    MalformedBaggage {
        /// The member's position in the list, from 0.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More members or more bytes than the spec's limits.
    #[error("baggage is over the limit of {0}")]
    BaggageTooLarge(&'static str),
}

/// A W3C `traceparent`: trace id, parent (span) id and trace flags.
///
/// # Examples
///
/// ```
/// use tether::wire::TraceParent;
/// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert!(tp.sampled());
/// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The length of a version-00 `traceparent`: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
const TRACEPARENT_LEN: usize = 55;

impl TraceParent {
    /// A trace parent from its parts.
    ///
    /// # Errors
    ///
    /// [`TraceContextError::ZeroTraceId`] or [`TraceContextError::ZeroParentId`] for all-zero ids.
    ///
    /// # Examples
    ///
    /// ```
    /// let tp = tether::wire::TraceParent::new([1; 16], [2; 8], 0).unwrap();
    /// assert!(!tp.sampled());
    /// ```
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Result<Self, TraceContextError> {
        if trace_id == [0; 16] {
            return Err(TraceContextError::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(TraceContextError::ZeroParentId);
        }
        Ok(TraceParent { trace_id, parent_id, flags })
    }

    /// Parses a `traceparent` value. Version `00` must be exactly 55 characters; a later version
    /// (not `ff`) may carry more fields after a `-`, which are ignored, as the spec asks.
    /// Hex digits must be lowercase.
    ///
    /// # Errors
    ///
    /// A [`TraceContextError`] saying which rule the value breaks.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::wire::{TraceContextError, TraceParent};
    /// let ff = "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// assert_eq!(TraceParent::parse(ff), Err(TraceContextError::ForbiddenVersion));
    /// let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
    /// assert!(TraceParent::parse(later).is_ok());
    /// ```
    pub fn parse(value: &str) -> Result<Self, TraceContextError> {
        use TraceContextError::MalformedTraceParent as Malformed;
        let b = value.as_bytes();
        if b.len() < TRACEPARENT_LEN {
            return Err(Malformed("shorter than 55 characters"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(Malformed("fields are not separated by '-' at 2, 35 and 52"));
        }
        let version: [u8; 1] =
            lower_hex(&b[0..2]).ok_or(Malformed("version is not 2 lowercase hex digits"))?;
        match version[0] {
            0xff => return Err(TraceContextError::ForbiddenVersion),
            0x00 if b.len() != TRACEPARENT_LEN => {
                return Err(Malformed("version 00 is exactly 55 characters"));
            }
            _ if b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' => {
                return Err(Malformed("fields after the flags must follow a '-'"));
            }
            _ => {}
        }
        let trace_id = lower_hex(&b[3..35]).ok_or(Malformed("trace-id is not 32 lowercase hex digits"))?;
        let parent_id = lower_hex(&b[36..52]).ok_or(Malformed("parent-id is not 16 lowercase hex digits"))?;
        let [flags] = lower_hex(&b[53..55]).ok_or(Malformed("flags are not 2 lowercase hex digits"))?;
        TraceParent::new(trace_id, parent_id, flags)
    }

    /// The 16-byte trace id.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::wire::TraceParent::new([7; 16], [1; 8], 1).unwrap().trace_id(), [7; 16]);
    /// ```
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte id of the caller's span.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::wire::TraceParent::new([7; 16], [1; 8], 1).unwrap().parent_id(), [1; 8]);
    /// ```
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags byte.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::wire::TraceParent::new([7; 16], [1; 8], 3).unwrap().flags(), 3);
    /// ```
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag (bit 0) is set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::wire::TraceParent::new([7; 16], [1; 8], 1).unwrap().sampled());
    /// ```
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl fmt::Display for TraceParent {
    /// Always version `00`, the only version this crate knows how to write.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.parent_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// Decodes lowercase hex into exactly `N` bytes; `None` for any other digit or length.
fn lower_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(d: u8) -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// A W3C `baggage` list: application key-value pairs that travel with a request, in order.
///
/// # Examples
///
/// ```
/// use tether::wire::Baggage;
/// let bag = Baggage::parse("userId=alice, serverNode = DF%2028 ;host").unwrap();
/// assert_eq!(bag.get("serverNode"), Some("DF 28"));
/// assert_eq!(bag.to_string(), "userId=alice,serverNode=DF%2028;host");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baggage {
    members: Vec<Member>,
}

/// One list member: its key, its value (percent-decoded) and its properties as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    key: String,
    value: String,
    properties: String,
}

impl Baggage {
    /// The most list members the spec requires a platform to propagate.
    pub const MAX_MEMBERS: usize = 64;
    /// The most bytes the spec requires a platform to propagate.
    pub const MAX_BYTES: usize = 8192;

    /// An empty list.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::wire::Baggage::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Baggage::default()
    }

    /// Parses a `baggage` value: `key=value` members separated by `,`, with optional whitespace
    /// around separators, values percent-encoded, each member with optional `;property` parts.
    ///
    /// # Errors
    ///
    /// [`TraceContextError::MalformedBaggage`] for an empty member, a key that is not a token, a
    /// missing `=`, an octet the spec excludes from values (space, `"`, `,`, `;`, `\`), a bad
    /// percent escape or a value that does not decode to UTF-8, or a malformed property;
    /// [`TraceContextError::BaggageTooLarge`] above 64 members or 8192 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::wire::Baggage;
    /// assert!(Baggage::parse("a=1,,b=2").is_err());
    /// assert!(Baggage::parse("no-equals").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<Self, TraceContextError> {
        if value.len() > Self::MAX_BYTES {
            return Err(TraceContextError::BaggageTooLarge("8192 bytes"));
        }
        let mut members = Vec::new();
        for (index, raw) in value.split(',').enumerate() {
            if index == Self::MAX_MEMBERS {
                return Err(TraceContextError::BaggageTooLarge("64 members"));
            }
            let member =
                parse_member(raw).map_err(|reason| TraceContextError::MalformedBaggage { index, reason })?;
            members.push(member);
        }
        Ok(Baggage { members })
    }

    /// Appends a member (its properties empty), replacing an earlier member with the same key.
    ///
    /// # Errors
    ///
    /// [`TraceContextError::MalformedBaggage`] if `key` is not a token;
    /// [`TraceContextError::BaggageTooLarge`] if the list already holds 64 members.
    ///
    /// # Examples
    ///
    /// ```
    /// let bag = tether::wire::Baggage::new().with("tenant", "acme corp").unwrap();
    /// assert_eq!(bag.to_string(), "tenant=acme%20corp");
    /// ```
    pub fn with(mut self, key: &str, value: &str) -> Result<Self, TraceContextError> {
        if !is_token(key) {
            let index = self.members.len();
            return Err(TraceContextError::MalformedBaggage { index, reason: "the key is not a token" });
        }
        self.members.retain(|m| m.key != key);
        if self.members.len() == Self::MAX_MEMBERS {
            return Err(TraceContextError::BaggageTooLarge("64 members"));
        }
        self.members.push(Member { key: key.to_owned(), value: value.to_owned(), properties: String::new() });
        Ok(self)
    }

    /// The value of the first member named `key`, percent-decoded.
    ///
    /// # Examples
    ///
    /// ```
    /// let bag = tether::wire::Baggage::parse("k=v").unwrap();
    /// assert_eq!(bag.get("k"), Some("v"));
    /// assert_eq!(bag.get("missing"), None);
    /// ```
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members.iter().find(|m| m.key == key).map(|m| m.value.as_str())
    }

    /// The members as `(key, value)` pairs, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// let bag = tether::wire::Baggage::parse("a=1,b=2").unwrap();
    /// assert_eq!(bag.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|m| (m.key.as_str(), m.value.as_str()))
    }

    /// The number of members.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::wire::Baggage::parse("a=1").unwrap().len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when the list has no members.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tether::wire::Baggage::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl fmt::Display for Baggage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}=", m.key)?;
            for &byte in m.value.as_bytes() {
                if is_baggage_octet(byte) && byte != b'%' {
                    write!(f, "{}", char::from(byte))?;
                } else {
                    write!(f, "%{byte:02X}")?;
                }
            }
            if !m.properties.is_empty() {
                write!(f, ";{}", m.properties)?;
            }
        }
        Ok(())
    }
}

/// Parses one list member, `OWS key OWS "=" OWS value OWS *(";" property)`.
fn parse_member(raw: &str) -> Result<Member, &'static str> {
    let (pair, properties) = match raw.split_once(';') {
        Some((pair, properties)) => (pair, Some(properties)),
        None => (raw, None),
    };
    let (key, value) = pair.split_once('=').ok_or("no '=' between key and value")?;
    let (key, value) = (trim_ows(key), trim_ows(value));
    if !is_token(key) {
        return Err("the key is not a token");
    }
    if !value.bytes().all(is_baggage_octet) {
        return Err("the value holds an octet outside baggage-octet");
    }
    let value = percent_decode(value)?;
    let properties = match properties {
        Some(properties) => parse_properties(properties)?,
        None => String::new(),
    };
    Ok(Member { key: key.to_owned(), value, properties })
}

/// Checks `;`-separated properties (`key` or `key=value`) and returns them trimmed, re-joined.
fn parse_properties(raw: &str) -> Result<String, &'static str> {
    let mut out = Vec::new();
    for property in raw.split(';') {
        let property = trim_ows(property);
        let (key, value) = match property.split_once('=') {
            Some((k, v)) => (trim_ows(k), Some(trim_ows(v))),
            None => (property, None),
        };
        if !is_token(key) {
            return Err("a property key is not a token");
        }
        if let Some(value) = value {
            if !value.bytes().all(is_baggage_octet) {
                return Err("a property value holds an octet outside baggage-octet");
            }
            out.push(format!("{key}={value}"));
        } else {
            out.push(key.to_owned());
        }
    }
    Ok(out.join(";"))
}

/// Strips optional whitespace (spaces and tabs) from both ends.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// RFC 7230 `token`: one or more `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The spec's `baggage-octet`: printable ASCII except space, `"`, `,`, `;` and `\`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let hex = hex.ok_or("a '%' without two hex digits")?;
            // Two ASCII hex digits: valid UTF-8 and a valid base-16 byte.
            out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("0"), 16).unwrap_or(0));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the value does not decode to UTF-8")
}
