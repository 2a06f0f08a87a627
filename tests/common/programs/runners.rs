//! Running a program: with tether (`with_tether.rs`), recording what it observed and checking
//! that against the model; and with ad-hoc `std::thread::spawn` (`ad_hoc.rs`), counting what it
//! leaks.

mod ad_hoc;
mod with_tether;

pub use ad_hoc::*;
pub use with_tether::*;

use super::{Deadline, Tag};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How long a child blocked on cancellation waits before giving up: only reached by a bug (tether)
/// or by a flag nobody sets (ad-hoc).
pub const BLOCK_LIMIT: Duration = Duration::from_secs(10);
/// A deadline that never fires during a run.
const FAR: Duration = Duration::from_secs(3600);

/// Silences the panic hook for [`Tag`] payloads (thousands of expected panics), once.
pub fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Tag>().is_none() {
                default(info);
            }
        }));
    });
}

fn deadline_instant(d: Deadline) -> Option<Instant> {
    let now = Instant::now();
    match d {
        Deadline::None => None,
        Deadline::Past => Some(now.checked_sub(Duration::from_secs(1)).unwrap_or(now)),
        Deadline::Near(ms) => Some(now + Duration::from_millis(ms.into())),
        Deadline::Far => Some(now + FAR),
    }
}
