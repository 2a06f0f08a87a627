//! A scope's deadline or timeout cancels the scope and every child mid-body.

use crate::shared;
use std::time::{Duration, Instant};
use tether::{CancelError, Canceller, Cause, Context, ScopeBuilder};

/// A timeout that expires while the body is running.
const SHORT: Duration = Duration::from_millis(20);
/// A timeout that must not expire during a test.
const AGES: Duration = Duration::from_secs(3600);

#[test]
fn a_timeout_expires_mid_body_and_cancels_every_child_with_deadline_exceeded() {
    let _shared = shared();
    let start = Instant::now();
    let r = ScopeBuilder::new().timeout(SHORT).run(|s| {
        let children: Vec<_> = (0..3).map(|_| s.spawn(|ctx| (ctx.wait(), ctx.err()))).collect();
        let body_saw = s.context().wait(); // the body is still running when the deadline fires
        let seen: Vec<_> = children.into_iter().map(|h| h.join().unwrap()).collect();
        (body_saw, seen)
    });
    let (body_saw, seen) = r.unwrap();
    assert!(start.elapsed() >= SHORT);
    assert_eq!(body_saw, Cause::DeadlineExceeded);
    assert_eq!(seen, vec![(Cause::DeadlineExceeded, Some(CancelError::DeadlineExceeded)); 3]);
}

#[test]
fn the_earlier_of_the_parents_deadline_and_the_scopes_own_applies() {
    let _shared = shared();
    let parent = Context::new().with_timeout(SHORT);
    let parent_deadline = parent.deadline().unwrap();
    ScopeBuilder::new()
        .parent(&parent)
        .timeout(AGES)
        .run(|s| {
            assert_eq!(s.context().deadline(), Some(parent_deadline));
            assert_eq!(s.spawn(|ctx| ctx.deadline()).join().unwrap(), Some(parent_deadline));
        })
        .unwrap();
    let own = Instant::now() + SHORT;
    ScopeBuilder::new()
        .deadline(own + AGES)
        .deadline(own)
        .run(|s| assert_eq!(s.context().deadline(), Some(own)))
        .unwrap();
}

#[test]
fn a_deadline_already_past_starts_the_scope_cancelled() {
    let _shared = shared();
    ScopeBuilder::new()
        .deadline(Instant::now() - SHORT)
        .run(|s| {
            assert_eq!(s.context().err(), Some(CancelError::DeadlineExceeded));
            assert!(s.spawn(|ctx| ctx.is_cancelled()).join().unwrap());
        })
        .unwrap();
}

#[test]
fn a_scope_without_a_deadline_inside_one_with_a_deadline_inherits_it() {
    let _shared = shared();
    ScopeBuilder::new()
        .timeout(AGES)
        .run(|outer| {
            let d = outer.context().deadline();
            tether::scope(|inner| assert_eq!(inner.context().deadline(), d)).unwrap();
        })
        .unwrap();
}
