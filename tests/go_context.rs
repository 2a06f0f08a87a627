//! Tests copied from Go's `context` package (go1.27.3) and rewritten in Rust for `tether::go`,
//! one module per Go file. Each module lists the Go tests that do not apply, and why.
//!
//! Go's tests are covered by this licence:
//!
//! Copyright 2009 The Go Authors.
//!
//! Redistribution and use in source and binary forms, with or without modification, are permitted
//! provided that the following conditions are met:
//!
//!    * Redistributions of source code must retain the above copyright notice, this list of
//!      conditions and the following disclaimer.
//!    * Redistributions in binary form must reproduce the above copyright notice, this list of
//!      conditions and the following disclaimer in the documentation and/or other materials
//!      provided with the distribution.
//!    * Neither the name of Google LLC nor the names of its contributors may be used to endorse or
//!      promote products derived from this software without specific prior written permission.
//!
//! THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR
//! IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
//! FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR
//! CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
//! DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
//! DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY,
//! WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY
//! WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

use crossbeam_channel::{Receiver, TryRecvError};
use std::any::Any;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tether::go::{self, AnyKey, Ctx};
use tether::{CancelError, Cause, Done};

/// A reasonable duration to block in a test (Go's `shortDuration`).
const SHORT_DURATION: Duration = Duration::from_millis(1);
/// An arbitrary upper bound on a test's running time (Go's `veryLongDuration`).
const VERY_LONG_DURATION: Duration = Duration::from_secs(1000 * 3600);
/// By when remaining work must have completed (Go's `quiescent`).
const QUIESCENT: Duration = Duration::from_secs(5);

/// A non-blocking receive on a done channel: true if it is closed. `None` (Go's nil channel)
/// blocks for ever, so it is never closed.
fn closed(done: Option<Done<'_>>) -> bool {
    done.is_some_and(|rx| matches!(rx.try_recv(), Err(TryRecvError::Disconnected)))
}

/// Waits for a done channel, at most `QUIESCENT`; true if it closed.
fn wait_done(ctx: &dyn go::GoContext) -> bool {
    let done = ctx.done().expect("a cancellable context has a done channel");
    matches!(done.recv_timeout(QUIESCENT), Err(crossbeam_channel::RecvTimeoutError::Disconnected))
}

fn named(msg: &str) -> Cause {
    Cause::custom(std::io::Error::other(msg.to_string()))
}

/// Go's `otherContext`: a context type the package does not know, embedding one it does. Like Go's
/// embedding, it forwards every method but the name.
#[derive(Clone)]
struct OtherContext<C: go::GoContext + Clone>(C);

impl<C: go::GoContext + Clone> go::GoContext for OtherContext<C> {
    fn deadline(&self) -> Option<Instant> {
        self.0.deadline()
    }
    fn done(&self) -> Option<Done<'_>> {
        self.0.done()
    }
    fn err(&self) -> Option<CancelError> {
        self.0.err()
    }
    fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
        self.0.value(key)
    }
}

/// https://github.com/golang/go/blob/go1.27.3/src/context/x_test.go
///
/// Copyright 2016 The Go Authors. All rights reserved. Use of this source code is governed by a
/// BSD-style license that can be found in the LICENSE file.
///
/// Not applicable:
/// - `TestAllocs`: counts Go heap allocations per call; tether's allocation budget is tested on
///   the native engine, and Go's numbers do not transfer.
/// - `TestWithValueChecksKey`, `TestInvalidDerivedFail`: a nil parent, a nil key and a
///   non-comparable key cannot be expressed in Rust (references are non-null; keys are `Key<T>`
///   or strings).
mod x_test {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tether::Key;

    #[test]
    fn background_is_never_done_and_prints_its_name() {
        let c = go::background();
        assert!(c.done().is_none(), "Go's nil channel: blocks for ever");
        assert_eq!(c.to_string(), "context.Background");
    }

    #[test]
    fn todo_is_never_done_and_prints_its_name() {
        let c = go::todo();
        assert!(c.done().is_none());
        assert_eq!(c.to_string(), "context.TODO");
    }

    #[test]
    fn with_cancel_propagates_synchronously_through_an_other_context() {
        let (c1, cancel) = go::with_cancel(&go::background());
        assert_eq!(c1.to_string(), "context.Background.WithCancel");
        let o = OtherContext(c1.clone());
        let (c2, _cancel2) = go::with_cancel(&o);
        let contexts: [&dyn go::GoContext; 3] = [&c1, &o, &c2];
        for (i, c) in contexts.iter().enumerate() {
            assert!(c.done().is_some(), "c[{i}].done() is None");
            assert_eq!(c.err(), None, "c[{i}].err()");
            assert!(!closed(c.done()), "c[{i}] should block");
        }
        cancel.cancel(); // should propagate synchronously
        for (i, c) in contexts.iter().enumerate() {
            assert!(closed(c.done()), "<-c[{i}].done() blocked, but shouldn't have");
            assert_eq!(c.err(), Some(CancelError::Cancelled), "c[{i}].err()");
        }
    }

    fn test_deadline(c: &dyn go::GoContext, name: &str) {
        assert!(wait_done(c), "{name}: context not timed out after {QUIESCENT:?}");
        assert_eq!(c.err(), Some(CancelError::DeadlineExceeded), "{name}");
    }

    #[test]
    fn with_deadline_times_out_directly_through_other_contexts_and_in_the_past() {
        let bg = go::background();
        let (c, _x) = go::with_deadline(&bg, Instant::now() + SHORT_DURATION);
        assert!(c.to_string().starts_with("context.Background.WithDeadline("), "{c}");
        test_deadline(&c, "WithDeadline");

        let (c, _x) = go::with_deadline(&bg, Instant::now() + SHORT_DURATION);
        test_deadline(&OtherContext(c), "WithDeadline+otherContext");

        let (c, _x) = go::with_deadline(&bg, Instant::now() + SHORT_DURATION);
        let (c, _y) = go::with_deadline(&OtherContext(c), Instant::now() + VERY_LONG_DURATION);
        test_deadline(&c, "WithDeadline+otherContext+WithDeadline");

        let (c, _x) = go::with_deadline(&bg, Instant::now() - SHORT_DURATION);
        test_deadline(&c, "WithDeadline+inthepast");

        let (c, _x) = go::with_deadline(&bg, Instant::now());
        test_deadline(&c, "WithDeadline+now");
    }

    #[test]
    fn with_timeout_times_out_directly_and_through_other_contexts() {
        let bg = go::background();
        let (c, _x) = go::with_timeout(&bg, SHORT_DURATION);
        assert!(c.to_string().starts_with("context.Background.WithDeadline("), "{c}");
        test_deadline(&c, "WithTimeout");

        let (c, _x) = go::with_timeout(&bg, SHORT_DURATION);
        test_deadline(&OtherContext(c), "WithTimeout+otherContext");

        let (c, _x) = go::with_timeout(&bg, SHORT_DURATION);
        let (c, _y) = go::with_timeout(&OtherContext(c), VERY_LONG_DURATION);
        test_deadline(&c, "WithTimeout+otherContext+WithTimeout");
    }

    #[test]
    fn cancelling_a_timeout_below_an_other_context_is_synchronous() {
        let (c, _x) = go::with_timeout(&go::background(), Duration::from_secs(1));
        let (c, cancel) = go::with_timeout(&OtherContext(c), VERY_LONG_DURATION);
        cancel.cancel();
        assert!(closed(c.done()));
        assert_eq!(c.err(), Some(CancelError::Cancelled));
    }

    // Go's key1 (no String method: prints its type) and key2 (prints "context_test.key2(n)").
    static K1: Key<&'static str> = Key::new("context_test.key1");
    static K2: Key<&'static str> = Key::new("context_test.key2(1)");
    static K3: Key<&'static str> = Key::new("context_test.key2(3)");

    fn check(c: &dyn go::GoContext, nm: &str, v1: &str, v2: &str, v3: &str) {
        for (key, want, k) in [(&K1, v1, "k1"), (&K2, v2, "k2"), (&K3, v3, "k3")] {
            let got = c.value(AnyKey::from(key)).and_then(|v| v.downcast_ref::<&str>()).copied();
            let want = (!want.is_empty()).then_some(want);
            assert_eq!(got, want, "{nm}.value({k})");
        }
    }

    #[test]
    fn values_are_found_by_key_identity_and_hidden_by_nil() {
        let bg = go::background();
        check(&bg, "c0", "", "", "");

        let c1 = go::with_value(&bg, &K1, "c1k1");
        check(&c1, "c1", "c1k1", "", "");
        assert_eq!(c1.to_string(), "context.Background.WithValue(context_test.key1, c1k1)");

        let c2 = go::with_value(&c1, &K2, "c2k2");
        check(&c2, "c2", "c1k1", "c2k2", "");
        assert_eq!(
            c2.to_string(),
            "context.Background.WithValue(context_test.key1, c1k1).WithValue(context_test.key2(1), c2k2)"
        );

        let c3 = go::with_value(&c2, &K3, "c3k3");
        check(&c3, "c2", "c1k1", "c2k2", "c3k3");

        let c4 = go::with_nil_value(&c3, &K1);
        check(&c4, "c4", "", "c2k2", "c3k3");
        assert_eq!(
            c4.to_string(),
            "context.Background.WithValue(context_test.key1, c1k1).WithValue(context_test.key2(1), c2k2)\
             .WithValue(context_test.key2(3), c3k3).WithValue(context_test.key1, <nil>)"
        );

        let o0 = OtherContext(go::background());
        check(&o0, "o0", "", "", "");

        let o1 = OtherContext(go::with_value(&bg, &K1, "c1k1"));
        check(&o1, "o1", "c1k1", "", "");

        let o2 = go::with_value(&o1, &K2, "o2k2");
        check(&o2, "o2", "c1k1", "o2k2", "");

        let o3 = OtherContext(c4);
        check(&o3, "o3", "", "c2k2", "c3k3");

        let o4 = go::with_nil_value(&o3, &K3);
        check(&o4, "o4", "", "c2k2", "");
    }

    #[test]
    fn string_keys_compare_by_contents_like_go_strings() {
        let ctx = go::with_value(&go::background(), "key", String::from("value"));
        let key = String::from("key");
        assert_eq!(
            ctx.value(&key).and_then(|v| v.downcast_ref::<String>()).map(String::as_str),
            Some("value")
        );
        assert!(ctx.value("other").is_none());
    }

    #[test]
    fn simultaneous_cancels_of_a_tree_all_complete() {
        let (root, cancel) = go::with_cancel(&go::background());
        let mut all = vec![(root.clone(), cancel)];
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(parent) = queue.pop_front() {
            if all.len() >= 100 {
                break;
            }
            for _ in 0..4 {
                let (ctx, cancel) = go::with_cancel(&parent);
                all.push((ctx.clone(), cancel));
                queue.push_back(ctx);
            }
        }
        let threads: Vec<_> = all
            .iter()
            .rev()
            .map(|(_, cancel)| {
                let cancel = cancel.clone();
                std::thread::spawn(move || cancel.cancel())
            })
            .collect();
        for (ctx, _) in &all {
            assert!(wait_done(ctx), "timed out waiting for <-ctx.done()");
        }
        for t in threads {
            t.join().expect("cancel functions return");
        }
    }

    #[test]
    fn interlocked_cancels_do_not_deadlock() {
        let (parent, cancel_parent) = go::with_cancel(&go::background());
        let (child, cancel_child) = go::with_cancel(&parent);
        let watcher = {
            let parent = parent.clone();
            std::thread::spawn(move || {
                let _ = parent.done().unwrap().recv();
                cancel_child.cancel();
            })
        };
        cancel_parent.cancel();
        assert!(wait_done(&child));
        watcher.join().unwrap();
    }

    /// Go's `testLayers`: a random stack of values, cancels and timeouts (seeded xorshift).
    fn test_layers(seed: u64, test_timeout: bool) {
        let mut state = seed | 1;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut vals = Vec::new();
        let mut cancels = Vec::new();
        let mut num_timers = 0;
        let mut ctx = go::background();
        let mut i = 0;
        while i < 30 || num_timers == 0 || cancels.is_empty() || vals.is_empty() {
            match next(3) {
                0 => {
                    let key = format!("value-{i}");
                    ctx = go::with_value(&ctx, key.clone(), i);
                    vals.push((key, i));
                }
                1 => {
                    let (c, cancel) = go::with_cancel(&ctx);
                    ctx = c;
                    cancels.push(cancel);
                }
                _ => {
                    let d = if test_timeout { SHORT_DURATION } else { VERY_LONG_DURATION };
                    let (c, cancel) = go::with_timeout(&ctx, d);
                    ctx = c;
                    cancels.push(cancel);
                    num_timers += 1;
                }
            }
            i += 1;
        }
        let check_values = |when: &str| {
            for (key, want) in &vals {
                assert_eq!(
                    ctx.value(key).and_then(|v| v.downcast_ref::<i32>()),
                    Some(want),
                    "seed={seed} {when}"
                );
            }
        };
        if !test_timeout {
            assert!(!closed(ctx.done()), "seed={seed}: ctx should not be cancelled yet");
        }
        assert!(ctx.to_string().starts_with("context.Background."), "{ctx}");
        check_values("before cancel");
        if test_timeout {
            assert!(wait_done(&ctx), "seed={seed}: ctx should have timed out");
            check_values("after timeout");
        } else {
            cancels[next(cancels.len() as u64) as usize].cancel();
            assert!(closed(ctx.done()), "seed={seed}: ctx should be cancelled");
            check_values("after cancel");
        }
    }

    #[test]
    fn layers_cancel() {
        for seed in 1..20 {
            test_layers(seed * 7919, false);
        }
    }

    #[test]
    fn layers_timeout() {
        for seed in 1..5 {
            test_layers(seed * 104_729, true);
        }
    }

    #[test]
    fn a_child_of_a_cancelled_parent_is_born_cancelled_with_its_cause() {
        let (parent, pcancel) = go::with_cancel_cause(&go::background());
        let cause = named("Because!");
        pcancel.cancel(cause.clone());
        let (c, _x) = go::with_cancel(&parent);
        assert!(closed(c.done()), "child not done immediately upon construction");
        assert_eq!(c.err(), Some(CancelError::Cancelled));
        assert!(go::cause(&c).unwrap().is_same(&cause));
    }

    #[test]
    fn a_child_of_a_simultaneously_cancelled_parent_gets_its_cause() {
        for _ in 0..100 {
            let (parent, pcancel) = go::with_cancel_cause(&go::background());
            let cause = named("Because!");
            let t = {
                let cause = cause.clone();
                std::thread::spawn(move || pcancel.cancel(cause))
            };
            let (c, _x) = go::with_cancel(&parent);
            assert!(wait_done(&c));
            assert_eq!(c.err(), Some(CancelError::Cancelled));
            assert!(go::cause(&c).unwrap().is_same(&cause));
            t.join().unwrap();
        }
    }

    #[test]
    fn deadline_exceeded_supports_timeout() {
        assert!(CancelError::DeadlineExceeded.is_timeout());
        assert!(go::is_timeout(CancelError::DeadlineExceeded));
    }

    #[test]
    fn cause_table() {
        let forever = Duration::from_secs(1_000_000);
        let parent_cause = named("parentCause");
        let child_cause = named("childCause");
        let too_slow = named("tooSlow");
        let finished_early = named("finishedEarly");
        let bg = go::background();
        let p = &parent_cause;
        let ch = &child_cause;
        type Case<'a> =
            (&'a str, Box<dyn Fn() -> Box<dyn go::GoContext> + 'a>, Option<CancelError>, Option<Cause>);
        let cases: Vec<Case<'_>> = vec![
            ("Background", Box::new(|| Box::new(go::background())), None, None),
            ("TODO", Box::new(|| Box::new(go::todo())), None, None),
            (
                "WithCancel",
                Box::new(|| {
                    let (c, cancel) = go::with_cancel(&bg);
                    cancel.cancel();
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(Cause::Cancelled),
            ),
            (
                "WithCancelCause",
                Box::new(|| {
                    let (c, cancel) = go::with_cancel_cause(&bg);
                    cancel.cancel(p.clone());
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(p.clone()),
            ),
            (
                "WithCancelCause nil",
                Box::new(|| {
                    let (c, cancel) = go::with_cancel_cause(&bg);
                    cancel.cancel(None);
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(Cause::Cancelled),
            ),
            (
                "WithCancelCause: parent cause before child",
                Box::new(|| {
                    let (c, cancel_parent) = go::with_cancel_cause(&bg);
                    let (c, cancel_child) = go::with_cancel_cause(&c);
                    cancel_parent.cancel(p.clone());
                    cancel_child.cancel(ch.clone());
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(p.clone()),
            ),
            (
                "WithCancelCause: parent cause after child",
                Box::new(|| {
                    let (c, cancel_parent) = go::with_cancel_cause(&bg);
                    let (c, cancel_child) = go::with_cancel_cause(&c);
                    cancel_child.cancel(ch.clone());
                    cancel_parent.cancel(p.clone());
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(ch.clone()),
            ),
            (
                "WithCancelCause: parent cause before nil",
                Box::new(|| {
                    let (c, cancel_parent) = go::with_cancel_cause(&bg);
                    let (c, cancel_child) = go::with_cancel(&c);
                    cancel_parent.cancel(p.clone());
                    cancel_child.cancel();
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(p.clone()),
            ),
            (
                "WithCancelCause: parent cause after nil",
                Box::new(|| {
                    let (c, cancel_parent) = go::with_cancel_cause(&bg);
                    let (c, cancel_child) = go::with_cancel(&c);
                    cancel_child.cancel();
                    cancel_parent.cancel(p.clone());
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(Cause::Cancelled),
            ),
            (
                "WithCancelCause: child cause after nil",
                Box::new(|| {
                    let (c, cancel_parent) = go::with_cancel(&bg);
                    let (c, cancel_child) = go::with_cancel_cause(&c);
                    cancel_parent.cancel();
                    cancel_child.cancel(ch.clone());
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(Cause::Cancelled),
            ),
            (
                "WithCancelCause: child cause before nil",
                Box::new(|| {
                    let (c, cancel_parent) = go::with_cancel(&bg);
                    let (c, cancel_child) = go::with_cancel_cause(&c);
                    cancel_child.cancel(ch.clone());
                    cancel_parent.cancel();
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(ch.clone()),
            ),
            (
                "WithTimeout",
                Box::new(|| {
                    let (c, cancel) = go::with_timeout(&bg, Duration::ZERO);
                    cancel.cancel();
                    Box::new(c)
                }),
                Some(CancelError::DeadlineExceeded),
                Some(Cause::DeadlineExceeded),
            ),
            (
                "WithTimeout canceled",
                Box::new(|| {
                    let (c, cancel) = go::with_timeout(&bg, forever);
                    cancel.cancel();
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(Cause::Cancelled),
            ),
            (
                "WithTimeoutCause",
                Box::new(|| {
                    let (c, cancel) = go::with_timeout_cause(&bg, Duration::ZERO, too_slow.clone());
                    cancel.cancel();
                    Box::new(c)
                }),
                Some(CancelError::DeadlineExceeded),
                Some(too_slow.clone()),
            ),
            (
                "WithTimeoutCause canceled",
                Box::new(|| {
                    let (c, cancel) = go::with_timeout_cause(&bg, forever, too_slow.clone());
                    cancel.cancel();
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(Cause::Cancelled),
            ),
            (
                "WithTimeoutCause stacked",
                Box::new(|| {
                    let (c, cancel) = go::with_cancel_cause(&bg);
                    let (c, _x) = go::with_timeout_cause(&c, Duration::ZERO, too_slow.clone());
                    cancel.cancel(finished_early.clone());
                    Box::new(c)
                }),
                Some(CancelError::DeadlineExceeded),
                Some(too_slow.clone()),
            ),
            (
                "WithTimeoutCause stacked canceled",
                Box::new(|| {
                    let (c, cancel) = go::with_cancel_cause(&bg);
                    let (c, _x) = go::with_timeout_cause(&c, forever, too_slow.clone());
                    cancel.cancel(finished_early.clone());
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(finished_early.clone()),
            ),
            ("WithoutCancel", Box::new(|| Box::new(go::without_cancel(&bg))), None, None),
            (
                "WithoutCancel canceled",
                Box::new(|| {
                    let (c, cancel) = go::with_cancel_cause(&bg);
                    let c = go::without_cancel(&c);
                    cancel.cancel(finished_early.clone());
                    Box::new(c)
                }),
                None,
                None,
            ),
            (
                "WithoutCancel timeout",
                Box::new(|| {
                    let (c, cancel) = go::with_timeout_cause(&bg, Duration::ZERO, too_slow.clone());
                    let c = go::without_cancel(&c);
                    cancel.cancel();
                    Box::new(c)
                }),
                None,
                None,
            ),
            (
                "parent of custom context not canceled",
                Box::new(|| {
                    let (c, _x) = go::with_cancel_cause(&bg);
                    let (c, cancel2) = CustomContext::new(c);
                    cancel2();
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(Cause::Cancelled),
            ),
            (
                "parent of custom context is canceled before",
                Box::new(|| {
                    let (c, cancel1) = go::with_cancel_cause(&bg);
                    let (c, cancel2) = CustomContext::new(c);
                    cancel1.cancel(p.clone());
                    cancel2();
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(p.clone()),
            ),
            (
                // As in Go: "this isn't really right", but a custom context cannot tell which
                // was cancelled first, so it reports the parent's cause.
                "parent of custom context is canceled after",
                Box::new(|| {
                    let (c, cancel1) = go::with_cancel_cause(&bg);
                    let (c, cancel2) = CustomContext::new(c);
                    cancel2();
                    cancel1.cancel(p.clone());
                    Box::new(c)
                }),
                Some(CancelError::Cancelled),
                Some(p.clone()),
            ),
        ];
        for (name, make, err, cause) in cases {
            let ctx = make();
            assert_eq!(ctx.err(), err, "{name}: err");
            let got = go::cause(&*ctx);
            assert!(
                match (&got, &cause) {
                    (Some(a), Some(b)) => a.is_same(b),
                    (None, None) => true,
                    _ => false,
                },
                "{name}: cause = {got:?}, want {cause:?}"
            );
        }
    }

    #[test]
    fn cause_is_synchronized_with_a_concurrent_cancel() {
        let cause = named("TestCauseRace");
        let (ctx, cancel) = go::with_cancel_cause(&go::background());
        let t = {
            let cause = cause.clone();
            std::thread::spawn(move || cancel.cancel(cause))
        };
        loop {
            // Poll the cause rather than waiting for done.
            if let Some(got) = go::cause(&ctx) {
                assert!(got.is_same(&cause), "cause = {got}");
                break;
            }
            std::thread::yield_now();
        }
        t.join().unwrap();
    }

    #[test]
    fn without_cancel_keeps_values_and_drops_deadline_done_and_err() {
        let ctx = go::with_value(&go::background(), "key", "value");
        let ctx = go::without_cancel(&ctx);
        assert_eq!(ctx.deadline(), None);
        assert!(ctx.done().is_none());
        assert_eq!(ctx.err(), None);
        assert_eq!(ctx.value("key").and_then(|v| v.downcast_ref::<&str>()), Some(&"value"));
    }

    /// Go's `customDoneContext`: forwards everything but `Done`, which is its own channel.
    #[derive(Clone)]
    struct CustomDoneContext {
        ctx: Ctx,
        donec: Receiver<Infallible>,
    }

    impl go::GoContext for CustomDoneContext {
        fn deadline(&self) -> Option<Instant> {
            self.ctx.deadline()
        }
        fn done(&self) -> Option<Done<'_>> {
            Some(Done::from(&self.donec))
        }
        fn err(&self) -> Option<CancelError> {
            self.ctx.err()
        }
        fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
            self.ctx.value(key)
        }
    }

    #[test]
    fn a_custom_done_channel_is_watched_and_the_embedded_cause_reported() {
        let cause = named("TestCustomContextPropagation");
        let (donec_tx, donec) = crossbeam_channel::bounded::<Infallible>(0);
        let (ctx1, cancel1) = go::with_cancel_cause(&go::background());
        let ctx2 = CustomDoneContext { ctx: ctx1, donec };
        let (ctx3, _cancel3) = go::with_cancel(&ctx2);
        cancel1.cancel(cause.clone());
        drop(donec_tx); // close(donec)
        assert!(wait_done(&ctx3));
        assert_eq!(ctx3.err(), Some(CancelError::Cancelled));
        assert!(go::cause(&ctx3).unwrap().is_same(&cause));
    }

    /// Go's `customCauseContext`: its own done channel and error, no values, and a child it
    /// cancels itself.
    /// The receiver is kept outside the lock: `done()` lends it.
    #[derive(Clone)]
    struct CustomCauseContext(Arc<Mutex<CauseState>>, Receiver<Infallible>);

    struct CauseState {
        done_tx: Option<crossbeam_channel::Sender<Infallible>>,
        err: Option<CancelError>,
        cancel_child: Option<go::CancelFunc>,
    }

    impl Default for CustomCauseContext {
        fn default() -> Self {
            let (tx, rx) = crossbeam_channel::bounded(0);
            let state = CauseState { done_tx: Some(tx), err: None, cancel_child: None };
            CustomCauseContext(Arc::new(Mutex::new(state)), rx)
        }
    }

    impl CustomCauseContext {
        fn cancel(&self) {
            let cancel_child = {
                let mut s = self.0.lock().unwrap();
                s.err = Some(CancelError::Cancelled);
                s.done_tx = None; // close(done)
                s.cancel_child.clone()
            };
            if let Some(cancel_child) = cancel_child {
                cancel_child.cancel();
            }
        }
    }

    impl go::GoContext for CustomCauseContext {
        fn deadline(&self) -> Option<Instant> {
            None
        }
        fn done(&self) -> Option<Done<'_>> {
            Some(Done::from(&self.1))
        }
        fn err(&self) -> Option<CancelError> {
            self.0.lock().unwrap().err
        }
        fn value(&self, _key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
            None
        }
    }

    #[test]
    fn cause_of_custom_contexts_and_their_children() {
        // A cancelled custom context: err and cause are Cancelled.
        let ccc = CustomCauseContext::default();
        ccc.cancel();
        assert_eq!(go::GoContext::err(&ccc), Some(CancelError::Cancelled));
        assert_eq!(go::cause(&ccc), Some(Cause::Cancelled));

        // A child cancelled with a cause has it; the custom parent is not cancelled.
        let ccc = CustomCauseContext::default();
        let (ctx, cause_func) = go::with_cancel_cause(&ccc);
        let cause = named("TestCustomContextCause");
        cause_func.cancel(cause.clone());
        assert_eq!(ctx.err(), Some(CancelError::Cancelled));
        assert!(go::cause(&ctx).unwrap().is_same(&cause));
        assert_eq!(go::GoContext::err(&ccc), None);
        assert_eq!(go::cause(&ccc), None);

        // Cancelling the custom parent now leaves the child's cause alone.
        ccc.cancel();
        assert!(go::cause(&ctx).unwrap().is_same(&cause));
        assert_eq!(go::GoContext::err(&ccc), Some(CancelError::Cancelled));
        assert_eq!(go::cause(&ccc), Some(Cause::Cancelled));

        // A custom context that cancels its child itself.
        let ccc = CustomCauseContext::default();
        let (ctx, cancel_func) = go::with_cancel(&ccc);
        ccc.0.lock().unwrap().cancel_child = Some(cancel_func);
        ccc.cancel();
        assert_eq!(ctx.err(), Some(CancelError::Cancelled));
        assert_eq!(go::cause(&ctx), Some(Cause::Cancelled));
        assert_eq!(go::cause(&ccc), Some(Cause::Cancelled));
    }

    #[test]
    fn after_func_is_called_after_cancel_and_not_before() {
        let (ctx, cancel) = go::with_cancel(&go::background());
        let (tx, donec) = crossbeam_channel::bounded::<()>(0);
        let stop = go::after_func(&ctx, move || drop(tx));
        assert!(donec.recv_timeout(SHORT_DURATION).is_err_and(|e| e.is_timeout()), "called before done");
        cancel.cancel();
        assert!(donec.recv_timeout(QUIESCENT).is_err_and(|e| e.is_disconnected()), "not called");
        assert!(!stop.stop(), "stop() = true, want false");
    }

    #[test]
    fn after_func_is_called_after_a_timeout() {
        let (ctx, _cancel) = go::with_timeout(&go::background(), SHORT_DURATION);
        let (tx, donec) = crossbeam_channel::bounded::<()>(0);
        let _stop = go::after_func(&ctx, move || drop(tx));
        assert!(donec.recv_timeout(QUIESCENT).is_err_and(|e| e.is_disconnected()));
    }

    #[test]
    fn after_func_is_called_immediately_on_a_cancelled_context() {
        let (ctx, cancel) = go::with_cancel(&go::background());
        cancel.cancel();
        let (tx, donec) = crossbeam_channel::bounded::<()>(0);
        let _stop = go::after_func(&ctx, move || drop(tx));
        assert!(donec.recv_timeout(QUIESCENT).is_err_and(|e| e.is_disconnected()));
    }

    #[test]
    fn after_func_is_not_called_after_stop() {
        let (ctx, cancel) = go::with_cancel(&go::background());
        let (tx, donec) = crossbeam_channel::bounded::<()>(0);
        let stop = go::after_func(&ctx, move || drop(tx));
        assert!(stop.stop(), "stop() = false, want true");
        cancel.cancel();
        // The closure was dropped by stop(): its sender is gone without a call.
        assert!(donec.recv_timeout(SHORT_DURATION).is_err_and(|e| e.is_disconnected()));
        assert!(!stop.stop(), "stop() = true, want false");
    }

    #[test]
    fn cancel_does_not_wait_for_after_funcs() {
        let (ctx, cancel) = go::with_cancel(&go::background());
        let (tx, donec) = crossbeam_channel::bounded::<()>(0);
        // The send blocks until donec is read from, which happens only after cancel returns.
        let _stop = go::after_func(&ctx, move || tx.send(()).unwrap());
        cancel.cancel();
        assert!(donec.recv_timeout(QUIESCENT).is_ok(), "AfterFunc not called after cancel");
    }

    /// Go's `customContext`: its own done channel, closed by its cancel function or by an
    /// AfterFunc on its parent; values and the cause come from the parent.
    #[derive(Clone)]
    pub(super) struct CustomContext {
        parent: Ctx,
        /// The sender of `donec` until it is closed, and the error set then.
        state: Arc<Mutex<CustomState>>,
        donec: Receiver<Infallible>,
    }

    type CustomState = (Option<crossbeam_channel::Sender<Infallible>>, Option<CancelError>);

    impl CustomContext {
        pub(super) fn new(parent: Ctx) -> (CustomContext, impl Fn()) {
            let (tx, donec) = crossbeam_channel::bounded(0);
            let c = CustomContext {
                parent: parent.clone(),
                state: Arc::new(Mutex::new((Some(tx), None))),
                donec,
            };
            let finish = |c: &CustomContext, err: Option<CancelError>| {
                let mut s = c.state.lock().unwrap();
                if s.0.take().is_some() {
                    s.1 = err;
                }
            };
            let on_parent = c.clone();
            let _stop = go::after_func(&parent, move || finish(&on_parent, on_parent.parent.err()));
            let on_cancel = c.clone();
            (c, move || finish(&on_cancel, Some(CancelError::Cancelled)))
        }
    }

    impl go::GoContext for CustomContext {
        fn deadline(&self) -> Option<Instant> {
            self.parent.deadline()
        }
        fn done(&self) -> Option<Done<'_>> {
            Some(Done::from(&self.donec))
        }
        fn err(&self) -> Option<CancelError> {
            if closed(Some(Done::from(&self.donec))) { self.state.lock().unwrap().1 } else { None }
        }
        fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
            self.parent.value(key)
        }
    }

    #[test]
    fn err_is_never_set_before_done_is_closed() {
        // Go issue 75533.
        for _ in 0..10 {
            let (ctx, cancel) = go::with_cancel(&go::background());
            let donec = ctx.done();
            let t = std::thread::spawn(move || cancel.cancel());
            while ctx.err().is_none() {
                std::hint::spin_loop();
            }
            assert!(closed(donec), "ctx.err() is set, but ctx.done() is not closed");
            t.join().unwrap();
        }
    }
}

/// https://github.com/golang/go/blob/go1.27.3/src/context/context_test.go
///
/// Copyright 2014 The Go Authors. All rights reserved. Use of this source code is governed by a
/// BSD-style license that can be found in the LICENSE file.
///
/// Go's internal tests inspect `cancelCtx.children`; here the same linkage is read from the
/// native node through `tether::Context::registered_children`, with a native root viewed as a
/// Go context. Two differences of the native engine: Go counts an `AfterFunc` as a child, here it
/// is an on-cancel callback of the node (checked through its stop function); and Go removes a
/// cancelled child from its parent at once, while the engine unlinks it when its last handle is
/// dropped (so these tests drop the child before counting).
mod context_test {
    use super::*;

    #[test]
    fn parent_finishes_child() {
        // parent -> cancel_child; parent -> value_child -> timer_child; parent -> after_func
        let native = tether::Context::new();
        let parent = Ctx::from(native.clone());
        let cancel = || native.cancel();
        let (cancel_child, _stop1) = go::with_cancel(&parent);
        let value_child = go::with_value(&parent, "key", "value");
        let (timer_child, _stop2) = go::with_timeout(&value_child, VERY_LONG_DURATION);
        let after_stop = go::after_func(&parent, || {});

        for (name, c) in
            [("parent", &parent), ("cancel", &cancel_child), ("timer", &timer_child), ("value", &value_child)]
        {
            assert!(!closed(c.done()), "<-{name}.done() should block");
        }
        // A value layer shares its parent's node: two children.
        assert_eq!(native.registered_children(), 2, "bad linkage");

        cancel();
        assert_eq!(native.registered_children(), 0, "cancel didn't clear the children");
        assert!(!after_stop.stop(), "the AfterFunc was started by the cancel");

        for (name, c) in
            [("parent", &parent), ("cancel", &cancel_child), ("value", &value_child), ("timer", &timer_child)]
        {
            assert!(closed(c.done()), "<-{name}.done() blocked, but shouldn't have");
            assert_eq!(c.err(), Some(CancelError::Cancelled), "{name}.err()");
        }

        // WithValue of a cancelled parent is cancelled.
        let precancelled = go::with_value(&parent, "key", "value");
        assert!(closed(precancelled.done()));
        assert_eq!(precancelled.err(), Some(CancelError::Cancelled));
    }

    #[test]
    fn child_finishes_first() {
        let native = tether::Context::new();
        let cancellable = Ctx::from(native.clone());
        for (parent, registered) in [(go::background(), None), (cancellable, Some(&native))] {
            let (child, cancel) = go::with_cancel(&parent);
            assert!(!closed(parent.done()) && !closed(child.done()));
            if let Some(native) = registered {
                assert_eq!(native.registered_children(), 1, "bad linkage");
            }
            cancel.cancel();
            assert!(closed(child.done()));
            assert_eq!(child.err(), Some(CancelError::Cancelled));
            assert!(!closed(parent.done()));
            assert_eq!(parent.err(), None);
            drop((child, cancel));
            if let Some(native) = registered {
                assert_eq!(native.registered_children(), 0, "the child did not detach");
            }
        }
    }

    #[test]
    fn cancel_removes_the_child_from_its_parent() {
        let native = tether::Context::new();
        let ctx = Ctx::from(native.clone());
        assert_eq!(native.registered_children(), 0);
        let (c, cancel) = go::with_cancel(&ctx);
        assert_eq!(native.registered_children(), 1);
        cancel.cancel();
        drop((c, cancel));
        assert_eq!(native.registered_children(), 0);

        let (c, cancel) = go::with_timeout(&ctx, Duration::from_secs(3600));
        assert_eq!(native.registered_children(), 1);
        cancel.cancel();
        drop((c, cancel));
        assert_eq!(native.registered_children(), 0);

        let stop = go::after_func(&ctx, || {});
        assert!(stop.stop(), "stopping removes the AfterFunc before it ran");
    }

    /// Go's `myDoneCtx`: a custom context whose `Done` is a fresh channel no one closes.
    #[derive(Clone)]
    struct MyDoneCtx(Ctx);

    impl go::GoContext for MyDoneCtx {
        fn deadline(&self) -> Option<Instant> {
            self.0.deadline()
        }
        fn done(&self) -> Option<Done<'_>> {
            // Go makes a fresh channel per call; one shared channel is as open, and can be lent.
            static NEVER_CLOSED: std::sync::OnceLock<Receiver<Infallible>> = std::sync::OnceLock::new();
            Some(Done::from(NEVER_CLOSED.get_or_init(|| {
                let (tx, rx) = crossbeam_channel::bounded(0);
                std::mem::forget(tx); // never closed
                rx
            })))
        }
        fn err(&self) -> Option<CancelError> {
            self.0.err()
        }
        fn value(&self, key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
            self.0.value(key)
        }
    }

    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
    }

    /// Go's `XTestCustomContextGoroutines` counts goroutines: Go spends one per derivation from a
    /// context it cannot see through. tether spends none: a thousand such derivations add at most
    /// the one shared watcher thread (the slack is for other tests running in parallel).
    #[test]
    fn deriving_from_custom_contexts_spends_no_thread_per_derivation() {
        let before = threads();
        let mut keep = Vec::new();
        for _ in 0..1000 {
            keep.push(go::with_cancel(&MyDoneCtx(go::background())));
            keep.push(go::with_timeout(&MyDoneCtx(go::background()), VERY_LONG_DURATION));
        }
        let after = threads();
        assert!(after < before + 100, "{} threads started for 2000 derivations", after - before);
        for (_, cancel) in &keep {
            cancel.cancel();
        }

        // Wrappers that forward to a native node are seen through: not even a watch entry.
        let (ctx1, cancel1) = go::with_cancel(&go::background());
        let (ctx3, _c3) = go::with_cancel(&OtherContext(ctx1));
        let (ctx4, _c4) = go::with_timeout(&ctx3, VERY_LONG_DURATION);
        let (ctx5, _c5) = go::with_cancel(&ctx4);
        cancel1.cancel();
        assert_eq!(ctx5.err(), Some(CancelError::Cancelled), "propagated synchronously");
    }
}

/// https://github.com/golang/go/blob/go1.27.3/src/context/afterfunc_test.go
///
/// Copyright 2023 The Go Authors. All rights reserved. Use of this source code is governed by a
/// BSD-style license that can be found in the LICENSE file.
///
/// All tests apply. Go's `afterFuncContext` implements the `AfterFunc` method; here it implements
/// [`go::GoContext::after_func`].
mod afterfunc_test {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Fire = Box<dyn FnOnce() + Send>;

    #[derive(Default)]
    struct State {
        after_funcs: HashMap<u64, Fire>,
        next: u64,
        /// The sender of the done channel, once `done()` has made it (its receiver is lent from
        /// outside the lock); dropped by the cancellation.
        done_tx: Option<crossbeam_channel::Sender<Infallible>>,
        err: Option<CancelError>,
    }

    /// Go's `afterFuncContext`: a custom context with its own AfterFunc registry.
    #[derive(Clone, Default)]
    struct AfterFuncContext(Arc<Mutex<State>>, Arc<std::sync::OnceLock<Receiver<Infallible>>>);

    impl AfterFuncContext {
        fn cancel(&self, err: CancelError) {
            let fired: Vec<Fire> = {
                let mut s = self.0.lock().unwrap();
                if s.err.is_some() {
                    return;
                }
                s.err = Some(err);
                s.done_tx = None;
                s.after_funcs.drain().map(|(_, f)| f).collect()
            };
            for f in fired {
                std::thread::spawn(f);
            }
        }

        fn registered(&self) -> usize {
            self.0.lock().unwrap().after_funcs.len()
        }
    }

    impl go::GoContext for AfterFuncContext {
        fn deadline(&self) -> Option<Instant> {
            None
        }
        fn done(&self) -> Option<Done<'_>> {
            let mut s = self.0.lock().unwrap();
            Some(Done::from(self.1.get_or_init(|| {
                let (tx, rx) = crossbeam_channel::bounded(0);
                s.done_tx = Some(tx);
                rx
            })))
        }
        fn err(&self) -> Option<CancelError> {
            self.0.lock().unwrap().err
        }
        fn value(&self, _key: AnyKey<'_>) -> Option<&(dyn Any + Send + Sync)> {
            None
        }
        fn after_func(&self, f: Fire) -> Result<go::AfterFuncStop, Fire> {
            let mut s = self.0.lock().unwrap();
            let k = s.next;
            s.next += 1;
            s.after_funcs.insert(k, f);
            let state = self.0.clone();
            Ok(go::AfterFuncStop::from_fn(move || state.lock().unwrap().after_funcs.remove(&k).is_some()))
        }
    }

    #[test]
    fn custom_context_after_func_cancel() {
        let ctx0 = AfterFuncContext::default();
        let (ctx1, _cancel) = go::with_cancel(&ctx0);
        assert_eq!(ctx1.to_string(), "context.stopCtx.WithCancel", "Go's name for the hooked parent");
        ctx0.cancel(CancelError::Cancelled);
        assert!(wait_done(&ctx1));
    }

    #[test]
    fn custom_context_after_func_timeout() {
        let ctx0 = AfterFuncContext::default();
        let (ctx1, _cancel) = go::with_timeout(&ctx0, VERY_LONG_DURATION);
        ctx0.cancel(CancelError::Cancelled);
        assert!(wait_done(&ctx1));
    }

    #[test]
    fn custom_context_after_func_after_func() {
        let ctx0 = AfterFuncContext::default();
        let (tx, donec) = crossbeam_channel::bounded::<()>(0);
        let stop = go::after_func(&ctx0, move || drop(tx));
        ctx0.cancel(CancelError::Cancelled);
        assert!(donec.recv_timeout(QUIESCENT).is_err_and(|e| e.is_disconnected()));
        stop.stop();
    }

    #[test]
    fn custom_context_after_func_unregister_cancel() {
        let ctx0 = AfterFuncContext::default();
        let (_c1, cancel1) = go::with_cancel(&ctx0);
        let (_c2, cancel2) = go::with_cancel(&ctx0);
        assert_eq!(ctx0.registered(), 2);
        cancel1.cancel();
        cancel2.cancel();
        assert_eq!(ctx0.registered(), 0);
    }

    #[test]
    fn custom_context_after_func_unregister_timeout() {
        let ctx0 = AfterFuncContext::default();
        let (_c, cancel) = go::with_timeout(&ctx0, VERY_LONG_DURATION);
        assert_eq!(ctx0.registered(), 1);
        cancel.cancel();
        assert_eq!(ctx0.registered(), 0);
    }

    #[test]
    fn custom_context_after_func_unregister_after_func() {
        let ctx0 = AfterFuncContext::default();
        let stop = go::after_func(&ctx0, || {});
        assert_eq!(ctx0.registered(), 1);
        assert!(stop.stop());
        assert_eq!(ctx0.registered(), 0);
    }

    #[test]
    fn dropping_an_uncancelled_child_of_a_custom_context_unregisters_it() {
        // Not in Go (whose lostcancel vet check forbids it): the Rust answer to a lost cancel.
        let ctx0 = AfterFuncContext::default();
        let (c, cancel) = go::with_cancel(&ctx0);
        assert_eq!(ctx0.registered(), 1);
        drop((c, cancel));
        assert_eq!(ctx0.registered(), 0);
    }
}

/// https://github.com/golang/go/blob/go1.27.3/src/context/example_test.go
///
/// Copyright 2016 The Go Authors. All rights reserved. Use of this source code is governed by a
/// BSD-style license that can be found in the LICENSE file.
///
/// Each example's `// Output:` is asserted. `ExampleAfterFunc_connection` interrupts a blocking
/// read with `TcpStream::shutdown` (Rust's std has no read deadline settable from another
/// thread).
mod example_test {
    use super::*;
    use std::sync::{Arc, Condvar, Mutex};

    #[test]
    fn example_with_cancel() {
        let generate = |ctx: Ctx| {
            let (dst, rx) = crossbeam_channel::bounded(0);
            std::thread::spawn(move || {
                let done = ctx.done().unwrap();
                let mut n = 1;
                loop {
                    crossbeam_channel::select! {
                        recv(done) -> _ => return, // returning not to leak the thread
                        send(dst, n) -> _ => n += 1,
                    }
                }
            });
            rx
        };
        let (ctx, cancel) = go::with_cancel(&go::background());
        let mut got = Vec::new();
        for n in generate(ctx) {
            got.push(n);
            if n == 5 {
                break;
            }
        }
        cancel.cancel();
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn example_with_deadline() {
        let never_ready = crossbeam_channel::never::<()>();
        let (ctx, _cancel) = go::with_deadline(&go::background(), Instant::now() + SHORT_DURATION);
        let out = crossbeam_channel::select! {
            recv(never_ready) -> _ => "ready".to_string(),
            recv(ctx.done().unwrap()) -> _ => ctx.err().unwrap().to_string(),
        };
        assert_eq!(out, "context deadline exceeded");
    }

    #[test]
    fn example_with_timeout() {
        let never_ready = crossbeam_channel::never::<()>();
        let (ctx, _cancel) = go::with_timeout(&go::background(), SHORT_DURATION);
        let out = crossbeam_channel::select! {
            recv(never_ready) -> _ => "ready".to_string(),
            recv(ctx.done().unwrap()) -> _ => ctx.err().unwrap().to_string(),
        };
        assert_eq!(out, "context deadline exceeded");
    }

    #[test]
    fn example_with_value() {
        let f = |ctx: &Ctx, k: &str| match ctx.value(k).and_then(|v| v.downcast_ref::<&str>()) {
            Some(v) => format!("found value: {v}"),
            None => format!("key not found: {k}"),
        };
        let ctx = go::with_value(&go::background(), "language", "Go");
        assert_eq!(f(&ctx, "language"), "found value: Go");
        assert_eq!(f(&ctx, "color"), "key not found: color");
    }

    #[test]
    fn example_after_func_cond() {
        type Shared = Arc<(Mutex<()>, Condvar)>;
        let wait_on_cond =
            |ctx: &Ctx, cond: &Shared, condition_met: &dyn Fn() -> bool| -> Option<CancelError> {
                let waker = cond.clone();
                let stop = go::after_func(ctx, move || {
                    let _guard = waker.0.lock().unwrap();
                    waker.1.notify_all();
                });
                let mut guard = cond.0.lock().unwrap();
                let result = loop {
                    if condition_met() {
                        break None;
                    }
                    guard = cond.1.wait(guard).unwrap();
                    if let Some(err) = ctx.err() {
                        break Some(err);
                    }
                };
                drop(guard);
                stop.stop();
                result
            };
        let cond: Shared = Arc::new((Mutex::new(()), Condvar::new()));
        let outs: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let (ctx, cancel) = go::with_timeout(&go::background(), Duration::from_millis(1));
                        let err = wait_on_cond(&ctx, &cond, &|| false);
                        cancel.cancel();
                        err.map_or("<nil>".into(), |e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outs, vec!["context deadline exceeded"; 4]);
    }

    #[test]
    fn example_after_func_connection() {
        use std::io::Read;
        use std::net::{Shutdown, TcpListener, TcpStream};
        let read_from_conn = |ctx: &Ctx, conn: &TcpStream, b: &mut [u8]| -> Result<usize, String> {
            let (stop_tx, stopc) = crossbeam_channel::bounded::<()>(0);
            let interrupt = conn.try_clone().unwrap();
            let stop = go::after_func(ctx, move || {
                let _ = interrupt.shutdown(Shutdown::Read);
                drop(stop_tx);
            });
            let n = (&*conn).read(b).map_err(|e| e.to_string());
            if !stop.stop() {
                let _ = stopc.recv();
                return Err(ctx.err().unwrap().to_string());
            }
            n
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server_side = listener.accept().unwrap();
        let (ctx, _cancel) = go::with_timeout(&go::background(), Duration::from_millis(1));
        let mut b = [0u8; 1024];
        assert_eq!(read_from_conn(&ctx, &conn, &mut b), Err("context deadline exceeded".to_string()));
    }

    #[test]
    fn example_after_func_merge() {
        let merge_cancel = |ctx: &Ctx, cancel_ctx: &Ctx| {
            let (ctx, cancel) = go::with_cancel_cause(ctx);
            let (source, merged) = (cancel_ctx.clone(), cancel.clone());
            let stop = go::after_func(cancel_ctx, move || merged.cancel(go::cause(&source)));
            (ctx, move || {
                stop.stop();
                cancel.cancel(Cause::Cancelled);
            })
        };
        let (ctx1, cancel1) = go::with_cancel_cause(&go::background());
        let (ctx2, cancel2) = go::with_cancel_cause(&go::background());
        let (merged, merged_cancel) = merge_cancel(&ctx1, &ctx2);
        cancel2.cancel(named("ctx2 canceled"));
        assert!(wait_done(&merged));
        assert_eq!(go::cause(&merged).unwrap().to_string(), "ctx2 canceled");
        merged_cancel();
        cancel1.cancel(named("ctx1 canceled"));
    }
}

/// Properties of the adapter itself, beyond Go's tests.
mod adapter {
    use super::*;
    use tether::{Canceller, Key, Valuer};

    static REQUEST: Key<u64> = Key::new("request");

    #[test]
    fn a_later_child_deadline_is_a_plain_with_cancel() {
        let at = Instant::now() + Duration::from_secs(60);
        let (parent, _c1) = go::with_deadline(&go::background(), at);
        let (child, _c2) = go::with_deadline(&parent, at + Duration::from_secs(1));
        assert!(child.to_string().ends_with("]).WithCancel"), "{child}");
        assert_eq!(child.deadline(), Some(at));
        let (same, _c3) = go::with_deadline(&parent, at);
        assert!(same.to_string().ends_with("])"), "an equal deadline keeps its own timer: {same}");
    }

    #[test]
    fn deadlines_print_as_go_time_and_duration() {
        let (ctx, _c) = go::with_timeout(&go::background(), Duration::from_secs(90));
        let s = ctx.to_string();
        // context.Background.WithDeadline(2026-05-01 12:00:00.123456789 +0000 UTC m=+90.000012345 [1m29.99s])
        let inner = &s["context.Background.WithDeadline(".len()..s.len() - 1];
        let (time, remaining) = inner.split_once(" [").unwrap();
        assert!(time.contains(" +0000 UTC m=+"), "{time}");
        assert!(remaining.starts_with("1m29.") || remaining.starts_with("1m30s"), "{remaining}");
    }

    #[test]
    fn native_and_go_contexts_interoperate_without_conversion() {
        let native = tether::Context::new().with_value(&REQUEST, 7);
        let (ctx, cancel) = go::with_cancel(&native);
        assert_eq!(ctx.get(&REQUEST), Some(&7));
        assert_eq!(ctx.to_string(), "tether::Context.WithCancel");
        // A Go context is a Canceller and a Valuer for native code.
        fn native_code(c: &(impl Canceller + Valuer)) -> (bool, Option<u64>) {
            (c.is_cancelled(), REQUEST.get_in(c).copied())
        }
        assert_eq!(native_code(&ctx), (false, Some(7)));
        native.cancel();
        assert_eq!(native_code(&ctx), (true, Some(7)));
        cancel.cancel();
        let hidden = go::with_nil_value(&ctx, &REQUEST);
        assert_eq!(native_code(&hidden).1, None, "Go's nil hides the binding from native code too");
    }

    #[test]
    fn dropping_every_handle_of_an_uncancelled_context_releases_it() {
        let native = tether::Context::new();
        let parent = Ctx::from(native.clone());
        let (child, cancel) = go::with_timeout(&parent, VERY_LONG_DURATION);
        let grandchild = go::with_value(&child, "k", "v");
        assert_eq!(native.registered_children(), 1);
        drop((child, cancel, grandchild));
        assert_eq!(native.registered_children(), 0, "lostcancel cannot leak");
    }

    #[test]
    fn after_func_on_a_context_that_is_never_cancelled_is_stopped_once() {
        let stop = go::after_func(&go::without_cancel(&go::background()), || unreachable!());
        assert!(stop.stop());
        assert!(!stop.stop());
    }

    #[test]
    fn a_million_deep_chain_prints_looks_up_and_drops_without_recursion() {
        const DEPTH: usize = 1_000_000;
        let (root, cancel) = go::with_cancel(&go::background());
        let mut ctx = go::with_value(&root, &REQUEST, 1);
        for i in 0..DEPTH {
            ctx = match i % 100 {
                0 => go::with_cancel(&ctx).0,
                50 => go::without_cancel(&ctx),
                _ => go::with_value(&ctx, "depth", i),
            };
        }
        assert_eq!(ctx.get(&REQUEST), Some(&1));
        assert_eq!(ctx.value("depth").and_then(|v| v.downcast_ref::<usize>()), Some(&(DEPTH - 1)));
        let s = ctx.to_string();
        assert!(s.starts_with("context.Background.WithCancel.WithValue(request, u64).WithCancel"));
        assert!(s.ends_with(".WithValue(depth, usize)"));
        cancel.cancel();
        drop(ctx);
    }
}
