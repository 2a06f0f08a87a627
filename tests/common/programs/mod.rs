//! Random concurrent programs, a reference model of what they must do, and two interpreters:
//! one with tether, one with ad-hoc `std::thread::spawn` the way such code is usually written.
//!
//! Used by `tests/leak_freedom.rs`, which checks every run of the tether interpreter against the
//! model, and prints the comparison of what each interpreter leaks (its ignored test
//! `ad_hoc_spawning_compared_with_scopes_on_random_programs`).
//!
//! A program is a tree: a scope has children; a child finishes, fails, panics, blocks until
//! cancelled, ignores cancellation for a while, cancels an enclosing scope, spawns a sibling, or
//! opens a nested scope; it runs as a thread or as a pool task, which is skipped if its scope is
//! cancelled before it starts. Every child and every scope has a unique id (pre-order), which is
//! what it panics with ([`Tag`]) or fails with ([`Failure::Code`]), so lost payloads can be named.
//!
//! Some destructors are adversarial: a child's result may panic when dropped or spawn a child into
//! its scope ([`OnDrop`]), an on-cancel callback's captured state may panic when the callback is
//! discarded unrun ([`Callback::Armed`]), and a scope may bind a value whose destructor panics
//! ([`ScopeSpec::bomb`]). Each panics with the [`Tag`] of its child or scope, so these payloads
//! can be named too.
//!
//! Everything is time-bounded: blocked children give up after [`BLOCK_LIMIT`] (a violation for
//! tether, a "hung" thread for ad-hoc code), so a bug shows up as a failed check, not a hung CI.
//!
//! This file holds what a program is (its types, and how a shrunk one prints); the rest is in
//! `strategy.rs` (generating programs), `model.rs` (what a program must do) and `runners.rs`
//! (running one with tether, or with ad-hoc threads).

#![allow(dead_code)] // each includer uses part of it

mod model;
mod runners;
mod strategy;

pub use model::*;
pub use runners::*;
pub use strategy::*;

use std::fmt;
use tether::ScopeError;

// ===== programs =====

/// A random program: one top-level scope.
#[derive(Clone)]
pub struct Program {
    pub root: ScopeSpec,
}

/// A scope: its deadline, its optional binding of [`KEY`], its children, and how its body ends.
#[derive(Clone)]
pub struct ScopeSpec {
    pub id: u32,
    pub deadline: Deadline,
    pub bind: Option<u32>,
    /// Also binds [`BOMB`] to a value whose destructor panics with `Tag(id)`: the scope drops it
    /// after joining its children, and must re-raise that panic (or record it as unhandled after
    /// another one), exactly as a child's panic, except that it cancels nothing (everything has
    /// ended by then). Never with `End::Panic` (one payload per tag).
    pub bomb: bool,
    pub children: Vec<Child>,
    pub end: End,
}

/// A child of a scope.
#[derive(Clone)]
pub struct Child {
    pub id: u32,
    pub on: Spawn,
    pub action: Action,
    /// Registers an on-cancel callback on its context first.
    pub callback: Option<Callback>,
    /// Reads [`KEY`] first.
    pub read: bool,
    /// What its `Ok` result does when dropped. Only for actions that surely return `Ok`
    /// ([`on_drop`]); ignored for the others.
    pub result: Option<OnDrop>,
}

/// What a child's result does when it is dropped. Every handle is dropped unjoined, so the result
/// is dropped by tether: by the child itself as it ends (a thread child waits until its spawner
/// has dropped the handle; a task drops it if its handle was gone first) or by the task handle's
/// drop.
#[derive(Clone, Debug)]
pub enum OnDrop {
    /// Panics with `Tag(child id)`: a panic of the child's scope that cancels nothing.
    Panic,
    /// Spawns this child into the child's own scope (the result holds `&'scope Scope`): like an
    /// [`Action::Sibling`] spawned at the end of the child's life. Always a plain `Finish` child
    /// (thread or task).
    Spawn(Box<Child>),
}

/// What a child is run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spawn {
    /// An OS thread: `s.spawn_fallible`.
    Thread,
    /// A pool task: `s.spawn_task_fallible`. A task whose scope is cancelled before a pool
    /// thread claims it is skipped: its closure is dropped uncalled (design/0003). The model
    /// allows that exactly for tasks whose scope may be cancelled before its children have all
    /// started ([`Runs`]); a skipped task then has none of its effects, and a task that ran is
    /// checked like a thread. Ad-hoc code runs it as a thread.
    Task,
}

#[derive(Clone, Debug)]
pub enum Action {
    /// Returns `Ok`.
    Finish,
    /// Returns `Err(Failure::Code(id))`.
    Fail,
    /// Panics with `Tag(id)`.
    Panic,
    /// Blocks until its context is cancelled (bounded by [`BLOCK_LIMIT`]).
    Block(Wait),
    /// Ignores cancellation for this many milliseconds, then looks at it.
    Stubborn(u8),
    /// Cancels the scope `up` levels above its own (clamped at the top).
    Cancel { up: u8 },
    /// Spawns a sibling into its own scope (capturing `s`), then finishes.
    Sibling(Box<Child>),
    /// Opens a nested scope; fails if it fails, panics if it panics.
    Nested(ScopeSpec),
}

/// How a blocked child waits.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// `ctx.wait()` (as `wait_timeout`).
    Ctx,
    /// `tether::blocking::sleep`.
    Sleep,
    /// `tether::blocking::recv` on a channel that never delivers.
    Recv,
}

/// An on-cancel callback, kept registered or stopped right away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    Keep,
    Stop,
    /// Kept registered, with a captured [`Armed`] value that panics with `Tag(child id)` if it is
    /// dropped without the callback having run: when the child's context is dropped uncancelled
    /// (the child ended before any cancellation reached it), which discards the callback. That
    /// is a panic of the child's scope that cancels nothing. A callback that runs defuses it.
    /// Never together with [`OnDrop::Panic`] (one payload per tag).
    Armed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    None,
    /// Already expired when the scope starts.
    Past,
    /// Expires this many milliseconds after the scope starts.
    Near(u8),
    /// An hour away: never fires.
    Far,
}

/// How the scope body ends once it has spawned its children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Returns: the exit cancels the children still running.
    Return,
    /// `s.cancel()`, then returns.
    Cancel,
    /// `s.wait_all()`, then returns. Only when nothing blocks, or something surely cancels the
    /// scope without needing a pool worker ([`ScopeModel::prompt`]); otherwise the same as
    /// `Return` (it would wait forever, or for a task that no pool thread is free to run: one
    /// blocked task per worker, and every waiter helping stuck in another).
    WaitAll,
    /// Panics with `Tag(scope id)` while the children run.
    Panic,
}

/// A panic payload: the id of the child or scope that panicked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag(pub u32);

/// A child's typed error.
#[derive(Debug)]
pub enum Failure {
    Code(u32),
    Nested(ScopeError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Code(id) => write!(f, "child {id} failed"),
            Failure::Nested(e) => write!(f, "nested scope failed: {e}"),
        }
    }
}

impl std::error::Error for Failure {}

/// An error as the model sees it: a failed child, or a nested scope's errors.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrTree {
    Code(u32),
    Nested(Vec<ErrTree>),
}

/// A cause as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModelCause {
    Cancelled,
    Deadline,
    ScopeExited,
    Failed(ErrTree),
    Panicked,
    Other(String),
}

// ===== readable Debug (what a shrunk counterexample looks like) =====

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        self.root.write(f, 0)
    }
}

impl fmt::Debug for ScopeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

impl ScopeSpec {
    fn write(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        write!(f, "{:indent$}scope#{}", "", self.id)?;
        if self.deadline != Deadline::None {
            write!(f, " deadline={:?}", self.deadline)?;
        }
        if let Some(v) = self.bind {
            write!(f, " bind={v}")?;
        }
        if self.bomb {
            write!(f, " bomb")?;
        }
        writeln!(f, " then {:?}", self.end)?;
        self.children.iter().try_for_each(|c| c.write(f, indent + 2))
    }
}

impl Child {
    fn write(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        write!(f, "{:indent$}#{} {:?}", "", self.id, self.on)?;
        if let Some(cb) = self.callback {
            write!(f, " callback={cb:?}")?;
        }
        if self.read {
            write!(f, " read")?;
        }
        match on_drop(self) {
            Some(OnDrop::Panic) => write!(f, " result-panics-on-drop")?,
            Some(OnDrop::Spawn(_)) => write!(f, " result-spawns-on-drop")?,
            None => {}
        }
        match &self.action {
            Action::Finish => writeln!(f, " finish"),
            Action::Fail => writeln!(f, " fail"),
            Action::Panic => writeln!(f, " panic"),
            Action::Block(w) => writeln!(f, " block({w:?})"),
            Action::Stubborn(ms) => writeln!(f, " ignore-cancel({ms}ms)"),
            Action::Cancel { up } => writeln!(f, " cancel(up={up})"),
            Action::Sibling(c) => {
                writeln!(f, " spawn-sibling:")?;
                c.write(f, indent + 4)
            }
            Action::Nested(s) => {
                writeln!(f, " nested:")?;
                s.write(f, indent + 4)
            }
        }?;
        if let Some(OnDrop::Spawn(c)) = on_drop(self) {
            writeln!(f, "{:w$}result's drop spawns:", "", w = indent + 2)?;
            c.write(f, indent + 4)?;
        }
        Ok(())
    }
}

/// What `c`'s result does when dropped: its [`Child::result`] if its action surely returns `Ok`
/// (a failure, a panic or a nested scope's error leaves no result to drop).
pub fn on_drop(c: &Child) -> Option<&OnDrop> {
    let returns_ok = matches!(
        c.action,
        Action::Finish | Action::Block(_) | Action::Stubborn(_) | Action::Cancel { .. } | Action::Sibling(_)
    );
    c.result.as_ref().filter(|_| returns_ok)
}
