//! Children borrow from the enclosing stack, as with `std::thread::scope`.

use crate::shared;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

#[test]
fn children_read_shared_stack_data_and_the_borrow_ends_with_the_scope() {
    let _shared = shared();
    let mut numbers = vec![1, 2, 3, 4];
    let sum = tether::scope(|s| {
        let (left, right) = numbers.split_at(2);
        let a = s.spawn(|_| left.iter().sum::<i32>());
        let b = s.spawn(|_| right.iter().sum::<i32>());
        a.join().unwrap() + b.join().unwrap()
    })
    .unwrap();
    assert_eq!(sum, 10);
    numbers.push(5); // no borrow outlives the scope
    assert_eq!(numbers.len(), 5);
}

#[test]
fn children_mutate_disjoint_parts_of_a_stack_array() {
    let _shared = shared();
    let mut cells = [0_u32; 8];
    tether::scope(|s| {
        for (i, cell) in cells.iter_mut().enumerate() {
            s.spawn(move |_| *cell = i as u32 * 10);
        }
        s.wait_all();
    })
    .unwrap();
    assert_eq!(cells, [0, 10, 20, 30, 40, 50, 60, 70]);
}

#[test]
fn children_share_a_mutex_and_an_atomic_on_the_callers_stack() {
    let _shared = shared();
    let log = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    tether::scope(|s| {
        for i in 0..4 {
            let (log, count) = (&log, &count);
            s.spawn(move |_| {
                log.lock().unwrap().push(i);
                count.fetch_add(1, SeqCst);
            });
        }
        s.wait_all();
    })
    .unwrap();
    let mut log = log.into_inner().unwrap();
    log.sort();
    assert_eq!(log, [0, 1, 2, 3]);
    assert_eq!(count.load(SeqCst), 4);
}

#[test]
fn the_body_may_borrow_mutably_what_no_child_borrows_and_returns_its_result() {
    let _shared = shared();
    let mut body_only = String::new();
    let shared = [1, 2];
    let r = tether::scope(|s| {
        let h = s.spawn(|_| shared.len());
        body_only.push_str("body ran");
        h.join().unwrap()
    })
    .unwrap();
    assert_eq!((r, body_only.as_str()), (2, "body ran"));
}
