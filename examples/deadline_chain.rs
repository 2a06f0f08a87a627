//! A deadline across three services: a client calls A with a budget of a second, A calls B, B
//! calls C, each through tether's tower layers over real HTTP on loopback ports the OS chose.
//! Each hop prints the budget it received; C then works until it is stopped. Half way through
//! its budget the client gives up and closes its connection: A's context is cancelled as
//! "client gone", which drops A's call to B, which cancels B, which drops B's call to C. Each hop
//! prints the cause it saw. The program checks what it prints, so CI catches a regression.
//!
//! Run with `cargo run --example deadline_chain --features tower`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tether::http::ClientDisconnected;
use tether::tower::{ClientLayer, ServerLayer};
use tether::{Canceller, Cause, Context};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceExt};

/// The client's whole budget.
const BUDGET: Duration = Duration::from_secs(1);
/// What each hop keeps for itself and the transit of its call (design/0007).
const MARGIN: Duration = Duration::from_millis(20);

type Reply = http::Response<Full<Bytes>>;

/// What a hop tells the program.
enum Event {
    Entered { hop: &'static str, remaining: Option<Duration> },
    Cancelled { hop: &'static str, cause: Cause },
}

/// Serves `service` on a loopback port chosen by the OS.
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
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// One service of the chain: reports its budget and, when it happens, its cancellation; calls
/// `next` under the request's context, or (the last hop) works until it is cancelled.
fn hop(
    name: &'static str,
    next: Option<SocketAddr>,
    events: mpsc::UnboundedSender<Event>,
) -> impl Service<http::Request<hyper::body::Incoming>, Response = Reply, Error = Infallible, Future: Send> + Clone
{
    let http: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = ClientLayer::new().margin(MARGIN).layer(http);
    tower::service_fn(move |_request| {
        let (events, client) = (events.clone(), client.clone());
        async move {
            let ctx = tether::current(); // the request's context, made by the server layer
            let on_cancel = events.clone();
            let _stays_registered = ctx.on_cancel(move |cause| {
                let _ = on_cancel.send(Event::Cancelled { hop: name, cause: cause.clone() });
            });
            events.send(Event::Entered { hop: name, remaining: ctx.remaining() }).unwrap();
            match next {
                Some(next) => {
                    let request = http::Request::get(format!("http://{next}/")).body(Empty::new()).unwrap();
                    let response = client.oneshot(request).await.unwrap();
                    let _ = response.into_body().collect().await;
                }
                None => {
                    ctx.cancelled_owned().await; // C's long work, stopped by cancellation
                }
            }
            Ok(http::Response::new(Full::new(Bytes::from_static(b"done"))))
        }
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (events, mut seen) = mpsc::unbounded_channel();
    let c = serve(ServerLayer::new().layer(hop("C", None, events.clone()))).await;
    let b = serve(ServerLayer::new().layer(hop("B", Some(c), events.clone()))).await;
    let a = serve(ServerLayer::new().layer(hop("A", Some(b), events))).await;
    println!("services: A on {a}, B on {b}, C on {c}");

    // The client: a budget of BUDGET, sent as grpc-timeout by the client layer.
    let ctx = Context::new().with_timeout(BUDGET);
    let http: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = ClientLayer::new().margin(MARGIN).layer(http);
    let request = http::Request::get(format!("http://{a}/")).body(Empty::new()).unwrap();
    let call = tokio::spawn(ctx.bind(client.oneshot(request)));
    println!("client: sending with a budget of {BUDGET:?}");

    let mut previous = BUDGET;
    for _ in 0..3 {
        let Some(Event::Entered { hop, remaining }) = seen.recv().await else {
            panic!("expected a hop to enter")
        };
        let remaining = remaining.expect("every hop has a deadline");
        println!("  {hop}: received a budget, {remaining:?} left");
        assert!(remaining <= previous, "{hop}'s budget grew");
        previous = remaining;
    }

    // Half way, the client gives up: dropping the call closes its connection to A.
    tokio::time::sleep(BUDGET / 2).await;
    call.abort();
    println!("client: gave up half way, connection closed");

    for _ in 0..3 {
        let Some(Event::Cancelled { hop, cause }) = seen.recv().await else {
            panic!("expected a cancellation")
        };
        println!("  {hop}: cancelled: {cause}");
        assert!(cause.downcast_ref::<ClientDisconnected>().is_some(), "{hop} saw {cause}");
    }
    assert!(!ctx.is_cancelled(), "the client's own deadline had not passed: each hop saw the disconnect");
    println!("every hop saw the client go away, well before the deadline");
}
