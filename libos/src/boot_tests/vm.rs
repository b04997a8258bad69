//! Boot tests of the kernel map and of address spaces on the real MMU.

use crate::mm::Level;
use crate::mm::{AsidAllocator, Attrs, PhysAddr, Platform, TlbOp, VirtAddr, PAGE_SIZE};
use crate::platform::TargetMachine;
use crate::runtime;
use crate::testing::catch_fault;
use crate::vm::*;
use alloc::boxed::Box;
use alloc::vec::Vec;
use arch::board::{phys_to_virt, KERNEL_OFFSET};
use arch::exception::ec;
use arch::mmu::hw_translate;

/// A user-half address for test mappings (level-0 index 1, far from anything else).
const USER_VA: u64 = 0x0000_0080_0000_0000;
const PAGE: u64 = PAGE_SIZE;

fn is_translation_fault(esr: u64) -> bool {
    matches!(
        arch::esr::fault_status(esr),
        arch::esr::FaultStatus::Translation { .. }
    )
}
fn is_permission_fault(esr: u64) -> bool {
    matches!(
        arch::esr::fault_status(esr),
        arch::esr::FaultStatus::Permission { .. }
    )
}

fn frame() -> u64 {
    runtime::alloc_frames(0).unwrap()
}

/// Reads a user address from EL1, PAN lifted (the page is mapped for EL0).
fn read_user(va: u64) -> Result<u64, crate::testing::FaultInfo> {
    let mut v = 0;
    catch_fault(|| {
        let _window = arch::cpu::UserAccess::open();
        // SAFETY: the test maps `va` (or expects the fault this read takes, captured).
        v = unsafe { core::ptr::read_volatile(va as *const u64) }
    })?;
    Ok(v)
}

/// Writes a user address from EL1, PAN lifted.
fn write_user(va: u64, v: u64) -> Result<(), crate::testing::FaultInfo> {
    catch_fault(|| {
        let _window = arch::cpu::UserAccess::open();
        // SAFETY: as for `read_user`.
        unsafe { core::ptr::write_volatile(va as *mut u64, v) }
    })
}

fn phys_read(pa: u64) -> u64 {
    // SAFETY: `pa` is a frame this test owns, in the linear map.
    unsafe { core::ptr::read_volatile(phys_to_virt(pa as usize) as *const u64) }
}

crate::boot_test! {
    /// The kernel runs from its own map: text is read-execute, rodata read-only, data
    /// read-write; the hardware and the memory manager's walker agree on all of it.
    fn kernel_map_is_w_xor_x() {
        let img = arch::boot::image_sections();
        for (name, (s, e), writable, exec) in [
            ("text", img.text, false, true),
            ("rodata", img.rodata, false, false),
            ("data", img.data, true, false),
        ] {
            let va = (s + (e - s) / 2) & !0xfff;
            let pa = (va - KERNEL_OFFSET) as u64;
            assert_eq!(hw_translate(va as u64, false), Some(pa), "{name} readable");
            assert_eq!(hw_translate(va as u64, true).is_some(), writable, "{name} writability");
            let t = kernel_translate(va as u64).expect("mapped");
            assert_eq!(t.pa, PhysAddr(pa));
            assert_eq!(t.level, Level::new(3).unwrap(), "{name} is mapped with pages");
            assert_eq!(t.attrs.prot.contains(crate::mm::Prot::WRITE), writable);
            assert_eq!(t.attrs.prot.contains(crate::mm::Prot::EXEC_KERNEL), exec, "{name} exec");
        }
    }
}

crate::boot_test! {
    /// Writing to kernel text takes a permission fault.
    fn write_to_text_faults() {
        let target = kernel_map_is_w_xor_x as *const () as u64;
        let f = catch_fault(|| {
            // SAFETY: deliberately invalid write to read-only text; captured.
            unsafe { core::ptr::write_volatile(target as *mut u32, 0) }
        })
        .expect_err("text must not be writable");
        assert_eq!(f.ec, ec::DATA_ABORT_SAME);
        assert!(is_permission_fault(f.esr), "ESR {:#x}", f.esr);
        assert_eq!(f.far, target);
    }
}

crate::boot_test! {
    /// Executing from data takes an instruction abort (PXN).
    fn execute_from_data_faults() {
        static mut CODE: [u32; 4] = [0xd65f03c0; 4]; // ret
        let addr = core::ptr::addr_of!(CODE) as u64;
        let f = catch_fault(|| {
            // SAFETY: deliberately jumps to non-executable data; the fetch faults, captured.
            let func: extern "C" fn() = unsafe { core::mem::transmute(addr as usize) };
            func();
        })
        .expect_err("data must not be executable");
        assert_eq!(f.ec, ec::INSTR_ABORT_SAME);
        assert!(is_permission_fault(f.esr), "ESR {:#x}", f.esr);
        assert_eq!(f.elr, addr);
    }
}

crate::boot_test! {
    /// Overflowing the stack hits the unmapped guard page below it, and the fault is reported
    /// (exceptions run on their own stack).
    fn stack_overflow_hits_the_guard_page() {
        #[inline(never)]
        fn recurse(depth: u64) -> u64 {
            let buf = core::hint::black_box([depth; 64]);
            if depth == u64::MAX { return 0; }
            recurse(depth + 1) + buf[(depth % 64) as usize]
        }
        let [(gs, ge), _] = arch::boot::guard_pages();
        assert!(hw_translate(gs as u64, false).is_none(), "guard page unmapped");
        let f = catch_fault(|| { core::hint::black_box(recurse(0)); }).expect_err("must overflow");
        assert_eq!(f.ec, ec::DATA_ABORT_SAME);
        assert!((gs as u64..ge as u64).contains(&f.far), "FAR {:#x} not in guard [{gs:#x}, {ge:#x})", f.far);
    }
}

crate::boot_test! {
    /// Every RAM range is in the linear map, with blocks where aligned; the boot identity map
    /// is gone from TTBR0.
    fn linear_map_covers_ram() {
        let cfg = runtime::boot_config();
        let mut blocks = 0;
        for r in &cfg.ram {
            let mut pa = r.base.next_multiple_of(PAGE);
            while pa < r.end() {
                let va = pa + KERNEL_OFFSET as u64;
                assert_eq!(hw_translate(va, false), Some(pa), "linear map of {pa:#x}");
                let t = kernel_translate(va).expect("mapped");
                assert_eq!(t.pa, PhysAddr(pa));
                if t.level.number() < 3 { blocks += 1; }
                pa += 7 << 20; // sample every 7 MiB
            }
            let (img_s, _) = arch::boot::image_phys_range();
            assert!(hw_translate(img_s as u64, false).is_none(), "identity map retired");
        }
        assert!(blocks > 0, "RAM mapped with blocks");
    }
}

crate::boot_test! {
    /// Map a frame in a TTBR0 address space, access it, unmap it: the access faults (no stale
    /// translation), and destroying the space frees every table.
    fn user_map_access_unmap() {
        let before = runtime::frames_free_or_heap();
        let pa = frame();
        let mut space = AddressSpace::new().unwrap();
        space.map(USER_VA, pa, PAGE, Attrs::USER_RW).unwrap();
        space.activate();
        assert_eq!(write_user(USER_VA + 8, 0xfeed_f00d), Ok(()));
        assert_eq!(phys_read(pa + 8), 0xfeed_f00d, "the write reached the mapped frame");
        assert_eq!(hw_translate(USER_VA + 8, true), Some(pa + 8));
        assert_eq!(space.translate(USER_VA + 8).map(|t| t.pa), Some(PhysAddr(pa + 8)));
        space.unmap(USER_VA, PAGE).unwrap();
        let f = read_user(USER_VA + 8).expect_err("unmapped page must fault");
        assert!(is_translation_fault(f.esr) && f.far == USER_VA + 8, "{f:?}");
        // Map another frame at the same address: writes reach the new frame, never the old.
        let pa2 = frame();
        let old = phys_read(pa);
        space.map(USER_VA, pa2, PAGE, Attrs::USER_RW).unwrap();
        assert_eq!(write_user(USER_VA, old.wrapping_add(1)), Ok(()));
        assert_eq!((phys_read(pa2), phys_read(pa)), (old.wrapping_add(1), old));
        space.destroy();
        runtime::free_frames(pa, 0).unwrap();
        runtime::free_frames(pa2, 0).unwrap();
        assert_eq!(runtime::frames_free_or_heap(), before);
    }
}

crate::boot_test! {
    /// Protecting a page read-only makes writes take a permission fault; reads still work;
    /// protecting it read-write again makes writes work.
    fn user_protect_read_only() {
        let pa = frame();
        let mut space = AddressSpace::new().unwrap();
        space.map(USER_VA, pa, PAGE, Attrs::USER_RW).unwrap();
        space.activate();
        write_user(USER_VA, 7).unwrap();
        space.protect(USER_VA, PAGE, Attrs::USER_RO).unwrap();
        assert_eq!(read_user(USER_VA), Ok(7));
        let f = write_user(USER_VA, 8).expect_err("read-only page");
        assert!(is_permission_fault(f.esr) && arch::esr::is_write(f.esr), "{f:?}");
        assert_eq!(phys_read(pa), 7);
        space.protect(USER_VA, PAGE, Attrs::USER_RW).unwrap();
        assert_eq!(write_user(USER_VA, 9), Ok(()));
        assert_eq!(phys_read(pa), 9);
        space.destroy();
        runtime::free_frames(pa, 0).unwrap();
    }
}

crate::boot_test! {
    /// Two address spaces map the same VA to different frames; after each switch each sees its
    /// own data (ASID-tagged TLB entries do not leak across spaces).
    fn two_address_spaces_see_their_own_data() {
        let (pa, pb) = (frame(), frame());
        let mut a = AddressSpace::new().unwrap();
        let mut b = AddressSpace::new().unwrap();
        a.map(USER_VA, pa, PAGE, Attrs::USER_RW).unwrap();
        b.map(USER_VA, pb, PAGE, Attrs::USER_RW).unwrap();
        a.activate();
        write_user(USER_VA, 0xaaaa).unwrap();
        b.activate();
        write_user(USER_VA, 0xbbbb).unwrap();
        assert_ne!(a.stats() as *const _, b.stats() as *const _);
        for _ in 0..10 {
            a.activate();
            assert_eq!(read_user(USER_VA), Ok(0xaaaa));
            b.activate();
            assert_eq!(read_user(USER_VA), Ok(0xbbbb));
        }
        let (ra, rb) = (a.root().asid(), b.root().asid());
        assert!(ra.is_some() && rb.is_some() && ra != rb, "distinct ASIDs {ra:?} {rb:?}");
        a.destroy();
        b.destroy();
        runtime::free_frames(pa, 0).unwrap();
        runtime::free_frames(pb, 0).unwrap();
    }
}

crate::boot_test! {
    /// With 2-bit ASIDs (3 usable) and 5 address spaces the allocator rolls over repeatedly;
    /// the flush it requests keeps every space seeing its own frame on the real TLB.
    fn asid_rollover_on_the_real_tlb() {
        let mut alloc = Box::new(AsidAllocator::<1>::new(2));
        let frames: Vec<u64> = (0..5).map(|_| frame()).collect();
        let mut spaces: Vec<AddressSpace> = frames
            .iter()
            .map(|&pa| {
                let mut s = AddressSpace::new().unwrap();
                s.map(USER_VA, pa, PAGE, Attrs::USER_RW).unwrap();
                s
            })
            .collect();
        for round in 0..4u64 {
            for (i, s) in spaces.iter_mut().enumerate() {
                s.activate_in(&mut alloc);
                if round > 0 {
                    assert_eq!(read_user(USER_VA), Ok(100 * (round - 1) + i as u64), "space {i} round {round}");
                }
                write_user(USER_VA, 100 * round + i as u64).unwrap();
            }
        }
        assert!(alloc.rollovers() >= 2, "rollovers: {}", alloc.rollovers());
        for s in spaces.drain(..) {
            s.destroy();
        }
        // The test's ASIDs must not linger for the global allocator's spaces.
        TargetMachine.tlb_maintenance(&[TlbOp::All]);
        for pa in frames {
            runtime::free_frames(pa, 0).unwrap();
        }
    }
}

crate::boot_test! {
    /// The memory manager's translate() agrees with the MMU for pages and blocks, mapped and
    /// unmapped addresses, after mixed map/unmap/protect.
    fn translate_agrees_with_the_mmu() {
        let before = runtime::frames_free_or_heap();
        let big = runtime::alloc_frames(9).unwrap(); // 2 MiB, block-mappable
        let small: Vec<u64> = (0..8).map(|_| frame()).collect();
        let mut s = AddressSpace::new().unwrap();
        let block_va = USER_VA + (1 << 30);
        s.map(block_va, big, 2 << 20, Attrs::USER_RW).unwrap();
        for (i, &pa) in small.iter().enumerate() {
            s.map(USER_VA + (i as u64) * 3 * PAGE, pa, PAGE, Attrs::USER_RW).unwrap();
        }
        s.unmap(USER_VA + 3 * PAGE, PAGE).unwrap();
        s.protect(block_va + (1 << 20), PAGE, Attrs::USER_RO).unwrap(); // splits the block
        s.activate();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for k in 0..400 {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let va = if k % 2 == 0 { USER_VA + (x % (30 * PAGE)) } else { block_va + (x % (2 << 20)) };
            let va = va & !7;
            for write in [false, true] {
                let mine = s.translate(va).filter(|t| !write || t.attrs.prot.contains(crate::mm::Prot::WRITE)).map(|t| t.pa.0);
                assert_eq!(hw_translate(va, write), mine, "va {va:#x} write={write}");
            }
        }
        s.destroy();
        runtime::free_frames(big, 9).unwrap();
        for pa in small { runtime::free_frames(pa, 0).unwrap(); }
        assert_eq!(runtime::frames_free_or_heap(), before);
    }
}

crate::boot_test! {
    /// Destroy frees every table of a sparse address space (many tables at every level).
    fn destroy_frees_every_table() {
        let before = runtime::frames_free_or_heap();
        let pa = frame();
        let mut s = AddressSpace::new().unwrap();
        for i in 0..64u64 {
            // Spread over level-0, level-1 and level-2 entries.
            let va = (i << 39 | (i % 7) << 30 | (i % 5) << 21) & ((1 << 48) - 1) & !0xfff;
            s.map(va, pa, PAGE, Attrs::USER_RO).unwrap();
        }
        assert!(s.stats().tables_allocated > 64, "{:?}", s.stats());
        s.activate();
        assert!(read_user((63 << 39 | 3 << 21) & ((1 << 48) - 1)).is_ok(), "a page of the last level-0 entry used");
        let freed = s.destroy();
        assert!(freed > 64);
        runtime::free_frames(pa, 0).unwrap();
        assert_eq!(runtime::frames_free_or_heap(), before, "every table frame returned");
    }
}

crate::boot_test! {
    /// Unmapping a fully cached range invalidates every page: with FEAT_TLBIRANGE (QEMU virt
    /// `-cpu max`) through range TLBIs of SCALE 0 and 1, else by VA. Any stale entry would let
    /// an access succeed. Only a sparse set of pages is touched, few enough for QEMU's software
    /// TLB (as small as 64 entries) to keep them all: a larger working set evicts entries by
    /// itself and would hide a too-short invalidation. Note: QEMU flushes its whole TLB for a
    /// range wider than the TLB's span, so on QEMU this catches a wrong NUM at SCALE 0 but not
    /// a wrong SCALE or base; `range_tlbi_operand_encoding` checks those bit for bit.
    fn unmap_of_a_cached_range_leaves_nothing_stale() {
        let block = runtime::alloc_frames(9).unwrap(); // 512 frames
        for pages in [10u64, 132] {
            let mut s = AddressSpace::new().unwrap();
            s.map(USER_VA, block, pages * PAGE, Attrs::USER_RW).unwrap();
            s.activate();
            // Touch a sparse set across the whole range, few enough to stay in the TLB.
            let hot: Vec<u64> = (0..pages).filter(|i| i % 9 == 0 || *i == 1 || *i >= pages - 2).collect();
            for &i in &hot {
                write_user(USER_VA + i * PAGE, i).unwrap();
            }
            let before = *s.stats();
            s.unmap(USER_VA + PAGE, (pages - 2) * PAGE).unwrap();
            let st = s.stats();
            if arch::tlb::has_tlbi_range() {
                assert!(st.tlbi_range > before.tlbi_range, "range TLBIs used: {st:?}");
            }
            for &i in hot.iter().filter(|&&i| i >= 1 && i < pages - 1) {
                let f = read_user(USER_VA + i * PAGE).expect_err("stale translation after unmap");
                assert!(is_translation_fault(f.esr), "{f:?}");
            }
            assert_eq!(read_user(USER_VA), Ok(0));
            assert_eq!(read_user(USER_VA + (pages - 1) * PAGE), Ok(pages - 1));
            s.destroy();
        }
        runtime::free_frames(block, 9).unwrap();
    }
}

crate::boot_test! {
    /// The range-TLBI operand is packed as the Arm ARM lays it out (ASID[63:48], TG[47:46],
    /// SCALE[45:44], NUM[43:39], TTL[38:37], BaseADDR[36:0]); expected values computed by hand.
    fn range_tlbi_operand_encoding() {
        let op = arch::tlb::RangeOperand { base: 0x1234_5000, scale: 1, num: 3, asid: Some(0x42), leaf_only: true, ttl: 3 };
        assert_eq!(op.encode(), 0x0042_51E0_0001_2345);
        let op = arch::tlb::RangeOperand { base: 0x0000_FFFF_FFFF_F000, scale: 3, num: 31, asid: None, leaf_only: false, ttl: 0 };
        assert_eq!(op.encode(), 0x0000_7F8F_FFFF_FFFF);
    }
}

/// Removes the folio mappings of `[va, va + len)` in `space` (one `unmap_leaves`), converting
/// each removed leaf into folio `remove_ptes` and releasing the references after the TLBI.
fn unmap_folio_range(s: &mut AddressSpace, space: crate::mm::folio::SpaceId, va: u64, len: u64) {
    use crate::platform::TargetMachine;
    let memmap = runtime::memmap();
    let mut unmapped = Vec::new();
    s.with_root(|r, p| {
        r.unmap_leaves(p, VirtAddr(va), len, |leaf| {
            let (folio, first) = memmap.folio_page(leaf.pa).expect("a folio page");
            unmapped.push(
                folio
                    .remove_ptes(space, first, (leaf.size / PAGE) as usize)
                    .expect("mapped"),
            );
        })
    })
    .unwrap();
    for u in unmapped {
        u.release(&mut TargetMachine);
    }
}

fn check_counts(s: &mut AddressSpace, space: crate::mm::folio::SpaceId) {
    let memmap = runtime::memmap();
    let leaves: Vec<_> = s.with_root(|r, p| {
        r.leaves(&*p)
            .map(|l| crate::mm::folio::MappedLeaf::new(space, &l))
            .collect()
    });
    if let Err(e) = crate::mm::folio::check(memmap, leaves) {
        panic!("mapcount checker: {e:?}");
    }
}

crate::boot_test! {
    /// 64 KiB folios mapped folded (CONTPTE) through the real MMU: data reaches the folios, every
    /// entry carries the contiguous bit and counts are exact; unmapping two pages unfolds only
    /// that block and those pages fault; reprotecting one page read-only unfolds its block;
    /// teardown returns every frame.
    fn folded_folios_on_the_real_mmu() {
        use crate::mm::folio::{FolioKind, FolioOrder, SpaceId};
        use crate::platform::TargetMachine;
        const FOLIO: u64 = 64 << 10;
        let memmap = runtime::memmap();
        let before = runtime::frames_free_or_heap();
        let space = SpaceId::new(7).unwrap();
        let folios: Vec<_> = (0..4)
            .map(|_| memmap.alloc_folio(&mut TargetMachine, FolioOrder::CONT, FolioKind::Anon).unwrap())
            .collect();
        let mut s = AddressSpace::new().unwrap();
        s.with_root(|r, p| {
            for (i, f) in folios.iter().enumerate() {
                f.add_anon_ptes(space, 0, 16, true).unwrap();
                r.set_ptes(p, VirtAddr(USER_VA + i as u64 * FOLIO), Attrs::USER_RW.leaf(Level::L3, f.pa()), 16, true).unwrap();
            }
        });
        s.activate();
        for (i, f) in folios.iter().enumerate() {
            for pg in 0..16u64 {
                let va = USER_VA + i as u64 * FOLIO + pg * PAGE;
                let t = s.translate(va).unwrap();
                assert!(t.desc.contiguous(), "folio {i} page {pg} folded");
                assert_eq!(hw_translate(va, true), Some(f.pa().0 + pg * PAGE));
                write_user(va + 16, 1000 * i as u64 + pg).unwrap();
                assert_eq!(phys_read(f.pa().0 + pg * PAGE + 16), 1000 * i as u64 + pg);
            }
            assert_eq!((f.mapcount(), f.refcount()), (16, 17), "folio {i}: 16 mappings + the allocation");
        }
        check_counts(&mut s, space);

        // Unmap pages 5 and 6 of folio 1: its block unfolds, the rest stays mapped.
        let f1 = folios[1];
        unmap_folio_range(&mut s, space, USER_VA + FOLIO + 5 * PAGE, 2 * PAGE);
        for pg in 0..16u64 {
            let va = USER_VA + FOLIO + pg * PAGE;
            if pg == 5 || pg == 6 {
                let f = read_user(va + 16).expect_err("unmapped page");
                assert!(is_translation_fault(f.esr), "{f:?}");
                assert_eq!(f1.pte_mapcount(pg as usize), 0);
            } else {
                assert_eq!(read_user(va + 16), Ok(1000 + pg));
                assert!(!s.translate(va).unwrap().desc.contiguous(), "block of folio 1 unfolded");
                assert_eq!(f1.pte_mapcount(pg as usize), 1);
            }
        }
        assert_eq!((f1.mapcount(), f1.refcount()), (14, 15));
        assert!(s.translate(USER_VA).unwrap().desc.contiguous(), "folio 0 still folded");
        check_counts(&mut s, space);

        // Reprotect page 3 of folio 2 read-only: its block unfolds, writes there fault.
        let va = USER_VA + 2 * FOLIO + 3 * PAGE;
        s.protect(va, PAGE, Attrs::USER_RO).unwrap();
        let f = write_user(va, 1).expect_err("read-only page");
        assert!(is_permission_fault(f.esr), "{f:?}");
        assert_eq!(read_user(va + 16), Ok(2003));
        assert_eq!(write_user(va + PAGE, 5), Ok(()), "neighbour still writable");
        assert!(!s.translate(va + PAGE).unwrap().desc.contiguous());
        assert!(s.translate(USER_VA + 3 * FOLIO).unwrap().desc.contiguous(), "folio 3 still folded");
        check_counts(&mut s, space);

        // Teardown: unmap everything, drop the allocation references: all frames return.
        unmap_folio_range(&mut s, space, USER_VA, 4 * FOLIO);
        for f in &folios {
            assert_eq!((f.mapcount(), f.refcount()), (0, 1));
        }
        check_counts(&mut s, space);
        for f in folios {
            assert!(f.put(&mut TargetMachine), "freed at the last reference");
        }
        s.destroy();
        assert_eq!(runtime::frames_free_or_heap(), before, "every frame back");
    }
}
