//! What ad-hoc spawning leaks, and what a tether scope does not: the same random programs run both
//! ways, counted.
//!
//! The programs are `tests/leak_freedom.rs`'s (nested scopes whose children finish, fail, panic,
//! block until cancelled, cancel, spawn siblings; deadlines; bodies that panic). The ad-hoc version
//! is written the usual way: `std::thread::spawn`, one `Arc<AtomicBool>` stop flag per scope,
//! joins in spawn order with early returns on error, the flag set by the body's normal end.
//!
//! Children marked as pool tasks run as threads in the ad-hoc version (every child runs, so every
//! failure and panic happens) and as pool tasks with tether, where a task whose scope is cancelled
//! before it starts is skipped: the tether column counts as lost only the failures and panics of
//! children that ran (the model's expectation given who ran, as `tests/leak_freedom.rs` checks).
//!
//! ```text
//! cargo run --release --example leak_compare           # 300 programs
//! cargo run --release --example leak_compare -- 2000   # more
//! ```

#[path = "../tests/common/programs.rs"]
#[allow(unreachable_pub, missing_docs)]
mod programs;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngSeed, TestRunner};
use tether::testing::LeakCheck;

#[derive(Default)]
struct Totals {
    programs: usize,
    leaked_threads: usize,
    still_running: usize,
    hung: usize,
    flags: usize,
    lost_errors: usize,
    lost_panics: usize,
    other: usize,
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let mut runner = TestRunner::new(Config { rng_seed: RngSeed::Fixed(0x1ea4), ..Config::default() });
    let strategy = programs::program();
    let (mut adhoc, mut tether) = (Totals::default(), Totals::default());
    for _ in 0..n {
        let program = strategy.new_tree(&mut runner).expect("a program").current();

        let a = programs::run_adhoc(&program);
        adhoc.programs += 1;
        adhoc.leaked_threads += a.never_joined;
        adhoc.still_running += a.still_running;
        adhoc.hung += a.hung;
        adhoc.flags += a.flags_never_set;
        adhoc.lost_errors += a.lost_errors;
        adhoc.lost_panics += a.lost_panics;

        let check = LeakCheck::start();
        let t = programs::TetherRun::run_and_check(&program);
        let leaked = check.finish().err().map(|r| r.leaked()).unwrap_or_default();
        tether.programs += 1;
        tether.leaked_threads += leaked.threads + leaked.tasks;
        tether.other += leaked.nodes + leaked.timers + leaked.callbacks;
        tether.lost_errors += t.lost_errors;
        tether.lost_panics += t.lost_panics;
        if !t.violations.is_empty() {
            eprintln!("tether violated the model on {program:?}: {:?}", t.violations);
            std::process::exit(1);
        }
    }
    println!("| | ad-hoc `thread::spawn` | `tether::scope` |");
    println!("| --- | ---: | ---: |");
    let row =
        |name: &str, a: &dyn std::fmt::Display, t: &dyn std::fmt::Display| println!("| {name} | {a} | {t} |");
    row("programs run", &adhoc.programs, &tether.programs);
    row("leaked threads (never joined)", &adhoc.leaked_threads, &tether.leaked_threads);
    row("threads still running at return", &adhoc.still_running, &tether.leaked_threads);
    row("threads blocked on a flag never set", &adhoc.hung, &0);
    row("stop flags never set", &adhoc.flags, &"n/a");
    row("lost errors", &adhoc.lost_errors, &tether.lost_errors);
    row("lost panics", &adhoc.lost_panics, &tether.lost_panics);
    row("leaked nodes, timers, callbacks", &"n/a", &tether.other);
}
