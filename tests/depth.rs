//! No recursion over user-controlled depth: a million-deep chain and a million-wide fan both
//! cancel and drop on a test thread's default stack.

use tether::{Canceller, Context, live};

const MILLION: usize = 1_000_000;

fn chain(root: &Context, depth: usize) -> Context {
    let mut ctx = root.clone();
    for _ in 0..depth {
        ctx = ctx.child();
    }
    ctx
}

#[test]
fn a_chain_of_a_million_nested_children_cancels_without_overflowing_the_stack() {
    let root = Context::new();
    let leaf = chain(&root, MILLION);
    root.cancel();
    assert!(leaf.is_cancelled());
    drop(leaf);
    drop(root);
}

#[test]
fn a_chain_of_a_million_uncancelled_children_drops_without_overflowing_the_stack() {
    let root = Context::new();
    let leaf = chain(&root, MILLION);
    drop(leaf); // drops the whole chain below root, iteratively
    assert_eq!(root.registered_children(), 0);
}

#[test]
fn a_parent_with_a_million_direct_children_cancels_them_all() {
    let parent = Context::new();
    let children: Vec<Context> = (0..MILLION).map(|_| parent.child()).collect();
    assert_eq!(parent.registered_children(), MILLION);
    parent.cancel();
    assert!(children.iter().all(Canceller::is_cancelled));
    assert_eq!(parent.registered_children(), 0);
    drop(children);
    let _ = live();
}
