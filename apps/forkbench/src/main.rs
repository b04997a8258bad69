//! The fork benchmark of issue 5, run by `cargo xtask bench fork` under
//! `-icount shift=0,sleep=off` (one instruction per virtual nanosecond).
//!
//! For each size (1, 16, 64, 256 MiB) and with 64 KiB folios on and off, exactly this workload:
//! map the size 2 MiB-aligned (anonymous private), write one byte per 4 KiB page (first touch),
//! fork with the child exiting at once (five times; the median fork time is reported), fork again
//! with the child writing one byte per 4 KiB page (copy-on-write), then munmap. One line
//! `bench ...` per size and mode.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libos::mm::vma::{MapAlign, Placement, VmProt, VmaKind};
use libos::mm::{VirtAddr, PAGE_SIZE};
use libos::println;
use libos::process::{Process, TargetMachine};

libos::main!(main);

/// 2 MiB-aligned base of the benchmark region.
const BASE: u64 = 0x0000_0200_0000_0000;

fn now() -> u64 {
    libos::arch::timer::now_ns()
}

fn touch(base: u64, len: u64, v: u8) {
    for page in 0..len / PAGE_SIZE {
        // SAFETY: inside the region mapped read-write in the running process.
        unsafe { core::ptr::write_volatile((base + page * PAGE_SIZE) as *mut u8, v) };
    }
}

fn run(mib: u64, large: bool) -> Result<(), &'static str> {
    let len = mib << 20;
    let mut parent = Process::new().map_err(|_| "out of memory")?;
    let align = if large { MapAlign::Size64K } else { MapAlign::Page };
    parent
        .space()
        .mmap(&mut TargetMachine, Placement::Fixed(VirtAddr(BASE)), len, VmProt::RW, VmaKind::AnonPrivate, align)
        .map_err(|_| "mmap failed")?;

    let t = now();
    parent.run(|| touch(BASE, len, 1)).map_err(|_| "segfault in first touch")?;
    let touch_ns = now() - t;

    let mut forks: Vec<u64> = Vec::new();
    for _ in 0..5 {
        let t = now();
        let child = parent.fork().map_err(|_| "fork failed")?;
        forks.push(now() - t);
        child.exit();
    }
    forks.sort_unstable();
    let fork_ns = forks[2];

    let mut child = parent.fork().map_err(|_| "fork failed")?;
    let t = now();
    child.run(|| touch(BASE, len, 2)).map_err(|_| "segfault in the child")?;
    let child_write_ns = now() - t;
    let t = now();
    child.exit();
    let child_exit_ns = now() - t;

    let t = now();
    parent.space().munmap(&mut TargetMachine, VirtAddr(BASE), len).map_err(|_| "munmap failed")?;
    let munmap_ns = now() - t;
    parent.exit();

    println!(
        "bench mib={mib} folios={} touch_ns={touch_ns} fork_ns={fork_ns} fork_min_ns={} fork_max_ns={} child_write_ns={child_write_ns} child_exit_ns={child_exit_ns} munmap_ns={munmap_ns}",
        if large { "64K" } else { "4K" },
        forks[0],
        forks[4],
    );
    Ok(())
}

fn main() -> Result<(), &'static str> {
    let before = libos::runtime::frames_free_or_heap();
    // `sizes=1,16` on the command line runs a subset (default: all four).
    let sizes: Vec<u64> = match libos::boot_config().bootargs.get("sizes") {
        Some(list) => list.split(',').filter_map(|s| s.parse().ok()).collect(),
        None => alloc::vec![1, 16, 64, 256],
    };
    for mib in sizes {
        for large in [true, false] {
            run(mib, large)?;
        }
    }
    let after = libos::runtime::frames_free_or_heap();
    if after != before {
        println!("leaked {} frames", before as i64 - after as i64);
        return Err("frames leaked");
    }
    Ok(())
}
