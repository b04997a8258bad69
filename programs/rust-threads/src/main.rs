//! Threads of Rust `std` on Tessera: `thread::spawn` and `join`, a `Mutex` counter shared through
//! `Arc`, an `mpsc` channel from several producers, a `Condvar` hand-off, a timed
//! `recv_timeout` that expires, and scoped threads. Prints `rust-threads: ... ok` lines and
//! exits 0, or says what failed and exits 1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn fail(what: &str) -> ! {
    println!("rust-threads: FAILED: {what}");
    std::process::exit(1);
}

fn main() {
    let counter = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let c = Arc::clone(&counter);
            thread::spawn(move || {
                for i in 0..5000 {
                    *c.lock().unwrap() += 1;
                    if i % 500 == 0 {
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap_or_else(|_| fail("join"));
    }
    let total = *counter.lock().unwrap();
    if total != 30_000 {
        fail("mutex counter");
    }
    println!("rust-threads: mutex counter {total} ok");

    let (tx, rx) = mpsc::channel();
    for p in 0..4u64 {
        let tx = tx.clone();
        thread::spawn(move || {
            for i in 0..250u64 {
                tx.send(p * 1000 + i).unwrap();
            }
        });
    }
    drop(tx);
    let (mut n, mut sum) = (0u64, 0u64);
    for v in rx {
        n += 1;
        sum += v;
    }
    if n != 1000 || sum != (0..4u64).map(|p| p * 1000 * 250 + 249 * 250 / 2).sum::<u64>() {
        fail("channel");
    }
    println!("rust-threads: channel {n} messages ok");

    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let other = Arc::clone(&pair);
    let t = thread::spawn(move || {
        let (m, cv) = &*other;
        for round in 0..200u32 {
            let mut g = m.lock().unwrap();
            while *g != round * 2 + 1 {
                g = cv.wait(g).unwrap();
            }
            *g += 1;
            cv.notify_one();
        }
    });
    {
        let (m, cv) = &*pair;
        for round in 0..200u32 {
            let mut g = m.lock().unwrap();
            while *g != round * 2 {
                g = cv.wait(g).unwrap();
            }
            *g += 1;
            cv.notify_one();
        }
    }
    t.join().unwrap_or_else(|_| fail("condvar join"));
    if *pair.0.lock().unwrap() != 400 {
        fail("condvar");
    }
    println!("rust-threads: condvar 200 rounds ok");

    let (_tx, rx) = mpsc::channel::<u32>();
    let start = Instant::now();
    match rx.recv_timeout(Duration::from_millis(30)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        _ => fail("recv_timeout"),
    }
    if start.elapsed() < Duration::from_millis(30) {
        fail("recv_timeout returned early");
    }
    println!("rust-threads: recv_timeout ok");

    let hits = AtomicUsize::new(0);
    let data = [1u64, 2, 3, 4, 5, 6, 7, 8];
    let sums: Vec<u64> = thread::scope(|s| {
        let hs: Vec<_> = data
            .chunks(2)
            .map(|c| {
                let hits = &hits;
                s.spawn(move || {
                    hits.fetch_add(1, Ordering::Relaxed);
                    c.iter().sum::<u64>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if sums != [3, 7, 11, 15] || hits.load(Ordering::Relaxed) != 4 {
        fail("scoped threads");
    }
    println!("rust-threads: scoped threads ok");
    println!("rust-threads: ok");
}
