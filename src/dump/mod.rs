//! Seeing the tree: [`dump()`] takes a snapshot of every live scope and its children, as text
//! for a person ([`Dump`]'s `Display`) and as JSON for tools ([`Dump::to_json`]). Design:
//! design/0008-dump.md.
//!
//! The engine is private: `registry.rs` (the live scopes, and which scope a thread works for),
//! `site.rs` (per-thread cells: a thread's number and name, and the blocking call it is in),
//! `json.rs` (the JSON writer). Each scope describes itself (`scope/observe.rs`).
//!
//! # What it costs
//! Nothing is recorded for a dump that does not happen but what a dump cannot recompute: each
//! scope registers itself (one lock as it opens, one as it closes); each child keeps its spawn
//! site and time; a thread child sits in its scope's ledger; a running task is named in its
//! thread's cell (relaxed stores, nothing shared), a queued one is in its scope's queue anyway;
//! and a blocking call records its site in its thread's cell with relaxed stores
//! (`BlockingSite`). `is_cancelled` is untouched.
//!
//! # Consistency
//! A dump is **weakly consistent**, like a goroutine dump: each scope is read on its own, each
//! child's fields one after another, while the program runs. It guarantees that every scope
//! registered before `dump()` was called and still open when it returns is in it; that every
//! child spawned before that and not yet finished is in its scope (a child that finishes or
//! starts meanwhile may or may not be); that a listed child's spawn site, kind and name are its
//! own. Counts (`running`, `slots_in_use`) and states may be a moment apart from each other. A
//! dump never blocks a spawn for longer than it takes to copy the fields of one scope's children
//! (it formats outside every lock), and never blocks `is_cancelled`.

mod json;
pub(crate) mod registry;
pub(crate) mod site;

pub(crate) use site::BlockingSite;

use std::fmt;
use std::panic::Location;
use std::time::{Duration, Instant};

/// Takes a snapshot of every live scope and its children.
///
/// Weakly consistent (see [`Dump`]): safe to call at any time, from any thread, while scopes
/// spawn and exit; it runs no user code but the `Debug` of values whose key opts in
/// ([`Key::shown`](crate::Key::shown)).
///
/// # Examples
///
/// ```
/// use tether::Canceller;
///
/// tether::ScopeBuilder::new().name("server").run(|s| {
///     s.spawn(|ctx| ctx.wait());
///     let dump = tether::dump();
///     let server = dump.scopes().iter().find(|sc| sc.name.as_deref() == Some("server")).unwrap();
///     assert_eq!(server.children.len(), 1);
///     assert_eq!(server.children[0].site.line(), line!() - 4);
///     println!("{dump}");
///     assert!(dump.to_json().starts_with("{\"format_version\":1,"));
/// })
/// .unwrap();
/// ```
pub fn dump() -> Dump {
    Dump { scopes: registry::observe_all(Instant::now()) }
}

/// A snapshot of live scopes and their children: [`dump()`]'s result, and what a scope's
/// watchdog hands to its callback ([`ScopeBuilder::watchdog`](crate::ScopeBuilder::watchdog)).
///
/// Scopes are listed parents first (in the order they were opened); each holds its children.
/// `Display` writes one block per scope, nested scopes and children indented below their scope;
/// [`to_json`](Self::to_json) writes the schema below.
///
/// # JSON schema (`format_version` 1)
///
/// ```text
/// { "format_version": 1,
///   "scopes": [ {                          // parents before children
///     "id": u64, "name": string|null, "parent": u64|null,  // parent: the enclosing scope's id
///     "site": Site,                        // where `scope`/`run` was called
///     "owner_thread": Thread,              // the thread running the body
///     "age_us": u64,
///     "deadline_remaining_us": u64|null,   // 0 once the deadline has passed
///     "limit": u64|null, "slots_in_use": u64|null,
///     "running": u64,                      // children counted as running
///     "cancelled": bool, "cause": string|null,
///     "values": [ { "key": string, "value": string|null } ],  // value only if the key is shown
///     "children": [ {
///       "id": u64,                         // unique within the scope
///       "name": string|null, "kind": "thread"|"task",
///       "thread": Thread|null,             // null while a task is queued
///       "site": Site,                      // where it was spawned
///       "age_us": u64,
///       "state": "queued"|"running"|"blocked"|"awaiting_join",
///       "wait": { "site": Site, "for_us": u64 }|null   // set when "blocked"
///     } ] } ] }
/// Site   = { "file": string, "line": u32, "column": u32 }
/// Thread = { "id": u64, "name": string|null }  // id: the number of std's ThreadId
/// ```
///
/// A new field may be added within a version; a field is never removed or changes meaning
/// without a new `format_version`.
///
/// # Consistency
///
/// Weakly consistent (a snapshot taken while the program runs, as a goroutine dump is): every
/// scope open for the whole of the `dump()` call is in it, and every child spawned before the
/// call and still running after it is in its scope; children that start or finish meanwhile may
/// or may not be; counts and states may be a moment apart.
///
/// # Examples
///
/// ```
/// let dump = tether::dump();
/// let json = dump.to_json();
/// assert!(json.contains("\"scopes\":["));
/// ```
#[derive(Clone, Debug)]
pub struct Dump {
    scopes: Vec<ScopeDump>,
}

/// One live scope in a [`Dump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ScopeDump {
    /// Unique in the process, increasing with the scopes' creation.
    pub id: u64,
    /// Given by [`ScopeBuilder::name`](crate::ScopeBuilder::name).
    pub name: Option<String>,
    /// The scope whose body or child opened this one.
    pub parent: Option<u64>,
    /// Where [`scope`](crate::scope()) or [`ScopeBuilder::run`](crate::ScopeBuilder::run) was
    /// called.
    pub site: &'static Location<'static>,
    /// The thread that opened it and runs its body.
    pub owner: ThreadRef,
    /// Since the scope opened.
    pub age: Duration,
    /// Time left before its deadline (zero once passed), if it has one.
    pub deadline_remaining: Option<Duration>,
    /// Its concurrency limit ([`ScopeBuilder::limit`](crate::ScopeBuilder::limit)).
    pub limit: Option<usize>,
    /// With a limit: the slots taken now.
    pub slots_in_use: Option<usize>,
    /// Children spawned and not yet finished.
    pub running: usize,
    /// Whether its context is cancelled.
    pub cancelled: bool,
    /// The cancellation's cause, as text.
    pub cause: Option<String>,
    /// The values bound by [`ScopeBuilder::value`](crate::ScopeBuilder::value): key names, and
    /// the value only for a [`shown`](crate::Key::shown) key.
    pub values: Vec<ValueDump>,
    /// Its children not yet finished (and its thread children finished and not yet joined), in
    /// spawn order.
    pub children: Vec<ChildDump>,
}

/// A value bound to a scope, by key name; its `Debug` text only if the key opts in
/// ([`Key::shown`](crate::Key::shown)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ValueDump {
    /// The key's name.
    pub key: &'static str,
    /// The value's `Debug`, for a shown key.
    pub value: Option<String>,
}

/// One child of a scope in a [`Dump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChildDump {
    /// Unique within its scope, in spawn order.
    pub id: u64,
    /// A thread child's name ([`ChildBuilder::name`](crate::ChildBuilder::name)).
    pub name: Option<String>,
    /// Thread or pool task.
    pub kind: ChildKind,
    /// The thread running it (for a task: the pool worker or helping thread; none while queued).
    pub thread: Option<ThreadRef>,
    /// Where it was spawned (the caller of `spawn`, through any `#[track_caller]` wrapper).
    pub site: &'static Location<'static>,
    /// Since it was spawned.
    pub age: Duration,
    /// What it is doing.
    pub state: ChildState,
}

/// A thread in a [`Dump`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadRef {
    /// The number of its [`std::thread::ThreadId`] (`ThreadId(7)` is 7).
    pub id: u64,
    /// Its name.
    pub name: Option<String>,
}

/// The kind of a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildKind {
    /// An OS thread ([`Scope::spawn`](crate::Scope::spawn)).
    Thread,
    /// A pool task ([`Scope::spawn_task`](crate::Scope::spawn_task)).
    Task,
}

/// What a child is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildState {
    /// Spawned, not started: a task waiting for a worker, a thread not yet scheduled.
    Queued,
    /// Running its closure.
    Running,
    /// In a blocking call of tether's: [`crate::blocking`], [`Canceller::wait`](crate::Canceller::wait)
    /// and `wait_timeout`, [`Scope::wait_all`](crate::Scope::wait_all), a join, or the exit of a
    /// scope it opened (the site is then that scope's).
    Blocked {
        /// Where the call was made.
        site: &'static Location<'static>,
        /// For how long.
        for_: Duration,
    },
    /// A thread child that has finished; its handle has not joined it (nor been dropped) yet. (A
    /// finished task is not listed.)
    AwaitingJoin,
}

// ===== impl Dump =====

impl Dump {
    pub(crate) fn new(scopes: Vec<ScopeDump>) -> Dump {
        Dump { scopes }
    }

    /// The live scopes, parents first.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|_| assert!(!tether::dump().scopes().is_empty())).unwrap();
    /// ```
    pub fn scopes(&self) -> &[ScopeDump] {
        &self.scopes
    }

    /// The number of children in the dump, all scopes together.
    ///
    /// # Examples
    ///
    /// ```
    /// tether::scope(|s| {
    ///     s.spawn(|ctx| tether::Canceller::wait(ctx));
    ///     assert!(tether::dump().children() >= 1);
    /// })
    /// .unwrap();
    /// ```
    pub fn children(&self) -> usize {
        self.scopes.iter().map(|s| s.children.len()).sum()
    }

    /// The dump as JSON, to the schema in the type's docs (`format_version` 1).
    ///
    /// # Examples
    ///
    /// ```
    /// tether::ScopeBuilder::new().name("a \"quoted\" name").run(|_| {
    ///     assert!(tether::dump().to_json().contains(r#""name":"a \"quoted\" name""#));
    /// })
    /// .unwrap();
    /// ```
    pub fn to_json(&self) -> String {
        json::write(self)
    }
}

impl fmt::Display for Dump {
    /// One block per scope, nested scopes indented below the child or body that opened them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tether dump: {} scopes, {} children", self.scopes.len(), self.children())?;
        // Depth first, without recursion: a stack of (scope index, depth). Parents come first in
        // `scopes`, so each scope's nested ones are those after it whose parent it is.
        let mut stack: Vec<(usize, usize)> = Vec::new();
        let ids: std::collections::HashSet<u64> = self.scopes.iter().map(|s| s.id).collect();
        for (i, s) in self.scopes.iter().enumerate().rev() {
            if !s.parent.is_some_and(|p| ids.contains(&p)) {
                stack.push((i, 0));
            }
        }
        while let Some((i, depth)) = stack.pop() {
            let s = &self.scopes[i];
            write_scope(f, s, depth)?;
            for (j, nested) in self.scopes.iter().enumerate().rev() {
                if nested.parent == Some(s.id) {
                    stack.push((j, depth + 1));
                }
            }
        }
        Ok(())
    }
}

fn write_scope(f: &mut fmt::Formatter<'_>, s: &ScopeDump, depth: usize) -> fmt::Result {
    let pad = "    ".repeat(depth);
    write!(f, "{pad}scope #{}", s.id)?;
    if let Some(name) = &s.name {
        write!(f, " {name:?}")?;
    }
    write!(f, " at {}, owner {}, age {:.2?}", s.site, s.owner, s.age)?;
    match &s.cause {
        Some(cause) => write!(f, ", cancelled ({cause})")?,
        None if s.cancelled => write!(f, ", cancelled")?,
        None => {}
    }
    if let Some(left) = s.deadline_remaining {
        write!(f, ", deadline in {left:.2?}")?;
    }
    if let Some(limit) = s.limit {
        write!(f, ", limit {limit} ({} in use)", s.slots_in_use.unwrap_or(0))?;
    }
    writeln!(f, ", {} running", s.running)?;
    if !s.values.is_empty() {
        write!(f, "{pad}  values:")?;
        for (i, v) in s.values.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            match &v.value {
                Some(value) => write!(f, "{sep}{} = {value}", v.key)?,
                None => write!(f, "{sep}{}", v.key)?,
            }
        }
        writeln!(f)?;
    }
    for c in &s.children {
        write!(f, "{pad}  child #{} {}", c.id, c.kind.as_str())?;
        if let Some(name) = &c.name {
            write!(f, " {name:?}")?;
        }
        write!(f, " spawned at {}, age {:.2?}", c.site, c.age)?;
        if let Some(thread) = &c.thread {
            write!(f, ", on {thread}")?;
        }
        match c.state {
            ChildState::Blocked { site, for_ } => writeln!(f, ": blocked for {for_:.2?} at {site}")?,
            state => writeln!(f, ": {}", state.as_str().replace('_', " "))?,
        }
    }
    Ok(())
}

impl fmt::Display for ThreadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thread {}", self.id)?;
        match &self.name {
            Some(name) => write!(f, " {name:?}"),
            None => Ok(()),
        }
    }
}

impl ChildKind {
    fn as_str(self) -> &'static str {
        match self {
            ChildKind::Thread => "thread",
            ChildKind::Task => "task",
        }
    }
}

impl ChildState {
    fn as_str(&self) -> &'static str {
        match self {
            ChildState::Queued => "queued",
            ChildState::Running => "running",
            ChildState::Blocked { .. } => "blocked",
            ChildState::AwaitingJoin => "awaiting_join",
        }
    }
}

/// The live scopes opened since scope id `first` (`registry::peek_next_scope_id`): what a leak
/// report shows.
pub(crate) fn dump_since(first: u64) -> Dump {
    Dump::new(registry::observe_since(first, Instant::now()))
}

/// Scope `id` and the scopes below it, if it is still open: what a watchdog reports.
pub(crate) fn dump_below(id: u64) -> Option<Dump> {
    registry::observe_below(id, Instant::now()).map(Dump::new)
}

impl From<site::ThreadSeen> for ThreadRef {
    fn from(seen: site::ThreadSeen) -> ThreadRef {
        ThreadRef { id: seen.number, name: seen.name }
    }
}
