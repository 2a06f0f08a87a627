//! Bridges between tether contexts and tokio-util's `CancellationToken` (feature `tokio-util`).
#![cfg(feature = "tokio-util")]

use std::sync::{Mutex, MutexGuard, PoisonError};
use tether::testing::LeakCheck;
use tether::token::{CancellationToken, TokenCancelled, context_from, token_from};
use tether::{Canceller, Cause, Context};

/// Every test holds it: the leak check reads process-wide counts.
static COUNTS: Mutex<()> = Mutex::new(());

fn counts() -> MutexGuard<'static, ()> {
    COUNTS.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn a_token_from_a_context_is_cancelled_with_it_and_at_once_if_it_already_is() {
    let _counts = counts();
    let ctx = Context::new();
    let token = token_from(&ctx);
    assert!(!token.is_cancelled());
    ctx.cancel();
    assert!(token.is_cancelled());
    let already = token_from(&ctx);
    assert!(already.is_cancelled());
}

#[test]
fn a_context_from_a_token_is_cancelled_with_a_typed_cause_without_a_thread() {
    let _counts = counts();
    let token = CancellationToken::new();
    let parent = Context::new();
    let ctx = context_from(&token, &parent);
    assert!(!ctx.is_cancelled());
    token.cancel();
    // Synchronous: the token's wake cancelled the context before `cancel` returned.
    assert!(ctx.is_cancelled());
    assert_eq!(ctx.cause().unwrap().downcast_ref::<TokenCancelled>(), Some(&TokenCancelled));
    assert!(!parent.is_cancelled());
    let already = context_from(&token, &parent);
    assert!(already.is_cancelled());
}

#[test]
fn cancelling_the_parent_still_reaches_a_context_from_a_token() {
    let _counts = counts();
    let token = CancellationToken::new();
    let parent = Context::new();
    let ctx = context_from(&token, &parent);
    parent.cancel_with(Cause::ScopeExited);
    assert_eq!(ctx.cause(), Some(Cause::ScopeExited));
    assert!(!token.is_cancelled(), "the bridge is one way");
}

#[test]
fn dropping_either_side_leaks_nothing() {
    let _counts = counts();
    let check = LeakCheck::start();
    {
        // Context side dropped first: its callback (holding a token clone) is discarded.
        let ctx = Context::new();
        let token = token_from(&ctx);
        drop(ctx);
        drop(token);
    }
    {
        // Token kept, context dropped: the token's future (and the bridge) go with the context.
        let token = CancellationToken::new();
        let ctx = context_from(&token, &Context::new());
        drop(ctx);
        token.cancel(); // wakes nothing that is still alive
    }
    {
        // Token dropped first: the context lives on, uncancelled, and is released normally.
        let token = CancellationToken::new();
        let ctx = context_from(&token, &Context::new());
        drop(token);
        assert!(!ctx.is_cancelled());
        drop(ctx);
    }
    check.finish().unwrap();
}

#[test]
fn a_pair_bridged_both_ways_terminates_from_either_side() {
    let _counts = counts();
    for cancel_token_side in [false, true] {
        let ctx = Context::new();
        let token = token_from(&ctx);
        let back = context_from(&token, &Context::new());
        let token_again = token_from(&back);
        if cancel_token_side {
            token.cancel();
        } else {
            ctx.cancel();
        }
        assert!(token.is_cancelled() && back.is_cancelled() && token_again.is_cancelled());
    }
}
