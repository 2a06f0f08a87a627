//! A request pipeline: auth claims and a trace id travel as typed `Key<T>` values through
//! nested scopes. This is the Go interview's "middleware that injects auth claims into the
//! request context" (seeds Q16), without `Value(any) any` and without type assertions.
//!
//! What it shows:
//! - the auth middleware verifies the token *before* binding anything, so a rejected request
//!   never reaches the handler half-authenticated;
//! - `auth::CLAIMS` is a private `static`: like Go's unexported key type, no other module can bind
//!   or read it, and `auth::claims` is the only, typed, accessor;
//! - the trace id is bound once at the edge and read deep in the call stack, in threads two scopes
//!   down, either explicitly (`ctx.value(&KEY)`) or ambiently (`KEY.get()`) by a logger that was
//!   never handed a context;
//! - a `Key::not_inherited` span name stays on the thread that bound it: spawned children start
//!   without it and name their own span;
//! - a failing child cancels its siblings, which see the typed error as their cause.
//!
//! Run with `cargo run --release --example request_pipeline`.

use std::time::{Duration, Instant};
use tether::{Canceller, Context, Key, ScopeBuilder, blocking};

/// The trace id, bound once per request at the edge. Public: anyone may read it.
static TRACE_ID: Key<u64> = Key::new("trace_id");

/// The span this thread is working in. Not inherited: a spawned child names its own.
static SPAN: Key<&'static str> = Key::not_inherited("span");

/// A logger that takes no context parameter: it reads the ambient one (`tether::current`), as
/// slog or zap read request fields from Go's `ctx`. Outside any scope it prints dashes.
fn log(message: &str) {
    let trace = TRACE_ID.get().map_or("-".to_string(), |t| format!("{t:04x}"));
    let span = SPAN.get().unwrap_or("-");
    println!("  [trace={trace} span={span:<8}] {message}");
}

/// The auth middleware and its private key.
mod auth {
    use tether::{Context, Key, Valuer};

    /// What a verified token says about the caller.
    #[derive(Clone, Debug)]
    pub struct Claims {
        pub subject: &'static str,
        pub scopes: &'static [&'static str],
    }

    /// Private: only this module can bind or read the claims (Go's unexported `claimsKey{}`).
    static CLAIMS: Key<Claims> = Key::new("auth.claims");

    #[derive(Debug, thiserror::Error)]
    pub enum AuthError {
        #[error("401 unauthorized: unknown token {0:?}")]
        Unauthorized(String),
        #[error("403 forbidden: {subject} lacks scope {scope:?}")]
        Forbidden { subject: &'static str, scope: &'static str },
    }

    /// Stands in for a JWT library: maps a bearer token to its claims.
    fn verify(token: &str) -> Option<Claims> {
        match token {
            "tok-ada" => Some(Claims { subject: "ada", scopes: &["profile:read", "orders:read"] }),
            "tok-bob" => Some(Claims { subject: "bob", scopes: &["profile:read"] }),
            _ => None,
        }
    }

    /// Verifies the `Authorization` header and returns the request context with the claims
    /// bound. On failure it returns before binding anything.
    pub fn middleware(request: &Context, authorization: &str) -> Result<Context, AuthError> {
        let token = authorization.strip_prefix("Bearer ").unwrap_or(authorization);
        let claims = verify(token).ok_or_else(|| AuthError::Unauthorized(token.to_string()))?;
        Ok(request.with_value(&CLAIMS, claims))
    }

    /// The claims of the request `ctx` belongs to. Takes any `Valuer`: a `Context`, a Go
    /// adapter `Ctx`, or your own type.
    pub fn claims(ctx: &(impl Valuer + ?Sized)) -> Option<&Claims> {
        CLAIMS.get_in(ctx)
    }

    /// Fails unless the caller's claims grant `scope`.
    pub fn require(ctx: &Context, scope: &'static str) -> Result<&'static str, AuthError> {
        let claims = claims(ctx).expect("require() runs behind the middleware");
        match claims.scopes.contains(&scope) {
            true => Ok(claims.subject),
            false => Err(AuthError::Forbidden { subject: claims.subject, scope }),
        }
    }
}

/// A downstream call: "works" for `latency` unless the request is cancelled first.
fn call(ctx: &Context, what: &str, latency: Duration) -> Result<String, auth::AuthError> {
    match blocking::sleep(ctx, latency) {
        Ok(()) => {
            log(&format!("{what}: done"));
            Ok(format!("{what} ok"))
        }
        Err(cause) => {
            log(&format!("{what}: cancelled ({cause})"));
            Ok(format!("{what} cancelled"))
        }
    }
}

/// Loads the caller's orders from two shards, in a scope nested inside the handler's child.
fn load_orders(ctx: &Context) -> Result<String, auth::AuthError> {
    let subject = auth::require(ctx, "orders:read")?;
    tether::with_current(&ctx.with_value(&SPAN, "orders"), || {
        log(&format!("loading orders of {subject} from two shards"));
        // A nested scope: its parent is the ambient context, so the claims and the trace id
        // reach its children without being passed.
        tether::scope(|s| {
            for shard in ["shard-a", "shard-b"] {
                s.spawn(move |ctx| {
                    let who = auth::claims(ctx).map(|c| c.subject);
                    let trace = ctx.value(&TRACE_ID).copied();
                    log(&format!("{shard}: explicit reads: subject={who:?} trace={trace:x?}"));
                    call(ctx, shard, Duration::from_millis(20))
                });
            }
            s.wait_all(); // let both shards finish rather than cancelling them at the exit
        })
        .expect("shard queries do not fail");
        Ok("orders ok".to_string())
    })
}

/// One request, end to end: edge, middleware, handler scope, nested scopes.
fn handle(server: &Context, trace: u64, authorization: &str) {
    let start = Instant::now();
    println!("request trace={trace:04x} authorization={authorization:?}");
    // 1. The edge binds the trace id: everything below this request sees it.
    let request = server.with_value(&TRACE_ID, trace);
    // 2. The middleware binds the claims, or rejects the request before any work starts.
    let request = match auth::middleware(&request, authorization) {
        Ok(request) => request,
        Err(err) => return println!("  -> {err} (no scope was opened, no value was bound)\n"),
    };
    // 3. The handler: a scope with a deadline; its span name stays on this thread.
    let outcome =
        ScopeBuilder::new().parent(&request).timeout(Duration::from_millis(500)).value(&SPAN, "handler").run(
            |s| {
                log("handler: fetching the profile and the orders in parallel");
                let profile = s.spawn_fallible(|ctx| {
                    tether::with_current(&ctx.with_value(&SPAN, "profile"), || {
                        auth::require(ctx, "profile:read")?;
                        call(ctx, "profile", Duration::from_millis(100))
                    })
                });
                let orders = s.spawn_fallible(load_orders);
                let (profile, orders) = (profile.join().unwrap(), orders.join().unwrap());
                log("handler: both children joined");
                format!("{:?} + {:?}", profile.ok(), orders.ok())
            },
        );
    match outcome {
        Ok(body) => println!("  -> 200 {body} in {} ms\n", start.elapsed().as_millis()),
        Err(err) => {
            let typed =
                err.downcast_ref::<auth::AuthError>().map(|e| matches!(e, auth::AuthError::Forbidden { .. }));
            println!(
                "  -> {err} (recovered by type as Forbidden: {typed:?}) in {} ms\n",
                start.elapsed().as_millis()
            );
        }
    }
}

fn main() {
    let server = Context::new();
    log("outside any scope, the logger finds nothing");
    println!();
    handle(&server, 0x0a1, "Bearer tok-ada"); // every child succeeds
    handle(&server, 0x0b2, "Bearer tok-bob"); // orders:read missing: the slow profile call is cancelled
    handle(&server, 0x0c3, "Bearer forged"); // rejected by the middleware
    // Every request context was dropped: nothing is left registered below the server.
    println!(
        "server context: {} registered children, cancelled: {}",
        server.registered_children(),
        server.is_cancelled()
    );
}
