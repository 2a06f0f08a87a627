//! Test helpers shared by several test binaries: injected panics that stay quiet, and holding
//! every pool worker busy.

#![allow(dead_code)] // each includer uses part of it

use std::sync::{Arc, Barrier};
use tether::{Canceller, Cause, Scope, TaskHandle};

/// An injected panic's payload, so an assertion failure is never mistaken for an injected fault.
#[derive(Debug, PartialEq, Eq)]
pub struct Fault(pub &'static str);

/// Silences the panics whose payload is a [`Fault`]; the others still print.
pub fn quiet() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Fault>().is_none() {
                default(info);
            }
        }));
    });
}

/// Spawns one task per pool worker, each waiting until its context is cancelled, and returns
/// once every worker is running one: tasks queued after this stay queued until the scope is
/// cancelled, unless a thread that waits for their own scope runs them.
pub fn occupy_every_worker<'scope>(s: &'scope Scope<'scope, '_>) -> Vec<TaskHandle<'scope, Cause>> {
    let workers = tether::pool::threads();
    let all_busy = Arc::new(Barrier::new(workers + 1));
    let blockers = (0..workers)
        .map(|_| {
            let all_busy = all_busy.clone();
            s.spawn_task(move |ctx| {
                // The done channel is made before the barrier, and blocking on it registers
                // nothing: `wait()` would register a listener after the barrier, which a leak
                // check started once this returns would count as a callback left behind.
                let done = (*ctx.done()).clone();
                all_busy.wait();
                let _disconnected = done.recv();
                ctx.cause().expect("the done channel disconnects only once its context is cancelled")
            })
        })
        .collect();
    all_busy.wait();
    blockers
}
