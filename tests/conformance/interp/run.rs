//! Running a validated script on `tether::go`, against a virtual clock: sleeps are real, and a run
//! that drifts from the clock or runs an op close to a pending deadline is marked late.

use super::parse::{Op, parse_offset};
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tether::go::{self, AfterFuncStop, CancelCauseFunc, CancelFunc, Ctx};
use tether::{CancelError, Cause};

/// How long `settle` waits for after_funcs that must run.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest drift from the virtual clock the timing model allows.
const TOLERANCE: Duration = Duration::from_millis(25);
/// An op this close before a pending deadline is a timing hazard.
const HAZARD_BEFORE: Duration = Duration::from_millis(15);
/// An op this close after a pending deadline is a timing hazard.
const HAZARD_AFTER: Duration = Duration::from_millis(100);

/// A named script cause: one error value per name, whose message is the name.
#[derive(Debug)]
struct Named(String);

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Named {}

#[derive(Clone)]
enum Canceller {
    None,
    Plain(CancelFunc),
    Cause(CancelCauseFunc),
}

impl Canceller {
    fn cancel(&self, cause: Option<Cause>) {
        match self {
            Canceller::None => unreachable!("validated: the context has a cancel function"),
            Canceller::Plain(f) => f.cancel(),
            Canceller::Cause(f) => f.cancel(cause),
        }
    }
}

struct CtxEntry {
    id: String,
    ctx: Ctx,
    cancel: Canceller,
}

struct AfEntry {
    id: String,
    ctx_id: String,
    ctx: Ctx,
    stop: AfterFuncStop,
    stop_true: AtomicBool,
    runs: Arc<AtomicU32>,
    timed_out: bool,
}

struct Deadline {
    at: Instant,
    label: String,
    /// How the adapter prints this instant inside `.WithDeadline(...)`.
    text: String,
    /// Still in the future when first seen: it may fire during the run.
    future: bool,
}

pub(super) struct Interp<W: Write> {
    pub(super) out: W,
    t0: Instant,
    virt: Duration,
    ctxs: Vec<CtxEntry>,
    by_id: HashMap<String, usize>,
    afs: Vec<AfEntry>,
    af_by_id: HashMap<String, usize>,
    causes: HashMap<String, Cause>,
    keys: BTreeSet<String>,
    deadlines: Vec<Deadline>,
    ran_tx: Sender<()>,
    ran_rx: Receiver<()>,
    pub(super) late: bool,
}

fn is_closed(rx: &Receiver<std::convert::Infallible>) -> bool {
    matches!(rx.try_recv(), Err(TryRecvError::Disconnected))
}

/// The text the adapter prints for `at` inside `.WithDeadline(...)`, read from a probe context.
fn deadline_text(at: Instant) -> String {
    let (probe, cancel) = go::with_deadline(&go::background(), at);
    let s = probe.to_string();
    cancel.cancel();
    let inner = &s["context.Background.WithDeadline(".len()..s.len() - 1];
    strip_remaining(inner).to_string()
}

/// `<time> [<remaining>]` -> `<time>`.
fn strip_remaining(inner: &str) -> &str {
    match inner.rfind(" [") {
        Some(i) if inner.ends_with(']') => &inner[..i],
        _ => inner,
    }
}

impl<W: Write> Interp<W> {
    pub(super) fn new(out: W) -> Self {
        let (ran_tx, ran_rx) = crossbeam_channel::bounded(1);
        Interp {
            out,
            t0: Instant::now(),
            virt: Duration::ZERO,
            ctxs: Vec::new(),
            by_id: HashMap::new(),
            afs: Vec::new(),
            af_by_id: HashMap::new(),
            causes: HashMap::new(),
            keys: BTreeSet::new(),
            deadlines: Vec::new(),
            ran_tx,
            ran_rx,
            late: false,
        }
    }

    fn cause(&mut self, tok: &str) -> Option<Cause> {
        match tok {
            "nil" => None,
            "canceled" => Some(Cause::Cancelled),
            "deadline_exceeded" => Some(Cause::DeadlineExceeded),
            name => Some(
                self.causes
                    .entry(name.to_string())
                    .or_insert_with(|| Cause::custom(Named(name.into())))
                    .clone(),
            ),
        }
    }

    fn cause_name(&self, cause: Option<Cause>) -> String {
        match cause {
            None => "none".into(),
            Some(Cause::Cancelled) => "canceled".into(),
            Some(Cause::DeadlineExceeded) => "deadline_exceeded".into(),
            Some(c) => match self.causes.iter().find(|(_, named)| named.is_same(&c)) {
                Some((name, _)) => name.clone(),
                None => format!("?{:?}", c.to_string()),
            },
        }
    }

    fn at(&self, offset_ms: i64) -> Instant {
        let d = Duration::from_millis(offset_ms.unsigned_abs());
        if offset_ms >= 0 { self.t0 + d } else { self.t0 - d }
    }

    fn ctx(&self, id: &str) -> &CtxEntry {
        &self.ctxs[self.by_id[id]]
    }

    fn add(&mut self, id: &str, ctx: Ctx, cancel: Canceller) {
        if let Some(at) = ctx.deadline() {
            if !self.deadlines.iter().any(|d| d.at == at) {
                let future = at > Instant::now();
                self.deadlines.push(Deadline { at, label: id.into(), text: deadline_text(at), future });
            }
        }
        self.by_id.insert(id.into(), self.ctxs.len());
        self.ctxs.push(CtxEntry { id: id.into(), ctx, cancel });
    }

    fn label(&self, ctx: &Ctx) -> String {
        match ctx.deadline() {
            None => "none".into(),
            Some(at) => match self.deadlines.iter().find(|d| d.at == at) {
                Some(d) => format!("@{}", d.label),
                None => "@?".into(),
            },
        }
    }

    fn canon_string(&self, ctx: &Ctx) -> String {
        const MARK: &str = ".WithDeadline(";
        let s = ctx.to_string();
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find(MARK) {
            let after = &rest[i + MARK.len()..];
            let Some(close) = after.find(['(', ')']).filter(|&j| after.as_bytes()[j] == b')') else {
                break;
            };
            let text = strip_remaining(&after[..close]);
            let label = self.deadlines.iter().find(|d| d.text == text).map_or("?", |d| d.label.as_str());
            out.push_str(&rest[..i]);
            out.push_str(&format!("{MARK}@{label})"));
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }

    fn settle(&mut self) -> io::Result<()> {
        let limit = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let pending: Vec<usize> = (0..self.afs.len())
                .filter(|&i| {
                    let a = &self.afs[i];
                    !a.timed_out
                        && a.runs.load(Ordering::SeqCst) == 0
                        && !a.stop_true.load(Ordering::SeqCst)
                        && a.ctx.done().is_some_and(|rx| is_closed(&rx))
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > limit {
                let ids: Vec<&str> = pending.iter().map(|&i| self.afs[i].id.as_str()).collect();
                writeln!(self.out, "! settle-timeout {}", ids.join(" "))?;
                for i in pending {
                    self.afs[i].timed_out = true;
                }
                return Ok(());
            }
            // Woken by the next after_func to finish; the timeout covers a coalesced wake-up.
            let _ = self.ran_rx.recv_timeout(Duration::from_millis(1));
        }
    }

    /// Notes a run that left the timing model (exit status 3).
    fn hazard(&mut self) {
        let now = Instant::now();
        if now.saturating_duration_since(self.t0 + self.virt) > TOLERANCE {
            self.late = true;
        }
        for d in self.deadlines.iter().filter(|d| d.future) {
            let near = if now < d.at { d.at - now < HAZARD_BEFORE } else { now - d.at < HAZARD_AFTER };
            if near {
                self.late = true;
            }
        }
    }

    pub(super) fn run(&mut self, ops: &[Op]) -> io::Result<()> {
        self.t0 = Instant::now();
        for op in ops {
            self.hazard();
            writeln!(self.out, "> {}", op.text())?;
            self.exec(op)?;
            self.settle()?;
            self.hazard();
            self.out.flush()?;
        }
        Ok(())
    }

    fn exec(&mut self, op: &Op) -> io::Result<()> {
        let a = &op.args;
        match op.name.as_str() {
            "note" => {}
            "background" => self.add(&a[0], go::background(), Canceller::None),
            "todo" => self.add(&a[0], go::todo(), Canceller::None),
            "with_cancel" => {
                let (c, cancel) = go::with_cancel(&self.ctx(&a[1]).ctx);
                self.add(&a[0], c, Canceller::Plain(cancel));
            }
            "with_cancel_cause" => {
                let (c, cancel) = go::with_cancel_cause(&self.ctx(&a[1]).ctx);
                self.add(&a[0], c, Canceller::Cause(cancel));
            }
            "with_deadline" | "with_deadline_cause" | "with_timeout" | "with_timeout_cause" => {
                let off = parse_offset(&a[2]).expect("validated");
                let cause = if a.len() == 4 { self.cause(&a[3]) } else { None };
                let parent = self.ctx(&a[1]).ctx.clone();
                let (c, cancel) = if op.name.starts_with("with_timeout") {
                    if off >= 0 {
                        go::with_timeout_cause(&parent, Duration::from_millis(off as u64), cause)
                    } else {
                        // Go's negative timeout: a deadline that far before now.
                        let at = Instant::now() - Duration::from_millis(off.unsigned_abs());
                        go::with_deadline_cause(&parent, at, cause)
                    }
                } else {
                    go::with_deadline_cause(&parent, self.at(off), cause)
                };
                self.add(&a[0], c, Canceller::Plain(cancel));
            }
            "with_value" => {
                self.keys.insert(a[2].clone());
                let c = go::with_value(&self.ctx(&a[1]).ctx, a[2].clone(), a[3].clone());
                self.add(&a[0], c, Canceller::None);
            }
            "with_value_nil" => {
                self.keys.insert(a[2].clone());
                let c = go::with_nil_value(&self.ctx(&a[1]).ctx, a[2].clone());
                self.add(&a[0], c, Canceller::None);
            }
            "without_cancel" => {
                let c = go::without_cancel(&self.ctx(&a[1]).ctx);
                self.add(&a[0], c, Canceller::None);
            }
            "cancel" => {
                let cause = if a.len() == 2 { self.cause(&a[1]) } else { None };
                self.ctx(&a[0]).cancel.cancel(cause);
            }
            "after_func" => self.after_func(a),
            "stop" => {
                let af = &self.afs[self.af_by_id[&a[0]]];
                let r = af.stop.stop();
                if r {
                    af.stop_true.store(true, Ordering::SeqCst);
                }
                writeln!(self.out, "stop {} = {r}", af.id)?;
            }
            "sleep" => {
                let n: u64 = a[0].parse().expect("validated");
                self.virt += Duration::from_millis(n);
                std::thread::sleep((self.t0 + self.virt).saturating_duration_since(Instant::now()));
            }
            "errtext" => {
                let c = &self.ctx(&a[0]).ctx;
                let err = c.err();
                let quote = |s: Option<String>| s.map_or("none".to_string(), |s| format!("{s:?}"));
                let line = format!(
                    "errtext {} err={} timeout={} cause={}",
                    a[0],
                    quote(err.map(|e| e.to_string())),
                    err.is_some_and(go::is_timeout),
                    quote(go::cause(c).map(|c| c.to_string()))
                );
                writeln!(self.out, "{line}")?;
            }
            "check" => self.check(a)?,
            other => unreachable!("validated op {other}"),
        }
        Ok(())
    }

    fn after_func(&mut self, a: &[String]) {
        let on = self.ctx(&a[1]).ctx.clone();
        let action: Box<dyn FnOnce() + Send> = match a.get(2).map(String::as_str) {
            None => Box::new(|| {}),
            Some("cancel") => {
                let target = self.ctx(&a[3]).cancel.clone();
                Box::new(move || target.cancel(None))
            }
            Some(_) => {
                let target = self.ctx(&a[3]).cancel.clone();
                let on = on.clone();
                Box::new(move || target.cancel(go::cause(&on)))
            }
        };
        let runs = Arc::new(AtomicU32::new(0));
        let (counter, ran) = (runs.clone(), self.ran_tx.clone());
        let stop = go::after_func(&on, move || {
            action();
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = ran.try_send(());
        });
        self.af_by_id.insert(a[0].clone(), self.afs.len());
        self.afs.push(AfEntry {
            id: a[0].clone(),
            ctx_id: a[1].clone(),
            ctx: on,
            stop,
            stop_true: AtomicBool::new(false),
            runs,
            timed_out: false,
        });
    }

    fn check(&mut self, a: &[String]) -> io::Result<()> {
        self.settle()?;
        let keys: Vec<String> = if a.is_empty() { self.keys.iter().cloned().collect() } else { a.to_vec() };
        let mut lines = Vec::new();
        for e in &self.ctxs {
            let c = &e.ctx;
            let err = match c.err() {
                None => "none",
                Some(CancelError::Cancelled) => "canceled",
                Some(CancelError::DeadlineExceeded) => "deadline_exceeded",
            };
            let done = match c.done() {
                None => "nil",
                Some(rx) if is_closed(&rx) => "closed",
                Some(_) => "open",
            };
            let values: Vec<String> = keys
                .iter()
                .map(|k| match c.value(k.as_str()).and_then(|v| v.downcast_ref::<String>()) {
                    Some(v) => format!("{k}={v}"),
                    None => format!("{k}=<nil>"),
                })
                .collect();
            lines.push(format!(
                "  {} err={err} cause={} done={done} deadline={} values=[{}] string={}",
                e.id,
                self.cause_name(go::cause(c)),
                self.label(c),
                values.join(" "),
                self.canon_string(c)
            ));
        }
        for af in &self.afs {
            lines.push(format!("  {} on={} runs={}", af.id, af.ctx_id, af.runs.load(Ordering::SeqCst)));
        }
        for line in lines {
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }
}
