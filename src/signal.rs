//! Signals as typed causes (feature `signal`, Unix only): [`notify`] returns a [`SignalGuard`]
//! whose context is cancelled by the first of the chosen signals, with a [`Signal`] cause that
//! names it and, when the OS tells, the process that sent it. Go's `signal.NotifyContext`, with
//! the cause Go cannot give (golang/go#60756), a policy for the second signal, and a `stop` that
//! cannot be forgotten: dropping the guard. And [`dump_on`]: a [`dump`](crate::dump()) of every
//! live scope on SIGQUIT or SIGUSR1, to standard error or a file, as a JVM's thread dump.
//! Design: design/0009-tracing-metrics-signals.md.
//!
//! ```no_run
//! use tether::signal::{self, SIGINT, SIGTERM};
//! use tether::{Canceller, Context};
//!
//! # fn main() -> Result<(), tether::signal::NotifyError> {
//! let shutdown = signal::notify(&Context::new(), &[SIGINT, SIGTERM])?;
//! tether::ScopeBuilder::new()
//!     .parent(shutdown.context())
//!     .run(|s| {
//!         s.spawn(|ctx| {
//!             let cause = ctx.wait(); // serve until a signal
//!             let signal = cause.downcast_ref::<signal::Signal>().unwrap();
//!             println!("stopping: {signal}"); // "received SIGTERM (signal 15) from pid 4242"
//!         });
//!     })
//!     .unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! # How a signal arrives
//! signal-hook's handler (async-signal-safe) writes the signal and its `siginfo` to a self-pipe;
//! one thread per guard (`tether-signal`, or `tether-dump`) reads the pipe and does what may not
//! be done in a handler: cancel the context (running its callbacks), apply the second-signal
//! policy, or take and write a dump.
//!
//! # Invariants
//! 1. While a guard listens for a signal, the signal does not have its default effect: every
//!    guard listening for it is told, and nothing else tether installed acts on it. Once the last
//!    guard listening for it has dropped, the signal has its default disposition again (a
//!    terminating signal terminates the process, as if tether had never listened).
//! 2. The guard's context is cancelled by the first signal the guard receives, or by the guard's
//!    drop (with [`Cause::Cancelled`]), whichever comes first; a later signal follows the
//!    [`SecondSignal`] policy, and never cancels the context again.
//! 3. Dropping a guard returns once its thread has stopped (unless the drop runs on that very
//!    thread, in a callback of the cancellation: it then stops by itself right after).
//!
//! # Windows
//! The module exists on Unix only. Windows has no `kill` signals to speak of (Ctrl-C and console
//! close are console events, with no sender), so a Windows program keeps using its console
//! handler (the `ctrlc` crate, or tokio's `ctrl_c`) and cancels a context from there; the
//! [`Signal`] cause is Unix's.

use crate::cancel::Cause;
use crate::context::Context;
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::Exfiltrator;
use signal_hook::iterator::exfiltrator::origin::{Origin, WithOrigin};
use signal_hook::low_level::signal_name;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::io::Write;
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

pub use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

/// The cause of a cancellation by a signal: which signal, and who sent it when the OS says.
///
/// Recovered from a context's cause with [`Cause::downcast_ref`].
///
/// # Examples
///
/// ```
/// use tether::signal::{SIGTERM, Signal};
///
/// let signal = Signal::new(SIGTERM, None);
/// assert_eq!(signal.name(), Some("SIGTERM"));
/// assert_eq!(signal.to_string(), format!("received SIGTERM (signal {SIGTERM})"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Signal {
    number: c_int,
    sender: Option<Sender>,
}

/// The process that sent a signal, as `siginfo` reports it (`si_pid`, `si_uid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sender {
    /// The sender's process id.
    pub pid: i32,
    /// The sender's real user id.
    pub uid: u32,
}

/// What a guard does with the signals it receives after the first one (which cancelled its
/// context).
///
/// # Examples
///
/// ```no_run
/// use tether::signal::{Notify, SIGINT, SecondSignal};
/// use tether::Context;
///
/// // A second Ctrl-C exits at once with status 130, without waiting for the graceful shutdown.
/// let guard = Notify::new(&[SIGINT]).second(SecondSignal::Exit(130)).start(&Context::new()).unwrap();
/// # drop(guard);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SecondSignal {
    /// Exit the process at once with status 128 + the signal's number (130 for SIGINT, 143 for
    /// SIGTERM), the shell's convention for "killed by a signal". The default.
    #[default]
    ExitBySignal,
    /// Exit the process at once with this status ([`std::process::exit`]: other threads are not
    /// joined, destructors on them do not run).
    Exit(i32),
    /// Cancel the guard's shield ([`SignalGuard::shield`]), with the second signal as the
    /// cause: the work that was meant to outlive the first signal stops too. Later signals do
    /// nothing more.
    CancelShielded,
    /// Do nothing.
    Ignore,
}

/// Why [`notify`] could not listen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The signal cannot be caught or must not be (SIGKILL, SIGSTOP, SIGSEGV, SIGILL, SIGFPE).
    #[error("signal {0} cannot be listened for")]
    Forbidden(c_int),
    /// Registering the handler or starting the listening thread failed.
    #[error("cannot listen for signals: {0}")]
    Io(#[from] io::Error),
}

/// Listens for signals until dropped: its [`context`](Self::context) is cancelled by the first
/// one with a [`Signal`] cause. Returned by [`notify`] and [`Notify::start`].
///
/// Dropping the guard stops listening (the signals get their default disposition back once no
/// guard listens for them) and cancels the context with [`Cause::Cancelled`] if no signal did,
/// as Go's `stop` does.
#[must_use = "dropping the guard stops listening at once"]
pub struct SignalGuard {
    ctx: Context,
    shield: Context,
    /// Taken by the drop, which stops listening before it cancels.
    listening: Option<Listening>,
}

/// Listens for a signal until dropped: writes a [`dump`](crate::dump()) of every live scope each
/// time it arrives. Returned by [`dump_on`].
#[must_use = "dropping the guard stops listening at once"]
pub struct DumpGuard {
    written: Arc<AtomicU64>,
    listening: Listening,
}

/// Where [`dump_on`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DumpTo {
    /// The text form, to standard error (a goroutine dump's place).
    Stderr,
    /// The text form, to this file, replaced by each dump (the latest dump).
    File(PathBuf),
    /// The JSON form ([`Dump::to_json`](crate::dump::Dump::to_json)), to this file, replaced by
    /// each dump.
    JsonFile(PathBuf),
}

/// A thread reading signal-hook's pipe for some signals, and those signals' count of guards
/// (invariant 1): what both kinds of guard hold.
struct Listening {
    signals: Vec<c_int>,
    /// Closes the pipe the thread reads.
    handle: signal_hook::iterator::Handle,
    thread: Option<JoinHandle<()>>,
}

/// Configures a [`SignalGuard`]: the signals and the second-signal policy.
///
/// # Examples
///
/// ```no_run
/// use tether::signal::{Notify, SIGINT, SIGTERM, SecondSignal};
/// use tether::Context;
///
/// let guard = Notify::new(&[SIGINT, SIGTERM])
///     .second(SecondSignal::CancelShielded)
///     .start(&Context::new())
///     .unwrap();
/// # drop(guard);
/// ```
#[derive(Clone, Debug)]
#[must_use = "a Notify does nothing until `start`"]
pub struct Notify {
    signals: Vec<c_int>,
    second: SecondSignal,
}

/// Per signal, the guards listening for it, and the flag that lets the default-disposition
/// action registered for it act (invariant 1). Registered once per signal, for the process.
struct Disposition {
    guards: usize,
    default_on: Arc<AtomicBool>,
}

static DISPOSITIONS: Mutex<Option<HashMap<c_int, Disposition>>> = Mutex::new(None);

/// Returns a guard whose context, a child of `parent`, is cancelled by the first of `signals` to
/// arrive, with a [`Signal`] cause; a second signal exits the process with status 128 + its
/// number ([`SecondSignal::ExitBySignal`]; see [`Notify`] for another policy).
///
/// Several guards may listen for the same signal: each is told.
///
/// # Errors
///
/// [`NotifyError::Forbidden`] for a signal that cannot be caught, [`NotifyError::Io`] when the
/// handler or the listening thread cannot be set up.
///
/// # Examples
///
/// ```
/// use signal_hook::low_level::raise;
/// use tether::signal::{self, SIGUSR2, Signal};
/// use tether::{Canceller, Context};
///
/// let guard = signal::notify(&Context::new(), &[SIGUSR2]).unwrap();
/// raise(SIGUSR2).unwrap();
/// let cause = guard.context().wait();
/// let signal = cause.downcast_ref::<Signal>().unwrap();
/// assert_eq!(signal.number(), SIGUSR2);
/// assert_eq!(signal.sender().unwrap().pid, std::process::id() as i32);
/// ```
pub fn notify(parent: &Context, signals: &[c_int]) -> Result<SignalGuard, NotifyError> {
    Notify::new(signals).start(parent)
}

// ===== impl Signal =====

impl Signal {
    /// A signal cause for `number`, sent by `sender` if known.
    ///
    /// # Examples
    ///
    /// See [`Signal`].
    pub fn new(number: c_int, sender: Option<Sender>) -> Signal {
        Signal { number, sender }
    }

    fn from_origin(origin: &Origin) -> Signal {
        let sender = origin.process.map(|p| Sender { pid: p.pid, uid: p.uid });
        Signal::new(origin.signal, sender)
    }

    /// The signal's number.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tether::signal::Signal::new(2, None).number(), 2);
    /// ```
    pub fn number(&self) -> c_int {
        self.number
    }

    /// The signal's name (`"SIGINT"`), if it is a known one.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::signal::{SIGINT, Signal};
    /// assert_eq!(Signal::new(SIGINT, None).name(), Some("SIGINT"));
    /// ```
    pub fn name(&self) -> Option<&'static str> {
        signal_name(self.number)
    }

    /// The process that sent it, when the OS says (a signal from `kill` or `raise` does; one the
    /// kernel raises, or a platform that does not fill `siginfo`, does not).
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::signal::{SIGTERM, Sender, Signal};
    /// let signal = Signal::new(SIGTERM, Some(Sender { pid: 42, uid: 0 }));
    /// assert_eq!(signal.sender().unwrap().pid, 42);
    /// assert!(signal.to_string().ends_with("from pid 42"));
    /// ```
    pub fn sender(&self) -> Option<Sender> {
        self.sender
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "received {name} (signal {})", self.number)?,
            None => write!(f, "received signal {}", self.number)?,
        }
        match self.sender {
            Some(sender) => write!(f, " from pid {}", sender.pid),
            None => Ok(()),
        }
    }
}

// ===== impl Notify =====

impl Notify {
    /// A guard to be for `signals`, with the default second-signal policy
    /// ([`SecondSignal::ExitBySignal`]).
    ///
    /// # Examples
    ///
    /// See [`Notify`].
    pub fn new(signals: &[c_int]) -> Notify {
        Notify { signals: signals.to_vec(), second: SecondSignal::default() }
    }

    /// What to do with the signals after the first.
    ///
    /// # Examples
    ///
    /// See [`SecondSignal`].
    pub fn second(mut self, policy: SecondSignal) -> Notify {
        self.second = policy;
        self
    }

    /// Starts listening: the guard's context is a child of `parent`.
    ///
    /// # Errors
    ///
    /// As [`notify`].
    ///
    /// # Examples
    ///
    /// See [`Notify`].
    pub fn start(self, parent: &Context) -> Result<SignalGuard, NotifyError> {
        let (ctx, shield) = (parent.child(), Context::new());
        let listener = Listener { ctx: ctx.clone(), shield: shield.clone(), second: self.second };
        let run = move |signals| listener.run(signals);
        let listening = Listening::start::<WithOrigin, _>(self.signals, "tether-signal", run)?;
        Ok(SignalGuard { ctx, shield, listening: Some(listening) })
    }
}

/// Writes a [`dump`](crate::dump()) of every live scope to `to` each time `signal` arrives
/// (SIGQUIT, as a JVM or a Go program does, or SIGUSR1), until the guard drops: then the
/// signal has its default disposition back, unless another guard listens for it.
///
/// A dump is written by a thread of its own (`tether-dump`), never in the signal handler. A
/// failure to write a file is reported on standard error, once per dump.
///
/// # Errors
///
/// As [`notify`].
///
/// # Examples
///
/// ```
/// use signal_hook::low_level::raise;
/// use tether::signal::{self, DumpTo, SIGUSR1};
///
/// let path = std::env::temp_dir().join(format!("tether-dump-{}.json", std::process::id()));
/// let dumps = signal::dump_on(SIGUSR1, DumpTo::JsonFile(path.clone())).unwrap();
/// tether::ScopeBuilder::new().name("ingest").run(|_| {
///     raise(SIGUSR1).unwrap();
///     while dumps.written() == 0 {
///         std::thread::yield_now();
///     }
/// })
/// .unwrap();
/// assert!(std::fs::read_to_string(&path).unwrap().contains("\"ingest\""));
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn dump_on(signal: c_int, to: DumpTo) -> Result<DumpGuard, NotifyError> {
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    let run = move |mut signals: SignalsInfo| {
        for _ in signals.forever() {
            write_dump(&to);
            // SeqCst: pairs with `written`'s load; publishes that the dump is out.
            count.fetch_add(1, SeqCst);
        }
    };
    let listening = Listening::start(vec![signal], "tether-dump", run)?;
    Ok(DumpGuard { written, listening })
}

/// Writes one dump to `to`; a failure goes to standard error (there is no caller to return it to).
fn write_dump(to: &DumpTo) {
    let dump = crate::dump();
    let result = match to {
        DumpTo::Stderr => writeln!(io::stderr().lock(), "{dump}"),
        DumpTo::File(path) => std::fs::write(path, dump.to_string()),
        DumpTo::JsonFile(path) => std::fs::write(path, dump.to_json()),
    };
    if let Err(err) = result {
        eprintln!("tether: cannot write the dump to {to:?}: {err}");
    }
}

// ===== impl Listening =====

impl Listening {
    /// Listens for `signals` on a thread named `name` running `run` over signal-hook's iterator,
    /// and turns their default disposition off (invariant 1).
    fn start<E, F>(signals: Vec<c_int>, name: &str, run: F) -> Result<Listening, NotifyError>
    where
        E: Exfiltrator + Default,
        F: FnOnce(SignalsInfo<E>) + Send + 'static,
    {
        if let Some(&forbidden) = signals.iter().find(|s| signal_hook::consts::FORBIDDEN.contains(s)) {
            return Err(NotifyError::Forbidden(forbidden));
        }
        // Our action first, then the default turned off: a signal in between reaches the pipe.
        let iterator = SignalsInfo::<E>::new(&signals)?;
        let handle = iterator.handle();
        if let Err(err) = listen(&signals) {
            handle.close();
            return Err(err);
        }
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || run(iterator));
        let thread = match thread {
            Ok(thread) => thread,
            Err(err) => {
                unlisten(&signals);
                handle.close();
                return Err(err.into());
            }
        };
        Ok(Listening { signals, handle, thread: Some(thread) })
    }
}

impl Drop for Listening {
    /// Stops listening (invariants 1 and 3).
    fn drop(&mut self) {
        // The default first: a signal from here on has its default effect (invariant 1).
        unlisten(&self.signals);
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                // The thread only forwards signals (a callback's panic is caught): it does not
                // unwind, and it ends once the pipe is closed.
                let _ = thread.join();
            }
        }
    }
}

/// Counts one more guard for each of `signals`, turning their default disposition off
/// (invariant 1); registers the default-disposition action of a signal the first time.
fn listen(signals: &[c_int]) -> Result<(), NotifyError> {
    let mut listening = DISPOSITIONS.lock().unwrap_or_else(PoisonError::into_inner);
    let listening = listening.get_or_insert_with(HashMap::new);
    for (i, &signal) in signals.iter().enumerate() {
        if !listening.contains_key(&signal) {
            let default_on = Arc::new(AtomicBool::new(false));
            if let Err(err) = signal_hook::flag::register_conditional_default(signal, default_on.clone()) {
                release(listening, &signals[..i]);
                return Err(err.into());
            }
            listening.insert(signal, Disposition { guards: 0, default_on });
        }
        let entry = listening.get_mut(&signal).expect("inserted above");
        entry.guards += 1;
        // SeqCst: the handler's load is SeqCst (signal-hook's); no other data rides on it.
        entry.default_on.store(false, SeqCst);
    }
    Ok(())
}

/// Counts one guard less for each of `signals`, turning the default disposition back on for
/// those no guard listens for any more (invariant 1).
fn unlisten(signals: &[c_int]) {
    let mut listening = DISPOSITIONS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(listening) = listening.as_mut() {
        release(listening, signals);
    }
}

/// [`unlisten`], under the lock.
fn release(listening: &mut HashMap<c_int, Disposition>, signals: &[c_int]) {
    for signal in signals {
        if let Some(entry) = listening.get_mut(signal) {
            entry.guards -= 1;
            if entry.guards == 0 {
                // SeqCst: as in `listen`.
                entry.default_on.store(true, SeqCst);
            }
        }
    }
}

/// What the `tether-signal` thread holds.
struct Listener {
    ctx: Context,
    shield: Context,
    second: SecondSignal,
}

impl Listener {
    /// Reads the pipe until the guard closes it: the first signal cancels the context, later
    /// ones follow the policy (invariant 2).
    fn run(self, mut signals: SignalsInfo<WithOrigin>) {
        let mut first = true;
        for origin in signals.forever() {
            let signal = Signal::from_origin(&origin);
            if std::mem::take(&mut first) {
                cancel(&self.ctx, signal);
                continue;
            }
            match self.second {
                SecondSignal::ExitBySignal => std::process::exit(128 + signal.number),
                SecondSignal::Exit(code) => std::process::exit(code),
                SecondSignal::CancelShielded => cancel(&self.shield, signal),
                SecondSignal::Ignore => {}
            }
        }
    }
}

/// Cancels `ctx` with `signal`; a panicking callback has no caller here, so it is recorded
/// ([`crate::testing::take_unhandled_panics`]) and the thread goes on listening.
fn cancel(ctx: &Context, signal: Signal) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| ctx.cancel_with(Cause::custom(signal)))) {
        crate::unhandled::record(payload);
    }
}

// ===== impl SignalGuard =====

impl SignalGuard {
    /// The context the first signal cancels.
    ///
    /// # Examples
    ///
    /// See [`notify`].
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// A context for work that must outlive the first signal (the job in hand during a graceful
    /// shutdown) but not the second, when the policy is [`SecondSignal::CancelShielded`]: it
    /// carries `ctx`'s values, like [`Context::detached`], but is cancelled by the second signal
    /// (and by the guard's drop) instead of by `ctx`'s cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use tether::signal::{self, SIGUSR2};
    /// use tether::{Canceller, Context};
    ///
    /// let guard = signal::notify(&Context::new(), &[SIGUSR2]).unwrap();
    /// let job = guard.shield(guard.context());
    /// guard.context().cancel(); // as the first signal would
    /// assert!(!job.is_cancelled());
    /// drop(guard);
    /// assert!(job.is_cancelled());
    /// ```
    pub fn shield(&self, ctx: &Context) -> Context {
        self.shield.child().with_values(ctx.values().clone())
    }
}

impl Drop for SignalGuard {
    /// Stops listening (invariants 1 and 3), then cancels the context and the shield.
    fn drop(&mut self) {
        drop(self.listening.take());
        self.ctx.cancel();
        self.shield.cancel();
    }
}

impl fmt::Debug for SignalGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalGuard")
            .field("signals", &self.listening.as_ref().map(|l| &l.signals))
            .field("context", &self.ctx)
            .finish_non_exhaustive()
    }
}

// ===== impl DumpGuard =====

impl DumpGuard {
    /// How many dumps this guard has written (or failed to write) so far.
    ///
    /// # Examples
    ///
    /// See [`dump_on`].
    pub fn written(&self) -> u64 {
        // SeqCst: pairs with the listening thread's increment, after its write.
        self.written.load(SeqCst)
    }
}

impl fmt::Debug for DumpGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DumpGuard")
            .field("signals", &self.listening.signals)
            .field("written", &self.written())
            .finish()
    }
}
