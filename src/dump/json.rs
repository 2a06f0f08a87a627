//! The JSON form of a [`Dump`]: written by hand (no serializer in the core dependencies), to the
//! schema of design/0008 and the [`Dump`] docs, version [`FORMAT_VERSION`].
//!
//! Strings are escaped as RFC 8259 requires (quote, backslash, and every control character);
//! everything else is written as is, so any UTF-8 file name or thread name round-trips.

use super::{ChildDump, ChildState, Dump, ScopeDump, ThreadRef, ValueDump};
use std::fmt::Write;
use std::panic::Location;
use std::time::Duration;

/// The version of the schema this module writes; bumped when a field changes meaning or is
/// removed (adding a field does not bump it).
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The dump as one JSON object.
pub(crate) fn write(dump: &Dump) -> String {
    let mut out = String::with_capacity(256 + 160 * dump.children());
    out.push_str("{\"format_version\":");
    push_display(&mut out, FORMAT_VERSION);
    out.push_str(",\"scopes\":[");
    for (i, scope) in dump.scopes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        scope_object(&mut out, scope);
    }
    out.push_str("]}");
    out
}

fn scope_object(out: &mut String, s: &ScopeDump) {
    out.push_str("{\"id\":");
    push_display(out, s.id);
    out.push_str(",\"name\":");
    opt_string(out, s.name.as_deref());
    out.push_str(",\"parent\":");
    opt_number(out, s.parent);
    out.push_str(",\"site\":");
    site(out, s.site);
    out.push_str(",\"owner_thread\":");
    thread(out, &s.owner);
    out.push_str(",\"age_us\":");
    micros(out, s.age);
    out.push_str(",\"deadline_remaining_us\":");
    match s.deadline_remaining {
        Some(d) => micros(out, d),
        None => out.push_str("null"),
    }
    out.push_str(",\"limit\":");
    opt_number(out, s.limit);
    out.push_str(",\"slots_in_use\":");
    opt_number(out, s.slots_in_use);
    out.push_str(",\"running\":");
    push_display(out, s.running);
    out.push_str(",\"cancelled\":");
    out.push_str(if s.cancelled { "true" } else { "false" });
    out.push_str(",\"cause\":");
    opt_string(out, s.cause.as_deref());
    out.push_str(",\"values\":[");
    for (i, v) in s.values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        value_object(out, v);
    }
    out.push_str("],\"children\":[");
    for (i, c) in s.children.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        child_object(out, c);
    }
    out.push_str("]}");
}

fn value_object(out: &mut String, v: &ValueDump) {
    out.push_str("{\"key\":");
    string(out, v.key);
    out.push_str(",\"value\":");
    opt_string(out, v.value.as_deref());
    out.push('}');
}

fn child_object(out: &mut String, c: &ChildDump) {
    out.push_str("{\"id\":");
    push_display(out, c.id);
    out.push_str(",\"name\":");
    opt_string(out, c.name.as_deref());
    out.push_str(",\"kind\":");
    string(out, c.kind.as_str());
    out.push_str(",\"thread\":");
    match &c.thread {
        Some(t) => thread(out, t),
        None => out.push_str("null"),
    }
    out.push_str(",\"site\":");
    site(out, c.site);
    out.push_str(",\"age_us\":");
    micros(out, c.age);
    out.push_str(",\"state\":");
    string(out, c.state.as_str());
    out.push_str(",\"wait\":");
    match &c.state {
        ChildState::Blocked { site: at, for_ } => {
            out.push_str("{\"site\":");
            site(out, at);
            out.push_str(",\"for_us\":");
            micros(out, *for_);
            out.push('}');
        }
        _ => out.push_str("null"),
    }
    out.push('}');
}

fn thread(out: &mut String, t: &ThreadRef) {
    out.push_str("{\"id\":");
    push_display(out, t.id);
    out.push_str(",\"name\":");
    opt_string(out, t.name.as_deref());
    out.push('}');
}

fn site(out: &mut String, at: &Location<'_>) {
    out.push_str("{\"file\":");
    string(out, at.file());
    out.push_str(",\"line\":");
    push_display(out, at.line());
    out.push_str(",\"column\":");
    push_display(out, at.column());
    out.push('}');
}

fn micros(out: &mut String, d: Duration) {
    push_display(out, d.as_micros());
}

fn push_display(out: &mut String, n: impl std::fmt::Display) {
    let _ = write!(out, "{n}"); // writing to a String cannot fail
}

fn opt_number(out: &mut String, n: Option<impl std::fmt::Display>) {
    match n {
        Some(n) => push_display(out, n),
        None => out.push_str("null"),
    }
}

fn opt_string(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.push_str("null"),
    }
}

/// `s` as a JSON string literal (RFC 8259, section 7).
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::string;

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
