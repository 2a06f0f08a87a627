//! The tower layers in process (`ServiceExt::oneshot`, hand-polled futures): the server layer's
//! context (extension, ambient, deadline rules, causes) and the client layer's budget, refusal and
//! abandonment. The same over real sockets is `tests/net.rs`.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;
use tether::http::{CallerDeadlineExceeded, ClientDisconnected, Incoming, Limit, ServerCapExceeded};
use tether::tower::{ClientError, ClientLayer, ServerLayer};
use tether::wire::grpc_timeout;
use tether::{CancelError, Canceller, Cause, Context};
use tower::{Layer, Service, ServiceExt};

fn request(grpc_timeout: &[&str]) -> http::Request<()> {
    let mut builder = http::Request::builder();
    for value in grpc_timeout {
        builder = builder.header("grpc-timeout", *value);
    }
    builder.body(()).unwrap()
}

/// A handler that answers with the request's context, as found in its extensions.
fn echo_context()
-> impl Service<http::Request<()>, Response = Context, Error = Infallible, Future: Send> + Clone {
    tower::service_fn(|req: http::Request<()>| async move {
        Ok(req.extensions().get::<Context>().unwrap().clone())
    })
}

fn serve(layer: ServerLayer, req: http::Request<()>) -> Context {
    futures_executor::block_on(layer.layer(echo_context()).oneshot(req)).unwrap()
}

mod server_layer {
    use super::*;

    #[test]
    fn the_requests_context_is_in_the_extensions_and_ambient_while_the_handler_runs() {
        let handler = tower::service_fn(|req: http::Request<()>| async move {
            let ext = req.extensions().get::<Context>().unwrap().clone();
            let ambient = tether::current();
            let incoming_limit = req.extensions().get::<Incoming>().unwrap().limit();
            Ok::<_, Infallible>((ext.deadline(), ambient.deadline(), incoming_limit))
        });
        let service = ServerLayer::new().layer(handler);
        let (ext, ambient, limit) = futures_executor::block_on(service.oneshot(request(&["5S"]))).unwrap();
        assert!(ext.is_some());
        assert_eq!(ext, ambient, "the same context, ambient");
        assert_eq!(limit, Some(Limit::Caller));
    }

    #[test]
    fn the_callers_deadline_bounds_the_request_and_cancels_with_the_caller_cause() {
        let ctx = serve(ServerLayer::new().cap(Duration::from_secs(60)), request(&["1m"]));
        assert!(ctx.remaining().unwrap() <= Duration::from_millis(1));
        let cause = ctx.wait();
        assert!(cause.downcast_ref::<CallerDeadlineExceeded>().is_some(), "{cause}");
        assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
    }

    #[test]
    fn the_servers_cap_wins_when_earlier_and_cancels_with_the_cap_cause() {
        let ctx = serve(ServerLayer::new().cap(Duration::from_millis(1)), request(&["1H"]));
        assert!(ctx.remaining().unwrap() <= Duration::from_millis(1));
        assert!(ctx.wait().downcast_ref::<ServerCapExceeded>().is_some());
        let no_header = serve(ServerLayer::new().cap(Duration::from_millis(1)), request(&[]));
        assert!(no_header.wait().downcast_ref::<ServerCapExceeded>().is_some());
    }

    #[test]
    fn without_a_header_or_a_cap_a_request_has_no_deadline() {
        let ctx = serve(ServerLayer::new(), request(&[]));
        assert_eq!(ctx.deadline(), None);
        assert!(ctx.can_be_cancelled());
    }

    #[test]
    fn dropping_the_response_future_unfinished_cancels_with_client_disconnected() {
        let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
        let handler = tower::service_fn(move |req: http::Request<()>| {
            let entered = entered_tx.clone();
            async move {
                entered.send(req.extensions().get::<Context>().unwrap().clone()).unwrap();
                std::future::pending::<Result<(), Infallible>>().await
            }
        });
        let mut service = ServerLayer::new().layer(handler);
        let mut future = Box::pin(service.call(request(&[])));
        assert!(future.as_mut().poll(&mut TaskContext::from_waker(Waker::noop())).is_pending());
        let ctx = entered_rx.try_recv().unwrap();
        assert!(!ctx.is_cancelled());
        drop(future);
        let cause = ctx.cause().expect("cancelled before drop returns");
        assert!(cause.downcast_ref::<ClientDisconnected>().is_some(), "{cause}");
        assert_eq!(ctx.err(), Some(CancelError::Cancelled));
    }

    #[test]
    fn a_request_dropped_after_its_deadline_passed_reports_the_deadline_not_a_disconnect() {
        // What tonic's own timeout layer, outside this one, does at the same deadline.
        let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
        let handler = tower::service_fn(move |req: http::Request<()>| {
            let entered = entered_tx.clone();
            async move {
                entered.send(req.extensions().get::<Context>().unwrap().clone()).unwrap();
                std::future::pending::<Result<(), Infallible>>().await
            }
        });
        let mut service = ServerLayer::new().layer(handler);
        let mut future = Box::pin(service.call(request(&["1n"])));
        assert!(future.as_mut().poll(&mut TaskContext::from_waker(Waker::noop())).is_pending());
        let ctx = entered_rx.try_recv().unwrap();
        while ctx.remaining() != Some(Duration::ZERO) {
            std::hint::spin_loop();
        }
        drop(future);
        assert!(ctx.cause().unwrap().downcast_ref::<CallerDeadlineExceeded>().is_some());
        assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
    }

    #[test]
    fn a_completed_requests_context_is_not_cancelled_by_the_layer() {
        let ctx = serve(ServerLayer::new(), request(&[]));
        assert!(!ctx.is_cancelled());
    }

    #[test]
    fn a_handler_that_panics_cancels_its_context_with_panicked() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let handler = tower::service_fn(move |req: http::Request<()>| {
            tx.send(req.extensions().get::<Context>().unwrap().clone()).unwrap();
            async move {
                panic!("handler bug");
                #[allow(unreachable_code)]
                Ok::<(), Infallible>(())
            }
        });
        let service = ServerLayer::new().layer(handler);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures_executor::block_on(service.oneshot(request(&[])))
        }));
        assert!(unwound.is_err());
        assert!(matches!(rx.recv().unwrap().cause(), Some(Cause::Panicked(_))));
    }

    #[test]
    fn cancelling_the_layers_parent_cancels_requests_in_flight() {
        let server = Context::new();
        let ctx = serve(ServerLayer::new().parent(&server), request(&["1H"]));
        server.cancel();
        assert_eq!(ctx.cause(), Some(Cause::Cancelled));
    }
}

mod bad_input {
    use super::*;

    #[test]
    fn malformed_oversized_negative_and_absurd_timeouts_never_extend_a_deadline() {
        let parent = Context::new().with_timeout(Duration::from_secs(1));
        let layer = ServerLayer::new().parent(&parent).cap(Duration::from_secs(2));
        let cases: [&[&str]; 9] = [
            &[""],
            &["soon"],
            &["-5S"],
            &["123456789S"],
            &["99999999H"],
            &["1.5S"],
            &["0x10S"],
            &["9999999999999999999999999999999999999999999999999999999999999999999999999999999n"],
            &["10S", "garbage", "1H"],
        ];
        for values in cases {
            let ctx = serve(layer.clone(), request(values));
            assert!(ctx.deadline().unwrap() <= parent.deadline().unwrap(), "{values:?}");
        }
    }

    #[test]
    fn malformed_timeouts_are_reported_and_ignored_and_the_cap_still_holds() {
        let handler = tower::service_fn(|req: http::Request<()>| async move {
            let incoming = req.extensions().get::<Incoming>().unwrap().clone();
            Ok::<_, Infallible>(incoming)
        });
        let service = ServerLayer::new().cap(Duration::from_secs(3)).layer(handler);
        let incoming = futures_executor::block_on(service.oneshot(request(&["-1S", "1234x"]))).unwrap();
        assert_eq!(incoming.errors().len(), 2);
        assert_eq!(incoming.limit(), Some(Limit::ServerCap));
        assert!(incoming.context().remaining().unwrap() <= Duration::from_secs(3));
    }

    #[test]
    fn of_repeated_timeouts_the_earliest_valid_one_wins() {
        let ctx = serve(ServerLayer::new(), request(&["1H", "bad", "2m", "1S"]));
        assert!(ctx.remaining().unwrap() <= Duration::from_millis(2));
    }

    proptest::proptest! {
        // A few cases under Miri (interpreted, and with no file system for regressions).
        #![proptest_config(proptest::test_runner::Config {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: None,
            ..Default::default()
        })]

        #[test]
        fn no_header_value_panics_or_outlives_the_parent_and_the_cap(
            values in proptest::collection::vec(proptest::collection::vec(0x20u8..0x7f, 0..24), 0..4),
        ) {
            let parent = Context::new().with_timeout(Duration::from_secs(3600));
            let mut headers = http::HeaderMap::new();
            for value in &values {
                headers.append("grpc-timeout", http::HeaderValue::from_bytes(value).unwrap());
            }
            let inbound = tether::http::Inbound::new().cap(Duration::from_secs(60));
            let incoming = inbound.extract(&parent, &headers);
            let deadline = incoming.context().deadline().unwrap();
            proptest::prop_assert!(deadline <= parent.deadline().unwrap());
            proptest::prop_assert!(incoming.context().remaining().unwrap() <= Duration::from_secs(60));
        }
    }

    #[test]
    fn a_non_ascii_timeout_is_an_error_not_a_panic() {
        let mut req = request(&[]);
        req.headers_mut().insert("grpc-timeout", http::HeaderValue::from_bytes(&[0xc3, 0xa9, b'S']).unwrap());
        let ctx = serve(ServerLayer::new(), req);
        assert_eq!(ctx.deadline(), None);
    }
}

mod client_layer {
    use super::*;

    /// A transport that answers with the `grpc-timeout` it was sent, and counts its calls.
    fn transport(
        calls: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl Service<http::Request<()>, Response = Option<Duration>, Error = Infallible> + Clone {
        let calls = calls.clone();
        tower::service_fn(move |req: http::Request<()>| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let sent = req.headers().get("grpc-timeout").map(|v| grpc_timeout::decode(v.as_bytes()).unwrap());
            async move { Ok(sent) }
        })
    }

    #[test]
    fn the_remaining_budget_less_the_margin_is_sent() {
        let calls = Default::default();
        let client = ClientLayer::new().margin(Duration::from_millis(100)).layer(transport(&calls));
        let ctx = Context::new().with_timeout(Duration::from_secs(1));
        let sent = futures_executor::block_on(ctx.bind(client.oneshot(request(&[])))).unwrap().unwrap();
        assert!(sent <= Duration::from_millis(900) && sent > Duration::from_millis(800), "{sent:?}");
    }

    #[test]
    fn the_context_in_the_extensions_wins_over_the_ambient_one() {
        let calls = Default::default();
        let client = ClientLayer::new().layer(transport(&calls));
        let mut req = request(&[]);
        req.extensions_mut().insert(Context::new().with_timeout(Duration::from_secs(10)));
        let ambient = Context::new().with_timeout(Duration::from_secs(1000));
        let sent = futures_executor::block_on(ambient.bind(client.oneshot(req))).unwrap().unwrap();
        assert!(sent <= Duration::from_secs(10));
    }

    #[test]
    fn a_budget_already_on_the_request_is_never_raised() {
        let calls = Default::default();
        let client = ClientLayer::new().layer(transport(&calls));
        let ctx = Context::new().with_timeout(Duration::from_secs(100));
        let sent = futures_executor::block_on(ctx.bind(client.oneshot(request(&["3m"])))).unwrap().unwrap();
        assert_eq!(sent, Duration::from_millis(3));
    }

    #[test]
    fn a_spent_budget_fails_fast_with_the_deadline_cause_without_sending() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client = ClientLayer::new().margin(Duration::from_secs(10)).layer(transport(&calls));
        let ctx = Context::new().with_timeout(Duration::from_secs(5));
        let err = futures_executor::block_on(ctx.bind(client.clone().oneshot(request(&[])))).unwrap_err();
        assert_eq!(err.cause(), Some(&Cause::DeadlineExceeded));
        // A deadline that has fired: its own cause.
        let incoming = serve(ServerLayer::new(), request(&["1n"]));
        incoming.wait();
        let err = futures_executor::block_on(incoming.bind(client.oneshot(request(&[])))).unwrap_err();
        assert!(err.cause().unwrap().downcast_ref::<CallerDeadlineExceeded>().is_some());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0, "never sent");
    }

    #[test]
    fn a_request_in_flight_is_abandoned_when_the_context_is_cancelled() {
        let (sent_tx, sent_rx) = crossbeam_channel::bounded(1);
        let transport = tower::service_fn(move |_req: http::Request<()>| {
            sent_tx.send(()).unwrap();
            std::future::pending::<Result<(), Infallible>>()
        });
        let mut client = ClientLayer::new().layer(transport);
        let ctx = Context::new();
        let mut call = pin!(tether::with_current(&ctx, || client.call(request(&[]))));
        let mut cx = TaskContext::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        sent_rx.try_recv().unwrap();
        ctx.cancel_with(Cause::ScopeExited);
        match call.poll(&mut cx) {
            Poll::Ready(Err(ClientError::Cancelled(cause))) => assert_eq!(cause, Cause::ScopeExited),
            other => panic!("expected abandonment, got {:?}", other.map(|r| r.map_err(|e| e.to_string()))),
        }
    }

    #[test]
    fn without_a_deadline_nothing_is_sent_and_the_request_goes() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client = ClientLayer::new().layer(transport(&calls));
        let sent = futures_executor::block_on(client.oneshot(request(&[]))).unwrap();
        assert_eq!(sent, None);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
