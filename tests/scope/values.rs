//! Values and the ambient context: `current()`, `Key::get()` and `Key::with()` in bodies and
//! children, per-key inheritance across spawns, and rebinding in a child.

use crate::shared;
use tether::{Canceller, Context, Key, ScopeBuilder, current, with_current};

static REQUEST_ID: Key<u64> = Key::new("request_id");
static SCRATCH: Key<Vec<u8>> = Key::not_inherited("scratch");
static USER: Key<String> = Key::new("user");

#[test]
fn outside_any_scope_the_ambient_context_is_background_and_keys_are_unbound() {
    let _shared = shared();
    assert!(!current().can_be_cancelled());
    assert_eq!(REQUEST_ID.get(), None);
    assert!(USER.with(|u| u.is_none()));
}

#[test]
fn a_child_sees_its_own_context_ambiently_as_the_same_node_as_its_argument() {
    let _shared = shared();
    tether::scope(|s| {
        s.spawn(|ctx| {
            assert!(!current().is_cancelled());
            ctx.cancel();
            assert!(current().is_cancelled(), "current() is the child's own node");
        })
        .join()
        .unwrap();
        assert!(!s.context().is_cancelled(), "cancelling a child does not cancel the scope");
    })
    .unwrap();
}

#[test]
fn the_body_sees_the_scope_context_ambiently_and_the_caller_gets_its_own_back_after() {
    let _shared = shared();
    let outer = Context::new();
    with_current(&outer, || {
        tether::scope(|s| {
            s.context().cancel();
            assert!(current().is_cancelled(), "the body's ambient context is the scope's");
            tether::scope(|_| ()).unwrap();
            assert!(current().is_cancelled(), "restored after a nested scope");
        })
        .unwrap();
        assert!(!current().is_cancelled(), "restored after the scope: the caller's context");
        outer.cancel();
        assert!(current().is_cancelled());
    });
    assert!(!current().can_be_cancelled(), "and background outside");
}

#[test]
fn children_read_scope_values_ambiently_and_explicitly() {
    let _shared = shared();
    ScopeBuilder::new()
        .value(&REQUEST_ID, 42)
        .value(&USER, "ada".into())
        .run(|s| {
            assert_eq!(REQUEST_ID.get(), Some(42));
            let (ambient, explicit) = s
                .spawn(|ctx| {
                    (
                        (REQUEST_ID.get(), USER.get()),
                        (ctx.value(&REQUEST_ID).copied(), ctx.value(&USER).cloned()),
                    )
                })
                .join()
                .unwrap();
            assert_eq!(ambient, (Some(42), Some("ada".to_string())));
            assert_eq!(ambient, explicit);
            assert_eq!(s.spawn(|_| USER.with(|u| u.map(String::len))).join().unwrap(), Some(3));
        })
        .unwrap();
}

#[test]
fn a_not_inherited_binding_is_visible_in_the_body_but_not_in_spawned_children() {
    let _shared = shared();
    ScopeBuilder::new()
        .value(&SCRATCH, vec![1, 2, 3])
        .value(&REQUEST_ID, 9)
        .run(|s| {
            assert_eq!(SCRATCH.get(), Some(vec![1, 2, 3]), "the body's own context has it");
            assert_eq!(s.context().value(&SCRATCH), Some(&vec![1, 2, 3]));
            let (scratch, id) =
                s.spawn(|ctx| (ctx.value(&SCRATCH).cloned(), REQUEST_ID.get())).join().unwrap();
            assert_eq!(scratch, None, "not inherited across the spawn");
            assert_eq!(id, Some(9), "inherited keys still are");
            assert_eq!(s.spawn(|_| SCRATCH.get()).join().unwrap(), None);
        })
        .unwrap();
}

#[test]
fn a_child_rebinds_a_key_for_its_own_subtree_only() {
    let _shared = shared();
    ScopeBuilder::new()
        .value(&USER, "ada".into())
        .run(|s| {
            let rebinder = s.spawn(|ctx| {
                let mine = ctx.with_value(&USER, "grace".into());
                let in_call = with_current(&mine, || USER.get());
                let in_nested = ScopeBuilder::new()
                    .value(&USER, "linus".into())
                    .run(|inner| inner.spawn(|_| USER.get()).join().unwrap())
                    .unwrap();
                (in_call, in_nested, USER.get())
            });
            let sibling = s.spawn(|_| USER.get());
            let (in_call, in_nested, after) = rebinder.join().unwrap();
            assert_eq!(in_call.as_deref(), Some("grace"));
            assert_eq!(in_nested.as_deref(), Some("linus"));
            assert_eq!(after.as_deref(), Some("ada"), "the rebinding ended with its call");
            assert_eq!(sibling.join().unwrap().as_deref(), Some("ada"), "siblings are unaffected");
        })
        .unwrap();
}

#[test]
fn a_nested_scope_in_a_child_inherits_the_outer_values_through_the_ambient_context() {
    let _shared = shared();
    ScopeBuilder::new()
        .value(&REQUEST_ID, 5)
        .run(|s| {
            let seen = s
                .spawn(|_| tether::scope(|inner| inner.spawn(|_| REQUEST_ID.get()).join().unwrap()).unwrap());
            assert_eq!(seen.join().unwrap(), Some(5));
        })
        .unwrap();
}

#[test]
fn with_current_restores_the_previous_context_when_its_closure_panics() {
    let _shared = shared();
    let ctx = Context::new().with_value(&REQUEST_ID, 1);
    let r =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| with_current(&ctx, || panic!("inside"))));
    assert!(r.is_err());
    assert_eq!(REQUEST_ID.get(), None);
}

#[test]
fn a_key_read_through_the_ambient_context_stays_valid_while_its_closure_enters_others() {
    let _shared = shared();
    static LEVEL: Key<String> = Key::new("level");
    let outer = Context::background().with_value(&LEVEL, "outer".to_string());
    with_current(&outer, || {
        LEVEL.with(|outer_value| {
            let inner = current().with_value(&LEVEL, "inner".to_string());
            with_current(&inner, || assert_eq!(LEVEL.get().as_deref(), Some("inner")));
            drop(inner);
            // The borrow taken before entering and leaving the inner context is still good.
            assert_eq!(outer_value.map(String::as_str), Some("outer"));
            assert_eq!(LEVEL.get().as_deref(), Some("outer"), "the outer context is restored");
        })
    });
    assert_eq!(LEVEL.get(), None, "nothing ambient outside");
}
