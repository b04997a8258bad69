//! The process benchmark, run by `cargo xtask bench proc` under `-icount shift=0,sleep=off` (one
//! instruction per virtual nanosecond), with the programs `null-syscall` and `exit0` in the
//! image's archive. Prints `bench op=... ns=...` lines:
//! - `null-syscall`: the program's own measurement of `getppid` from EL0 and back;
//! - `exec-exit`: loading `exit0` (a static glibc program) into a fresh process, running it to its
//!   `exit_group` and tearing the process down, the median of 11 runs, measured by the kernel.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libos::exec::cpio::Archive;
use libos::println;
use libos::user::{self, Exit};

libos::main!(main);

fn main() -> Result<(), &'static str> {
    let archive = Archive::new(libos::programs::archive()).map_err(|_| "bad program archive")?;
    let null = archive
        .find("null-syscall")
        .ok_or("no null-syscall program in the image")?;
    let exit0 = archive.find("exit0").ok_or("no exit0 program in the image")?;
    match user::run(null.data, &["null-syscall"], &[]) {
        Ok(Exit::Code(0)) => {}
        other => {
            println!("null-syscall ended with {other:?}");
            return Err("null-syscall failed");
        }
    }
    let mut times: Vec<u64> = Vec::new();
    for _ in 0..11 {
        let t0 = arch_now();
        let r = user::run(exit0.data, &["exit0"], &[]);
        let t1 = arch_now();
        if r != Ok(Exit::Code(0)) {
            println!("exit0 ended with {r:?}");
            return Err("exit0 failed");
        }
        times.push(t1 - t0);
    }
    times.sort_unstable();
    println!(
        "bench op=exec-exit ns={} runs={}",
        times[times.len() / 2],
        times.len()
    );
    Ok(())
}

fn arch_now() -> u64 {
    libos::arch::timer::now_ns()
}
