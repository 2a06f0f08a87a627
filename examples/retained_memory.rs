//! Bytes still allocated after 1,000,000 children are dropped without being cancelled, counted by
//! a global allocator; tether next to tokio-util's `CancellationToken`. The target is zero.
//!
//! For each shape the parent (root) is created first, then the children, which are dropped
//! uncancelled. `retained_by_root` is what the still-live root holds for children it no longer
//! has (for instance a slab's capacity); `retained_after_root` is what is left once the root is
//! dropped too. `live_per_child` is the cost of a child while it lives.
//!
//! ```text
//! cargo run --release --example retained_memory            # a table
//! cargo run --release --example retained_memory -- --json  # one JSON object (for compare.sh)
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;
use tether::Context;
use tokio_util::sync::CancellationToken;

/// Counts the bytes currently allocated through it, and the peak.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn add(delta: isize) {
    let now = ALLOCATED.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 1_000_000;

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

struct Measured {
    name: &'static str,
    live_per_child: f64,
    retained_by_root: isize,
    retained_after_root: isize,
}

/// Measures one shape: `make_root` builds the parent, `make_children` the 1,000,000 children
/// (returned as one value holding them all), dropped uncancelled.
fn measure<R, C>(name: &'static str, make_root: impl Fn() -> R, make_children: impl Fn(&R) -> C) -> Measured {
    // Warm up once so lazily created globals (a timer thread, thread-locals) are not counted.
    {
        let root = make_root();
        drop(make_children(&root));
    }
    // Timer threads may free what they held a moment later.
    std::thread::sleep(Duration::from_millis(50));
    let before = allocated();
    let root = make_root();
    let with_root = allocated();
    PEAK.store(with_root, Ordering::Relaxed);
    let children = make_children(&root);
    let live = PEAK.load(Ordering::Relaxed) - with_root;
    drop(children);
    std::thread::sleep(Duration::from_millis(50));
    let retained_by_root = allocated() - with_root;
    drop(root);
    std::thread::sleep(Duration::from_millis(50));
    Measured {
        name,
        live_per_child: live as f64 / N as f64,
        retained_by_root,
        retained_after_root: allocated() - before,
    }
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let hour = Duration::from_secs(3600);
    let results = [
        measure("wide/tether", Context::new, |root| (0..N).map(|_| root.child()).collect::<Vec<_>>()),
        measure("wide_with_timeout/tether", Context::new, |root| {
            (0..N).map(|_| root.with_timeout(hour)).collect::<Vec<_>>()
        }),
        measure("deep/tether", Context::new, |root| {
            let mut ctx = root.clone();
            for _ in 0..N {
                ctx = ctx.child();
            }
            ctx
        }),
        measure("wide/tokio_util", CancellationToken::new, |root| {
            (0..N).map(|_| root.child_token()).collect::<Vec<_>>()
        }),
        measure("deep/tokio_util", CancellationToken::new, |root| {
            let mut chain = Vec::with_capacity(N);
            chain.push(root.child_token());
            for i in 1..N {
                let next = chain[i - 1].child_token();
                chain.push(next);
            }
            chain
        }),
    ];
    if json {
        let fields: Vec<String> = results
            .iter()
            .map(|m| {
                format!(
                    "\"{}\": {{\"live_per_child\": {:.1}, \"retained_by_root\": {}, \"retained_after_root\": {}}}",
                    m.name, m.live_per_child, m.retained_by_root, m.retained_after_root
                )
            })
            .collect();
        println!("{{{}}}", fields.join(", "));
    } else {
        println!("{N} children dropped uncancelled (bytes; target: 0 retained)");
        println!(
            "{:<26} {:>16} {:>18} {:>21}",
            "shape/library", "live per child", "retained by root", "retained after root"
        );
        for m in &results {
            println!(
                "{:<26} {:>16.1} {:>18} {:>21}",
                m.name, m.live_per_child, m.retained_by_root, m.retained_after_root
            );
        }
    }
}
