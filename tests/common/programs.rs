//! Random concurrent programs, a reference model of what they must do, and two interpreters:
//! one with tether, one with ad-hoc `std::thread::spawn` the way such code is usually written.
//!
//! Shared by `tests/leak_freedom.rs` (which checks every run of the tether interpreter against the
//! model) and `examples/leak_compare.rs` (which counts what each interpreter leaks).
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

#![allow(dead_code)] // each includer uses part of it

use proptest::prelude::*;
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};
use tether::{CallbackHandle, Canceller, Cause, Context, Key, ScopeBuilder, ScopeError};

/// The key children read and scopes bind.
pub static KEY: Key<u32> = Key::new("leak_freedom.value");
/// The key a scope with [`ScopeSpec::bomb`] binds a [`Bomb`] to.
pub static BOMB: Key<Bomb> = Key::new("leak_freedom.bomb");

/// How long a child blocked on cancellation waits before giving up: only reached by a bug (tether)
/// or by a flag nobody sets (ad-hoc).
pub const BLOCK_LIMIT: Duration = Duration::from_secs(10);
/// The ad-hoc interpreter's bound on a wait for a flag that is never set. Real code would wait
/// forever; the bound keeps the test process healthy, and reaching it counts as a hung thread.
pub const ADHOC_HANG: Duration = Duration::from_millis(50);
/// A deadline that never fires during a run.
const FAR: Duration = Duration::from_secs(3600);
/// How often ad-hoc code polls its flag (the usual `while !stop.load() { sleep }` loop).
const POLL: Duration = Duration::from_millis(1);

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

// ===== the generator =====

/// Depth of nested scopes and children per scope, as the issue bounds them.
pub const MAX_DEPTH: u32 = 3;
pub const MAX_CHILDREN: usize = 6;

/// Programs of nested scopes at most [`MAX_DEPTH`] deep with at most [`MAX_CHILDREN`] children each.
pub fn program() -> impl Strategy<Value = Program> {
    scope_spec(MAX_DEPTH - 1).prop_map(|root| {
        let mut p = Program { root };
        p.number();
        p
    })
}

fn deadline() -> impl Strategy<Value = Deadline> {
    prop_oneof![
        4 => Just(Deadline::None),
        1 => Just(Deadline::Past),
        1 => (1u8..10).prop_map(Deadline::Near),
        1 => Just(Deadline::Far),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => Just(End::Return),
        1 => Just(End::Cancel),
        2 => Just(End::WaitAll),
        1 => Just(End::Panic),
    ]
}

fn spawn_kind() -> impl Strategy<Value = Spawn> {
    prop_oneof![3 => Just(Spawn::Thread), 1 => Just(Spawn::Task)]
}

fn leaf_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::Finish),
        2 => Just(Action::Fail),
        1 => Just(Action::Panic),
        3 => prop_oneof![Just(Wait::Ctx), Just(Wait::Sleep), Just(Wait::Recv)].prop_map(Action::Block),
        1 => (1u8..20).prop_map(Action::Stubborn),
        1 => (0u8..3).prop_map(|up| Action::Cancel { up }),
    ]
}

/// A plain `Finish` child: what a result's destructor spawns.
fn finisher(on: Spawn) -> Child {
    Child { id: 0, on, action: Action::Finish, callback: None, read: false, result: None }
}

/// No callback 23/40; `Keep` and `Stop` 6/40 each (the 30% they had before `Armed`); `Armed` 1/8.
fn callback() -> impl Strategy<Value = Option<Callback>> {
    prop_oneof![
        23 => Just(None),
        6 => Just(Some(Callback::Keep)),
        6 => Just(Some(Callback::Stop)),
        5 => Just(Some(Callback::Armed)),
    ]
}

/// A result that panics when dropped on 1 child in 8, one that spawns on 1 in 8.
fn result_on_drop() -> impl Strategy<Value = Option<OnDrop>> {
    prop_oneof![
        6 => Just(None),
        1 => Just(Some(OnDrop::Panic)),
        1 => spawn_kind().prop_map(|on| Some(OnDrop::Spawn(Box::new(finisher(on))))),
    ]
}

fn child_with(action: impl Strategy<Value = Action>) -> impl Strategy<Value = Child> {
    (spawn_kind(), action, callback(), prop::bool::weighted(0.3), result_on_drop()).prop_map(
        |(on, action, callback, read, result)| {
            let mut c = Child { id: 0, on, action, callback, read, result };
            if on_drop(&c).is_none() {
                c.result = None;
            }
            // One payload per tag: a result that panics on drop keeps its callback plain.
            if matches!(c.result, Some(OnDrop::Panic)) && c.callback == Some(Callback::Armed) {
                c.callback = Some(Callback::Keep);
            }
            c
        },
    )
}

fn scope_spec(depth: u32) -> BoxedStrategy<ScopeSpec> {
    let action = if depth == 0 {
        leaf_action().boxed()
    } else {
        prop_oneof![
            8 => leaf_action(),
            1 => child_with(leaf_action()).prop_map(|c| Action::Sibling(Box::new(c))),
            1 => scope_spec(depth - 1).prop_map(Action::Nested),
        ]
        .boxed()
    };
    (
        deadline(),
        prop::option::weighted(0.4, 0u32..100),
        prop::bool::weighted(0.125),
        prop::collection::vec(child_with(action), 0..=MAX_CHILDREN),
        end(),
    )
        .prop_map(|(deadline, bind, bomb, children, end)| {
            // One payload per tag: a body that panics binds no bomb.
            let bomb = bomb && end != End::Panic;
            ScopeSpec { id: 0, deadline, bind, bomb, children, end }
        })
        .boxed()
}

impl Program {
    /// Gives every scope and child its pre-order id.
    fn number(&mut self) {
        fn scope(s: &mut ScopeSpec, next: &mut u32) {
            s.id = *next;
            *next += 1;
            s.children.iter_mut().for_each(|c| child(c, next));
        }
        fn child(c: &mut Child, next: &mut u32) {
            c.id = *next;
            *next += 1;
            match &mut c.action {
                Action::Sibling(c) => child(c, next),
                Action::Nested(s) => scope(s, next),
                _ => {}
            }
            if let Some(OnDrop::Spawn(c)) = &mut c.result {
                child(c, next);
            }
        }
        scope(&mut self.root, &mut 0);
    }

    /// The program without its adversarial destructors (no bombs, no results that act when
    /// dropped, armed callbacks kept plain): what the ad-hoc interpreter runs, which has no
    /// destructors of its own to run them.
    pub fn without_destructors(&self) -> Program {
        fn scope(s: &ScopeSpec) -> ScopeSpec {
            ScopeSpec { bomb: false, children: s.children.iter().map(child).collect(), ..s.clone() }
        }
        fn child(c: &Child) -> Child {
            let action = match &c.action {
                Action::Sibling(sib) => Action::Sibling(Box::new(child(sib))),
                Action::Nested(n) => Action::Nested(scope(n)),
                other => other.clone(),
            };
            let callback = c.callback.map(|cb| if cb == Callback::Armed { Callback::Keep } else { cb });
            Child { action, callback, result: None, ..c.clone() }
        }
        Program { root: scope(&self.root) }
    }
}

// ===== the reference model =====
//
// Two parts. [`Model`] is what the program text alone decides: which children are sure to run,
// which tasks may or must be skipped, and whether each `End::WaitAll` body really waits.
// [`Expect`] is what a run must then have done, given which children's bodies ran: who panics,
// who fails, each scope's errors, the causes each scope may end with, the values read. Given
// which children ran, all of that is deterministic except which cause comes first, so it is
// checked exactly; the only freedom is in which tasks ran, and that is checked against `Model`.

/// Whether a child's body runs once it is spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// A thread (threads always run), or a task whose scope is not cancelled before every child
    /// of it has finished: nothing can skip it.
    Surely,
    /// A task whose scope may be cancelled before the task starts: it runs or is skipped.
    Maybe,
    /// A task spawned into a scope that is already cancelled (a past deadline on its chain of
    /// scopes cancels the scope as it is made): always skipped.
    Never,
}

/// What the program text decides (see the section comment).
#[derive(Debug, Default)]
pub struct Model {
    /// Per child (every child in the text, spawned or not): whether its body runs.
    pub runs: BTreeMap<u32, Runs>,
    /// Per scope (every scope in the text, opened or not).
    pub scopes: BTreeMap<u32, ScopeModel>,
    /// The `Task` children.
    pub tasks: BTreeSet<u32>,
}

#[derive(Debug, Default)]
pub struct ScopeModel {
    /// Whether `End::WaitAll` really waits (see [`End::WaitAll`]).
    pub waits: bool,
    /// Whether the scope may be cancelled while some child of it has not started yet: by its
    /// exit (when the body does not wait), its deadline, an explicit cancel, a failure or panic
    /// of a child that may run, or any of these in an ancestor. Its tasks may then be skipped.
    pub early: bool,
    /// Whether it is surely cancelled, eventually, by something that needs no pool worker: a
    /// past or near deadline, a thread child (spawned by the body or by thread siblings) that
    /// fails, panics or cancels, a cancel by such a thread of a scope opened through threads
    /// only, or the same in an ancestor, or an ancestor's body that does not wait (it returns
    /// and so cancels at once). `End::WaitAll` waits only if this holds or nothing blocks.
    pub prompt: bool,
    /// Whether it is cancelled as it is made (a past deadline on it or an ancestor).
    pub born_cancelled: bool,
}

/// What a run must have done, given which children's bodies ran (and which armed callbacks were
/// discarded).
#[derive(Debug, Default)]
pub struct Expect {
    /// Every panic that happens (children with `Panic` that ran, bodies with `End::Panic`, and
    /// destructors: bombs of scopes opened, results of children that ran, discarded armed
    /// callbacks), one per tag.
    pub panics: Vec<Tag>,
    /// Every `Fail` child that ran.
    pub fails: Vec<u32>,
    /// Every child spawned: the direct children of every scope opened, and the siblings spawned
    /// by children that ran or by their results' destructors.
    pub spawned: BTreeSet<u32>,
    /// Per scope opened (the top one, and those opened by a child that ran).
    pub scopes: BTreeMap<u32, ScopeExpect>,
    /// Per reading child that ran: the value it must read.
    pub reads: BTreeMap<u32, Option<u32>>,
    /// Per child that ran with a [`Callback::Armed`] callback: what may become of it.
    pub armed: BTreeMap<u32, Fate>,
    /// (child, its scope, whether it surely cancels its scope before it ends) per armed callback
    /// registered, resolved into `armed` once every scope's causes are known.
    pending_armed: Vec<(u32, u32, bool)>,
}

/// What becomes of an armed callback (one registered on a child's context and kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its child's context is cancelled before the child ends: by the child itself (it blocks
    /// until cancelled, fails, cancels an enclosing scope, or its nested scope fails; or, for a
    /// thread, it or its nested scope panics), or at once (its scope was cancelled as it was
    /// made).
    Runs,
    /// Nothing can cancel the scope before the child ends (its early causes are none: the body
    /// waits, no deadline, cancel, failure or panic, nor any in an ancestor): the child's context
    /// is dropped uncancelled, which discards the callback, and its capture panics.
    Discarded,
    /// Either, depending on whether a cancellation of the scope reaches the child's context
    /// before the child has ended.
    Either,
}

#[derive(Debug, Default)]
pub struct ScopeExpect {
    pub panics: bool,
    /// Its errors, if it does not panic (sorted).
    pub errors: Vec<ErrTree>,
    /// The causes its context may end with: its own events and its ancestors'.
    pub causes: Vec<ModelCause>,
    /// The causes it may be cancelled with while some child of it has not started yet: what a
    /// skipped task of it can have seen. Its own exit is one only when its body does not wait.
    pub early: Vec<ModelCause>,
}

/// The direct children of a scope: its own, and the siblings they (or their results' destructors)
/// spawn.
fn direct(s: &ScopeSpec) -> Vec<&Child> {
    spawned(s, &|_| true)
}

/// The children of `s` that are spawned when `ran` tells which children's bodies run: its own
/// (the body spawns them all), and the siblings spawned by those that run, or by their results
/// when dropped (a child that runs and surely returns `Ok` leaves a result to drop).
fn spawned<'a>(s: &'a ScopeSpec, ran: &dyn Fn(&Child) -> bool) -> Vec<&'a Child> {
    fn add<'a>(c: &'a Child, ran: &dyn Fn(&Child) -> bool, out: &mut Vec<&'a Child>) {
        out.push(c);
        if !ran(c) {
            return;
        }
        if let Action::Sibling(sib) = &c.action {
            add(sib, ran, out);
        }
        if let Some(OnDrop::Spawn(sib)) = on_drop(c) {
            add(sib, ran, out);
        }
    }
    let mut out = Vec::new();
    s.children.iter().for_each(|c| add(c, ran, &mut out));
    out
}

/// The children of `s` that start without a pool worker as soon as its body runs: threads it
/// spawns, and threads those spawn as siblings.
fn prompt_threads(s: &ScopeSpec) -> Vec<&Child> {
    let thread = |c: &Child| c.on == Spawn::Thread;
    spawned(s, &thread).into_iter().filter(|c| thread(c)).collect()
}

/// Whether `c`, spawned into a scope that is (`born_cancelled`) or is not cancelled as it is
/// made, may run.
fn may_run(born_cancelled: bool, c: &Child) -> bool {
    c.on == Spawn::Thread || !born_cancelled
}

impl Model {
    pub fn of(p: &Program) -> Model {
        let mut m = Model::default();
        // Scopes an explicit cancel may reach (by a child that may run), and scopes a cancel
        // surely reaches without a pool worker (by a prompt thread of a scope opened through
        // prompt threads from the top).
        let (mut may, mut prompt) = (BTreeSet::new(), BTreeSet::new());
        may_cancels(&p.root, false, &mut vec![], &mut may);
        prompt_cancels(&p.root, &mut vec![], &mut prompt);
        m.scope(&p.root, false, false, false, &may, &prompt);
        m
    }

    /// Models `s` and the scopes nested in it, top-down: `parent_*` are its parent's facts as
    /// seen from inside a child of the parent.
    fn scope(
        &mut self,
        s: &ScopeSpec,
        parent_born: bool,
        parent_early: bool,
        parent_prompt: bool,
        may: &BTreeSet<u32>,
        prompt: &BTreeSet<u32>,
    ) {
        let born = parent_born || s.deadline == Deadline::Past;
        let deadline = matches!(s.deadline, Deadline::Past | Deadline::Near(_));
        let is_prompt = parent_prompt
            || deadline
            || prompt.contains(&s.id)
            || prompt_threads(s)
                .iter()
                .any(|c| matches!(c.action, Action::Fail | Action::Panic | Action::Cancel { .. }));
        let blocks = direct(s).iter().any(|c| matches!(c.action, Action::Block(_)));
        let waits = s.end == End::WaitAll && (is_prompt || !blocks);
        let runs = |c: &Child| may_run(born, c);
        // (A destructor's panic cancels nothing: only failures and panics of children count.)
        let early = parent_early
            || !waits
            || deadline
            || may.contains(&s.id)
            || spawned(s, &runs).into_iter().filter(|c| runs(c)).any(|c| may_fail_child(c, born));
        self.scopes.insert(s.id, ScopeModel { waits, early, prompt: is_prompt, born_cancelled: born });
        for c in direct(s) {
            let r = match (c.on, born, early) {
                (Spawn::Thread, _, _) | (Spawn::Task, false, false) => Runs::Surely,
                (Spawn::Task, true, _) => Runs::Never,
                (Spawn::Task, false, true) => Runs::Maybe,
            };
            self.runs.insert(c.id, r);
            if c.on == Spawn::Task {
                self.tasks.insert(c.id);
            }
            if let Action::Nested(n) = &c.action {
                // A body that does not wait returns at once and its exit cancels the nested scope.
                self.scope(n, born, early, is_prompt || !waits, may, prompt);
            }
        }
    }
}

/// Whether `c` (spawned into a scope cancelled as it was made, or not) may fail or panic, and so
/// cancel its scope, if it runs.
fn may_fail_child(c: &Child, born: bool) -> bool {
    match &c.action {
        Action::Fail | Action::Panic => true,
        Action::Nested(n) => may_fail(n, born),
        _ => false,
    }
}

/// Whether `s` (opened in a scope cancelled as it was made, or not) may panic or fail: by its
/// body or a child, or by a destructor (its bound value, a child's result, a child's discarded
/// callback), whose panic is the scope's and so the panic of the child that opened it.
fn may_fail(s: &ScopeSpec, parent_born: bool) -> bool {
    let born = parent_born || s.deadline == Deadline::Past;
    let runs = |c: &Child| may_run(born, c);
    s.end == End::Panic
        || s.bomb
        || spawned(s, &runs).into_iter().filter(|c| runs(c)).any(|c| {
            may_fail_child(c, born)
                || matches!(on_drop(c), Some(OnDrop::Panic))
                || c.callback == Some(Callback::Armed)
        })
}

/// The scopes an explicit cancel by a child that may run targets.
fn may_cancels(s: &ScopeSpec, parent_born: bool, chain: &mut Vec<u32>, out: &mut BTreeSet<u32>) {
    let born = parent_born || s.deadline == Deadline::Past;
    let runs = |c: &Child| may_run(born, c);
    chain.push(s.id);
    for c in spawned(s, &runs).into_iter().filter(|c| runs(c)) {
        match &c.action {
            Action::Cancel { up } => {
                out.insert(target(chain, *up));
            }
            Action::Nested(n) => may_cancels(n, born, chain, out),
            _ => {}
        }
    }
    chain.pop();
}

/// The scopes surely cancelled by a prompt thread of a scope opened through prompt threads from
/// the top (whose bodies all run without waiting for a pool worker).
fn prompt_cancels(s: &ScopeSpec, chain: &mut Vec<u32>, out: &mut BTreeSet<u32>) {
    chain.push(s.id);
    for c in prompt_threads(s) {
        match &c.action {
            Action::Cancel { up } => {
                out.insert(target(chain, *up));
            }
            Action::Nested(n) => prompt_cancels(n, chain, out),
            _ => {}
        }
    }
    chain.pop();
}

impl Model {
    /// What a run must have done when the children whose bodies ran are those for which `ran`
    /// holds (for ad-hoc code, which runs every child: `|_| true`), and the armed callbacks
    /// discarded unrun (rather than run) are those for which `discarded` holds. Whether that
    /// `discarded` is one the program allows is in [`Expect::armed`].
    pub fn expect(&self, p: &Program, ran: &dyn Fn(u32) -> bool, discarded: &dyn Fn(u32) -> bool) -> Expect {
        let mut e = Expect::default();
        let mut cancels = BTreeSet::new();
        ran_cancels(&p.root, ran, &mut vec![], &mut cancels);
        e.scope(self, &p.root, None, &[], &[], &cancels, ran, discarded);
        // Every scope's early causes are final now (nested scopes inherit their ancestors').
        for (child, scope, cancels) in std::mem::take(&mut e.pending_armed) {
            let fate = if cancels || self.scopes[&scope].born_cancelled {
                Fate::Runs
            } else if e.scopes[&scope].early.is_empty() {
                Fate::Discarded
            } else {
                Fate::Either
            };
            e.armed.insert(child, fate);
        }
        e
    }
}

/// The scopes an explicit cancel by a child that ran targets.
fn ran_cancels(s: &ScopeSpec, ran: &dyn Fn(u32) -> bool, chain: &mut Vec<u32>, out: &mut BTreeSet<u32>) {
    chain.push(s.id);
    for c in spawned(s, &|c| ran(c.id)).into_iter().filter(|c| ran(c.id)) {
        match &c.action {
            Action::Cancel { up } => {
                out.insert(target(chain, *up));
            }
            Action::Nested(n) => ran_cancels(n, ran, chain, out),
            _ => {}
        }
    }
    chain.pop();
}

fn add_sorted(to: &mut Vec<ModelCause>, more: &[ModelCause]) {
    to.extend(more.iter().cloned());
    to.sort();
    to.dedup();
}

impl Expect {
    /// Expects `s`, opened with the innermost binding `value` and its ancestors' (so far known)
    /// causes and early causes; returns (panics, errors).
    #[allow(clippy::too_many_arguments)]
    fn scope(
        &mut self,
        m: &Model,
        s: &ScopeSpec,
        value: Option<u32>,
        inherited: &[ModelCause],
        inherited_early: &[ModelCause],
        cancels: &BTreeSet<u32>,
        ran: &dyn Fn(u32) -> bool,
        discarded: &dyn Fn(u32) -> bool,
    ) -> (bool, Vec<ErrTree>) {
        let value = s.bind.or(value);
        // Its own events, all of which may come while children of it have not started yet.
        let mut own = Vec::new();
        if cancels.contains(&s.id) || s.end == End::Cancel {
            own.push(ModelCause::Cancelled);
        }
        if matches!(s.deadline, Deadline::Past | Deadline::Near(_)) {
            own.push(ModelCause::Deadline);
        }
        if s.end == End::Panic {
            self.panics.push(Tag(s.id));
            own.push(ModelCause::Panicked);
        }
        let (mut panics, mut errors) = (s.end == End::Panic, Vec::new());
        // Destructors' panics are the scope's, like its children's, but cancel nothing: a bound
        // value is dropped after everything has ended; a result or a discarded callback is
        // dropped as a child ends, and recorded without cancelling.
        if s.bomb {
            self.panics.push(Tag(s.id));
            panics = true;
        }
        let mut nested = Vec::new();
        let mut armed = Vec::new();
        for c in spawned(s, &|c| ran(c.id)) {
            self.spawned.insert(c.id);
            if !ran(c.id) {
                continue;
            }
            if c.read {
                self.reads.insert(c.id, value);
            }
            if matches!(on_drop(c), Some(OnDrop::Panic)) {
                self.panics.push(Tag(c.id));
                panics = true;
            }
            if c.callback == Some(Callback::Armed) {
                armed.push(c);
                if discarded(c.id) {
                    self.panics.push(Tag(c.id));
                    panics = true;
                }
            }
            match &c.action {
                Action::Fail => {
                    self.fails.push(c.id);
                    errors.push(ErrTree::Code(c.id));
                    own.push(ModelCause::Failed(ErrTree::Code(c.id)));
                }
                Action::Panic => {
                    self.panics.push(Tag(c.id));
                    panics = true;
                    own.push(ModelCause::Panicked);
                }
                Action::Nested(n) => nested.push(n),
                _ => {}
            }
        }
        let mut causes = inherited.to_vec();
        causes.push(ModelCause::ScopeExited);
        let mut early = inherited_early.to_vec();
        if !m.scopes[&s.id].waits {
            // The exit cancels while children may still be queued; a body that waits exits
            // only once every child has finished.
            early.push(ModelCause::ScopeExited);
        }
        // Nested scopes first see the scope's own events so far; then all of them (below).
        let (so_far, so_far_early) = {
            let (mut c, mut e) = (causes.clone(), early.clone());
            add_sorted(&mut c, &own);
            add_sorted(&mut e, &own);
            (c, e)
        };
        for &n in &nested {
            let (p, e) = self.scope(m, n, value, &so_far, &so_far_early, cancels, ran, discarded);
            if p {
                panics = true;
                own.push(ModelCause::Panicked);
            } else if !e.is_empty() {
                let e = sorted(e);
                errors.push(ErrTree::Nested(e.clone()));
                own.push(ModelCause::Failed(ErrTree::Nested(e)));
            }
        }
        // Whether each armed child surely cancels its own context before it ends (see `Fate`).
        // A failure is recorded (and cancels) inside the child's closure. A panic cancels after
        // the closure has unwound, while the child (thread or task) still holds its context:
        // both record the panic before they let go of it.
        for c in armed {
            let cancels = match &c.action {
                Action::Block(_) | Action::Fail | Action::Cancel { .. } | Action::Panic => true,
                Action::Nested(n) => {
                    let n = &self.scopes[&n.id];
                    n.panics || !n.errors.is_empty()
                }
                Action::Finish | Action::Stubborn(_) | Action::Sibling(_) => false,
            };
            self.pending_armed.push((c.id, s.id, cancels));
        }
        add_sorted(&mut causes, &own);
        add_sorted(&mut early, &own);
        let errors = if panics { Vec::new() } else { sorted(errors) };
        // A nested scope may also see what its siblings did to this scope.
        for n in nested {
            self.inherit(n, &causes, &early);
        }
        self.scopes.insert(s.id, ScopeExpect { panics, errors: errors.clone(), causes, early });
        (panics, errors)
    }

    /// Adds `causes` and `early` to those of `s` and of every scope opened in it.
    fn inherit(&mut self, s: &ScopeSpec, causes: &[ModelCause], early: &[ModelCause]) {
        let Some(e) = self.scopes.get_mut(&s.id) else { return };
        add_sorted(&mut e.causes, causes);
        add_sorted(&mut e.early, early);
        for c in direct(s) {
            if let Action::Nested(n) = &c.action {
                self.inherit(n, causes, early);
            }
        }
    }
}

/// The scope `up` levels above the last of `chain`, clamped at the top.
fn target<T: Clone>(chain: &[T], up: u8) -> T {
    chain[chain.len() - 1 - (up as usize).min(chain.len() - 1)].clone()
}

fn sorted(mut v: Vec<ErrTree>) -> Vec<ErrTree> {
    v.sort();
    v
}

/// The model's view of a scope error: every error it holds, sorted.
pub fn err_tree(e: &ScopeError) -> Vec<ErrTree> {
    sorted(e.iter().map(|e| shared_to_tree(&**e)).collect())
}

fn shared_to_tree(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrTree {
    match e.downcast_ref::<Failure>() {
        Some(Failure::Code(id)) => ErrTree::Code(*id),
        Some(Failure::Nested(n)) => ErrTree::Nested(err_tree(n)),
        None => ErrTree::Code(u32::MAX),
    }
}

pub fn model_cause(c: &Cause) -> ModelCause {
    match c {
        Cause::Cancelled => ModelCause::Cancelled,
        Cause::DeadlineExceeded => ModelCause::Deadline,
        Cause::ScopeExited => ModelCause::ScopeExited,
        Cause::ChildFailed(e) => ModelCause::Failed(shared_to_tree(&**e)),
        Cause::Panicked(_) => ModelCause::Panicked,
        other => ModelCause::Other(format!("{other:?}")),
    }
}

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

// ===== the tether interpreter =====

/// A callback a child registered: the child, which kind, how many times it ran, the result of the
/// `stop()` called right away (`Callback::Stop`), and its handle.
type Registered = (u32, Callback, Arc<AtomicUsize>, Option<bool>, CallbackHandle);

/// What one run with tether observed.
#[derive(Default)]
pub struct TetherRun {
    /// Every scope whose body started.
    opened: Mutex<BTreeSet<u32>>,
    /// Per scope, the cause it was cancelled with, recorded by an on-cancel callback on its
    /// context (keeping the context itself would keep the values bound to it alive, and the
    /// scope must drop them before it returns).
    finals: Arc<Mutex<BTreeMap<u32, ModelCause>>>,
    /// Every child handed to `spawn_fallible` or `spawn_task_fallible`, in spawn order.
    spawned: Mutex<Vec<u32>>,
    /// Every child whose body started.
    ran: Mutex<BTreeSet<u32>>,
    /// (scope, child, cause the scope had) for every child whose closure was dropped uncalled:
    /// a skipped task.
    skipped: Mutex<Vec<(u32, u32, Option<ModelCause>)>>,
    /// (scope, child, cause) for every child that saw its scope cancelled.
    observed: Mutex<Vec<(u32, u32, ModelCause)>>,
    reads: Mutex<BTreeMap<u32, Option<u32>>>,
    callbacks: Mutex<Vec<Registered>>,
    /// The children whose armed callback was discarded unrun (its capture's destructor ran).
    discarded: Arc<Mutex<Vec<u32>>>,
    /// Destructors that panicked (bombs, results, discarded armed callbacks).
    destructor_panics: Arc<AtomicUsize>,
    /// Children spawned by a result's destructor.
    drop_spawned: AtomicUsize,
    violations: Mutex<Vec<String>>,
    /// Keeps the senders of the `Recv` waits' channels alive (they never deliver).
    never: Mutex<Vec<crossbeam_channel::Sender<()>>>,
    /// Per scope: whether `End::WaitAll` waits (the model's decision).
    waits: BTreeMap<u32, bool>,
}

/// Travels in a child's closure and tells whether the closure was called: dropped uncalled (a
/// task skipped because its scope was cancelled before it started), it records the skip with
/// the cause its scope had then.
struct Probe<'env> {
    run: &'env TetherRun,
    scope: u32,
    child: u32,
    /// The scope's context.
    ctx: Context,
    called: bool,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.called {
            let cause = self.ctx.cause().as_ref().map(model_cause);
            lock(&self.run.skipped).push((self.scope, self.child, cause));
        }
    }
}

/// The value a [`ScopeSpec::bomb`] scope binds to [`BOMB`]: its destructor panics with the
/// scope's tag.
pub struct Bomb {
    tag: u32,
    fired: Arc<AtomicUsize>,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        // Not while unwinding (that would abort): the payload is then missing, and the check
        // that every expected panic was reported says so.
        if !std::thread::panicking() {
            self.fired.fetch_add(1, SeqCst);
            panic_any(Tag(self.tag));
        }
    }
}

/// What a [`Callback::Armed`] callback captures: dropped without the callback having run (the
/// callback was discarded), it records that and panics with its child's tag; the callback
/// defuses it when it runs.
struct Armed {
    child: u32,
    defused: bool,
    discarded: Arc<Mutex<Vec<u32>>>,
    fired: Arc<AtomicUsize>,
}

impl Drop for Armed {
    fn drop(&mut self) {
        if self.defused {
            return;
        }
        lock(&self.discarded).push(self.child);
        if !std::thread::panicking() {
            self.fired.fetch_add(1, SeqCst);
            panic_any(Tag(self.child));
        }
    }
}

/// A child's `Ok` result. Its destructor does what [`on_drop`] says: nothing, panic with the
/// child's tag, or spawn a child into the child's scope (which it holds).
struct Returned<'scope, 'env> {
    run: &'env TetherRun,
    s: &'scope tether::Scope<'scope, 'env>,
    scope_id: u32,
    child: &'env Child,
    /// The contexts of the enclosing scopes, for the child it spawns (empty otherwise).
    chain: Vec<Context>,
}

impl Drop for Returned<'_, '_> {
    fn drop(&mut self) {
        match on_drop(self.child) {
            // Not while unwinding (that would abort): see `Bomb`.
            None | Some(OnDrop::Panic) if std::thread::panicking() => {}
            None => {}
            Some(OnDrop::Panic) => {
                self.run.destructor_panics.fetch_add(1, SeqCst);
                panic_any(Tag(self.child.id));
            }
            Some(OnDrop::Spawn(c)) => {
                self.run.drop_spawned.fetch_add(1, SeqCst);
                self.run.spawn(self.s, self.scope_id, c, &self.chain);
            }
        }
    }
}

/// Locks `m`, poisoned or not (a violation must not be lost to a panic elsewhere).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The outcome of a whole run: the scope's result, or the payload it re-raised.
pub enum Outcome {
    Ok,
    Err(ScopeError),
    Panicked(Box<dyn Any + Send>),
}

/// A tether run, checked against the model.
pub struct Checked {
    pub outcome_ok: bool,
    pub violations: Vec<String>,
    /// Panics that reached no one (neither re-raised nor recorded as unhandled).
    pub lost_panics: usize,
    /// Errors that the top scope's result does not hold, in runs without a panic (failures of
    /// skipped tasks never happened, so they are not lost).
    pub lost_errors: usize,
    /// Tasks spawned, and those of them skipped.
    pub tasks: usize,
    pub skipped: usize,
    /// Destructors that panicked (bound values, results, discarded armed callbacks), and children
    /// spawned by results' destructors.
    pub destructor_panics: usize,
    pub drop_spawned: usize,
}

impl TetherRun {
    fn violation(&self, v: String) {
        lock(&self.violations).push(v);
    }

    /// Runs `p` with tether and checks everything but the live counts (the caller's LeakCheck).
    pub fn run_and_check(p: &Program) -> Checked {
        quiet_expected_panics();
        let model = Model::of(p);
        let run = TetherRun {
            waits: model.scopes.iter().map(|(id, m)| (*id, m.waits)).collect(),
            ..TetherRun::default()
        };
        let _ = tether::testing::take_unhandled_panics();
        let outcome = match catch_unwind(AssertUnwindSafe(|| run.scope(&p.root, &[]))) {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(e)) => Outcome::Err(e),
            Err(payload) => Outcome::Panicked(payload),
        };
        let unhandled = tether::testing::take_unhandled_panics();
        let mut c = run.check(p, &model, &outcome, unhandled);
        c.outcome_ok = c.violations.is_empty();
        c
    }

    fn check(
        self,
        p: &Program,
        model: &Model,
        outcome: &Outcome,
        unhandled: Vec<Box<dyn Any + Send>>,
    ) -> Checked {
        let mut v = std::mem::take(&mut *lock(&self.violations));
        // First the callbacks (a stop() of one still registered would drop its capture).
        self.check_callbacks(&mut v);
        let ran = std::mem::take(&mut *lock(&self.ran));
        let skipped = std::mem::take(&mut *lock(&self.skipped));
        let calls = std::mem::take(&mut *lock(&self.spawned));
        let discarded = std::mem::take(&mut *lock(&self.discarded));
        // Given which children ran and which armed callbacks were discarded, everything below is
        // deterministic but the order of events.
        let expect = model.expect(p, &|id| ran.contains(&id), &|id| discarded.contains(&id));
        // Who was spawned, who ran, who was skipped: each spawned child once, exactly those the
        // text spawns given who ran; threads and tasks that surely run ran, tasks spawned into a
        // scope cancelled as it was made were skipped.
        let spawned: BTreeSet<u32> = calls.iter().copied().collect();
        if spawned.len() != calls.len() || spawned != expect.spawned {
            v.push(format!("spawned {calls:?}, model (given who ran) {:?}", expect.spawned));
        }
        let skipped_ids: BTreeSet<u32> = skipped.iter().map(|(_, c, _)| *c).collect();
        if skipped_ids.len() != skipped.len() {
            v.push(format!("a closure was dropped uncalled twice: {skipped:?}"));
        }
        for id in &spawned {
            let (did_run, was_skipped) = (ran.contains(id), skipped_ids.contains(id));
            match (did_run, was_skipped, model.runs.get(id)) {
                (true, true, _) | (false, false, _) => {
                    v.push(format!("#{id}: ran={did_run}, skipped={was_skipped}"))
                }
                (false, true, Some(Runs::Surely)) => {
                    v.push(format!("#{id} was skipped, model: it surely runs"))
                }
                (true, false, Some(Runs::Never)) => v.push(format!("#{id} ran, model: it is always skipped")),
                _ => {}
            }
        }
        // Armed callbacks: each one registered was run or discarded (not both: the callback
        // check above), and which one is what the model allows.
        let discarded_ids: BTreeSet<u32> = discarded.iter().copied().collect();
        if discarded_ids.len() != discarded.len()
            || !discarded_ids.iter().all(|id| expect.armed.contains_key(id))
        {
            v.push(format!("armed callbacks discarded {discarded:?}, registered {:?}", expect.armed));
        }
        for (id, fate) in &expect.armed {
            let was = discarded_ids.contains(id);
            if (*fate == Fate::Runs && was) || (*fate == Fate::Discarded && !was) {
                v.push(format!("armed callback of #{id}: discarded={was}, model {fate:?}"));
            }
        }
        let tasks = spawned.intersection(&model.tasks).count();
        let top = &expect.scopes[&0];
        // The scope's result matches the model: a panic if any, else exactly its errors.
        let mut raised: Vec<Tag> = Vec::new();
        let mut lost_errors = 0;
        match outcome {
            Outcome::Panicked(p) => match p.downcast_ref::<Tag>() {
                Some(t) if top.panics => raised.push(*t),
                _ => v.push(format!("unexpected panic (model: panics={})", top.panics)),
            },
            Outcome::Err(e) => {
                let got = err_tree(e);
                if top.panics || got != top.errors {
                    v.push(format!("errors {got:?}, model {:?} (panics={})", top.errors, top.panics));
                }
                if e.first().downcast_ref::<Failure>().is_none() {
                    v.push("first error is not a Failure".into());
                }
            }
            Outcome::Ok => {
                if top.panics || !top.errors.is_empty() {
                    v.push(format!("Ok, model errors {:?} panics={}", top.errors, top.panics));
                }
            }
        }
        if expect.panics.is_empty() {
            let reported = match outcome {
                Outcome::Err(e) => count_codes(&err_tree(e)),
                _ => 0,
            };
            lost_errors = expect.fails.len().saturating_sub(reported);
        }
        // No panic payload lost (nor reported twice): the re-raised one plus the unhandled ones
        // are all of them, children's and destructors' alike.
        for p in unhandled {
            match p.downcast::<Tag>() {
                Ok(t) => raised.push(*t),
                Err(_) => v.push("an unhandled panic that is not a Tag".into()),
            }
        }
        raised.sort();
        let mut expected = expect.panics.clone();
        expected.sort();
        let lost_panics = {
            let mut left = raised.clone();
            expected
                .iter()
                .filter(|t| match left.iter().position(|r| r == *t) {
                    Some(i) => {
                        left.remove(i);
                        false
                    }
                    None => true,
                })
                .count()
        };
        if raised != expected {
            v.push(format!("panics reported {raised:?}, model {expected:?}"));
        }
        // Causes: exactly the scopes the model opens were opened; each one's final cause is one
        // the model allows, and every child that saw cancellation (or was skipped for it) saw
        // exactly that cause; a skip happened only for a cause that can come before the scope's
        // children have all started.
        let opened = std::mem::take(&mut *lock(&self.opened));
        let finals = std::mem::take(&mut *lock(&self.finals));
        if !opened.iter().eq(expect.scopes.keys()) {
            v.push(format!(
                "scopes opened {opened:?}, model (given who ran) {:?}",
                expect.scopes.keys().collect::<Vec<_>>()
            ));
        }
        for id in &opened {
            let Some(m) = expect.scopes.get(id) else { continue };
            match finals.get(id) {
                None => v.push(format!("scope#{id} not cancelled after its exit")),
                Some(c) if !m.causes.contains(c) => {
                    v.push(format!("scope#{id} cancelled with {c:?}, model allows {:?}", m.causes))
                }
                _ => {}
            }
        }
        if let Some(id) = finals.keys().find(|id| !opened.contains(id)) {
            v.push(format!("scope#{id} cancelled but never opened"));
        }
        for (scope, child, seen) in lock(&self.observed).iter() {
            if finals.get(scope) != Some(seen) {
                v.push(format!("#{child} saw {seen:?}, scope#{scope} ended with {:?}", finals.get(scope)));
            }
        }
        for (scope, child, seen) in &skipped {
            let early = expect.scopes.get(scope).map(|m| &m.early);
            match seen {
                Some(c) if early.is_some_and(|e| e.contains(c)) => {}
                _ => v.push(format!(
                    "#{child} skipped with scope#{scope} cancelled by {seen:?}, model allows {early:?} \
                     before its children have all started"
                )),
            }
            if finals.get(scope) != seen.as_ref() {
                v.push(format!(
                    "#{child} skipped on {seen:?}, scope#{scope} ended with {:?}",
                    finals.get(scope)
                ));
            }
        }
        // Values read match the model: every child that ran and reads did, and read the innermost
        // binding.
        let reads = std::mem::take(&mut *lock(&self.reads));
        if reads != expect.reads {
            v.push(format!("read {reads:?}, model (given who ran) {:?}", expect.reads));
        }
        Checked {
            outcome_ok: v.is_empty(),
            violations: v,
            lost_panics,
            lost_errors,
            tasks,
            skipped: skipped.len(),
            destructor_panics: self.destructor_panics.load(SeqCst),
            drop_spawned: self.drop_spawned.load(SeqCst),
        }
    }

    /// Callbacks: each ran exactly once, or its first stop() returned true (it was stopped, or
    /// discarded with its context); a second stop() returns false. An armed one was discarded
    /// exactly when it did not run.
    fn check_callbacks(&self, v: &mut Vec<String>) {
        for (id, kind, ran, first_stop, handle) in lock(&self.callbacks).drain(..) {
            // Every callback has run or been discarded by now, so a stop() drops nothing; if one
            // were still registered, its armed capture would panic here.
            let Ok(stopped) = catch_unwind(AssertUnwindSafe(|| first_stop.unwrap_or_else(|| handle.stop())))
            else {
                v.push(format!("callback of #{id} still registered after the run"));
                continue;
            };
            let ran = ran.load(SeqCst);
            if ran + usize::from(stopped) != 1 {
                v.push(format!("callback of #{id}: ran {ran} times, stop() returned {stopped}"));
            }
            if handle.stop() {
                v.push(format!("callback of #{id}: a second stop() returned true"));
            }
            if kind == Callback::Armed && (ran == 0) != lock(&self.discarded).contains(&id) {
                v.push(format!(
                    "armed callback of #{id}: ran {ran} times, discarded: {:?}",
                    lock(&self.discarded)
                ));
            }
        }
    }

    fn scope(&self, spec: &ScopeSpec, chain: &[Context]) -> Result<(), ScopeError> {
        let mut b = ScopeBuilder::new();
        if let Some(d) = deadline_instant(spec.deadline) {
            b = b.deadline(d);
        }
        if let Some(v) = spec.bind {
            b = b.value(&KEY, v);
        }
        if spec.bomb {
            b = b.value(&BOMB, Bomb { tag: spec.id, fired: self.destructor_panics.clone() });
        }
        let waits = self.waits.get(&spec.id).copied().unwrap_or(false);
        b.run(|s| {
            lock(&self.opened).insert(spec.id);
            let (finals, id) = (self.finals.clone(), spec.id);
            let _final = s.context().on_cancel(move |cause| {
                lock(&finals).insert(id, model_cause(cause));
            });
            let mut chain = chain.to_vec();
            chain.push(s.context().clone());
            for c in &spec.children {
                self.spawn(s, spec.id, c, &chain);
            }
            match spec.end {
                End::Return => {}
                End::Cancel => s.cancel(),
                End::WaitAll if waits => s.wait_all(),
                End::WaitAll => {}
                End::Panic => panic_any(Tag(spec.id)),
            }
        })
    }

    fn spawn<'scope, 'env>(
        &'env self,
        s: &'scope tether::Scope<'scope, 'env>,
        scope_id: u32,
        c: &'env Child,
        chain: &[Context],
    ) {
        let chain = chain.to_vec();
        let scope_ctx = chain.last().expect("a child has a scope").clone();
        let probe = Probe { run: self, scope: scope_id, child: c.id, ctx: scope_ctx, called: false };
        lock(&self.spawned).push(c.id);
        // A thread child whose result or context has a destructor that acts waits, before it
        // returns, until its spawner has dropped the handle: so the child drops both itself,
        // where tether catches a panic as the scope's. (A handle that goes last drops them on
        // the spawner's thread, which is the spawner's business.) Tasks need no such order:
        // whichever of the task and its handle lets go second drops them, under catch_unwind.
        let acts = on_drop(c).is_some() || c.callback == Some(Callback::Armed);
        let (handle_gone, released) = match (c.on, acts) {
            (Spawn::Thread, true) => {
                let (tx, rx) = crossbeam_channel::bounded::<()>(0);
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let body = move |ctx: &Context| {
            // Moves the whole probe in (a closure would capture only the field it assigns).
            let mut probe = probe;
            probe.called = true;
            lock(&self.ran).insert(c.id);
            let result = self.child(s, scope_id, c, ctx, &chain);
            if let Some(released) = released {
                if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = released.recv_timeout(BLOCK_LIMIT)
                {
                    self.violation(format!("#{}: its handle was not dropped in {BLOCK_LIMIT:?}", c.id));
                }
            }
            result
        };
        match c.on {
            Spawn::Thread => drop(s.spawn_fallible(body)),
            // A pool task: if its scope is cancelled before a worker (or a helping waiter) claims
            // it, its closure is dropped uncalled (design/0003) and the probe records the skip;
            // the model (`Runs`, `ScopeExpect::early`) says when that is allowed.
            Spawn::Task => drop(s.spawn_task_fallible(body)),
        }
        drop(handle_gone);
    }

    fn child<'scope, 'env>(
        &'env self,
        s: &'scope tether::Scope<'scope, 'env>,
        scope_id: u32,
        c: &'env Child,
        ctx: &Context,
        chain: &[Context],
    ) -> Result<Returned<'scope, 'env>, Failure> {
        if c.read {
            lock(&self.reads).insert(c.id, ctx.value(&KEY).copied());
        }
        if let Some(cb) = c.callback {
            self.register(c.id, cb, ctx);
        }
        let observe = |cause: Cause| lock(&self.observed).push((scope_id, c.id, model_cause(&cause)));
        match &c.action {
            Action::Finish => {}
            Action::Fail => return Err(Failure::Code(c.id)),
            Action::Panic => panic_any(Tag(c.id)),
            Action::Block(w) => {
                let cause = match w {
                    Wait::Ctx => ctx.wait_timeout(BLOCK_LIMIT),
                    Wait::Sleep => tether::blocking::sleep(ctx, BLOCK_LIMIT).err(),
                    Wait::Recv => {
                        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
                        lock(&self.never).push(tx);
                        match tether::blocking::recv_timeout(ctx, &rx, BLOCK_LIMIT) {
                            Err(tether::blocking::RecvTimeoutError::Cancelled(c)) => Some(c),
                            _ => None,
                        }
                    }
                };
                match cause {
                    Some(cause) => observe(cause),
                    None => {
                        self.violation(format!("#{} blocked {BLOCK_LIMIT:?} and was never cancelled", c.id))
                    }
                }
            }
            Action::Stubborn(ms) => {
                std::thread::sleep(Duration::from_millis((*ms).into()));
                if let Some(cause) = ctx.cause() {
                    observe(cause);
                }
            }
            Action::Cancel { up } => target(chain, *up).cancel(),
            Action::Sibling(sib) => self.spawn(s, scope_id, sib, chain),
            Action::Nested(n) => self.scope(n, chain).map_err(Failure::Nested)?,
        }
        let chain = match on_drop(c) {
            Some(OnDrop::Spawn(_)) => chain.to_vec(),
            _ => Vec::new(),
        };
        Ok(Returned { run: self, s, scope_id, child: c, chain })
    }

    /// Registers `c`'s on-cancel callback on its context, and stops it at once if it is a
    /// `Stop` one.
    fn register(&self, child: u32, kind: Callback, ctx: &Context) {
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let mut armed = (kind == Callback::Armed).then(|| Armed {
            child,
            defused: false,
            discarded: self.discarded.clone(),
            fired: self.destructor_panics.clone(),
        });
        let handle = ctx.on_cancel(move |_| {
            counter.fetch_add(1, SeqCst);
            if let Some(armed) = &mut armed {
                armed.defused = true;
            }
        });
        let first = (kind == Callback::Stop).then(|| handle.stop());
        lock(&self.callbacks).push((child, kind, ran, first, handle));
    }
}

fn count_codes(t: &[ErrTree]) -> usize {
    t.iter()
        .map(|e| match e {
            ErrTree::Code(_) => 1,
            ErrTree::Nested(n) => count_codes(n),
        })
        .sum()
}

// ===== the ad-hoc interpreter =====

/// What one run with ad-hoc threads leaked.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdhocLeaks {
    /// Threads nobody joined by the time the program returned.
    pub never_joined: usize,
    /// Threads still running when the program returned.
    pub still_running: usize,
    /// Threads waiting for a flag that was never set (real code would wait forever).
    pub hung: usize,
    /// Stop flags created and never set.
    pub flags_never_set: usize,
    pub lost_errors: usize,
    pub lost_panics: usize,
}

/// Shared state of an ad-hoc run: counters a real program would not have.
#[derive(Default)]
struct Adhoc {
    spawned: AtomicUsize,
    joined: AtomicUsize,
    running: AtomicUsize,
    hung: AtomicUsize,
    flags: Mutex<Vec<Arc<AtomicBool>>>,
}

/// An ad-hoc error: what `?` carries up.
enum AdErr {
    Code(u32),
    Nested(Box<AdErr>),
    Panic(Box<dyn Any + Send>),
}

/// Decrements the running count when a thread ends, however it ends.
struct Running(Arc<Adhoc>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

/// Runs `p` the ad-hoc way and counts what leaked; waits (bounded) for its stray threads to end.
/// Ad-hoc code has no destructors to run: it runs [`Program::without_destructors`].
pub fn run_adhoc(p: &Program) -> AdhocLeaks {
    quiet_expected_panics();
    let p = &p.without_destructors();
    let model = Model::of(p);
    // Ad-hoc code runs every child (tasks as threads too), so every panic and failure happens.
    let expect = model.expect(p, &|_| true, &|_| false);
    let st = Arc::new(Adhoc::default());
    let waits: BTreeMap<u32, bool> = model.scopes.iter().map(|(id, m)| (*id, m.waits)).collect();
    let result = catch_unwind(AssertUnwindSafe(|| adhoc_scope(&st, &waits, &p.root, &[])));
    let mut leaks = AdhocLeaks {
        never_joined: st.spawned.load(SeqCst) - st.joined.load(SeqCst),
        still_running: st.running.load(SeqCst),
        ..AdhocLeaks::default()
    };
    let reported_panic = match &result {
        Err(payload) => payload.downcast_ref::<Tag>().copied(),
        Ok(Err(e)) => first_panic(e),
        Ok(Ok(())) => None,
    };
    leaks.lost_panics = expect.panics.iter().filter(|t| Some(**t) != reported_panic).count();
    if expect.panics.is_empty() {
        let reported = match &result {
            Ok(Err(e)) => count_ad(e),
            _ => 0,
        };
        leaks.lost_errors = expect.fails.len().saturating_sub(reported);
    }
    // Keep the process healthy: every stray thread ends within ADHOC_HANG (+ its stubbornness).
    let give_up = Instant::now() + Duration::from_secs(5);
    while st.running.load(SeqCst) > 0 && Instant::now() < give_up {
        std::thread::sleep(POLL);
    }
    leaks.hung = st.hung.load(SeqCst);
    leaks.flags_never_set = st.flags.lock().unwrap().iter().filter(|f| !f.load(SeqCst)).count();
    leaks
}

fn first_panic(e: &AdErr) -> Option<Tag> {
    match e {
        AdErr::Panic(p) => p.downcast_ref::<Tag>().copied(),
        AdErr::Nested(n) => first_panic(n),
        AdErr::Code(_) => None,
    }
}

fn count_ad(e: &AdErr) -> usize {
    match e {
        AdErr::Code(_) => 1,
        AdErr::Nested(n) => count_ad(n),
        AdErr::Panic(_) => 0,
    }
}

/// One scope written by hand: a stop flag, `thread::spawn`, a results channel, joins in order
/// with early returns (`?`), the flag set only by the body's normal end.
fn adhoc_scope(
    st: &Arc<Adhoc>,
    waits: &BTreeMap<u32, bool>,
    spec: &ScopeSpec,
    flags: &[Arc<AtomicBool>],
) -> Result<(), AdErr> {
    let stop = Arc::new(AtomicBool::new(false));
    st.flags.lock().unwrap().push(stop.clone());
    let deadline = deadline_instant(spec.deadline);
    let mut chain = flags.to_vec();
    chain.push(stop.clone());
    let handles: Vec<_> = spec.children.iter().map(|c| adhoc_spawn(st, waits, c, &chain, deadline)).collect();
    match spec.end {
        End::WaitAll if waits[&spec.id] => {}
        End::Return | End::Cancel | End::WaitAll => stop.store(true, SeqCst),
        // Nothing catches it: the handles are dropped unjoined, the flag is never set.
        End::Panic => panic_any(Tag(spec.id)),
    }
    for h in handles {
        let r = h.join();
        st.joined.fetch_add(1, SeqCst);
        match r {
            Ok(r) => r?,
            // The usual `join().map_err(...)?`: the first panic is carried up, the rest are lost.
            Err(payload) => return Err(AdErr::Panic(payload)),
        }
    }
    Ok(())
}

fn adhoc_spawn(
    st: &Arc<Adhoc>,
    waits: &BTreeMap<u32, bool>,
    c: &Child,
    chain: &[Arc<AtomicBool>],
    deadline: Option<Instant>,
) -> std::thread::JoinHandle<Result<(), AdErr>> {
    st.spawned.fetch_add(1, SeqCst);
    st.running.fetch_add(1, SeqCst);
    let (st, waits, c, chain) = (st.clone(), waits.clone(), c.clone(), chain.to_vec());
    std::thread::spawn(move || {
        let _running = Running(st.clone());
        adhoc_child(&st, &waits, &c, &chain, deadline)
    })
}

fn adhoc_child(
    st: &Arc<Adhoc>,
    waits: &BTreeMap<u32, bool>,
    c: &Child,
    chain: &[Arc<AtomicBool>],
    deadline: Option<Instant>,
) -> Result<(), AdErr> {
    let stop = chain.last().expect("a child has a scope");
    match &c.action {
        Action::Finish => Ok(()),
        Action::Fail => Err(AdErr::Code(c.id)),
        Action::Panic => panic_any(Tag(c.id)),
        Action::Block(_) => {
            let give_up = Instant::now() + ADHOC_HANG;
            loop {
                if stop.load(SeqCst) || deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(());
                }
                if Instant::now() >= give_up {
                    st.hung.fetch_add(1, SeqCst);
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
        }
        Action::Stubborn(ms) => {
            std::thread::sleep(Duration::from_millis((*ms).into()));
            Ok(())
        }
        Action::Cancel { up } => {
            target(chain, *up).store(true, SeqCst);
            Ok(())
        }
        // Fire and forget: nobody keeps the handle.
        Action::Sibling(sib) => {
            drop(adhoc_spawn(st, waits, sib, chain, deadline));
            Ok(())
        }
        // A nested scope gets a fresh flag: cancelling this one does not reach it.
        Action::Nested(n) => adhoc_scope(st, waits, n, chain).map_err(|e| AdErr::Nested(Box::new(e))),
    }
}
