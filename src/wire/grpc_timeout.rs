//! The `grpc-timeout` header of gRPC over HTTP/2: the caller's remaining budget as at most eight
//! ASCII digits and a unit (`H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u`
//! microseconds, `n` nanoseconds).
//!
//! # Invariants
//! 1. Every value [`encode`] and [`encode_within`] return is valid input for [`decode`]: one to
//!    eight digits and a unit.
//! 2. `decode(encode(d)) >= d`, less than one unit above `d` (the unit `encode` chose), for every
//!    `d` up to [`MAX`]; above it, `encode` saturates at `MAX`.
//! 3. `decode(encode_within(d)) <= d`: what a hop sends on never exceeds its budget, so a chain of
//!    hops never extends the first caller's deadline (design/0007).
//! 4. [`decode`] never panics and never overflows: the largest value it accepts, [`MAX`], is
//!    about 11,400 years.

use std::time::Duration;

/// The most digits the protocol allows in a value.
pub const MAX_DIGITS: usize = 8;

/// The largest budget the header can say: `99999999H`.
pub const MAX: Duration = Duration::from_secs(MAX_VALUE * 3600);

/// `10^8 - 1`: the largest number of eight digits.
const MAX_VALUE: u64 = 99_999_999;

/// The units, finest first, with their length in nanoseconds: the order [`encode`] tries them.
const UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];

/// Why a `grpc-timeout` value was rejected.
///
/// # Examples
///
/// ```
/// use tether::wire::grpc_timeout::{decode, GrpcTimeoutError};
/// assert_eq!(decode("123456789S"), Err(GrpcTimeoutError::TooManyDigits(9)));
/// assert_eq!(decode("10x").unwrap_err().to_string(), "grpc-timeout unit 'x' is not one of H M S m u n");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcTimeoutError {
    /// The value is empty.
    #[error("grpc-timeout is empty")]
    Empty,
    /// The value holds a byte outside ASCII.
    #[error("grpc-timeout is not ASCII")]
    NotAscii,
    /// The last byte is not one of the six units.
    #[error("grpc-timeout unit {0:?} is not one of H M S m u n")]
    UnknownUnit(char),
    /// A unit with no digits before it.
    #[error("grpc-timeout has no digits before its unit")]
    NoDigits,
    /// More digits than the protocol's eight.
    #[error("grpc-timeout has {0} digits, more than the 8 allowed")]
    TooManyDigits(usize),
    /// Something other than a digit before the unit: a sign, a space, a dot.
    #[error("grpc-timeout has {0:?} where a digit belongs")]
    NotADigit(char),
}

/// Encodes `budget` as grpc-go does, byte for byte: the finest unit whose count fits in eight
/// digits, rounded up, so a positive budget never becomes `0`; `0n` for a spent one. Budgets
/// above [`MAX`] (beyond grpc-go's range, which ends near 292 years) saturate at `99999999H`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::wire::grpc_timeout::encode;
/// assert_eq!(encode(Duration::from_secs(1)), "1000000u");
/// assert_eq!(encode(Duration::from_nanos(123_456_789)), "123457u");
/// assert_eq!(encode(Duration::ZERO), "0n");
/// ```
pub fn encode(budget: Duration) -> String {
    encode_with(budget, |nanos, unit| nanos.div_ceil(unit))
}

/// Encodes `budget` in the finest unit that fits, rounded *down*: the value never says more than
/// `budget` (invariant 3). The layers send this, so that rounding never extends a deadline along a
/// chain of hops; it differs from [`encode`] only when `budget` is not a whole number of the unit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::wire::grpc_timeout::{encode, encode_within};
/// let budget = Duration::from_nanos(123_456_789);
/// assert_eq!(encode_within(budget), "123456u");
/// assert_eq!(encode(budget), "123457u");
/// ```
pub fn encode_within(budget: Duration) -> String {
    encode_with(budget, |nanos, unit| nanos / unit)
}

/// The finest unit whose count (`count(nanos, unit)`) fits in eight digits.
fn encode_with(budget: Duration, count: impl Fn(u128, u128) -> u128) -> String {
    let nanos = budget.as_nanos();
    for (symbol, unit) in UNITS {
        let n = count(nanos, unit);
        if n <= u128::from(MAX_VALUE) {
            return format!("{n}{}", char::from(symbol));
        }
    }
    format!("{MAX_VALUE}H")
}

/// Decodes a `grpc-timeout` value: one to eight ASCII digits and a unit. Leading zeros are
/// digits like any other; `0n` (a spent budget) is valid.
///
/// # Errors
///
/// A [`GrpcTimeoutError`] for an empty value, a byte outside ASCII, an unknown unit, no digits,
/// nine or more digits, or anything but a digit before the unit (a sign, a space).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tether::wire::grpc_timeout::{decode, GrpcTimeoutError};
/// assert_eq!(decode("250m"), Ok(Duration::from_millis(250)));
/// assert_eq!(decode(b"1H".as_slice()), Ok(Duration::from_secs(3600)));
/// assert_eq!(decode("-5S"), Err(GrpcTimeoutError::NotADigit('-')));
/// assert_eq!(decode(""), Err(GrpcTimeoutError::Empty));
/// ```
pub fn decode(value: impl AsRef<[u8]>) -> Result<Duration, GrpcTimeoutError> {
    let value = value.as_ref();
    let (&unit, digits) = value.split_last().ok_or(GrpcTimeoutError::Empty)?;
    if !value.is_ascii() {
        return Err(GrpcTimeoutError::NotAscii);
    }
    let unit_nanos = UNITS
        .iter()
        .find(|(symbol, _)| *symbol == unit)
        .map(|(_, nanos)| *nanos)
        .ok_or(GrpcTimeoutError::UnknownUnit(char::from(unit)))?;
    if digits.is_empty() {
        return Err(GrpcTimeoutError::NoDigits);
    }
    if digits.len() > MAX_DIGITS {
        return Err(GrpcTimeoutError::TooManyDigits(digits.len()));
    }
    let mut count: u128 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return Err(GrpcTimeoutError::NotADigit(char::from(digit)));
        }
        count = count * 10 + u128::from(digit - b'0');
    }
    Ok(from_nanos(count * unit_nanos))
}

/// A duration of `nanos` nanoseconds; at most [`MAX`] here (invariant 4), far inside `Duration`.
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).expect("tether: at most 99999999H (invariant 4)");
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32) // the remainder is below 10^9
}
