//! The causes a request's context is cancelled with, one per reason, so that a handler (and the
//! logs) can tell them apart with [`Cause::downcast_ref`]: the client went away, the caller's
//! deadline passed, or the server's cap passed.
//!
//! # Invariants
//! 1. Each cause is one shared error for the process (a `LazyLock`), so cancelling a request's
//!    context with it costs a reference count, not an allocation.

use crate::cancel::{Cause, SharedError};
use std::sync::{Arc, LazyLock};

/// The client went away (closed its connection or reset its stream) before the response was
/// ready: the server layer's future was dropped unfinished. `err()` is `Cancelled`.
///
/// # Examples
///
/// ```
/// use tether::http::ClientDisconnected;
/// assert_eq!(ClientDisconnected.to_string(), "the client went away before the response was ready");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the client went away before the response was ready")]
pub struct ClientDisconnected;

/// The deadline the caller sent (`grpc-timeout`) passed. `err()` is `DeadlineExceeded`.
///
/// # Examples
///
/// ```
/// use tether::http::CallerDeadlineExceeded;
/// assert_eq!(CallerDeadlineExceeded.to_string(), "the caller's deadline passed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the caller's deadline passed")]
pub struct CallerDeadlineExceeded;

/// The server's own cap on a request's time passed (it was earlier than the caller's deadline, or
/// the caller sent none). `err()` is `DeadlineExceeded`.
///
/// # Examples
///
/// ```
/// use tether::http::ServerCapExceeded;
/// assert_eq!(ServerCapExceeded.to_string(), "the server's time cap for a request passed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the server's time cap for a request passed")]
pub struct ServerCapExceeded;

#[cfg(feature = "tower")]
static DISCONNECTED: LazyLock<SharedError> = LazyLock::new(|| Arc::new(ClientDisconnected));
static CALLER_DEADLINE: LazyLock<SharedError> = LazyLock::new(|| Arc::new(CallerDeadlineExceeded));
static SERVER_CAP: LazyLock<SharedError> = LazyLock::new(|| Arc::new(ServerCapExceeded));

/// [`ClientDisconnected`] as a cause (invariant 1): the server layer's.
#[cfg(feature = "tower")]
pub(crate) fn client_disconnected() -> Cause {
    Cause::from_shared(DISCONNECTED.clone())
}

/// [`CallerDeadlineExceeded`] as a cause (invariant 1).
pub(crate) fn caller_deadline() -> Cause {
    Cause::from_shared(CALLER_DEADLINE.clone())
}

/// [`ServerCapExceeded`] as a cause (invariant 1).
pub(crate) fn server_cap() -> Cause {
    Cause::from_shared(SERVER_CAP.clone())
}
