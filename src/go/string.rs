//! Go's `String()` for contexts: the chain of layers a context was derived through, and Go's
//! formats for `time.Time` and `time.Duration`.
//!
//! # Invariants
//! 1. A [`Layer`] describes one Go derivation and points to its parent's layer; roots
//!    (`Background`, `TODO`, a native context, a custom context) have no parent. Layers are
//!    immutable and shared.
//! 2. Neither printing nor dropping a chain recurses over its depth: printing collects the chain
//!    into a vector first, dropping unlinks parents in a loop. (A custom context in the chain prints
//!    itself, and whatever it holds is dropped by its own code.)
//! 3. Times print on one wall-clock anchor taken once per process, so an instant always prints the
//!    same text (a test or a transcript can match it).

use super::any_key::{Describe, OwnedKey, Value};
use super::go_context::GoContext;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One Go-level derivation (invariant 1).
pub(crate) struct Layer {
    pub(crate) kind: LayerKind,
    pub(crate) parent: Option<Arc<Layer>>,
}

/// What a layer prints.
pub(crate) enum LayerKind {
    /// `context.Background`.
    Background,
    /// `context.TODO`.
    Todo,
    /// A native [`crate::Context`] viewed as a Go context.
    Native,
    /// Go's `stopCtx`: a custom parent with its own `AfterFunc` hook, as Go names it.
    StopCtx,
    /// A custom context: prints itself ([`GoContext::name`]).
    Custom(Arc<dyn GoContext>),
    /// `.WithCancel`.
    Cancel,
    /// `.WithDeadline(<time> [<remaining>])`.
    Deadline(Instant),
    /// `.WithValue(<key>, <value>)`; `None` is Go's `nil`.
    Value(OwnedKey, Option<(Value, Describe)>),
    /// `.WithoutCancel`.
    WithoutCancel,
}

impl Layer {
    pub(crate) fn root(kind: LayerKind) -> Arc<Layer> {
        Arc::new(Layer { kind, parent: None })
    }

    pub(crate) fn on(parent: &Arc<Layer>, kind: LayerKind) -> Arc<Layer> {
        Arc::new(Layer { kind, parent: Some(parent.clone()) })
    }

    /// Shared roots: deriving from `Background()` allocates no layer for it.
    pub(crate) fn background() -> Arc<Layer> {
        Layer::shared_root(0)
    }

    pub(crate) fn todo() -> Arc<Layer> {
        Layer::shared_root(1)
    }

    pub(crate) fn native() -> Arc<Layer> {
        Layer::shared_root(2)
    }

    pub(crate) fn stop_ctx() -> Arc<Layer> {
        Layer::shared_root(3)
    }

    /// The one root layer of each kind that has no data, made on first use.
    fn shared_root(index: usize) -> Arc<Layer> {
        static ROOTS: LazyLock<[Arc<Layer>; 4]> = LazyLock::new(|| {
            [LayerKind::Background, LayerKind::Todo, LayerKind::Native, LayerKind::StopCtx].map(Layer::root)
        });
        ROOTS[index].clone()
    }

    /// Whether this layer is the root made for a custom context.
    pub(crate) fn is_custom_root(&self) -> bool {
        matches!(self.kind, LayerKind::Custom(_))
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        // Invariant 2: unlink the chain in a loop; each parent whose last reference this was has
        // its own parent taken out first, so its `drop` does not go further up.
        let mut next = self.parent.take();
        while let Some(parent) = next {
            next = Arc::into_inner(parent).and_then(|mut layer| layer.parent.take());
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Invariant 2: root first, without recursion.
        let mut chain = vec![self];
        while let Some(parent) = chain[chain.len() - 1].parent.as_deref() {
            chain.push(parent);
        }
        chain.iter().rev().try_for_each(|layer| layer.kind.write(f))
    }
}

impl LayerKind {
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerKind::Background => f.write_str("context.Background"),
            LayerKind::Todo => f.write_str("context.TODO"),
            LayerKind::Native => f.write_str("tether::Context"),
            LayerKind::StopCtx => f.write_str("context.stopCtx"),
            LayerKind::Custom(ctx) => ctx.name(f),
            LayerKind::Cancel => f.write_str(".WithCancel"),
            LayerKind::Deadline(at) => {
                let remaining = signed_nanos(*at, Instant::now());
                write!(f, ".WithDeadline({} [{}])", GoTime(*at), GoDuration(remaining))
            }
            LayerKind::Value(key, value) => {
                write!(f, ".WithValue({key}, ")?;
                match value {
                    Some((value, describe)) => describe(&**value, f)?,
                    None => f.write_str("<nil>")?,
                }
                f.write_str(")")
            }
            LayerKind::WithoutCancel => f.write_str(".WithoutCancel"),
        }
    }
}

/// `a - b` in nanoseconds, signed.
fn signed_nanos(a: Instant, b: Instant) -> i128 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_nanos() as i128,
        None => -(b.duration_since(a).as_nanos() as i128),
    }
}

/// The wall-clock anchor (invariant 3).
fn anchor() -> (Instant, i128) {
    static ANCHOR: LazyLock<(Instant, i128)> = LazyLock::new(|| {
        let now = Instant::now();
        let wall = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        (now, wall)
    });
    *ANCHOR
}

/// An instant printed as Go prints a `time.Time` with a monotonic reading, in UTC:
/// `2009-11-10 23:00:00.5 +0000 UTC m=+0.000000001` (the reading counts from the anchor).
pub(crate) struct GoTime(pub(crate) Instant);

impl fmt::Display for GoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (at, wall0) = anchor();
        let mono = signed_nanos(self.0, at);
        let wall = wall0 + mono;
        let secs = wall.div_euclid(1_000_000_000);
        let nanos = wall.rem_euclid(1_000_000_000) as u32;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days as i64);
        write!(f, "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)?;
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        let sign = if mono < 0 { '-' } else { '+' };
        let mono = mono.unsigned_abs();
        write!(f, " +0000 UTC m={sign}{}.{:09}", mono / 1_000_000_000, mono % 1_000_000_000)
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A signed number of nanoseconds printed as Go prints a `time.Duration`: `1h0m0s`, `1.5s`,
/// `-250ms`, `1.2µs`, `0s`.
pub(crate) struct GoDuration(pub(crate) i128);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Go's Duration is an int64 of nanoseconds; clamp as Go's time.Until saturates.
        let d = self.0.clamp(i64::MIN as i128, i64::MAX as i128);
        if d == 0 {
            return f.write_str("0s");
        }
        let sign = if d < 0 { "-" } else { "" };
        let u = d.unsigned_abs();
        if u < 1_000_000_000 {
            // Less than a second: one unit, with a fraction.
            let (prec, unit) = match u {
                0..1_000 => return write!(f, "{sign}{u}ns"),
                1_000..1_000_000 => (3, "µs"),
                _ => (6, "ms"),
            };
            return write!(f, "{sign}{}{unit}", frac(u, prec));
        }
        let whole_secs = u / 1_000_000_000;
        let secs = frac(u % 1_000_000_000 + (whole_secs % 60) * 1_000_000_000, 9);
        let mins = whole_secs / 60;
        match (mins / 60, mins % 60) {
            (0, 0) => write!(f, "{sign}{secs}s"),
            (0, m) => write!(f, "{sign}{m}m{secs}s"),
            (h, m) => write!(f, "{sign}{h}h{m}m{secs}s"),
        }
    }
}

/// `v / 10^prec` with its fraction, trailing zeros (and a bare dot) removed: Go's `fmtFrac`.
fn frac(v: u128, prec: u32) -> String {
    let scale = 10u128.pow(prec);
    let (int, rest) = (v / scale, v % scale);
    if rest == 0 {
        return int.to_string();
    }
    let digits = format!("{rest:0width$}", width = prec as usize);
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::{GoDuration, civil_from_days};

    #[test]
    fn durations_print_as_go_prints_them() {
        let cases: &[(i128, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (-50_000_000, "-50ms"),
            (4 * 60_000_000_000 + 5_000_000_000, "4m5s"),
            (3_600_000_000_000, "1h0m0s"),
            (5 * 3_600_000_000_000 + 6 * 60_000_000_000 + 7_001_000_000, "5h6m7.001s"),
            (i128::MAX, "2562047h47m16.854775807s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(GoDuration(*nanos).to_string(), *want, "{nanos}ns");
        }
    }

    #[test]
    fn days_convert_to_civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(14_558), (2009, 11, 10));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
