use std::hint::black_box;
use tether::{Context, Key};
static KEYS: [Key<usize>; 100] = [const { Key::new("k") }; 100];
static MISSING: Key<usize> = Key::new("missing");
fn main() {
    let depth: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut ctx = Context::background();
    for (i, key) in KEYS.iter().take(depth).enumerate() {
        ctx = ctx.with_value(key, i);
    }
    let mut n = 0;
    for _ in 0..1_000_000 {
        if black_box(&ctx).value(black_box(&MISSING)).is_some() {
            n += 1;
        }
    }
    println!("{n}");
}
