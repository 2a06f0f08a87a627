//! How soon blocking work learns that its client went away: a real hyper server (HTTP/1.1, then
//! HTTP/2) behind tether's server layer runs, for each request, a `tether::scope` whose thread
//! child blocks in `blocking::recv`. The client closes its socket mid-request; the time from the
//! close to the child returning with the disconnect cause is measured over `TRIES` requests per
//! protocol, and the percentiles are printed (the figures in benches/RESULTS.md come from here).
//!
//! Run with `cargo run --release --example disconnect_latency --features tower`.

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tether::ScopeBuilder;
use tether::blocking::RecvError;
use tether::http::ClientDisconnected;
use tether::tower::ServerLayer;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::Layer;

/// Requests per protocol.
const TRIES: usize = 1_000;

/// What the blocked child reports: when its receive returned, and how.
type Report = (Instant, Result<(), RecvError>);

/// Serves the blocking handler behind the server layer on a loopback port chosen by the OS.
async fn serve(entered: mpsc::UnboundedSender<()>, reports: mpsc::UnboundedSender<Report>) -> SocketAddr {
    let handler = tower::service_fn(move |_request: http::Request<hyper::body::Incoming>| {
        let (entered, reports) = (entered.clone(), reports.clone());
        async move {
            let ctx = tether::current();
            let _ = tokio::task::spawn_blocking(move || {
                ScopeBuilder::new().parent(&ctx).run(|s| {
                    let (_keep_open, rx) = crossbeam_channel::bounded::<()>(0);
                    s.spawn(move |child| {
                        entered.send(()).unwrap();
                        let outcome = tether::blocking::recv(child, &rx);
                        reports.send((Instant::now(), outcome)).unwrap();
                    })
                    .join()
                    .unwrap()
                })
            })
            .await;
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
        }
    });
    let service = ServerLayer::new().layer(handler);
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

/// Opens a connection, starts a request, waits until the handler's child is blocked, closes the
/// socket, and returns when it closed.
async fn http1_try(addr: SocketAddr, entered: &mut mpsc::UnboundedReceiver<()>) -> Instant {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    entered.recv().await.unwrap();
    let closed = Instant::now();
    drop(socket);
    closed
}

/// The same over an HTTP/2 connection (prior knowledge).
async fn http2_try(addr: SocketAddr, entered: &mut mpsc::UnboundedReceiver<()>) -> Instant {
    let socket = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(socket)).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{addr}/")).body(Empty::<Bytes>::new()).unwrap();
    let response = tokio::spawn(sender.send_request(request));
    entered.recv().await.unwrap();
    let closed = Instant::now();
    connection.abort();
    response.abort();
    closed
}

/// The `p`-th percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for protocol in ["HTTP/1.1", "HTTP/2"] {
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let addr = serve(entered_tx, reports_tx).await;
        let mut latencies = Vec::with_capacity(TRIES);
        for _ in 0..TRIES {
            let closed = match protocol {
                "HTTP/1.1" => http1_try(addr, &mut entered).await,
                _ => http2_try(addr, &mut entered).await,
            };
            let (returned, outcome) = reports.recv().await.unwrap();
            match outcome {
                Err(RecvError::Cancelled(cause)) if cause.downcast_ref::<ClientDisconnected>().is_some() => {}
                other => panic!("the child was not cancelled by the disconnect: {other:?}"),
            }
            latencies.push(returned.saturating_duration_since(closed));
        }
        latencies.sort_unstable();
        println!(
            "{protocol}: client close -> blocked thread child cancelled, {TRIES} tries: p50 {:?}, p99 {:?}, max {:?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies[TRIES - 1],
        );
    }
}
