//! The process benchmark, run by `cargo xtask bench proc` under `-icount shift=0,sleep=off` (one
//! instruction per virtual nanosecond), with the example programs in the image's archive. Prints
//! `bench op=... ns=...` lines:
//! - `null-syscall`: the program's own measurement of `getppid` from EL0 and back;
//! - `exec-exit`: loading `exit0` (a static glibc program) into a fresh process, running it to its
//!   `exit_group` and tearing the process down, the median of 11 runs, measured by the kernel;
//! - `fork-exit`, `fork-exec`: the medians `forkbench-exit` and `forkbench-exec` measure (fork +
//!   `_exit` + `waitpid`; fork + `execve` of `exit0` + `waitpid`);
//! - `fork-touched mode=M folio=F`: `forkbench-touch`'s median fork of a process with 256 MiB
//!   touched;
//! - `kvsnap mode=M folio=F`: kvsnap's fork latency, copy-on-write faults and bytes copied for a
//!   64 MiB store.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use libos::exec::cpio::Archive;
use libos::println;
use libos::user::{self, Exit};

libos::main!(main);

/// Runs `name` from the archive with `args`, capturing its output; fails unless it exits 0.
fn run(archive: &Archive<'static>, name: &str, args: &[&str]) -> Result<String, &'static str> {
    let entry = archive
        .find(name)
        .ok_or("a benchmark program is missing from the image")?;
    let mut argv = alloc::vec![name];
    argv.extend_from_slice(args);
    let mut result = None;
    let out = libos::console::capture(|| result = Some(user::run(entry.data, &argv, &[])));
    if result != Some(Ok(Exit::Code(0))) {
        println!("{name} {args:?} ended with {result:?}:\n{out}");
        return Err("a benchmark program failed");
    }
    Ok(out)
}

/// The number after `prefix` on the line that starts with it.
fn number_after(out: &str, prefix: &str) -> Result<u64, &'static str> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .ok_or("a benchmark program printed no figure")
}

fn main() -> Result<(), &'static str> {
    let archive = Archive::new(libos::programs::archive()).map_err(|_| "bad program archive")?;
    let null = archive
        .find("null-syscall")
        .ok_or("no null-syscall program in the image")?;
    match user::run(null.data, &["null-syscall"], &[]) {
        Ok(Exit::Code(0)) => {}
        other => {
            println!("null-syscall ended with {other:?}");
            return Err("null-syscall failed");
        }
    }
    let exit0 = archive.find("exit0").ok_or("no exit0 program in the image")?;
    let mut times: Vec<u64> = Vec::new();
    for _ in 0..11 {
        let t0 = libos::arch::timer::now_ns();
        let r = user::run(exit0.data, &["exit0"], &[]);
        let t1 = libos::arch::timer::now_ns();
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

    let out = run(&archive, "forkbench-exit", &["200"])?;
    println!(
        "bench op=fork-exit ns={}",
        number_after(&out, "forkbench-exit: median ")?
    );
    let out = run(&archive, "forkbench-exec", &["100"])?;
    println!(
        "bench op=fork-exec ns={}",
        number_after(&out, "forkbench-exec: median ")?
    );

    for (mode, folio) in [("share", "64k"), ("copy", "64k"), ("share", "4k"), ("copy", "4k")] {
        let out = run(
            &archive,
            "forkbench-touch",
            &["256", "5", "--fork", mode, "--folio", folio],
        )?;
        println!(
            "bench op=fork-touched mode={mode} folio={folio} ns={}",
            number_after(&out, "forkbench-touch: fork median ")?
        );
    }
    for (mode, folio) in [("share", "64k"), ("copy", "64k"), ("share", "4k"), ("copy", "4k")] {
        let out = run(
            &archive,
            "kvsnap",
            &["--mib", "64", "--folio", folio, "--fork", mode],
        )?;
        println!(
            "bench op=kvsnap mode={mode} folio={folio} ns={} cow_faults={} bytes_copied={}",
            number_after(&out, "kvsnap: fork latency ")?,
            number_after(&out, "kvsnap: cow faults ")?,
            number_after(&out, "kvsnap: cow faults ").and_then(|_| {
                out.lines()
                    .find_map(|l| l.split("bytes copied ").nth(1))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .ok_or("kvsnap printed no bytes copied")
            })?,
        );
    }
    Ok(())
}
