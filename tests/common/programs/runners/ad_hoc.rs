//! The ad-hoc interpreter: the same program written the usual way, with `std::thread::spawn`,
//! a stop flag per scope and joins in order with `?`; counts what it leaks.

use super::super::model::{Model, target};
use super::super::{Action, Callback, Child, End, Program, ScopeSpec, Tag};
use super::{deadline_instant, quiet_expected_panics};
use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// The ad-hoc interpreter's bound on a wait for a flag that is never set. Real code would wait
/// forever; the bound keeps the test process healthy, and reaching it counts as a hung thread.
pub const ADHOC_HANG: Duration = Duration::from_millis(50);
/// How often ad-hoc code polls its flag (the usual `while !stop.load() { sleep }` loop).
const POLL: Duration = Duration::from_millis(1);

impl Program {
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
