//! The tether interpreter: runs a program with scopes, records what each child and scope saw,
//! and checks that against the model.

use super::super::model::{Fate, Model, Runs, err_tree, model_cause, target};
use super::super::{
    Action, Callback, Child, End, ErrTree, Failure, ModelCause, OnDrop, Program, ScopeSpec, Spawn, Tag, Wait,
    on_drop,
};
use super::{BLOCK_LIMIT, deadline_instant, quiet_expected_panics};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tether::{CallbackHandle, Canceller, Cause, Context, Key, ScopeBuilder, ScopeError};

/// The key children read and scopes bind.
pub static KEY: Key<u32> = Key::new("leak_freedom.value");
/// The key a scope with [`ScopeSpec::bomb`] binds a [`Bomb`] to.
pub static BOMB: Key<Bomb> = Key::new("leak_freedom.bomb");

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
