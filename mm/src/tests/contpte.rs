//! CONTPTE and the PTE-level API, one operation at a time: when blocks fold (exactly-qualifying
//! runs only), unfold on partial changes, A/D gathering, TLBI counts per batch, the unmap
//! callback's ordering guarantee, slot lookup and allocation failure; plus negative model
//! tests (bad contiguous groups, folds without break-before-make, missing 64 KiB
//! invalidations) that must be caught. Every test runs the model's checks after every
//! operation.

use std::cell::RefCell;
use std::rc::Rc;

use super::super::contpte::{map_folios, unmap_folios};
use super::super::model::{Access, AllocFailure, El, FaultKind, Model};
use super::super::*;
use super::{slot_of, Env, USER_ASID};

const KB4: u64 = 4 << 10;
const KB64: u64 = 64 << 10;
const MB1: u64 = 1 << 20;
const MB2: u64 = 2 << 20;
const GB1: u64 = 1 << 30;
/// Simulated RAM (only addresses matter), 64 KiB aligned.
const RAM: u64 = 0x4000_0000;
/// A user address range with its own level-3 tables.
const UVA: u64 = 0x10_0000_0000;
const A: u16 = USER_ASID.0;

fn va(x: u64) -> VirtAddr {
    VirtAddr(x)
}

fn pte(pa: u64) -> Descriptor {
    Attrs::USER_RW.leaf(Level::L3, PhysAddr(pa))
}

/// Runs the model's checks (TLB coherence, contiguous groups, leaks) after touching every
/// mapping, so a stale entry an operation left would be in the TLB next time.
fn check(e: &mut Env) {
    e.m.check_all();
    e.m.fill_all();
}

/// The Contiguous bit of each of the `n` pages from `at` (`None`: unmapped).
fn cont_bits(e: &Env, at: u64, n: u64) -> Vec<Option<bool>> {
    (0..n)
        .map(|i| e.u.translate(&e.m, va(at + i * KB4)).map(|t| t.desc.contiguous()))
        .collect()
}

/// Whether the block at `block` is folded (asserting all-or-nothing).
fn folded(e: &Env, block: u64) -> bool {
    let bits = cont_bits(e, block, 16);
    let n = bits.iter().filter(|b| **b == Some(true)).count();
    assert!(n == 0 || n == 16, "half-folded block at {block:#x}: {bits:?}");
    n == 16
}

// ---------------------------------------------------------------------------------------
// Folding.

#[test]
fn set_ptes_maps_a_whole_aligned_folio_folded_without_tlbi() {
    let mut e = Env::new(false);
    e.u.set_ptes(&mut e.m, va(UVA), pte(RAM), 16, true).unwrap();
    check(&mut e);
    assert!(folded(&e, UVA));
    let s = *e.u.stats();
    assert_eq!((s.cont_blocks_mapped, s.folds, s.bbm), (1, 0, 0));
    assert_eq!(s.tlbi_total(), 0, "invalid -> valid: no TLBI");
    assert_eq!(s.desc_writes, 3 + 16, "three table links and 16 entries");
    // The model MMU caches it as one 64 KiB entry (and per page); every page translates.
    assert!(e.m.tlb_combined() >= 1);
    for i in 0..16 {
        let t = e.u.translate(&e.m, va(UVA + i * KB4 + 5)).unwrap();
        assert_eq!(t.pa, PhysAddr(RAM + i * KB4 + 5));
        assert_eq!(t.attrs, Attrs::USER_RW);
        assert_eq!(
            e.m.access(e.u.pa(), A, va(UVA + i * KB4), El::El0, Access::Write),
            Ok(PhysAddr(RAM + i * KB4))
        );
    }
    e.teardown();
}

#[test]
fn fold_only_on_exactly_qualifying_runs() {
    let mut e = Env::new(false);
    let mut at = UVA;
    let mut next = || {
        at += MB2;
        at
    };
    // Misaligned VA: 16 pages from a 4 KiB offset touch two blocks, neither whole.
    let v = next();
    e.u.set_ptes(&mut e.m, va(v + KB4), pte(RAM + KB4), 16, true)
        .unwrap();
    assert!(!folded(&e, v) && !folded(&e, v + KB64));
    // Misaligned PA.
    let v = next();
    e.u.set_ptes(&mut e.m, va(v), pte(RAM + KB4), 16, true).unwrap();
    assert!(!folded(&e, v));
    // Fewer than 16.
    let v = next();
    e.u.set_ptes(&mut e.m, va(v), pte(RAM), 15, true).unwrap();
    assert!(!folded(&e, v));
    // Not one folio (the caller says so).
    let v = next();
    e.u.set_ptes(&mut e.m, va(v), pte(RAM), 16, false).unwrap();
    assert!(!folded(&e, v));
    // Mixed attributes: the second half completes the block but differs.
    let v = next();
    e.u.set_ptes(&mut e.m, va(v), pte(RAM), 8, true).unwrap();
    let ro = Attrs::USER_RO.leaf(Level::L3, PhysAddr(RAM + 8 * KB4));
    e.u.set_ptes(&mut e.m, va(v + 8 * KB4), ro, 8, true).unwrap();
    assert!(!folded(&e, v));
    // Non-consecutive PAs: the second half maps another frame range.
    let v = next();
    e.u.set_ptes(&mut e.m, va(v), pte(RAM), 8, true).unwrap();
    e.u.set_ptes(&mut e.m, va(v + 8 * KB4), pte(RAM + 2 * KB64), 8, true)
        .unwrap();
    assert!(!folded(&e, v));
    // Only the middle of 32 pages from block + 8 is a whole aligned block.
    let v = next();
    e.u.set_ptes(&mut e.m, va(v + 8 * KB4), pte(RAM + 8 * KB4), 32, true)
        .unwrap();
    assert_eq!(
        (folded(&e, v), folded(&e, v + KB64), folded(&e, v + 2 * KB64)),
        (false, true, false)
    );
    // CONTPTE switched off.
    e.u.set_contpte(false);
    let v = next();
    e.u.set_ptes(&mut e.m, va(v), pte(RAM), 32, true).unwrap();
    assert!(!folded(&e, v) && !folded(&e, v + KB64));
    e.u.set_contpte(true);
    // Kernel roots never fold.
    let kva = KERNEL_BASE + GB1;
    e.k.set_ptes(
        &mut e.m,
        va(kva),
        Attrs::KERNEL_RW.leaf(Level::L3, PhysAddr(RAM)),
        16,
        true,
    )
    .unwrap();
    assert!(!e.k.translate(&e.m, va(kva)).unwrap().desc.contiguous());
    check(&mut e);
    let s = e.u.stats();
    assert_eq!((s.cont_blocks_mapped, s.folds, s.unfolds), (1, 0, 0));
    e.teardown();
}

#[test]
#[should_panic(expected = "kernel mappings are never folded")]
fn kernel_root_refuses_contpte() {
    let mut e = Env::new(false);
    e.k.set_contpte(true);
}

#[test]
fn single_writes_fold_when_the_last_one_completes_the_block() {
    for order in [false, true] {
        let mut e = Env::new(order);
        let idx: Vec<u64> = if order {
            (0..16).rev().collect()
        } else {
            (0..16).collect()
        };
        for (n, &i) in idx.iter().enumerate() {
            // Clean and old, except one page young and one dirty: the fold gathers them.
            let d = pte(RAM + i * KB4).with_young(i == 3).with_dirty(i == 9);
            e.u.set_ptes(&mut e.m, va(UVA + i * KB4), d, 1, true).unwrap();
            check(&mut e);
            assert_eq!(folded(&e, UVA), n == 15, "after {} writes", n + 1);
        }
        let s = *e.u.stats();
        assert_eq!((s.folds, s.bbm, s.cont_blocks_mapped), (1, 1, 0));
        // One batch for the fold's break: 16 page TLBIs, or one range TLBI.
        assert_eq!(s.tlbi_batches, 1);
        assert_eq!(s.tlbi_total(), if order { 1 } else { 16 });
        // Every entry now holds the gathered state.
        for i in 0..16 {
            let d = e.u.translate(&e.m, va(UVA + i * KB4)).unwrap().desc;
            assert!(d.young() && d.dirty() && d.writable(), "{i}: {d:?}");
        }
        e.teardown();
    }
}

// ---------------------------------------------------------------------------------------
// Clearing.

/// Three folded blocks at `UVA` mapping `RAM`.
fn three_blocks(e: &mut Env) {
    e.u.set_ptes(&mut e.m, va(UVA), pte(RAM), 48, true).unwrap();
    assert!((0..3).all(|b| folded(e, UVA + b * KB64)));
    check(e);
    e.u.reset_stats();
}

#[test]
fn clear_unfolds_only_the_partially_covered_end_blocks() {
    let mut e = Env::new(false);
    three_blocks(&mut e);
    // From the middle of the first block to the middle of the third.
    e.u.clear_ptes(&mut e.m, va(UVA + 8 * KB4), 32).unwrap();
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!((s.unfolds, s.folds, s.cont_blocks_unmapped), (2, 0, 1));
    // Two unfold breaks, then one batch for the cleared range.
    assert_eq!(s.tlbi_batches, 3);
    let bits = cont_bits(&e, UVA, 48);
    for (i, b) in bits.iter().enumerate() {
        let want = if (8..40).contains(&i) { None } else { Some(false) };
        assert_eq!(*b, want, "page {i}");
    }
    // The level-3 table stays (PTE-level clears never free tables).
    assert_eq!(s.tables_freed, 0);
    e.teardown();
}

#[test]
fn whole_blocks_clear_without_unfolding_in_one_invalidation() {
    for range in [false, true] {
        let mut e = Env::new(range);
        e.u.set_ptes(&mut e.m, va(UVA), pte(RAM), 256, true).unwrap();
        check(&mut e);
        e.u.reset_stats();
        let old = e.u.get_and_clear_ptes(&mut e.m, va(UVA), 256).unwrap();
        check(&mut e);
        let s = *e.u.stats();
        assert_eq!((s.unfolds, s.cont_blocks_unmapped), (0, 16));
        assert_eq!(s.desc_writes, 256);
        assert_eq!((s.tlbi_batches, s.tlbi_total()), (1, 1), "range: {range}");
        assert_eq!(old.unwrap().address(), PhysAddr(RAM));
        assert!(cont_bits(&e, UVA, 256).iter().all(|b| b.is_none()));
        e.teardown();
    }
}

#[test]
fn get_and_clear_and_pte_get_gather_access_and_dirty() {
    let mut e = Env::new(false);
    // A clean, old folio: nothing set anywhere.
    let clean = pte(RAM).with_young(false).with_dirty(false);
    e.u.set_ptes(&mut e.m, va(UVA), clean, 16, true).unwrap();
    assert!(folded(&e, UVA));
    let g = e.u.pte_get(&e.m, va(UVA + 7 * KB4)).unwrap();
    assert!(!g.young() && !g.dirty() && g.writable() && g.contiguous());
    assert_eq!(g.address(), PhysAddr(RAM + 7 * KB4));
    // A clean writable page is read-only to the hardware: an access faults (AF), so does a
    // write once AF is set (dirty state) — no hardware A/D management in the model MMU.
    let f =
        e.m.access(e.u.pa(), A, va(UVA), El::El0, Access::Read)
            .unwrap_err();
    assert_eq!(f.kind, FaultKind::AccessFlag);
    // The hardware (FEAT_HAFDBS) records an access in entry 3, a write in entry 12.
    e.m.hw_update(e.u.pa(), va(UVA + 3 * KB4), false).unwrap();
    e.m.hw_update(e.u.pa(), va(UVA + 12 * KB4), true).unwrap();
    check(&mut e);
    for i in [0, 3, 7, 12, 15] {
        let g = e.u.pte_get(&e.m, va(UVA + i * KB4)).unwrap();
        assert!(g.young() && g.dirty(), "page {i}: {g:?}");
        // The raw entry itself may say otherwise.
        let raw = e.u.translate(&e.m, va(UVA + i * KB4)).map(|t| t.desc);
        assert_eq!(raw.map(|d| d.dirty()), Some(i == 12), "raw dirty of page {i}");
    }
    let old = e.u.get_and_clear_ptes(&mut e.m, va(UVA), 16).unwrap().unwrap();
    check(&mut e);
    assert!(old.young() && old.dirty());
    assert_eq!(old.address(), PhysAddr(RAM));
    assert_eq!(e.u.pte_get(&e.m, va(UVA)), None);
    e.teardown();
}

// ---------------------------------------------------------------------------------------
// Permissions and access flags.

#[test]
fn wrprotect_keeps_whole_blocks_folded_and_the_dirty_state() {
    let mut e = Env::new(false);
    three_blocks(&mut e);
    // Fork: write-protect the first block whole and half of the second.
    e.u.wrprotect_ptes(&mut e.m, va(UVA), 24).unwrap();
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!((s.unfolds, s.bbm), (1, 1), "only the partial block breaks");
    assert_eq!(s.tlbi_batches, 2, "its unfold, then one batch for the change");
    assert!(folded(&e, UVA) && !folded(&e, UVA + KB64) && folded(&e, UVA + 2 * KB64));
    for i in 0..48 {
        let t = e.u.translate(&e.m, va(UVA + i * KB4)).unwrap();
        assert_eq!(t.attrs.prot.contains(Prot::WRITE), i >= 24, "page {i}");
        assert!(t.desc.dirty(), "write-protection keeps the dirty state");
        if i < 24 {
            let f =
                e.m.access(e.u.pa(), A, va(UVA + i * KB4), El::El0, Access::Write)
                    .unwrap_err();
            assert_eq!(f.kind, FaultKind::Permission);
        }
    }
    // Write-protecting again changes nothing.
    e.u.reset_stats();
    e.u.wrprotect_ptes(&mut e.m, va(UVA), 24).unwrap();
    assert_eq!(e.u.stats().desc_writes + e.u.stats().tlbi_total(), 0);
    e.teardown();
}

#[test]
fn protect_of_a_whole_folded_block_memory_type_is_one_break() {
    let mut e = Env::new(false);
    three_blocks(&mut e);
    let nc = Attrs::new(
        Prot::READ | Prot::WRITE | Prot::USER,
        MemType::NonCacheable,
        false,
    );
    e.u.protect(&mut e.m, va(UVA), 2 * KB64, nc).unwrap();
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!((s.bbm, s.unfolds, s.folds), (2, 0, 0), "one break per block");
    assert!(folded(&e, UVA) && folded(&e, UVA + KB64) && folded(&e, UVA + 2 * KB64));
    assert_eq!(e.u.translate(&e.m, va(UVA + KB4)).unwrap().attrs, nc);
    // Part of a block: unfolded, then page by page.
    e.u.reset_stats();
    e.u.protect(&mut e.m, va(UVA + 2 * KB64), 4 * KB4, nc).unwrap();
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!((s.unfolds, s.bbm), (1, 5), "the unfold, then one break per page");
    assert!(!folded(&e, UVA + 2 * KB64));
    assert_eq!(
        e.u.translate(&e.m, va(UVA + 2 * KB64 + 3 * KB4)).unwrap().attrs,
        nc
    );
    assert_eq!(
        e.u.translate(&e.m, va(UVA + 2 * KB64 + 4 * KB4)).unwrap().attrs,
        Attrs::USER_RW
    );
    e.teardown();
}

#[test]
fn test_and_clear_young_covers_the_whole_block() {
    let mut e = Env::new(true);
    e.u.set_ptes(&mut e.m, va(UVA), pte(RAM).with_young(false), 16, true)
        .unwrap();
    e.u.set_ptes(&mut e.m, va(UVA + KB64), pte(RAM + KB64), 1, true)
        .unwrap();
    check(&mut e);
    assert!(!e.u.test_and_clear_young(&mut e.m, va(UVA + 5 * KB4)));
    e.m.hw_update(e.u.pa(), va(UVA + 11 * KB4), false).unwrap();
    check(&mut e);
    e.u.reset_stats();
    assert!(e.u.test_and_clear_young(&mut e.m, va(UVA + 2 * KB4)));
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!((s.desc_writes, s.tlbi_batches, s.unfolds), (1, 1, 0));
    assert!(folded(&e, UVA));
    assert!(!e.u.pte_get(&e.m, va(UVA)).unwrap().young());
    assert!(!e.u.test_and_clear_young(&mut e.m, va(UVA + 11 * KB4)));
    // A single page.
    assert!(e.u.test_and_clear_young(&mut e.m, va(UVA + KB64)));
    assert!(!e.u.test_and_clear_young(&mut e.m, va(UVA + KB64)));
    assert!(!e.u.test_and_clear_young(&mut e.m, va(UVA + KB64 + KB4)));
    check(&mut e);
    e.teardown();
}

#[test]
fn set_access_flags_tests_every_entry_and_unfolds_only_on_write_changes() {
    let mut e = Env::new(false);
    let u = e.u.pa();
    let clean = pte(RAM).with_young(false).with_dirty(false);
    e.u.set_ptes(&mut e.m, va(UVA), clean, 16, true).unwrap();
    // The hardware set AF in entry 3 only: the gathered state says "young", but entry 7's own
    // AF is clear and an access to page 7 faults. The no-op test must see that.
    e.m.hw_update(u, va(UVA + 3 * KB4), false).unwrap();
    assert!(e.u.pte_get(&e.m, va(UVA + 7 * KB4)).unwrap().young());
    assert_eq!(
        e.m.access(u, A, va(UVA + 7 * KB4), El::El0, Access::Read)
            .map_err(|f| f.kind),
        Err(FaultKind::AccessFlag)
    );
    check(&mut e);
    e.u.reset_stats();
    let r =
        e.u.set_access_flags(&mut e.m, va(UVA + 7 * KB4), AccessUpdate::ACCESSED);
    assert_eq!(r, Ok(true));
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!(
        (s.desc_writes, s.tlbi_total(), s.unfolds),
        (15, 0, 0),
        "AF only: no TLBI"
    );
    assert!(folded(&e, UVA));
    assert!(e.m.access(u, A, va(UVA + 7 * KB4), El::El0, Access::Read).is_ok());
    assert_eq!(
        e.u.set_access_flags(&mut e.m, va(UVA + 9 * KB4), AccessUpdate::ACCESSED),
        Ok(false),
        "every entry young: no-op"
    );
    // A write fault on the writable clean block: all 16 marked dirty in place, one batch.
    assert_eq!(
        e.m.access(u, A, va(UVA), El::El0, Access::Write)
            .map_err(|f| f.kind),
        Err(FaultKind::Permission)
    );
    e.u.reset_stats();
    assert_eq!(
        e.u.set_access_flags(&mut e.m, va(UVA), AccessUpdate::WRITTEN),
        Ok(true)
    );
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!((s.desc_writes, s.tlbi_batches, s.unfolds), (16, 1, 0));
    assert!(folded(&e, UVA));
    for i in 0..16 {
        assert!(e
            .m
            .access(u, A, va(UVA + i * KB4), El::El0, Access::Write)
            .is_ok());
    }
    // Granting write on a read-only block changes the permission of one page: unfold.
    e.u.wrprotect_ptes(&mut e.m, va(UVA), 16).unwrap();
    check(&mut e);
    e.u.reset_stats();
    assert_eq!(
        e.u.set_access_flags(&mut e.m, va(UVA + 4 * KB4), AccessUpdate::MADE_WRITABLE),
        Ok(true)
    );
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!((s.unfolds, s.bbm), (1, 1));
    assert!(!folded(&e, UVA));
    for i in 0..16 {
        let t = e.u.translate(&e.m, va(UVA + i * KB4)).unwrap();
        assert_eq!(t.attrs.prot.contains(Prot::WRITE), i == 4, "page {i}");
    }
    assert_eq!(
        e.u.set_access_flags(&mut e.m, va(UVA + 64 * KB4), AccessUpdate::ACCESSED),
        Err(MapError::NotMapped(va(UVA + 64 * KB4)))
    );
    e.teardown();
}

// ---------------------------------------------------------------------------------------
// TLBI cost and the figures helper.

#[test]
fn set_access_flags_block_changes_a_folded_block_in_place_and_folds_an_unfolded_one() {
    let mut e = Env::new(false);
    let ro = |pa: u64| Attrs::USER_RO.leaf(Level::L3, PhysAddr(pa)).with_young(false);
    // Folded, read-only, old: made writable, young and dirty in place.
    e.u.set_ptes(&mut e.m, va(UVA), ro(RAM), 16, true).unwrap();
    check(&mut e);
    e.u.reset_stats();
    let upd = AccessUpdate::MADE_WRITABLE;
    assert_eq!(e.u.set_access_flags_block(&mut e.m, va(UVA), upd, true), Ok(true));
    check(&mut e);
    let s = *e.u.stats();
    assert_eq!((s.bbm, s.folds, s.unfolds, s.desc_writes), (0, 0, 0, 16));
    assert_eq!(s.tlbi_batches, 1, "one invalidation of the block");
    assert!(folded(&e, UVA));
    for i in 0..16 {
        let t = e.u.translate(&e.m, va(UVA + i * KB4)).unwrap();
        assert!(t.desc.writable() && t.desc.dirty() && t.desc.young(), "page {i}");
        assert_eq!(
            e.m.access(e.u.pa(), A, va(UVA + i * KB4), El::El0, Access::Write),
            Ok(PhysAddr(RAM + i * KB4))
        );
    }
    e.u.reset_stats();
    assert_eq!(
        e.u.set_access_flags_block(&mut e.m, va(UVA), upd, true),
        Ok(false)
    );
    assert_eq!(e.u.stats().desc_writes, 0);
    // Unfolded, with fold_ok: one break-before-make writes the new entries folded; without,
    // changed in place and left unfolded.
    for (at, fold_ok) in [(UVA + KB64, true), (UVA + 2 * KB64, false)] {
        e.u.set_ptes(&mut e.m, va(at), ro(RAM + at - UVA), 16, false)
            .unwrap();
        check(&mut e);
        e.u.reset_stats();
        assert_eq!(
            e.u.set_access_flags_block(&mut e.m, va(at), upd, fold_ok),
            Ok(true)
        );
        check(&mut e);
        let s = *e.u.stats();
        assert_eq!((s.bbm, s.folds), if fold_ok { (1, 1) } else { (0, 0) });
        assert_eq!(folded(&e, at), fold_ok);
        assert!(e.u.translate(&e.m, va(at + 5 * KB4)).unwrap().desc.writable());
    }
    // Refusals change nothing.
    let snap = e.m.snapshot();
    e.u.set_ptes(&mut e.m, va(UVA + 4 * KB64), ro(RAM), 15, false)
        .unwrap();
    let snap2 = e.m.snapshot();
    assert_ne!(snap, snap2);
    assert_eq!(
        e.u.set_access_flags_block(&mut e.m, va(UVA + 4 * KB64), upd, true),
        Err(MapError::NotMapped(va(UVA + 4 * KB64 + 15 * KB4)))
    );
    assert_eq!(
        e.u.set_access_flags_block(&mut e.m, va(UVA + KB4), upd, true),
        Err(MapError::UnalignedVa(va(UVA + KB4)))
    );
    assert!(e
        .u
        .set_access_flags_block(&mut e.m, va(UVA + 9 * MB2), upd, true)
        .is_err());
    assert_eq!(e.m.snapshot(), snap2);
    e.teardown();
}

#[test]
fn mapping_and_unmapping_folios_costs_invalidations_per_batch_not_per_page() {
    for range in [false, true] {
        let mut rows = Vec::new();
        for contpte in [true, false] {
            let mut e = Env::new(range);
            e.u.set_contpte(contpte);
            // 1 MiB of 64 KiB folios, scattered in physical memory (every other 64 KiB).
            let map = map_folios(
                &mut e.u,
                &mut e.m,
                va(UVA),
                KB64,
                16,
                |i| PhysAddr(RAM + 2 * i as u64 * KB64),
                Attrs::USER_RW,
            )
            .unwrap();
            check(&mut e);
            assert_eq!(map.tlbi_total(), 0, "mapping: no TLBI at all");
            assert_eq!(map.cont_blocks_mapped, if contpte { 16 } else { 0 });
            let mut leaves = Vec::new();
            let unmap = unmap_folios(&mut e.u, &mut e.m, va(UVA), MB1, |l| {
                leaves.push((l.va.0, l.pa.0, l.size))
            })
            .unwrap();
            check(&mut e);
            assert_eq!(unmap.tlbi_batches, 1, "one batch for the whole unmap");
            assert_eq!(unmap.tlbi_total(), 1, "one ASID or range TLBI");
            assert_eq!(unmap.cont_blocks_unmapped, if contpte { 16 } else { 0 });
            assert_eq!(leaves.len(), if contpte { 16 } else { 256 });
            let second = if contpte { RAM + 2 * KB64 } else { RAM + KB4 };
            assert_eq!(leaves[1].1, second);
            rows.push((contpte, map, unmap));
            e.teardown();
        }
        for (contpte, map, unmap) in &rows {
            println!(
                "range={range} contpte={contpte}: map writes={} tlbi={} | unmap writes={} tlbi={} batches={}",
                map.desc_writes,
                map.tlbi_total(),
                unmap.desc_writes,
                unmap.tlbi_total(),
                unmap.tlbi_batches
            );
        }
        // Same descriptor writes either way: CONTPTE costs nothing in maintenance here.
        assert_eq!(rows[0].1.desc_writes, rows[1].1.desc_writes);
        assert_eq!(rows[0].2.desc_writes, rows[1].2.desc_writes);
    }
}

// ---------------------------------------------------------------------------------------
// Unmap with a callback: ordering.

/// The model behind a shared cell, so that the unmap callback can inspect the machine while
/// the engine runs (the engine never holds a borrow across a callback).
struct Shared(Rc<RefCell<Model>>);

// SAFETY: forwards every call to the model, which keeps the contract.
unsafe impl Platform for Shared {
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor {
        self.0.borrow().read(table, index)
    }
    fn write(&mut self, table: PhysAddr, index: usize, desc: Descriptor) {
        self.0.borrow_mut().write(table, index, desc)
    }
    fn alloc_table(&mut self) -> Result<PhysAddr, OutOfMemory> {
        self.0.borrow_mut().alloc_table()
    }
    fn free_table(&mut self, table: PhysAddr) {
        self.0.borrow_mut().free_table(table)
    }
    fn tlb_maintenance(&mut self, ops: &[TlbOp]) {
        self.0.borrow_mut().tlb_maintenance(ops)
    }
    fn publish(&mut self) {
        self.0.borrow_mut().publish()
    }
    fn has_tlbi_range(&self) -> bool {
        self.0.borrow().has_tlbi_range()
    }
}

#[test]
fn unmap_leaves_reports_every_leaf_once_in_order_after_the_tlbi() {
    for range in [false, true] {
        let Env { m, k, mut u } = Env::new(range);
        let cell = Rc::new(RefCell::new(m));
        let mut p = Shared(cell.clone());
        let base = 4 * MB2; // L3 tables at [8M-64K..8M), [8M, 10M), [10M, 12M); a block at 12M.
        let folio = |p: &mut Shared, u: &mut Root, at: u64, pa: u64| {
            u.set_ptes(p, va(at), pte(pa), 16, true).unwrap()
        };
        // A folded block just below the range's table boundary.
        folio(&mut p, &mut u, base - KB64, RAM);
        // A whole level-3 table inside the range (detached with one write): a folded block
        // and scattered pages.
        folio(&mut p, &mut u, base, RAM + 4 * KB64);
        for i in [20u64, 21, 300, 511] {
            u.set_ptes(
                &mut p,
                va(base + i * KB4),
                pte(RAM + 0x10_0000 + i * KB4),
                1,
                true,
            )
            .unwrap();
        }
        // A partly covered table: two folded blocks, physically consecutive (one run), and
        // pages.
        folio(&mut p, &mut u, base + MB2, RAM + 8 * KB64);
        folio(&mut p, &mut u, base + MB2 + KB64, RAM + 9 * KB64);
        u.set_ptes(&mut p, va(base + MB2 + 40 * KB4), pte(RAM + 0x20_0000), 3, false)
            .unwrap();
        // A 2 MiB block, of which the range removes the first 12 KiB.
        u.map(
            &mut p,
            va(base + 2 * MB2),
            PhysAddr(RAM + 0x40_0000),
            MB2,
            Attrs::USER_RW,
            true,
        )
        .unwrap();
        cell.borrow_mut().fill_all();
        let upa = u.pa();
        let start = base - KB64;
        let end = base + 2 * MB2 + 3 * KB4;
        let mut got = Vec::new();
        u.unmap_leaves(&mut p, va(start), end - start, |l| {
            let m = cell.borrow();
            let pages = l.size / KB4;
            for j in [0, pages / 2, pages - 1] {
                let at = l.va.0 + j * KB4;
                assert!(m.table_walk(upa, va(at)).is_err(), "{at:#x} still mapped");
                assert!(!m.tlb_covers(A, at), "{at:#x} still in the TLB when reported");
                assert!(!m.break_pending(at), "{at:#x} reported before its TLBI completed");
            }
            got.push((l.va.0, l.pa.0, l.size, l.level, l.desc.contiguous()));
        })
        .unwrap();
        let want = vec![
            (base - KB64, RAM, KB64, Level::L3, true),
            (base, RAM + 4 * KB64, KB64, Level::L3, true),
            (base + 20 * KB4, RAM + 0x10_0000 + 20 * KB4, KB4, Level::L3, false),
            (base + 21 * KB4, RAM + 0x10_0000 + 21 * KB4, KB4, Level::L3, false),
            (
                base + 300 * KB4,
                RAM + 0x10_0000 + 300 * KB4,
                KB4,
                Level::L3,
                false,
            ),
            (
                base + 511 * KB4,
                RAM + 0x10_0000 + 511 * KB4,
                KB4,
                Level::L3,
                false,
            ),
            (base + MB2, RAM + 8 * KB64, KB64, Level::L3, true),
            (base + MB2 + KB64, RAM + 9 * KB64, KB64, Level::L3, true),
            (base + MB2 + 40 * KB4, RAM + 0x20_0000, KB4, Level::L3, false),
            (
                base + MB2 + 41 * KB4,
                RAM + 0x20_0000 + KB4,
                KB4,
                Level::L3,
                false,
            ),
            (
                base + MB2 + 42 * KB4,
                RAM + 0x20_0000 + 2 * KB4,
                KB4,
                Level::L3,
                false,
            ),
            (base + 2 * MB2, RAM + 0x40_0000, 3 * KB4, Level::L2, false),
        ];
        assert_eq!(got, want, "range: {range}");
        drop(p);
        let m = Rc::try_unwrap(cell).ok().unwrap().into_inner();
        m.check_all();
        assert!(u.translate(&m, va(base + 2 * MB2 + 3 * KB4)).is_some());
        Env { m, k, u }.teardown();
    }
}

#[test]
fn unmap_leaves_with_many_scattered_pages_flushes_per_report_batch() {
    let mut e = Env::new(false);
    // 200 pages, every other frame: no two physically consecutive, 200 separate reports.
    for i in 0..200u64 {
        e.u.set_ptes(&mut e.m, va(UVA + i * KB4), pte(RAM + 2 * i * KB4), 1, true)
            .unwrap();
    }
    e.m.fill_all();
    e.u.reset_stats();
    let mut n = 0;
    e.u.unmap_leaves(&mut e.m, va(UVA), 200 * KB4, |l| {
        assert_eq!(l.pa.0, RAM + 2 * (l.va.0 - UVA));
        n += 1;
    })
    .unwrap();
    check(&mut e);
    assert_eq!(n, 200);
    let b = e.u.stats().tlbi_batches;
    assert!((2..=8).contains(&b), "{b} batches");
    e.teardown();
}

// ---------------------------------------------------------------------------------------
// Slots and allocation failure.

#[test]
fn pte_entry_lookup_and_allocation() {
    let mut e = Env::new(false);
    assert_eq!(e.u.pte_entry(&e.m, va(UVA)), Ok(None));
    let slot = e.u.alloc_pte_entry(&mut e.m, va(UVA + 0x1234)).unwrap();
    assert_eq!(slot.level(), Level::L3);
    assert_eq!(slot.va(), va(UVA + 0x1000));
    assert_eq!(slot.read(&e.m), Descriptor::INVALID);
    assert_eq!(e.u.stats().tables_allocated, 4);
    assert_eq!(e.u.pte_entry(&e.m, va(UVA + 0x1fff)), Ok(Some(slot)));
    // Same table, another index: nothing allocated.
    let again = e.u.alloc_pte_entry(&mut e.m, va(UVA + 0x5000)).unwrap();
    assert_eq!((again.table(), again.index()), (slot.table(), 5));
    assert_eq!(e.u.stats().tables_allocated, 4);
    e.u.set_ptes(&mut e.m, va(UVA + 0x1000), pte(RAM), 1, true)
        .unwrap();
    let (t, i, _, d) = slot_of(&e.m, e.u.pa(), va(UVA + 0x1000));
    assert_eq!((t, i, d), (slot.table().pa(), slot.index(), slot.read(&e.m)));
    // A block is in the way.
    e.u.map(&mut e.m, va(UVA + GB1), PhysAddr(GB1), GB1, Attrs::USER_RW, true)
        .unwrap();
    assert_eq!(
        e.u.alloc_pte_entry(&mut e.m, va(UVA + GB1 + MB2)),
        Err(MapError::BlockMapped(va(UVA + GB1 + MB2)))
    );
    assert_eq!(
        e.u.pte_entry(&e.m, va(UVA + GB1 + 7)),
        Err(MapError::BlockMapped(va(UVA + GB1 + 7)))
    );
    assert_eq!(
        e.u.set_ptes(&mut e.m, va(UVA + 0x1000), pte(RAM), 1, true),
        Err(MapError::AlreadyMapped(va(UVA + 0x1000)))
    );
    assert_eq!(
        e.u.set_ptes(&mut e.m, va(UVA), Descriptor::INVALID, 1, true),
        Err(MapError::BadDescriptor(Descriptor::INVALID))
    );
    assert_eq!(
        e.u.set_ptes(&mut e.m, va(UVA), pte(RAM), 0, true),
        Err(MapError::ZeroLength)
    );
    let global = Attrs::new(Prot::READ | Prot::USER, MemType::Normal, true);
    assert!(matches!(
        e.u.set_ptes(&mut e.m, va(UVA), global.leaf(Level::L3, PhysAddr(RAM)), 1, true),
        Err(MapError::BadAttrs(_))
    ));
    check(&mut e);
    e.teardown();
}

/// Runs `op` after `setup` with the n-th allocation failing, for n = 1, 2, … until it
/// succeeds; each failure must leave the tables bit-for-bit unchanged. Returns the number of
/// failing runs.
fn every_failure_point(setup: fn(&mut Env), op: fn(&mut Env) -> Result<(), MapError>) -> u64 {
    for n in 1.. {
        let mut e = Env::new(n % 2 == 1);
        setup(&mut e);
        e.m.fill_all();
        let snap = e.m.snapshot();
        e.m.set_alloc_failure(AllocFailure::Nth(n));
        let r = op(&mut e);
        e.m.set_alloc_failure(AllocFailure::Never);
        e.m.check_all();
        match r {
            Err(MapError::OutOfMemory) => {
                assert_eq!(
                    e.m.snapshot(),
                    snap,
                    "failure at allocation {n} changed the tables"
                )
            }
            Ok(()) => {
                e.teardown();
                return n - 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        e.teardown();
    }
    unreachable!()
}

#[test]
fn pte_operations_fail_cleanly_at_every_allocation() {
    // set_ptes across a level-2 boundary with a fold completing an existing block.
    let n = every_failure_point(
        |e| {
            e.u.set_ptes(&mut e.m, va(UVA + MB2 - KB64), pte(RAM), 8, true)
                .unwrap();
        },
        |e| {
            e.u.set_ptes(
                &mut e.m,
                va(UVA + MB2 - KB64 + 8 * KB4),
                pte(RAM + 8 * KB4),
                40,
                true,
            )
        },
    );
    assert_eq!(n, 1, "one new level-3 table");
    let n = every_failure_point(|_| {}, |e| e.u.alloc_pte_entry(&mut e.m, va(UVA)).map(|_| ()));
    assert_eq!(n, 3);
    // Clearing part of a 2 MiB block splits it; a folded block at the other end unfolds.
    let n = every_failure_point(
        |e| {
            e.u.map(&mut e.m, va(UVA), PhysAddr(RAM), MB2, Attrs::USER_RW, true)
                .unwrap();
            e.u.set_ptes(&mut e.m, va(UVA + MB2), pte(RAM + MB2), 16, true)
                .unwrap();
        },
        |e| e.u.clear_ptes(&mut e.m, va(UVA + MB2 - KB4), 3),
    );
    assert_eq!(n, 1);
}

// ---------------------------------------------------------------------------------------
// The model catches contiguous misprogramming (negative tests).

/// Writes 16 level-3 entries at `UVA` (a live table) directly, `f(i)` for entry `i`.
fn raw_group(e: &mut Env, f: impl Fn(u64) -> Descriptor) {
    let slot = e.u.alloc_pte_entry(&mut e.m, va(UVA)).unwrap();
    for i in 0..16 {
        e.m.write(slot.table().pa(), slot.index() + i as usize, f(i));
    }
}

#[test]
#[should_panic(expected = "entry without the Contiguous bit")]
fn model_flags_a_group_with_an_entry_missing_the_bit() {
    let mut e = Env::new(false);
    raw_group(&mut e, |i| pte(RAM + i * KB4).with_contiguous(i != 9));
    e.m.check_contiguous();
}

#[test]
#[should_panic(expected = "not a valid leaf")]
fn model_flags_a_group_with_an_invalid_entry() {
    let mut e = Env::new(false);
    raw_group(&mut e, |i| {
        if i == 15 {
            Descriptor::INVALID
        } else {
            pte(RAM + i * KB4).with_contiguous(true)
        }
    });
    e.m.check_contiguous();
}

#[test]
#[should_panic(expected = "not aligned to the group size")]
fn model_flags_a_misaligned_output_address() {
    let mut e = Env::new(false);
    raw_group(&mut e, |i| pte(RAM + KB4 + i * KB4).with_contiguous(true));
    e.m.check_contiguous();
}

#[test]
#[should_panic(expected = "output addresses not consecutive")]
fn model_flags_non_consecutive_output_addresses() {
    let mut e = Env::new(false);
    raw_group(&mut e, |i| {
        let j = match i {
            4 => 5,
            5 => 4,
            _ => i,
        };
        pte(RAM + j * KB4).with_contiguous(true)
    });
    e.m.check_contiguous();
}

#[test]
#[should_panic(expected = "attributes differ")]
fn model_flags_differing_permissions() {
    let mut e = Env::new(false);
    raw_group(&mut e, |i| {
        let a = if i == 4 { Attrs::USER_RO } else { Attrs::USER_RW };
        a.leaf(Level::L3, PhysAddr(RAM + i * KB4)).with_contiguous(true)
    });
    e.m.check_contiguous();
}

#[test]
fn model_accepts_what_the_hardware_may_leave_differing() {
    let mut e = Env::new(false);
    // AF, the dirty state of DBM entries, and the software bits.
    raw_group(&mut e, |i| {
        pte(RAM + i * KB4)
            .with_dirty(false)
            .with_dirty(i % 3 == 0)
            .with_young(i % 2 == 0)
            .with_sw((i % 4) as u8 * 2)
            .with_contiguous(true)
    });
    e.m.check_contiguous();
    e.m.fill_all();
    e.m.check_tlb_coherent();
    assert!(folded(&e, UVA));
    // The gathered state.
    let g = e.u.pte_get(&e.m, va(UVA + KB4)).unwrap();
    assert!(g.young() && g.dirty());
    e.u.clear_ptes(&mut e.m, va(UVA), 16).unwrap();
    check(&mut e);
    e.teardown();
}

#[test]
#[should_panic(expected = "Contiguous bit changed")]
fn model_flags_a_fold_without_break_before_make() {
    let mut e = Env::new(false);
    e.u.set_ptes(&mut e.m, va(UVA), pte(RAM), 16, false).unwrap();
    let slot = e.u.pte_entry(&e.m, va(UVA)).unwrap().unwrap();
    for i in 0..16 {
        let d = e.m.read(slot.table().pa(), i);
        e.m.write(slot.table().pa(), i, d.with_contiguous(true));
    }
}

#[test]
#[should_panic(expected = "no TLBI covering it completed")]
fn model_flags_a_fold_whose_break_invalidated_one_page_only() {
    let mut e = Env::new(false);
    e.u.set_ptes(&mut e.m, va(UVA), pte(RAM), 16, false).unwrap();
    e.m.fill_all();
    let t = e.u.pte_entry(&e.m, va(UVA)).unwrap().unwrap().table().pa();
    let old: Vec<Descriptor> = (0..16).map(|i| e.m.read(t, i)).collect();
    for i in 0..16 {
        e.m.write(t, i, Descriptor::INVALID);
    }
    // One TLBI for the first page, as if a single TLBI reached the whole 64 KiB.
    e.m.tlb_maintenance(&[TlbOp::Va {
        va: va(UVA),
        asid: USER_ASID,
        leaf_only: true,
        level: Some(Level::L3),
    }]);
    for (i, d) in old.iter().enumerate() {
        e.m.write(t, i, d.with_contiguous(true));
    }
}

#[test]
#[should_panic(expected = "stale TLB entry")]
fn model_flags_a_missing_64k_invalidation_of_a_folded_block() {
    let mut e = Env::new(false);
    e.u.set_ptes(&mut e.m, va(UVA), pte(RAM), 16, true).unwrap();
    e.m.fill_all();
    // Write-protect the block in place but invalidate only its first page: the combined entry
    // goes, the per-page entries of pages 1..15 stay writable.
    let t = e.u.pte_entry(&e.m, va(UVA)).unwrap().unwrap().table().pa();
    for i in 0..16 {
        let d = e.m.read(t, i);
        e.m.write(t, i, d.with_writable(false));
    }
    e.m.tlb_maintenance(&[TlbOp::Va {
        va: va(UVA),
        asid: USER_ASID,
        leaf_only: true,
        level: Some(Level::L3),
    }]);
    e.m.check_tlb_coherent();
}

#[test]
fn model_caches_a_folded_block_as_one_entry_too() {
    let mut e = Env::new(false);
    e.u.set_ptes(&mut e.m, va(UVA), pte(RAM), 16, true).unwrap();
    // One access caches the page and the whole block; other pages hit the combined entry.
    let u = e.u.pa();
    e.m.access(u, A, va(UVA + 2 * KB4), El::El0, Access::Read)
        .unwrap();
    assert_eq!((e.m.tlb_len(), e.m.tlb_combined()), (2, 1));
    assert_eq!(
        e.m.access(u, A, va(UVA + 9 * KB4 + 3), El::El0, Access::Read),
        Ok(PhysAddr(RAM + 9 * KB4 + 3))
    );
    assert_eq!(e.m.tlb_len(), 2, "served by the combined entry");
    // A TLBI of any page of the block removes the combined entry.
    e.m.tlb_maintenance(&[TlbOp::Va {
        va: va(UVA + 13 * KB4),
        asid: USER_ASID,
        leaf_only: true,
        level: Some(Level::L3),
    }]);
    assert_eq!((e.m.tlb_len(), e.m.tlb_combined()), (1, 0));
    e.m.check_all();
    e.teardown();
}
