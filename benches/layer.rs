//! The per-request cost of tether's tower layers, next to the same service without them, in one
//! run, through `ServiceExt::oneshot` under `futures_executor::block_on`:
//!
//! - `server_layer/no_layer`: a handler that answers at once, called bare.
//! - `server_layer/layer`: the same behind `ServerLayer` (a context per request, in the extensions
//!   and ambient), with no header.
//! - `server_layer/layer_grpc_timeout`: the same with a `grpc-timeout` header and a server cap:
//!   the context gets a deadline (armed on the timer driver, then disarmed when dropped).
//! - `client_layer/no_layer` and `client_layer/layer`: a transport that answers at once, called
//!   under a context with a deadline, bare and behind `ClientLayer` (which writes `grpc-timeout`).
//!
//! Every contender builds the same request (with the header where one is sent) inside the
//! iteration. The target: the server layer adds at most 1 µs per request.
//!
//! Run with `cargo bench --bench layer --features tower -- --warm-up-time 2 --measurement-time 5`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;
use tether::Context;
use tether::tower::{ClientLayer, ServerLayer};
use tower::{Layer, ServiceExt};

fn request(grpc_timeout: Option<&'static str>) -> http::Request<()> {
    let mut builder = http::Request::builder().uri("/");
    if let Some(value) = grpc_timeout {
        builder = builder.header("grpc-timeout", value);
    }
    builder.body(()).unwrap()
}

fn server_layer(c: &mut Criterion) {
    let handler =
        tower::service_fn(|req: http::Request<()>| async move { Ok::<_, Infallible>(black_box(req)) });
    let layered = ServerLayer::new().layer(handler);
    let capped = ServerLayer::new().cap(Duration::from_secs(30)).layer(handler);
    let mut group = c.benchmark_group("server_layer");
    group.bench_function("no_layer", |b| {
        b.iter(|| futures_executor::block_on(handler.oneshot(request(None))).unwrap())
    });
    group.bench_function("layer", |b| {
        b.iter(|| futures_executor::block_on(layered.clone().oneshot(request(None))).unwrap())
    });
    group.bench_function("no_layer_with_header", |b| {
        b.iter(|| futures_executor::block_on(handler.oneshot(request(Some("1000m")))).unwrap())
    });
    group.bench_function("layer_grpc_timeout", |b| {
        b.iter(|| futures_executor::block_on(capped.clone().oneshot(request(Some("1000m")))).unwrap())
    });
    group.finish();
}

fn client_layer(c: &mut Criterion) {
    let transport =
        tower::service_fn(|req: http::Request<()>| async move { Ok::<_, Infallible>(black_box(req)) });
    let layered = ClientLayer::new().margin(Duration::from_millis(5)).layer(transport);
    let ctx = Context::new().with_timeout(Duration::from_secs(3600));
    let mut group = c.benchmark_group("client_layer");
    group.bench_function("no_layer", |b| {
        b.iter(|| futures_executor::block_on(ctx.bind(transport.oneshot(request(None)))).unwrap())
    });
    group.bench_function("layer", |b| {
        b.iter(|| futures_executor::block_on(ctx.bind(layered.clone().oneshot(request(None)))).unwrap())
    });
    group.finish();
}

criterion_group!(benches, server_layer, client_layer);
criterion_main!(benches);
