//! The reference model: what a program's text decides (who surely runs, which tasks may be
//! skipped), and what a run must then have done given who ran; and the model's view of what
//! tether reports (errors and causes).

use super::{
    Action, Callback, Child, Deadline, End, ErrTree, Failure, ModelCause, OnDrop, Program, ScopeSpec, Spawn,
    Tag, on_drop,
};
use std::collections::{BTreeMap, BTreeSet};
use tether::{Cause, ScopeError};

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
pub(super) fn target<T: Clone>(chain: &[T], up: u8) -> T {
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
