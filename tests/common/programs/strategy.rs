//! Proptest strategies: random programs of nested scopes, children and destructors, numbered.

use super::{Action, Callback, Child, Deadline, End, OnDrop, Program, ScopeSpec, Spawn, Wait, on_drop};
use proptest::prelude::*;

/// Depth of nested scopes and children per scope, as the issue bounds them.
pub const MAX_DEPTH: u32 = 3;
pub const MAX_CHILDREN: usize = 6;

/// Programs of nested scopes at most [`MAX_DEPTH`] deep with at most [`MAX_CHILDREN`] children each.
pub fn program() -> impl Strategy<Value = Program> {
    scope_spec(MAX_DEPTH - 1).prop_map(|root| {
        let mut p = Program { root };
        p.number();
        p
    })
}

fn deadline() -> impl Strategy<Value = Deadline> {
    prop_oneof![
        4 => Just(Deadline::None),
        1 => Just(Deadline::Past),
        1 => (1u8..10).prop_map(Deadline::Near),
        1 => Just(Deadline::Far),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => Just(End::Return),
        1 => Just(End::Cancel),
        2 => Just(End::WaitAll),
        1 => Just(End::Panic),
    ]
}

fn spawn_kind() -> impl Strategy<Value = Spawn> {
    prop_oneof![3 => Just(Spawn::Thread), 1 => Just(Spawn::Task)]
}

fn leaf_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::Finish),
        2 => Just(Action::Fail),
        1 => Just(Action::Panic),
        3 => prop_oneof![Just(Wait::Ctx), Just(Wait::Sleep), Just(Wait::Recv)].prop_map(Action::Block),
        1 => (1u8..20).prop_map(Action::Stubborn),
        1 => (0u8..3).prop_map(|up| Action::Cancel { up }),
    ]
}

/// A plain `Finish` child: what a result's destructor spawns.
fn finisher(on: Spawn) -> Child {
    Child { id: 0, on, action: Action::Finish, callback: None, read: false, result: None }
}

/// No callback 23/40; `Keep` and `Stop` 6/40 each (the 30% they had before `Armed`); `Armed` 1/8.
fn callback() -> impl Strategy<Value = Option<Callback>> {
    prop_oneof![
        23 => Just(None),
        6 => Just(Some(Callback::Keep)),
        6 => Just(Some(Callback::Stop)),
        5 => Just(Some(Callback::Armed)),
    ]
}

/// A result that panics when dropped on 1 child in 8, one that spawns on 1 in 8.
fn result_on_drop() -> impl Strategy<Value = Option<OnDrop>> {
    prop_oneof![
        6 => Just(None),
        1 => Just(Some(OnDrop::Panic)),
        1 => spawn_kind().prop_map(|on| Some(OnDrop::Spawn(Box::new(finisher(on))))),
    ]
}

fn child_with(action: impl Strategy<Value = Action>) -> impl Strategy<Value = Child> {
    (spawn_kind(), action, callback(), prop::bool::weighted(0.3), result_on_drop()).prop_map(
        |(on, action, callback, read, result)| {
            let mut c = Child { id: 0, on, action, callback, read, result };
            if on_drop(&c).is_none() {
                c.result = None;
            }
            // One payload per tag: a result that panics on drop keeps its callback plain.
            if matches!(c.result, Some(OnDrop::Panic)) && c.callback == Some(Callback::Armed) {
                c.callback = Some(Callback::Keep);
            }
            c
        },
    )
}

fn scope_spec(depth: u32) -> BoxedStrategy<ScopeSpec> {
    let action = if depth == 0 {
        leaf_action().boxed()
    } else {
        prop_oneof![
            8 => leaf_action(),
            1 => child_with(leaf_action()).prop_map(|c| Action::Sibling(Box::new(c))),
            1 => scope_spec(depth - 1).prop_map(Action::Nested),
        ]
        .boxed()
    };
    (
        deadline(),
        prop::option::weighted(0.4, 0u32..100),
        prop::bool::weighted(0.125),
        prop::collection::vec(child_with(action), 0..=MAX_CHILDREN),
        end(),
    )
        .prop_map(|(deadline, bind, bomb, children, end)| {
            // One payload per tag: a body that panics binds no bomb.
            let bomb = bomb && end != End::Panic;
            ScopeSpec { id: 0, deadline, bind, bomb, children, end }
        })
        .boxed()
}

impl Program {
    /// Gives every scope and child its pre-order id.
    fn number(&mut self) {
        fn scope(s: &mut ScopeSpec, next: &mut u32) {
            s.id = *next;
            *next += 1;
            s.children.iter_mut().for_each(|c| child(c, next));
        }
        fn child(c: &mut Child, next: &mut u32) {
            c.id = *next;
            *next += 1;
            match &mut c.action {
                Action::Sibling(c) => child(c, next),
                Action::Nested(s) => scope(s, next),
                _ => {}
            }
            if let Some(OnDrop::Spawn(c)) = &mut c.result {
                child(c, next);
            }
        }
        scope(&mut self.root, &mut 0);
    }
}
