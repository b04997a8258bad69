//! A tiny Rust std program for Tessera's EL0 processes: exercises the heap (a growing `Vec`, a
//! `HashMap`), formatting and stdout, prints deterministic lines and exits 0.

use std::collections::HashMap;

fn main() {
    println!("rust-hello: hello from EL0");

    let mut squares = Vec::new();
    for i in 0..1000u64 {
        squares.push(i * i);
    }
    let sum: u64 = squares.iter().sum();
    println!("rust-hello: {} squares, sum {sum}", squares.len());

    let text = "the quick brown fox jumps over the lazy dog the end";
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word).or_default() += 1;
    }
    // HashMap iteration order is random: sort for a deterministic line.
    let mut words: Vec<_> = counts.into_iter().collect();
    words.sort();
    let line: Vec<String> = words.iter().map(|(w, n)| format!("{w}={n}")).collect();
    println!("rust-hello: words {}", line.join(" "));

    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("rust-hello: {} args {args:?}", args.len());
    println!("rust-hello: {:>8.3} {:#x} {:08b}", 22.0f64 / 7.0, 48879, 5u8);
    println!("rust-hello: done");
}
