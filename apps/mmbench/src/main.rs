//! Memory-manager benchmarks, run by `cargo xtask bench <name>` under `-icount shift=0,sleep=off`
//! (one instruction per virtual nanosecond), selected with `bench=<name>` on the command line.
//! Each result is one line `bench k=v ...` that xtask turns into a table in BENCHMARKS.md.
//!
//! * `bench=tables`: map then unmap N MiB in a user address space (active in TTBR0), with 4 KiB
//!   pages and with 2 MiB blocks: descriptor writes, TLB invalidations, table frames and virtual
//!   time of each step. The physical range mapped is RAM the benchmark allocated (2 MiB blocks,
//!   mapped one block per call so that any 2 MiB-aligned block will do); nothing is touched
//!   through the mapping, so only the translation-table engine is measured.
//! * `bench=contpte`: 256 MiB of 64 KiB anonymous folios (real folios from the frame allocator)
//!   mapped with one batched `set_ptes` per folio as the fault path does, every 4 KiB page touched
//!   once through the MMU, then unmapped in one call — with CONTPTE on (each folio one folded
//!   block: one TLB entry) and off (16 page entries).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libos::mm::{Attrs, Stats};
use libos::println;
use libos::runtime::{alloc_frames, free_frames};
use libos::vm::AddressSpace;

libos::main!(main);

const USER_BASE: u64 = 0x0000_0100_0000_0000;
const BLOCK: u64 = 2 << 20;

fn now() -> u64 {
    libos::arch::timer::now_ns()
}

fn report(step: &str, mib: u64, mapping: &str, d: &Stats, ns: u64) {
    println!(
        "bench step={step} mib={mib} mapping={mapping} desc_writes={} tlbi={} tlbi_va={} tlbi_range={} tlbi_asid={} tables_alloc={} tables_freed={} ns={ns}",
        d.desc_writes,
        d.tlbi_total(),
        d.tlbi_va,
        d.tlbi_range,
        d.tlbi_asid,
        d.tables_allocated,
        d.tables_freed,
    );
}

fn tables() -> Result<(), &'static str> {
    for mib in [1u64, 16, 64, 256] {
        let blocks = (mib * (1 << 20)).div_ceil(BLOCK);
        let mut frames = Vec::new();
        for _ in 0..blocks {
            frames.push(alloc_frames(9).map_err(|_| "out of memory for the benchmark's RAM")?);
        }
        for (mapping, size) in [("4K-pages", libos::mm::PAGE_SIZE), ("2M-blocks", BLOCK)] {
            let mut space = AddressSpace::new().map_err(|_| "out of memory")?;
            space.activate();
            let len = (mib << 20).min(BLOCK);
            let s0 = *space.stats();
            let t0 = now();
            for (i, &pa) in frames.iter().enumerate() {
                let va = USER_BASE + i as u64 * BLOCK;
                if size == BLOCK {
                    space.map(va, pa, len, Attrs::USER_RW).map_err(|_| "map failed")?;
                } else {
                    space
                        .map_pages(va, pa, len, Attrs::USER_RW)
                        .map_err(|_| "map failed")?;
                }
            }
            let t1 = now();
            let s1 = *space.stats();
            report("map", mib, mapping, &s1.since(&s0), t1 - t0);
            let t2 = now();
            space
                .unmap(USER_BASE, blocks * BLOCK)
                .map_err(|_| "unmap failed")?;
            let t3 = now();
            let s2 = *space.stats();
            report("unmap", mib, mapping, &s2.since(&s1), t3 - t2);
            space.destroy();
        }
        for pa in frames {
            free_frames(pa, 9).map_err(|_| "free failed")?;
        }
    }
    Ok(())
}

fn contpte() -> Result<(), &'static str> {
    use libos::mm::folio::{FolioKind, FolioOrder};
    use libos::mm::{contpte, Level, VirtAddr};
    use libos::platform::TargetMachine;
    const MIB: u64 = 256;
    const FOLIO: u64 = 64 << 10;
    let count = (MIB << 20) / FOLIO;
    let memmap = libos::runtime::memmap();
    for enabled in [true, false] {
        let mut folios = Vec::new();
        for _ in 0..count {
            folios.push(
                memmap
                    .alloc_folio(&mut TargetMachine, FolioOrder::CONT, FolioKind::Anon)
                    .map_err(|_| "out of memory")?,
            );
        }
        let mut space = AddressSpace::new().map_err(|_| "out of memory")?;
        space.activate();
        let t0 = now();
        let map = space.with_root(|root, p| {
            root.set_contpte(enabled);
            contpte::map_folios(
                root,
                p,
                VirtAddr(USER_BASE),
                FOLIO,
                count as usize,
                |i| folios[i].pa(),
                Attrs::USER_RW,
            )
        });
        let map = map.map_err(|_| "map failed")?;
        let t1 = now();
        let mut folded = 0u64;
        space.with_root(|root, p| {
            for i in 0..count {
                if root
                    .pte_get(p, VirtAddr(USER_BASE + i * FOLIO))
                    .is_some_and(|d| d.contiguous())
                {
                    folded += 1;
                }
            }
        });
        let t2 = now();
        // The pages are mapped for EL0: the kernel writes them by user address with PAN lifted.
        let window = libos::arch::cpu::UserAccess::open();
        for page in 0..(MIB << 20) / libos::mm::PAGE_SIZE {
            // SAFETY: the page is mapped read-write in the active address space just above.
            unsafe {
                core::ptr::write_volatile((USER_BASE + page * libos::mm::PAGE_SIZE) as *mut u8, page as u8)
            };
        }
        drop(window);
        let t3 = now();
        let mut leaves = 0u64;
        let unmap = space
            .with_root(|root, p| {
                contpte::unmap_folios(root, p, VirtAddr(USER_BASE), MIB << 20, |l| {
                    debug_assert_eq!(l.level, Level::L3);
                    leaves += 1;
                })
            })
            .map_err(|_| "unmap failed")?;
        let t4 = now();
        space.destroy();
        for f in folios {
            f.put(&mut TargetMachine);
        }
        let mode = if enabled { "on" } else { "off" };
        println!(
            "bench contpte={mode} mib={MIB} folios={count} folded={folded} map_desc_writes={} map_tlbi={} map_ns={} touch_ns={} unmap_desc_writes={} unmap_tlbi={} unmap_leaves={leaves} unmap_ns={}",
            map.desc_writes,
            map.tlbi_total(),
            t1 - t0,
            t3 - t2,
            unmap.desc_writes,
            unmap.tlbi_total(),
            t4 - t3,
        );
    }
    Ok(())
}

fn main() -> Result<(), &'static str> {
    match libos::boot_config().bootargs.get("bench") {
        Some("tables") => tables(),
        Some("contpte") => contpte(),
        Some(other) => {
            println!("unknown benchmark '{other}' (known: tables, contpte)");
            Err("unknown benchmark")
        }
        None => {
            println!("usage: boot with bench=<tables|contpte>");
            Err("no benchmark selected")
        }
    }
}
