//! The fork benchmark (batched PTE copy and copy-on-write page tables), run by `cargo xtask bench fork`
//! under `-icount shift=0,sleep=off` (one instruction per virtual nanosecond).
//!
//! For each size (1, 16, 64, 256, 1024 MiB) and each configuration — `Copy` fork mode with
//! 64 KiB folios, `Copy` with 4 KiB folios only (the Linux-style per-page copying baseline), and
//! `ShareTables` with 64 KiB folios — exactly this workload: map the size 2 MiB-aligned
//! (anonymous private), write one byte per 4 KiB page (first touch), fork with the child
//! exiting at once (five times; the median fork time is reported, and the first fork, the one
//! that write-protects the parent, apart), fork again with the child writing one byte per 4 KiB
//! page (copy-on-write), then munmap. One line `bench ...` per size and configuration, with the
//! time of each step and what the memory manager counted for it ([`SpaceStats`] of the spaces,
//! [`Stats`] of their roots; `fork_*` counters are those of the median fork, `fork_first_*`
//! those of the first).
//!
//! Command line: `sizes=1,16` runs a subset of the sizes, `modes=share-64k,copy-4k` a subset of
//! the configurations (`copy-64k`, `copy-4k`, `share-64k`, and `share-4k`, which is not run by
//! default).
//!
//! 1024 MiB needs more than 2 GiB of free RAM (the parent's memory and the child's copy of
//! it): xtask boots this image with `-m 3G`.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libos::mm::space::{ForkMode, SpaceStats};
use libos::mm::vma::{MapAlign, Placement, VmProt, VmaKind};
use libos::mm::{Stats, VirtAddr, PAGE_SIZE};
use libos::println;
use libos::process::Process;

libos::main!(main);

/// 2 MiB-aligned base of the benchmark region.
const BASE: u64 = 0x0000_0200_0000_0000;

/// The sizes run by default (MiB).
const SIZES: [u64; 5] = [1, 16, 64, 256, 1024];

/// One benchmark configuration: fork mode and whether faults may use 64 KiB folios.
#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    mode: ForkMode,
    large: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        name: "copy-64k",
        mode: ForkMode::Copy,
        large: true,
    },
    Config {
        name: "copy-4k",
        mode: ForkMode::Copy,
        large: false,
    },
    Config {
        name: "share-64k",
        mode: ForkMode::ShareTables,
        large: true,
    },
    Config {
        name: "share-4k",
        mode: ForkMode::ShareTables,
        large: false,
    },
];

/// The configurations run by default.
const DEFAULT_CONFIGS: [&str; 3] = ["copy-64k", "copy-4k", "share-64k"];

fn now() -> u64 {
    libos::arch::timer::now_ns()
}

fn touch(base: u64, len: u64, v: u8) {
    for page in 0..len / PAGE_SIZE {
        // SAFETY: inside the region mapped read-write in the running process.
        unsafe { core::ptr::write_volatile((base + page * PAGE_SIZE) as *mut u8, v) };
    }
}

/// One timed fork whose child exits at once, with what it cost in counters.
#[derive(Clone, Copy)]
struct ForkSample {
    ns: u64,
    /// The parent's space counters during the fork.
    parent: SpaceStats,
    /// The parent's root counters during the fork.
    parent_root: Stats,
    /// The child's root counters right after the fork (its whole life so far).
    child_root: Stats,
    /// The child's exit.
    exit_ns: u64,
}

/// `b - a`, for the [`SpaceStats`] fields reported.
fn space_delta(a: &SpaceStats, b: &SpaceStats) -> SpaceStats {
    SpaceStats {
        fork_dup_batches: b.fork_dup_batches - a.fork_dup_batches,
        fork_dup_pages: b.fork_dup_pages - a.fork_dup_pages,
        fork_wrprotects: b.fork_wrprotects - a.fork_wrprotects,
        fork_tables_shared: b.fork_tables_shared - a.fork_tables_shared,
        fork_tables_copied: b.fork_tables_copied - a.fork_tables_copied,
        table_breaks: b.table_breaks - a.table_breaks,
        table_takeovers: b.table_takeovers - a.table_takeovers,
        table_drops: b.table_drops - a.table_drops,
        ..SpaceStats::default()
    }
}

/// munmap of the benchmark region `[BASE, BASE + len)`.
fn munmap(p: &mut Process, len: u64) -> Result<(), &'static str> {
    p.munmap(VirtAddr(BASE), len).map_err(|_| "munmap failed")
}

fn fork_once(parent: &mut Process) -> Result<ForkSample, &'static str> {
    let s0 = *parent.space().stats();
    let r0 = *parent.space().root().stats();
    let t = now();
    let child = parent.fork().map_err(|_| "fork failed")?;
    let ns = now() - t;
    let parent_stats = space_delta(&s0, parent.space().stats());
    let parent_root = parent.space().root().stats().since(&r0);
    let child_root = *child.space().root().stats();
    let t = now();
    child.exit();
    let exit_ns = now() - t;
    Ok(ForkSample {
        ns,
        parent: parent_stats,
        parent_root,
        child_root,
        exit_ns,
    })
}

fn run(mib: u64, cfg: Config) -> Result<(), &'static str> {
    let len = mib << 20;
    let mut parent = Process::new().map_err(|_| "out of memory")?;
    parent.set_fork_mode(cfg.mode);
    let align = if cfg.large {
        MapAlign::Size64K
    } else {
        MapAlign::Page
    };
    parent
        .map(
            Placement::Fixed(VirtAddr(BASE)),
            len,
            VmProt::RW,
            VmaKind::AnonPrivate,
            align,
        )
        .map_err(|_| "mmap failed")?;

    log::debug!("{mib} MiB {}: first touch", cfg.name);
    let t = now();
    parent
        .run(|| touch(BASE, len, 1))
        .map_err(|_| "segfault in first touch")?;
    let touch_ns = now() - t;

    log::debug!("{mib} MiB {}: forks", cfg.name);
    let mut forks: Vec<ForkSample> = Vec::new();
    for _ in 0..5 {
        forks.push(fork_once(&mut parent)?);
    }
    let first = forks[0];
    forks.sort_by_key(|f| f.ns);
    let med = forks[2];

    let mut child = parent.fork().map_err(|_| "fork failed")?;
    let shared_after_fork = child.space().shared_tables();
    let c0 = *child.space().stats();
    let cr0 = *child.space().root().stats();
    log::debug!("{mib} MiB {}: child writes", cfg.name);
    let t = now();
    child
        .run(|| touch(BASE, len, 2))
        .map_err(|_| "segfault in the child")?;
    let child_write_ns = now() - t;
    let cs = *child.space().stats();
    let cw = space_delta(&c0, &cs);
    let cwr = child.space().root().stats().since(&cr0);
    log::debug!("{mib} MiB {}: child exit", cfg.name);
    let t = now();
    child.exit();
    let child_exit_ns = now() - t;

    log::debug!("{mib} MiB {}: munmap", cfg.name);
    let pr0 = *parent.space().root().stats();
    let t = now();
    munmap(&mut parent, len)?;
    let munmap_ns = now() - t;
    let mr = parent.space().root().stats().since(&pr0);
    parent.exit();

    let mode = match cfg.mode {
        ForkMode::Copy => "Copy",
        ForkMode::ShareTables => "ShareTables",
    };
    println!(
        "bench mib={mib} mode={mode} folios={} touch_ns={touch_ns} fork_ns={} fork_min_ns={} fork_max_ns={} fork_first_ns={} \
         fork_first_parent_desc_writes={} fork_first_parent_tlbi={} fork_first_wrprotects={} \
         fork_exit_ns={} fork_dup_batches={} fork_dup_pages={} fork_wrprotects={} fork_tables_shared={} fork_tables_copied={} \
         fork_parent_desc_writes={} fork_parent_tlbi={} fork_parent_tlbi_batches={} fork_child_desc_writes={} fork_child_tables={} \
         shared_tables={shared_after_fork} child_write_ns={child_write_ns} child_table_breaks={} child_table_takeovers={} \
         child_cow_copy_64k={} child_cow_copy_4k={} child_cow_reuse_64k={} child_cow_reuse_4k={} child_faults={} \
         child_desc_writes={} child_tlbi={} child_tables_alloc={} child_exit_ns={child_exit_ns} \
         munmap_ns={munmap_ns} munmap_desc_writes={} munmap_tlbi={}",
        if cfg.large { "64K" } else { "4K" },
        med.ns,
        forks[0].ns,
        forks[4].ns,
        first.ns,
        first.parent_root.desc_writes,
        first.parent_root.tlbi_total(),
        first.parent.fork_wrprotects,
        med.exit_ns,
        med.parent.fork_dup_batches,
        med.parent.fork_dup_pages,
        med.parent.fork_wrprotects,
        med.parent.fork_tables_shared,
        med.parent.fork_tables_copied,
        med.parent_root.desc_writes,
        med.parent_root.tlbi_total(),
        med.parent_root.tlbi_batches,
        med.child_root.desc_writes,
        med.child_root.tables_allocated,
        cw.table_breaks,
        cw.table_takeovers,
        cs.cow_copy_64k - c0.cow_copy_64k,
        cs.cow_copy_4k - c0.cow_copy_4k,
        cs.cow_reuse_64k - c0.cow_reuse_64k,
        cs.cow_reuse_4k - c0.cow_reuse_4k,
        (cs.faults_translation + cs.faults_permission + cs.faults_access_flag)
            - (c0.faults_translation + c0.faults_permission + c0.faults_access_flag),
        cwr.desc_writes,
        cwr.tlbi_total(),
        cwr.tables_allocated,
        mr.desc_writes,
        mr.tlbi_total(),
    );
    Ok(())
}

fn main() -> Result<(), &'static str> {
    let before = libos::runtime::frames_free_or_heap();
    let args = &libos::boot_config().bootargs;
    let sizes: Vec<u64> = match args.get("sizes") {
        Some(list) => list.split(',').filter_map(|s| s.parse().ok()).collect(),
        None => SIZES.to_vec(),
    };
    let names: Vec<&str> = match args.get("modes") {
        Some(list) => list.split(',').collect(),
        None => DEFAULT_CONFIGS.to_vec(),
    };
    let mut configs = Vec::new();
    for n in names {
        configs.push(
            *CONFIGS
                .iter()
                .find(|c| c.name == n)
                .ok_or("unknown mode in modes=")?,
        );
    }
    for mib in sizes {
        for &cfg in &configs {
            run(mib, cfg)?;
        }
    }
    let after = libos::runtime::frames_free_or_heap();
    if after != before {
        println!("leaked {} frames", before as i64 - after as i64);
        return Err("frames leaked");
    }
    Ok(())
}
