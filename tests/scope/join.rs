//! Join handles: results, panics taken by join, names, the child's own context.

use crate::shared;
use std::sync::Arc;
use tether::{Canceller, Cause};

#[test]
fn join_returns_each_childs_result_of_any_type() {
    let _shared = shared();
    tether::scope(|s| {
        let number = s.spawn(|_| 7_u8);
        let text = s.spawn(|_| String::from("seven"));
        let unit = s.spawn(|_| ());
        assert_eq!(number.join().unwrap(), 7);
        assert_eq!(text.join().unwrap(), "seven");
        unit.join().unwrap();
    })
    .unwrap();
}

#[test]
fn a_panic_taken_by_join_is_not_reraised_by_the_scope() {
    let _shared = shared();
    let r = tether::scope(|s| {
        let err = s.builder().name("parser").spawn(|_| panic!("bad input")).unwrap().join().unwrap_err();
        assert!(err.is_panic());
        assert_eq!(err.summary().unwrap().who(), Some("parser"));
        assert_eq!(err.to_string(), "parser panicked: bad input");
        assert_eq!(err.into_panic().downcast_ref::<&str>(), Some(&"bad input"));
        "body result"
    });
    assert_eq!(r.unwrap(), "body result");
}

#[test]
fn a_fallible_childs_handle_yields_the_same_arc_the_scope_reports() {
    let _shared = shared();
    #[derive(Debug, thiserror::Error)]
    #[error("nope")]
    struct Nope;
    let mut from_handle = None;
    let err = tether::scope(|s| {
        let ok = s.spawn_fallible(|_| Ok::<_, Nope>(1));
        let failed = s.spawn_fallible(|_| Err::<u8, _>(Nope));
        assert_eq!(ok.join().unwrap().unwrap(), 1);
        from_handle = Some(failed.join().unwrap().unwrap_err());
    })
    .unwrap_err();
    let from_handle = from_handle.unwrap();
    let shared: tether::SharedError = from_handle;
    assert!(Arc::ptr_eq(&shared, err.first()), "joining does not remove the error from the scope's report");
}

#[test]
fn cancelling_one_childs_context_stops_only_that_child() {
    let _shared = shared();
    tether::scope(|s| {
        let a = s.spawn(|ctx| ctx.wait());
        let b = s.spawn(|ctx| ctx.wait());
        a.context().cancel();
        assert_eq!(a.join().unwrap(), Cause::Cancelled);
        assert!(!b.context().is_cancelled());
        assert!(!s.context().is_cancelled());
    })
    .unwrap();
}

#[test]
fn a_named_child_runs_on_a_thread_with_that_name() {
    let _shared = shared();
    tether::scope(|s| {
        let h = s.builder().name("indexer-3").spawn(|_| std::thread::current().name().map(String::from));
        let h = h.unwrap();
        assert_eq!(h.name(), Some("indexer-3"));
        assert_eq!(h.join().unwrap().as_deref(), Some("indexer-3"));
    })
    .unwrap();
}

#[test]
fn scope_types_are_send_and_sync_where_std_scope_types_are() {
    let _shared = shared();
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<tether::Scope<'_, '_>>();
    assert_send_sync::<tether::ScopedJoinHandle<'_, u8>>();
    assert_send_sync::<tether::ScopeError>();
    assert_send_sync::<tether::ScopeBuilder>();
}
