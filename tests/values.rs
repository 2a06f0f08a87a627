//! Typed values: Key<T> identity, shadowing, inheritance policy, the Valuer trait.

use tether::{Canceller, Context, Inheritance, Key, Valuer};

static USER: Key<String> = Key::new("user");
static ALSO_USER: Key<String> = Key::new("user");
static COUNT: Key<u64> = Key::new("count");
static SCRATCH: Key<Vec<u8>> = Key::not_inherited("scratch");

#[test]
fn keys_with_the_same_name_never_collide() {
    let ctx = Context::background().with_value(&USER, "ada".into());
    assert_eq!(ctx.value(&USER).map(String::as_str), Some("ada"));
    assert_eq!(ctx.value(&ALSO_USER), None);
}

#[test]
fn an_inner_binding_shadows_the_outer_one_for_its_subtree_only() {
    let outer = Context::new().with_value(&COUNT, 1);
    let inner = outer.with_value(&COUNT, 2);
    let below_inner = inner.child();
    assert_eq!(outer.value(&COUNT), Some(&1));
    assert_eq!(inner.value(&COUNT), Some(&2));
    assert_eq!(below_inner.value(&COUNT), Some(&2));
}

#[test]
fn every_derivation_sees_the_values_of_its_ancestors() {
    let ctx = Context::new().with_value(&USER, "ada".into());
    let derived =
        ctx.child().with_timeout(std::time::Duration::from_secs(60)).with_value(&COUNT, 3).detached();
    assert_eq!(derived.value(&USER).map(String::as_str), Some("ada"));
    assert_eq!(derived.value(&COUNT), Some(&3));
}

#[test]
fn a_key_that_was_never_bound_reads_as_none() {
    assert_eq!(Context::background().value(&COUNT), None);
    assert_eq!(COUNT.get_in(&Context::new()), None);
}

#[test]
fn binding_a_value_yields_a_derived_node_whose_cancellation_stays_below_it() {
    let parent = Context::new();
    let bound = parent.with_value(&COUNT, 1);
    bound.cancel();
    assert!(!parent.is_cancelled());
    parent.with_value(&COUNT, 2).child();
    let child = parent.with_value(&COUNT, 3);
    parent.cancel();
    assert!(child.is_cancelled());
}

#[test]
fn inheritance_is_a_per_key_choice() {
    assert_eq!(USER.inheritance(), Inheritance::Inherited);
    assert_eq!(SCRATCH.inheritance(), Inheritance::NotInherited);
    // Derivations on the same thread see non-inherited bindings; spawned children do not
    // (tested with scopes in tests/scope/values.rs).
    let ctx = Context::new().with_value(&SCRATCH, vec![1]);
    assert_eq!(ctx.child().value(&SCRATCH), Some(&vec![1]));
}

#[test]
fn a_thousand_distinct_keys_are_all_found_through_a_deep_chain() {
    static KEYS: [Key<usize>; 1_000] = [const { Key::new("k") }; 1_000];
    let mut ctx = Context::new();
    for (i, key) in KEYS.iter().enumerate() {
        ctx = ctx.with_value(key, i);
    }
    for (i, key) in KEYS.iter().enumerate() {
        assert_eq!(ctx.value(key), Some(&i));
    }
}

#[test]
fn values_are_readable_through_a_dyn_valuer() {
    let ctx = Context::background().with_value(&COUNT, 9);
    let valuer: &dyn Valuer = &ctx;
    assert_eq!(COUNT.get_in(valuer), Some(&9));
}

#[test]
fn a_foreign_type_can_serve_values_through_valuer() {
    struct Fixed(u64);
    impl Valuer for Fixed {
        fn lookup(&self, key: tether::KeyId) -> Option<&(dyn std::any::Any + Send + Sync)> {
            (key == COUNT.id()).then_some(&self.0 as _)
        }
    }
    assert_eq!(COUNT.get_in(&Fixed(5)), Some(&5));
    assert_eq!(USER.get_in(&Fixed(5)), None);
}
