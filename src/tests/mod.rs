//! loom models of the cancellation tree's races, of the pool-task protocol and of wakers (run with
//! `RUSTFLAGS="--cfg loom"`).
//!
//! Each model has two or three threads and checks one race named in its function's name; loom
//! explores every interleaving of the tree's mutexes and atomics (see `src/loom.rs`).

mod loom_task;
mod loom_tree;
mod loom_waker;
