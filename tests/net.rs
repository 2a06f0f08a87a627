//! Deadlines and cancellation across processes, over real servers on loopback: hyper over
//! HTTP/1.1 and HTTP/2 (a client that closes its socket mid-request cancels the handler's context,
//! and a thread child and a pool task blocked in `blocking::recv` under it), a tonic round trip (the client's
//! deadline reaches the handler, and its expiry cancels the server's tree), and three hops
//! A -> B -> C (C's deadline is never later than A's; a client gone at A cancels B's and C's work).
//!
//! No sleep synchronises anything: handlers say "entered" over channels, and every wait is bounded
//! by `PATIENCE` only so that a failure fails instead of hanging.
#![cfg(feature = "tower")]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tether::blocking::RecvError;
use tether::http::{CallerDeadlineExceeded, ClientDisconnected};
use tether::tower::{ClientLayer, ServerLayer};
use tether::{CancelError, Canceller, Cause, Context, ScopeBuilder};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceExt};

/// How long a test waits for something that should happen at once before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

type Reply = http::Response<Full<Bytes>>;

/// Serves `service` on a loopback port chosen by the OS, HTTP/1.1 or HTTP/2 per connection.
async fn serve<S>(service: S) -> SocketAddr
where
    S: Service<http::Request<hyper::body::Incoming>, Response = Reply, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// Waits for the next message, failing after `PATIENCE`.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(PATIENCE, rx.recv()).await.unwrap_or_else(|_| panic!("no {what}")).unwrap()
}

/// A handler whose request starts blocking work in a `tether::scope` under its context: a thread
/// child and a pool task, each of which says `entered` and then blocks in `blocking::recv` on a
/// channel nobody sends on, reporting how the receive ended.
fn blocking_handler(
    entered: mpsc::UnboundedSender<()>,
    report: mpsc::UnboundedSender<Result<(), RecvError>>,
) -> impl Service<http::Request<hyper::body::Incoming>, Response = Reply, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(move |_req| {
        let (entered, report) = (entered.clone(), report.clone());
        async move {
            let ctx = tether::current();
            let work = tokio::task::spawn_blocking(move || {
                ScopeBuilder::new().parent(&ctx).run(|s| {
                    let (_keep_open, rx) = crossbeam_channel::bounded::<()>(0);
                    let block = move |child_ctx: &Context| {
                        entered.send(()).unwrap();
                        report.send(tether::blocking::recv(child_ctx, &rx)).unwrap();
                    };
                    let task = s.spawn_task(block.clone());
                    let thread = s.spawn(block);
                    thread.join().unwrap();
                    task.join().unwrap();
                })
            });
            let _ = work.await;
            Ok(http::Response::new(Full::new(Bytes::from_static(b"done"))))
        }
    })
}

fn assert_disconnected(outcome: Result<(), RecvError>) {
    match outcome {
        Err(RecvError::Cancelled(cause)) => {
            assert!(cause.downcast_ref::<ClientDisconnected>().is_some(), "cause: {cause}")
        }
        other => panic!("the blocked child was not cancelled: {other:?}"),
    }
}

mod disconnect {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_http1_client_that_closes_its_socket_cancels_a_blocked_thread_and_task_with_client_disconnected()
     {
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let (report_tx, mut report) = mpsc::unbounded_channel();
        let addr = serve(ServerLayer::new().layer(blocking_handler(entered_tx, report_tx))).await;

        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        for _ in ["thread", "task"] {
            next(&mut entered, "entered").await;
        }
        drop(socket);
        for _ in ["thread", "task"] {
            assert_disconnected(next(&mut report, "report").await);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_http2_client_that_closes_its_socket_cancels_a_blocked_thread_and_task_with_client_disconnected()
     {
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let (report_tx, mut report) = mpsc::unbounded_channel();
        let addr = serve(ServerLayer::new().layer(blocking_handler(entered_tx, report_tx))).await;

        let socket = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(socket)).await.unwrap();
        let connection = tokio::spawn(connection);
        let request = http::Request::get(format!("http://{addr}/")).body(Empty::<Bytes>::new()).unwrap();
        let response = tokio::spawn(sender.send_request(request));
        for _ in ["thread", "task"] {
            next(&mut entered, "entered").await;
        }
        connection.abort(); // drops the connection: the socket closes
        response.abort();
        for _ in ["thread", "task"] {
            assert_disconnected(next(&mut report, "report").await);
        }
    }
}

mod grpc {
    use super::*;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::{Request, Response, Status};

    /// Messages are UTF-8 strings, framed by gRPC: a codec needs no protoc.
    #[derive(Clone, Copy, Debug, Default)]
    struct Utf8Codec;

    impl Codec for Utf8Codec {
        type Encode = String;
        type Decode = String;
        type Encoder = Utf8Codec;
        type Decoder = Utf8Codec;
        fn encoder(&mut self) -> Utf8Codec {
            Utf8Codec
        }
        fn decoder(&mut self) -> Utf8Codec {
            Utf8Codec
        }
    }

    impl Encoder for Utf8Codec {
        type Item = String;
        type Error = Status;
        fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            bytes::BufMut::put_slice(dst, item.as_bytes());
            Ok(())
        }
    }

    impl Decoder for Utf8Codec {
        type Item = String;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
            let bytes = bytes::Buf::copy_to_bytes(src, bytes::Buf::remaining(src));
            String::from_utf8(bytes.to_vec()).map(Some).map_err(|e| Status::internal(e.to_string()))
        }
    }

    /// What the server's handler saw.
    #[derive(Debug)]
    enum Seen {
        /// The budget left when the handler started.
        Remaining(Option<Duration>),
        /// How the blocked child of the handler's scope ended.
        Child(Result<(), RecvError>),
    }

    /// A hand-written gRPC service, `/test.Echo/Echo` answers at once with the budget it had,
    /// `/test.Echo/Block` blocks a thread child in a scope until its context is cancelled.
    #[derive(Clone)]
    struct Echo {
        seen: mpsc::UnboundedSender<Seen>,
    }

    impl tonic::server::NamedService for Echo {
        const NAME: &'static str = "test.Echo";
    }

    impl Service<http::Request<tonic::body::Body>> for Echo {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future =
            std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            let seen = self.seen.clone();
            let block = req.uri().path() == "/test.Echo/Block";
            Box::pin(async move {
                let handler = tower::service_fn(move |request: Request<String>| {
                    let seen = seen.clone();
                    async move {
                        let ctx =
                            request.extensions().get::<Context>().cloned().expect("the layer's context");
                        seen.send(Seen::Remaining(tether::current().remaining())).unwrap();
                        if block {
                            // The report comes from the thread: the handler's future may be
                            // dropped (tonic's own timeout) before the work ends.
                            let work = tokio::task::spawn_blocking(move || {
                                ScopeBuilder::new().parent(&ctx).run(|s| {
                                    let (_keep_open, rx) = crossbeam_channel::bounded::<()>(0);
                                    let outcome =
                                        s.spawn(move |c| tether::blocking::recv(c, &rx)).join().unwrap();
                                    seen.send(Seen::Child(outcome)).unwrap();
                                })
                            });
                            let _ = work.await;
                        }
                        Ok::<_, Status>(Response::new(request.into_inner()))
                    }
                });
                Ok(tonic::server::Grpc::new(Utf8Codec).unary(handler, req).await)
            })
        }
    }

    async fn start() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
        let (seen, rx) = mpsc::unbounded_channel();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder().layer(ServerLayer::new());
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(server.serve_with_incoming(Echo { seen }, incoming));
        (addr, rx)
    }

    async fn call(addr: SocketAddr, ctx: &Context, method: &'static str) -> Result<String, Status> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(ClientLayer::new().layer(channel));
        client.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(method);
        let response = ctx.bind(client.unary(Request::new("hello".to_string()), path, Utf8Codec)).await;
        response.map(Response::into_inner)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_clients_deadline_reaches_the_tonic_handler_which_has_at_most_that_budget() {
        let (addr, mut seen) = start().await;
        let budget = Duration::from_secs(5);
        let ctx = Context::new().with_timeout(budget);
        assert_eq!(call(addr, &ctx, "/test.Echo/Echo").await.unwrap(), "hello");
        match next(&mut seen, "handler").await {
            Seen::Remaining(Some(left)) => assert!(left <= budget && left > Duration::ZERO, "{left:?}"),
            other => panic!("the handler had no deadline: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_clients_deadline_expiring_cancels_the_servers_tree_with_the_caller_cause() {
        let (addr, mut seen) = start().await;
        let ctx = Context::new().with_timeout(Duration::from_millis(200));
        let status = call(addr, &ctx, "/test.Echo/Block").await.unwrap_err();
        assert!(matches!(next(&mut seen, "handler").await, Seen::Remaining(Some(_))));
        match next(&mut seen, "the blocked child").await {
            Seen::Child(Err(RecvError::Cancelled(cause))) => {
                assert!(cause.downcast_ref::<CallerDeadlineExceeded>().is_some(), "cause: {cause}")
            }
            other => panic!("the server's tree was not cancelled: {other:?}"),
        }
        // The client layer abandoned the call at the client's own deadline; tonic reports a
        // service error it does not know as `Unknown`, with the layer's message.
        assert_eq!(status.message(), "request abandoned: context deadline exceeded", "{status}");
    }
}

mod three_hops {
    use super::*;
    use hyper_util::client::legacy::{Client, connect::HttpConnector};

    /// What a hop saw: its name, its request's deadline, and (later) the cause it was cancelled with.
    #[derive(Debug)]
    enum Hop {
        Entered(&'static str, Option<Instant>),
        Cancelled(&'static str, Cause),
    }

    type HttpClient = Client<HttpConnector, Empty<Bytes>>;

    fn http_client() -> HttpClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    /// The margin each hop keeps for the request's transit: a server counts the budget it
    /// receives from the request's arrival, so without a margin a hop's deadline is later than
    /// its caller's by the one-way transit time (design/0007). Loopback transit is far below it.
    const MARGIN: Duration = Duration::from_millis(50);

    /// A hop: reports its deadline and, if it is ever cancelled, its cause; then calls `next` (if
    /// any) under its request's context through the client layer, or waits for cancellation.
    fn hop(
        name: &'static str,
        next: Option<SocketAddr>,
        wait: bool,
        report: mpsc::UnboundedSender<Hop>,
    ) -> impl Service<http::Request<hyper::body::Incoming>, Response = Reply, Error = Infallible, Future: Send>
    + Clone {
        let client = ClientLayer::new().margin(MARGIN).layer(http_client());
        tower::service_fn(move |_req| {
            let (report, client) = (report.clone(), client.clone());
            async move {
                let ctx = tether::current();
                let on_cancel = report.clone();
                let _stays_registered = ctx.on_cancel(move |cause| {
                    let _ = on_cancel.send(Hop::Cancelled(name, cause.clone()));
                });
                report.send(Hop::Entered(name, ctx.deadline())).unwrap();
                if let Some(next) = next {
                    let request = http::Request::get(format!("http://{next}/")).body(Empty::new()).unwrap();
                    let response = client.oneshot(request).await.unwrap();
                    let _ = response.into_body().collect().await;
                } else if wait {
                    ctx.cancelled_owned().await;
                }
                Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    }

    async fn chain(wait_at_c: bool) -> (SocketAddr, mpsc::UnboundedReceiver<Hop>) {
        let (report, rx) = mpsc::unbounded_channel();
        let c = serve(ServerLayer::new().layer(hop("C", None, wait_at_c, report.clone()))).await;
        let b = serve(ServerLayer::new().layer(hop("B", Some(c), false, report.clone()))).await;
        let a = serve(ServerLayer::new().layer(hop("A", Some(b), false, report))).await;
        (a, rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cs_deadline_is_never_later_than_bs_nor_bs_than_as() {
        let (a, mut hops) = chain(false).await;
        let ctx = Context::new().with_timeout(Duration::from_secs(5));
        let client = ClientLayer::new().margin(MARGIN).layer(http_client());
        let request = http::Request::get(format!("http://{a}/")).body(Empty::new()).unwrap();
        let response = ctx.bind(client.oneshot(request)).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let mut deadlines = Vec::new();
        for _ in 0..3 {
            match next(&mut hops, "hop").await {
                Hop::Entered(name, Some(deadline)) => deadlines.push((name, deadline)),
                other => panic!("a hop had no deadline: {other:?}"),
            }
        }
        assert_eq!(deadlines.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["A", "B", "C"]);
        assert!(deadlines[0].1 <= ctx.deadline().unwrap());
        assert!(deadlines[1].1 <= deadlines[0].1, "B later than A");
        assert!(deadlines[2].1 <= deadlines[1].1, "C later than B");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_gone_at_a_cancels_bs_and_cs_work_with_client_disconnected() {
        let (a, mut hops) = chain(true).await;
        let mut socket = TcpStream::connect(a).await.unwrap();
        socket.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\ngrpc-timeout: 30S\r\n\r\n").await.unwrap();
        for expected in ["A", "B", "C"] {
            assert!(matches!(next(&mut hops, "hop").await, Hop::Entered(name, Some(_)) if name == expected));
        }
        drop(socket);
        let mut cancelled = Vec::new();
        while cancelled.len() < 3 {
            match next(&mut hops, "cancellation").await {
                Hop::Cancelled(name, cause) => {
                    assert!(cause.downcast_ref::<ClientDisconnected>().is_some(), "{name}: {cause}");
                    cancelled.push(name);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        cancelled.sort_unstable();
        assert_eq!(cancelled, ["A", "B", "C"]);
    }
}

/// Keeps the import of `CancelError` honest: the deadline causes report `DeadlineExceeded`.
#[test]
fn the_request_causes_keep_gos_coarse_errors() {
    let ctx = Context::new().with_deadline_cause(Instant::now(), Cause::custom(CallerDeadlineExceeded));
    assert_eq!(ctx.err(), Some(CancelError::DeadlineExceeded));
}
