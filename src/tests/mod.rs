//! loom models of the cancellation tree's races, of the pool-task protocol, of a join's stolen
//! half, of wakers and of the blocking helpers' armed actions (run with `RUSTFLAGS="--cfg loom"`).
//!
//! Each model has two or three threads and checks one race named in its function's name; loom
//! explores every interleaving of the tree's mutexes and atomics (see `src/loom.rs`).

mod loom_armed;
mod loom_join;
mod loom_task;
mod loom_tree;
mod loom_waker;

/// Checks `f` under every interleaving loom explores, with at most three preemptions (enough for
/// the two- and three-thread races modelled here, and quick).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}
