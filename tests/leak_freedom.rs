//! Leak-freedom, by random programs: why you can believe a tether scope leaks nothing.
//!
//! Proptest generates small concurrent programs (`tests/common/programs.rs`): trees of nested
//! scopes, at most 3 deep and 6 children wide, whose children finish, fail with typed errors,
//! panic, block on cancellable waits (`ctx.wait()`, `blocking::sleep`, `blocking::recv`), ignore
//! cancellation for a while, cancel any enclosing scope, spawn siblings, open nested scopes, read
//! a `Key<u32>` bound by some scope, and register on-cancel callbacks (some stopped at once);
//! children are threads or pool tasks, and a task is skipped if its scope is cancelled before it
//! starts; scopes get deadlines in the past, near or far, and end by returning, cancelling,
//! waiting for their children or panicking. A failing program shrinks to a small one, printed as
//! a tree:
//!
//! ```text
//! scope#0 then WaitAll
//!   #1 Thread fail
//!   #2 Thread block(Ctx)
//! ```
//!
//! After **every** run, with tether:
//! 1. nothing is alive: the leak checker reports zero threads, tasks, nodes, registered children,
//!    timers and callbacks;
//! 2. every child that saw its scope cancelled saw the scope's final cause, and that cause is one
//!    the program can produce (its deadline, an explicit cancel, a failure, a panic, the exit);
//!    every blocked child was woken;
//! 3. every callback ran exactly once, or its `stop()` returned `true` (and a second `stop()`
//!    returns `false`);
//! 4. every value read is the innermost binding, as the model computes it;
//! 5. the scope's result is the model's: a panic re-raised with its payload (the others recorded
//!    as unhandled: no payload is lost), else exactly the failures of its children (nested
//!    scopes' failures nested), else `Ok`;
//! 6. every spawned child ran or, for a task, was skipped; a task was skipped only if its scope
//!    may be cancelled before its children have all started, and then for a cause that can come
//!    that early; a task spawned into an already cancelled scope was skipped.
//!
//! Checks 2 to 5 are computed given which children ran: a skipped task did nothing (no read,
//! callback, failure, panic, sibling, nested scope or cancel), so the model's expectation leaves
//! all of it out, and a task that ran is checked exactly like a thread.
//!
//! The same programs written the usual ad-hoc way (`std::thread::spawn`, an `Arc<AtomicBool>`,
//! joins in order with `?`) leak: see `ad_hoc_spawning_leaks_what_scopes_do_not` and
//! `cargo run --release --example leak_compare`.
//!
//! CI runs [`DEFAULT_CASES`] cases from a fixed seed; `TETHER_PROPTEST_CASES=10000` runs more
//! (and `TETHER_PROPTEST_SEED` picks another seed). Skips depend on how fast the pool claims
//! tasks, so `TETHER_POOL_THREADS=1` (or 2) is worth a run too.

#[path = "common/programs.rs"]
mod programs;

use programs::{
    Action, Callback, Checked, Child, Deadline, End, Model, Program, Runs, ScopeSpec, Spawn, TetherRun, Wait,
    program, run_adhoc,
};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tether::testing::LeakCheck;

/// Cases per CI run: a few seconds on 2 cores.
const DEFAULT_CASES: u32 = 64;
const DEFAULT_SEED: u64 = 0x7e7_4e5;

/// Every test here holds it: the live counts are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config() -> Config {
    Config {
        cases: env_or("TETHER_PROPTEST_CASES", DEFAULT_CASES),
        rng_seed: RngSeed::Fixed(env_or("TETHER_PROPTEST_SEED", DEFAULT_SEED)),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// Runs `p` with tether inside a leak check; every violation is a failure.
fn check(p: &Program) -> Result<Checked, TestCaseError> {
    let leaks = LeakCheck::start();
    let checked = TetherRun::run_and_check(p);
    let leaked = leaks.finish();
    if let Err(report) = leaked {
        return Err(TestCaseError::fail(format!("{report}")));
    }
    if !checked.violations.is_empty() {
        return Err(TestCaseError::fail(checked.violations.join("\n")));
    }
    Ok(checked)
}

#[test]
fn random_programs_leak_nothing_and_lose_nothing() {
    let _serial = serial();
    let config = config();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    // Pool tasks spawned and skipped (printed: skips are exercised, not just allowed).
    let (tasks, skipped) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let result = runner.run(&program(), |p| {
        let checked = check(&p)?;
        tasks.fetch_add(checked.tasks, Relaxed);
        skipped.fetch_add(checked.skipped, Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "random_programs_leak_nothing_and_lose_nothing: {cases} programs passed \
         ({} pool tasks spawned, {} of them skipped; {} pool workers)",
        tasks.into_inner(),
        skipped.into_inner(),
        tether::pool::threads(),
    );
}

fn child(id: u32, action: Action) -> Child {
    Child { id, on: Spawn::Thread, action, callback: None, read: false }
}

fn task(id: u32, action: Action) -> Child {
    Child { on: Spawn::Task, ..child(id, action) }
}

fn scope(id: u32, deadline: Deadline, children: Vec<Child>, end: End) -> ScopeSpec {
    ScopeSpec { id, deadline, bind: Some(7), children, end }
}

/// Tasks in a scope whose deadline has passed are spawned into a cancelled scope: every one is
/// skipped, and with it everything it would have done (its failure, its panic, the sibling it
/// would spawn, the nested scope it would open, its cancel, its read and callback). The scope
/// returns `Ok`, and the checker checks that each was skipped for the deadline.
#[test]
fn tasks_of_a_cancelled_scope_are_skipped_with_all_their_effects() {
    let _serial = serial();
    let mut reader = task(5, Action::Finish);
    reader.read = true;
    reader.callback = Some(Callback::Keep);
    let p = Program {
        root: scope(
            0,
            Deadline::Past,
            vec![
                task(1, Action::Fail),
                task(2, Action::Panic),
                task(3, Action::Sibling(Box::new(child(4, Action::Fail)))),
                reader,
                task(6, Action::Nested(scope(7, Deadline::None, vec![child(8, Action::Panic)], End::Return))),
                task(9, Action::Cancel { up: 0 }),
                child(10, Action::Block(Wait::Ctx)),
            ],
            End::WaitAll,
        ),
    };
    let model = Model::of(&p);
    assert!((1..=9).filter(|id| ![4, 7, 8].contains(id)).all(|id| model.runs[&id] == Runs::Never));
    let checked = check(&p).unwrap();
    assert_eq!((checked.tasks, checked.skipped), (6, 6));
}

/// Tasks of a scope that waits for its children and that nothing cancels before they finish are
/// never skipped: the checker fails the run if one is.
#[test]
fn tasks_of_a_scope_nothing_cancels_early_all_run() {
    let _serial = serial();
    let mut reader = task(3, Action::Stubborn(2));
    reader.read = true;
    reader.callback = Some(Callback::Stop);
    let nested = scope(5, Deadline::Far, vec![task(6, Action::Finish)], End::WaitAll);
    let p = Program {
        root: scope(
            0,
            Deadline::Far,
            vec![
                task(1, Action::Finish),
                task(2, Action::Sibling(Box::new(task(4, Action::Finish)))),
                reader,
                task(7, Action::Nested(nested)),
            ],
            End::WaitAll,
        ),
    };
    let model = Model::of(&p);
    assert!(model.tasks.iter().all(|id| model.runs[id] == Runs::Surely), "{model:?}");
    for _ in 0..20 {
        let checked = check(&p).unwrap();
        assert_eq!((checked.tasks, checked.skipped), (6, 0));
    }
}

/// A task that may fail makes its siblings' skips possible (the failure cancels the scope), and
/// a scope whose body returns lets the exit skip tasks not started yet.
#[test]
fn the_model_lets_tasks_skip_only_where_the_scope_may_be_cancelled_early() {
    let waits = |children| Program { root: scope(0, Deadline::None, children, End::WaitAll) };
    let m = Model::of(&waits(vec![task(1, Action::Finish), task(2, Action::Finish)]));
    assert_eq!((m.runs[&1], m.runs[&2]), (Runs::Surely, Runs::Surely));
    let m = Model::of(&waits(vec![task(1, Action::Finish), task(2, Action::Fail)]));
    assert_eq!((m.runs[&1], m.runs[&2]), (Runs::Maybe, Runs::Maybe));
    let mut returns = waits(vec![task(1, Action::Finish)]);
    returns.root.end = End::Return;
    assert_eq!(Model::of(&returns).runs[&1], Runs::Maybe);
    // A cancel that only a skipped task would perform: the cancelled scope need not end with it.
    let nested = scope(2, Deadline::None, vec![task(3, Action::Cancel { up: 1 })], End::Return);
    let p = waits(vec![child(1, Action::Nested(nested)), task(4, Action::Finish)]);
    let m = Model::of(&p);
    assert_eq!((m.runs[&3], m.runs[&4]), (Runs::Maybe, Runs::Maybe));
    let without = m.expect(&p, &|id| id != 3);
    assert!(!without.scopes[&0].causes.contains(&programs::ModelCause::Cancelled));
    let with = m.expect(&p, &|_| true);
    assert!(with.scopes[&0].causes.contains(&programs::ModelCause::Cancelled));
    check(&p).unwrap();
}

/// `scope { fail; block }` then wait for the children: the failure cancels the scope, so the
/// blocked child is woken, and the scope returns the error. Ad hoc, the failure cancels nothing:
/// the blocked thread waits for a flag nobody sets.
fn fail_next_to_a_blocked_child() -> Program {
    Program {
        root: ScopeSpec {
            id: 0,
            deadline: Deadline::None,
            bind: None,
            children: vec![child(1, Action::Fail), child(2, Action::Block(Wait::Ctx))],
            end: End::WaitAll,
        },
    }
}

#[test]
fn a_failure_next_to_a_blocked_child_wakes_it_and_is_reported() {
    let _serial = serial();
    check(&fail_next_to_a_blocked_child()).unwrap();
}

#[test]
fn ad_hoc_spawning_leaks_what_scopes_do_not() {
    let _serial = serial();
    let leaks = run_adhoc(&fail_next_to_a_blocked_child());
    assert_eq!(leaks.hung, 1, "{leaks:?}");
    assert_eq!(leaks.flags_never_set, 1, "{leaks:?}");
    // The failure returned early: the blocked thread was never joined.
    assert_eq!(leaks.never_joined, 1, "{leaks:?}");

    let mut panics = fail_next_to_a_blocked_child();
    panics.root.children = vec![child(1, Action::Panic), child(2, Action::Panic)];
    panics.root.end = End::Return;
    assert_eq!(run_adhoc(&panics).lost_panics, 1, "the second panic is never joined");
    check(&panics).unwrap();
}

/// Shrinking works: a property that fails on any program with a failing child nested two scopes
/// down shrinks to the smallest such program, which prints as four short lines.
#[test]
fn a_failing_program_shrinks_to_a_small_readable_one() {
    fn has_deep_failure(s: &ScopeSpec, depth: u32) -> bool {
        s.children.iter().any(|c| match &c.action {
            Action::Fail => depth >= 1,
            Action::Nested(n) => has_deep_failure(n, depth + 1),
            _ => false,
        })
    }
    let mut runner = TestRunner::new(Config { cases: 10_000, ..config() });
    let result = runner.run(&program(), |p| {
        if has_deep_failure(&p.root, 0) { Err(TestCaseError::fail("a nested failure")) } else { Ok(()) }
    });
    let Err(TestError::Fail(_, minimal)) = result else {
        panic!("no program with a nested failure: {result:?}")
    };
    let text = format!("{minimal:?}");
    assert_eq!(text.trim().lines().count(), 4, "not minimal:{text}");
    assert_eq!(minimal.root.children.len(), 1, "{text}");
}
