//! The slot operations (`Root::set_ptes_at`, `Root::get_and_clear_block_at`) and the one-pass
//! unmap (`Root::zap_ptes`) against the single-range operations they stand for: the same
//! entries, fold states and leaves. The model's checks run after every operation.

use super::super::*;
use super::Env;

const KB4: u64 = 4 << 10;
const KB64: u64 = 64 << 10;
const MB2: u64 = 2 << 20;
const RAM: u64 = 0x4000_0000;
const UVA: u64 = 0x10_0000_0000;

fn va(x: u64) -> VirtAddr {
    VirtAddr(x)
}

fn pte(pa: u64) -> Descriptor {
    Attrs::USER_RW.leaf(Level::L3, PhysAddr(pa))
}

/// Every level-3 descriptor of the table span at `span` (0 for none).
fn entries(e: &Env, span: u64) -> Vec<u64> {
    (0..512)
        .map(|i| {
            e.u.pte_entry(&e.m, va(span + i * KB4))
                .unwrap()
                .map_or(0, |s| s.read(&e.m).0)
        })
        .collect()
}

fn check(e: &mut Env) {
    e.m.check_all();
    e.m.fill_all();
}

/// `set_ptes_at` (the fault path's form, into a slot looked up once) against `set_ptes` of the
/// same pages: the same entries and fold states, no walk-dependent difference; partial blocks
/// completed by a call fold as with `set_ptes`; refusals change nothing.
#[test]
fn set_ptes_at_writes_what_set_ptes_writes() {
    let cases: &[(u64, u64, usize, bool)] = &[
        (UVA, RAM, 16, true),
        (UVA + KB64, RAM + KB64, 8, true),
        (UVA + KB64 + 8 * KB4, RAM + KB64 + 8 * KB4, 8, true),
        (UVA + 3 * KB64 + 4 * KB4, RAM + 3 * KB64 + 4 * KB4, 40, true),
        (UVA + 8 * KB64, RAM + 8 * KB64 + KB4, 16, true),
        (UVA + 9 * KB64, RAM + 9 * KB64, 16, false),
        (UVA + 10 * KB64 + KB4, RAM + 10 * KB64 + KB4, 1, false),
    ];
    let mut a = Env::new(false);
    let mut b = Env::new(false);
    // The table exists in both (the slot comes from it).
    for e in [&mut a, &mut b] {
        e.u.alloc_pte_entry(&mut e.m, va(UVA)).unwrap();
        e.u.reset_stats();
    }
    for &(at, pa, nr, fold_ok) in cases {
        a.u.set_ptes(&mut a.m, va(at), pte(pa), nr, fold_ok).unwrap();
        let slot = b.u.pte_entry(&b.m, va(at)).unwrap().unwrap();
        b.u.set_ptes_at(&mut b.m, slot, pte(pa), nr, fold_ok).unwrap();
        check(&mut a);
        check(&mut b);
        assert_eq!(entries(&a, UVA), entries(&b, UVA), "after {at:#x}");
    }
    let (sa, sb) = (*a.u.stats(), *b.u.stats());
    assert_eq!(sb.cont_blocks_mapped, sa.cont_blocks_mapped);
    assert_eq!((sb.folds, sb.tlbi_batches), (sa.folds, sa.tlbi_batches));
    assert_eq!(sb.folds, 1, "the block completed by two calls folds once");
    assert_eq!(sb.desc_writes, sa.desc_writes);
    assert_eq!(sb.tables_allocated, 0);
    // pte_get_at reads what pte_get reads, folded or not.
    for i in 0..512 {
        let v = va(UVA + i * KB4);
        let slot = b.u.pte_entry(&b.m, v).unwrap().unwrap();
        assert_eq!(b.u.pte_get_at(&b.m, slot), b.u.pte_get(&b.m, v), "{v:?}");
    }
    // Refused before any write: a mapped page, past the table's end, zero pages, not a page.
    let before = entries(&b, UVA);
    let slot = b.u.pte_entry(&b.m, va(UVA + 10 * KB64)).unwrap().unwrap();
    assert!(matches!(
        b.u.set_ptes_at(&mut b.m, slot, pte(RAM + 10 * KB64), 2, false),
        Err(MapError::AlreadyMapped(_))
    ));
    let last = b.u.pte_entry(&b.m, va(UVA + MB2 - KB4)).unwrap().unwrap();
    assert!(matches!(
        b.u.set_ptes_at(&mut b.m, last, pte(RAM + MB2 - KB4), 2, false),
        Err(MapError::OutOfRange { .. })
    ));
    assert_eq!(
        b.u.set_ptes_at(&mut b.m, last, pte(RAM + MB2 - KB4), 0, false),
        Err(MapError::ZeroLength)
    );
    assert!(matches!(
        b.u.set_ptes_at(&mut b.m, last, Descriptor::INVALID, 1, false),
        Err(MapError::BadDescriptor(_))
    ));
    assert_eq!(entries(&b, UVA), before);
    check(&mut b);
    a.teardown();
    b.teardown();
}

/// `get_and_clear_block_at` (the copy-on-write fault's form, from a slot looked up once)
/// against `get_and_clear_ptes` of the same 64 KiB block: the same entries left, the same
/// gathered descriptor, with the TLB filled beforehand (the model catches an entry the
/// invalidation missed); one maintenance batch per non-empty block and no unfold.
#[test]
fn get_and_clear_block_at_clears_what_get_and_clear_ptes_clears() {
    let ro = Attrs::USER_RO
        .leaf(Level::L3, PhysAddr(RAM + 4 * KB64))
        .with_young(false);
    // (block, first page mapped, pages, template, fold_ok, slot page in the block)
    let cases: &[(u64, u64, usize, Descriptor, bool, u64)] = &[
        (UVA, 0, 16, pte(RAM), true, 7),
        (UVA + KB64, 0, 16, pte(RAM + KB64), false, 0),
        (UVA + 2 * KB64, 4, 5, pte(RAM + 2 * KB64 + 4 * KB4), true, 0),
        (UVA + 3 * KB64, 0, 0, pte(RAM), true, 15),
        (UVA + 4 * KB64, 0, 16, ro, true, 15),
        (
            UVA + 5 * KB64,
            0,
            16,
            pte(RAM + 5 * KB64).with_young(false).with_dirty(false),
            true,
            9,
        ),
    ];
    for range in [false, true] {
        let mut a = Env::new(range);
        let mut b = Env::new(range);
        for e in [&mut a, &mut b] {
            e.u.alloc_pte_entry(&mut e.m, va(UVA)).unwrap();
            for &(block, first, nr, t, fold_ok, _) in cases {
                if nr > 0 {
                    let at = block + first * KB4;
                    e.u.set_ptes(&mut e.m, va(at), t, nr, fold_ok).unwrap();
                }
            }
            // The hardware records an access and a write in the clean folded block.
            let u = e.u.pa();
            e.m.hw_update(u, va(UVA + 5 * KB64 + 3 * KB4), false).unwrap();
            e.m.hw_update(u, va(UVA + 5 * KB64 + 12 * KB4), true).unwrap();
            check(e);
        }
        assert_eq!(entries(&a, UVA), entries(&b, UVA));
        for &(block, _, nr, _, _, at) in cases {
            let want = a.u.get_and_clear_ptes(&mut a.m, va(block), 16).unwrap();
            let slot = b.u.pte_entry(&b.m, va(block + at * KB4)).unwrap().unwrap();
            let before = *b.u.stats();
            let got = b.u.get_and_clear_block_at(&mut b.m, slot);
            let d = b.u.stats().since(&before);
            check(&mut a);
            check(&mut b);
            assert_eq!(got, want, "block {block:#x}");
            assert_eq!(entries(&a, UVA), entries(&b, UVA), "block {block:#x}");
            assert_eq!(d.tlbi_batches, u64::from(nr > 0), "block {block:#x}");
            assert_eq!(d.desc_writes, nr as u64, "block {block:#x}");
            assert_eq!((d.unfolds, d.folds), (0, 0));
        }
        let (sa, sb) = (*a.u.stats(), *b.u.stats());
        assert_eq!(sb.cont_blocks_unmapped, sa.cont_blocks_unmapped);
        assert_eq!(sb.cont_blocks_unmapped, 3);
        assert!(entries(&b, UVA).iter().all(|&d| d == 0));
        a.teardown();
        b.teardown();
    }
}

const GB: u64 = 1 << 30;

/// Pages in four level-3 tables under two level-2 tables: folded blocks, a run starting and
/// ending inside blocks, an unfolded run, runs on both sides of a table boundary.
fn map_zap_fixture(e: &mut Env) {
    let pa = |v: u64| RAM + (v - UVA) % (256 << 20);
    let runs: &[(u64, usize, bool)] = &[
        (UVA, 64, true),
        (UVA + 5 * KB64 + 3 * KB4, 20, true),
        (UVA + MB2 - 2 * KB64, 32, true),
        (UVA + MB2, 16, true),
        (UVA + MB2 + 2 * KB64, 24, false),
        (UVA + GB - MB2 + 7 * KB64, 48, true),
        (UVA + GB, 16, true),
        (UVA + GB + 40 * KB4, 3, true),
    ];
    for &(at, nr, fold_ok) in runs {
        e.u.set_ptes(&mut e.m, va(at), pte(pa(at)), nr, fold_ok).unwrap();
    }
    check(e);
}

fn zap_spans(e: &Env) -> Vec<Vec<u64>> {
    [UVA, UVA + MB2, UVA + GB - MB2, UVA + GB]
        .iter()
        .map(|&s| entries(e, s))
        .collect()
}

/// `zap_ptes` (munmap's one-pass form) against `unmap_leaves`: the same leaves reported, the
/// same entries left, the same tables freed, with the TLB filled beforehand (the model catches
/// an entry or a table the single invalidation missed); one maintenance batch besides the
/// unfolds of partly covered blocks.
#[test]
fn zap_ptes_unmaps_what_unmap_leaves_unmaps() {
    let ranges: &[(u64, u64)] = &[
        (UVA, UVA + GB + MB2),
        (UVA + 2 * KB64 + 5 * KB4, UVA + MB2 + 3 * KB64 + KB4),
        (UVA + MB2 - KB64, UVA + 2 * MB2),
        (UVA + 5 * KB64, UVA + 7 * KB64),
        (UVA + 4 * MB2, UVA + 8 * MB2),
        (UVA + GB - MB2, UVA + GB + 64 * KB4),
        (UVA + GB + 41 * KB4, UVA + GB + 42 * KB4),
    ];
    for range in [false, true] {
        for &(s, e) in ranges {
            let mut a = Env::new(range);
            let mut b = Env::new(range);
            map_zap_fixture(&mut a);
            map_zap_fixture(&mut b);
            let (mut la, mut lb) = (Vec::new(), Vec::new());
            a.u.unmap_leaves(&mut a.m, va(s), e - s, |l| la.push(*l)).unwrap();
            let before = *b.u.stats();
            b.u.zap_ptes(&mut b.m, va(s), e - s, |l| lb.push(*l)).unwrap();
            let d = b.u.stats().since(&before);
            check(&mut a);
            check(&mut b);
            let what = format!("range {s:#x}..{e:#x}");
            assert_eq!(lb, la, "{what}");
            assert_eq!(zap_spans(&b), zap_spans(&a), "{what}");
            assert_eq!(b.m.tables_under(b.u.pa()), a.m.tables_under(a.u.pa()), "{what}");
            let (sa, sb) = (*a.u.stats(), *b.u.stats());
            assert_eq!(sb.tables_freed, sa.tables_freed, "{what}");
            // (`unmap_leaves` does not count the blocks of a subtree it frees whole.)
            let blocks = lb.iter().filter(|l| l.size == KB64).count() as u64;
            assert_eq!(sb.cont_blocks_unmapped, blocks, "{what}");
            assert!(sa.cont_blocks_unmapped <= blocks, "{what}");
            assert_eq!(d.tlbi_batches, d.unfolds + u64::from(!lb.is_empty()), "{what}");
            a.teardown();
            b.teardown();
        }
    }
    // A block in the range is refused before anything is written.
    let mut k = Env::new(false);
    let kva = 0xFFFF_0000_4000_0000;
    k.k.map(&mut k.m, va(kva), PhysAddr(RAM), MB2, Attrs::KERNEL_RW, true)
        .unwrap();
    let (m, kr) = k.split(true);
    assert!(matches!(
        kr.zap_ptes(m, va(kva), MB2, |_| panic!("nothing is reported")),
        Err(MapError::BlockMapped(_))
    ));
    assert!(k.k.translate(&k.m, va(kva)).is_some());
    k.teardown();
}
