//! `Root::copy_pte_table` (fork's one-pass copy of a level-3 table) against the single-range
//! operations it stands for: the child's entries are those `set_ptes` writes for the same
//! pages read-only and old, the parent's those `wrprotect_ptes` leaves, with one gathered
//! invalidation in the parent and none in the child; then the callback's answers (`Share`,
//! `Split`, `Skip`, an error), ranges cutting folded blocks, an unprotected parent,
//! the returned count and allocation failure of the child's table. The model's checks run
//! after every operation.

use proptest::prelude::*;

use super::super::model::{AllocFailure, Model};
use super::super::*;
use super::Env;
use crate::fixture::user_root;

const KB4: u64 = 4 << 10;
const KB64: u64 = 64 << 10;
const MB2: u64 = 2 << 20;
const RAM: u64 = 0x4000_0000;
const UVA: u64 = 0x10_0000_0000;
const CHILD_ASID: Asid = Asid(9);

fn va(x: u64) -> VirtAddr {
    VirtAddr(x)
}

/// A user page descriptor with the given write permission, dirty state and AF.
fn page(pa: u64, writable: bool, dirty: bool, young: bool) -> Descriptor {
    let attrs = if writable { Attrs::USER_RW } else { Attrs::USER_RO };
    attrs
        .leaf(Level::L3, PhysAddr(pa))
        .with_dirty(dirty)
        .with_young(young)
}

/// What the child gets for a shared parent entry.
fn ro_old(d: Descriptor) -> Descriptor {
    d.with_writable(false).with_young(false)
}

/// A parent (the `Env`'s user root) and a child root registered in the same model.
struct Fork {
    e: Env,
    c: Root,
}

impl Fork {
    fn new(tlbi_range: bool, child_contpte: bool) -> Fork {
        let mut e = Env::new(tlbi_range);
        let mut c = user_root(&mut e.m, CHILD_ASID);
        c.set_contpte(child_contpte);
        Fork { e, c }
    }

    fn check(&mut self) {
        self.e.m.check_all();
        self.e.m.fill_all();
    }

    /// `copy_pte_table` of `[s, e)` from the parent's table for the span holding `s`, then the
    /// model's checks.
    fn copy(
        &mut self,
        (s, e): (u64, u64),
        protect: bool,
        f: impl FnMut(&CopyUnit) -> Result<CopyPte, OutOfMemory>,
    ) -> Result<u64, OutOfMemory> {
        let t = self
            .e
            .u
            .pte_table(&self.e.m, va(s))
            .expect("the parent has the table");
        let r = self
            .e
            .u
            .copy_pte_table(&mut self.e.m, &mut self.c, t, (s, e), protect, f);
        self.check();
        r
    }

    /// The parent's level-3 descriptors of the span at `span`.
    fn parent(&self, span: u64) -> Vec<u64> {
        entries(&self.e.m, &self.e.u, span)
    }

    /// The child's level-3 descriptors of the span at `span`.
    fn child(&self, span: u64) -> Vec<u64> {
        entries(&self.e.m, &self.c, span)
    }

    /// The raw descriptor of the parent's page at `at`.
    fn raw(&self, at: u64) -> Descriptor {
        let m = &self.e.m;
        self.e
            .u
            .pte_entry(m, va(at))
            .unwrap()
            .map_or(Descriptor::INVALID, |s| s.read(m))
    }

    /// The reference of a copy of `[s, e)` with `Share` everywhere: the child gets, from
    /// `set_ptes`, each folded block the range covers whole as one 16-page call with the
    /// block's gathered descriptor, every other mapped page alone with its `pte_get`
    /// descriptor, read-only and old; the parent is write-protected by `wrprotect_ptes`.
    fn reference(&mut self, (s, e): (u64, u64), protect: bool) {
        let m = &mut self.e.m;
        let mut at = s;
        while at < e {
            let raw = self.e.u.pte_entry(m, va(at)).unwrap().map(|x| x.read(m));
            let whole = at.is_multiple_of(KB64) && at + KB64 <= e;
            if whole && raw.is_some_and(|d| d.is_valid() && d.contiguous()) {
                let g = self.e.u.pte_get(m, va(at)).unwrap();
                self.c.set_ptes(m, va(at), ro_old(g), 16, true).unwrap();
                at += KB64;
                continue;
            }
            if let Some(g) = self.e.u.pte_get(m, va(at)) {
                self.c.set_ptes(m, va(at), ro_old(g), 1, false).unwrap();
            }
            at += KB4;
        }
        if protect {
            let nr = ((e - s) / KB4) as usize;
            self.e.u.wrprotect_ptes(m, va(s), nr).unwrap();
        }
        self.check();
    }

    fn teardown(self) {
        let Fork { mut e, c } = self;
        let tables = e.m.tables_under(c.pa());
        e.m.retire_root(c.pa());
        assert_eq!(c.destroy(&mut e.m), tables);
        e.teardown();
    }
}

/// Every level-3 descriptor of the span at `span` under `r` (0 where nothing is, or without a
/// table).
fn entries(m: &Model, r: &Root, span: u64) -> Vec<u64> {
    (0..512)
        .map(|i| {
            r.pte_entry(m, va(span + i * KB4))
                .unwrap()
                .map_or(0, |s| s.read(m).0)
        })
        .collect()
}

/// The folded blocks of [`parent`], as block numbers in the span at `UVA`.
const FOLDED: [u64; 6] = [0, 1, 2, 3, 7, 31];

/// What a fork's parent holds in the span at `UVA`: folded blocks writable and dirty, writable
/// and clean with a hardware write recorded in one entry, read-only clean, read-only dirty,
/// writable clean and old with a hardware access recorded in one entry, and at the end of the
/// table; 16 unfolded pages; a block of single pages of every kind with holes; a hole; a page
/// in the next span (which the copies of the span must not see).
fn parent(f: &mut Fork) {
    let (m, u) = (&mut f.e.m, &mut f.e.u);
    let blk = |b: u64| UVA + b * KB64;
    let pa = |b: u64| RAM + b * KB64;
    let folded: [(u64, bool, bool, bool); 6] = [
        (0, true, true, true),
        (1, true, false, false),
        (2, false, false, true),
        (3, false, true, false),
        (7, true, false, false),
        (31, true, true, true),
    ];
    for (b, w, d, y) in folded {
        u.set_ptes(m, va(blk(b)), page(pa(b), w, d, y), 16, true).unwrap();
    }
    m.hw_update(u.pa(), va(blk(1) + 5 * KB4), true).unwrap();
    m.hw_update(u.pa(), va(blk(7) + 3 * KB4), false).unwrap();
    u.set_ptes(m, va(blk(4)), page(pa(4), true, false, true), 16, false)
        .unwrap();
    u.set_ptes(m, va(blk(5)), page(pa(5), true, true, false), 5, true)
        .unwrap();
    u.set_ptes(
        m,
        va(blk(5) + 6 * KB4),
        page(pa(5) + 6 * KB4, false, false, true),
        1,
        false,
    )
    .unwrap();
    u.set_ptes(
        m,
        va(blk(5) + 8 * KB4),
        page(pa(5) + 8 * KB4, true, false, false),
        4,
        true,
    )
    .unwrap();
    m.hw_update(u.pa(), va(blk(5) + 9 * KB4), true).unwrap();
    u.set_ptes(m, va(UVA + MB2), page(RAM + MB2, true, true, true), 1, false)
        .unwrap();
    f.check();
    for b in 0..32 {
        let c = f.raw(blk(b)).contiguous();
        assert_eq!(c, FOLDED.contains(&b), "block {b}");
    }
    f.e.u.reset_stats();
    f.c.reset_stats();
}

/// Two forks with [`parent`]: the one to copy and the one for the reference.
fn pair(tlbi_range: bool, child_contpte: bool) -> (Fork, Fork) {
    let mut a = Fork::new(tlbi_range, child_contpte);
    let mut b = Fork::new(tlbi_range, child_contpte);
    parent(&mut a);
    parent(&mut b);
    (a, b)
}

/// How many of the parent's pages in `[s, e)` are writable.
fn writable_pages(f: &Fork, (s, e): (u64, u64)) -> u64 {
    (s..e)
        .step_by(KB4 as usize)
        .filter(|&at| {
            let d = f.raw(at);
            d.is_valid() && d.writable()
        })
        .count() as u64
}

fn assert_same(a: &Fork, b: &Fork, what: &str) {
    for span in [UVA, UVA + MB2] {
        assert_eq!(a.parent(span), b.parent(span), "{what}: parent, span {span:#x}");
        assert_eq!(a.child(span), b.child(span), "{what}: child, span {span:#x}");
    }
}

#[test]
fn share_writes_what_set_ptes_and_wrprotect_ptes_write_with_one_invalidation() {
    let range = (UVA, UVA + MB2);
    for tlbi_range in [false, true] {
        for child_contpte in [true, false] {
            let what = format!("tlbi_range {tlbi_range}, child CONTPTE {child_contpte}");
            let (mut a, mut b) = pair(tlbi_range, child_contpte);
            let gathered: Vec<Descriptor> = FOLDED
                .iter()
                .map(|&k| a.e.u.pte_get(&a.e.m, va(UVA + k * KB64)).unwrap())
                .collect();
            let writable = writable_pages(&a, range);
            let mut units = Vec::new();
            let n = a
                .copy(range, true, |u| {
                    units.push(*u);
                    Ok(CopyPte::Share)
                })
                .unwrap();
            b.reference(range, true);
            assert_same(&a, &b, &what);

            // The units: each folded block once with its gathered descriptor, every other
            // mapped page alone with its entry.
            let blocks: Vec<(u64, Descriptor)> = units
                .iter()
                .filter(|u| u.nr == 16)
                .map(|u| (u.va.0, u.pte))
                .collect();
            let want: Vec<(u64, Descriptor)> = FOLDED
                .iter()
                .zip(&gathered)
                .map(|(&k, &g)| (UVA + k * KB64, g))
                .collect();
            assert_eq!(blocks, want, "{what}");
            assert!(gathered[1].dirty() && gathered[1].young(), "{what}");
            let pages: Vec<u64> = units.iter().filter(|u| u.nr == 1).map(|u| u.va.0).collect();
            let mut want_pages: Vec<u64> = (0..16).map(|k| UVA + 4 * KB64 + k * KB4).collect();
            want_pages.extend([0, 1, 2, 3, 4, 6, 8, 9, 10, 11].map(|k| UVA + 5 * KB64 + k * KB4));
            assert_eq!(pages, want_pages, "{what}");
            assert_eq!(units.len(), FOLDED.len() + want_pages.len(), "{what}");

            // The child's folded blocks are folded when its root folds; the parent's stay.
            for &k in &FOLDED {
                let at = UVA + k * KB64;
                let c = Descriptor(a.child(UVA)[(k * 16) as usize]);
                assert_eq!(c.contiguous(), child_contpte, "{what}: block {k}");
                assert!(!c.writable() && !c.young(), "{what}: block {k}");
                assert!(
                    a.raw(at).contiguous() && !a.raw(at).writable(),
                    "{what}: block {k}"
                );
            }
            // Dirty state kept on both sides: the block with a hardware write, and its page.
            assert!(a.raw(UVA + 5 * KB64 + 9 * KB4).dirty(), "{what}");
            assert!(Descriptor(a.child(UVA)[16 * 5 + 9]).dirty(), "{what}");
            assert!(Descriptor(a.child(UVA)[16]).dirty(), "{what}");

            let (sp, sc) = (*a.e.u.stats(), *a.c.stats());
            assert_eq!(n, writable, "{what}: returned count");
            assert_eq!(sp.desc_writes, writable, "{what}");
            assert_eq!((sp.tlbi_batches, sp.unfolds, sp.folds), (1, 0, 0), "{what}");
            assert_eq!((sc.tlbi_batches, sc.tlbi_total()), (0, 0), "{what}");
            assert_eq!(sc.cont_blocks_mapped, b.c.stats().cont_blocks_mapped, "{what}");
            assert_eq!(
                sc.cont_blocks_mapped,
                if child_contpte { FOLDED.len() as u64 } else { 0 },
                "{what}"
            );
            assert_eq!(
                sc.tables_allocated, 3,
                "{what}: the child's tables below its root"
            );
            a.teardown();
            b.teardown();
        }
    }
}

#[test]
fn a_range_cutting_folded_blocks_unfolds_them_in_the_parent() {
    // (range, folded blocks cut)
    let cases: &[((u64, u64), u64)] = &[
        // Ends inside block 2, starting inside block 0.
        ((UVA + 5 * KB4, UVA + 2 * KB64 + 3 * KB4), 2),
        // Inside block 0.
        ((UVA + 3 * KB4, UVA + 7 * KB4), 1),
        // From inside block 1 (dirty in one entry) to inside block 31.
        ((UVA + KB64 + 6 * KB4, UVA + MB2 - KB4), 2),
        // Inside block 5 (pages) and block 6 (a hole): nothing folded cut.
        ((UVA + 5 * KB64 + 3 * KB4, UVA + 6 * KB64 + 5 * KB4), 0),
    ];
    for &(range, cut) in cases {
        let what = format!("range {:#x}..{:#x}", range.0, range.1);
        let (mut a, mut b) = pair(false, true);
        let writable = writable_pages(&a, range);
        let before = a.parent(UVA);
        let n = a.copy(range, true, |_| Ok(CopyPte::Share)).unwrap();
        b.reference(range, true);
        assert_same(&a, &b, &what);
        let s = *a.e.u.stats();
        assert_eq!(s.unfolds, cut, "{what}");
        assert_eq!(s.tlbi_batches, cut + u64::from(writable > 0), "{what}");
        assert_eq!(n, writable, "{what}: returned count");
        // Only the range's pages in the child, none folded in a block the range cuts; the
        // parent's pages outside the range keep their write permission, unfolded if cut.
        let cut_block = |at: u64| {
            let blk = at & !(KB64 - 1);
            blk < range.1
                && blk + KB64 > range.0
                && (blk < range.0 || blk + KB64 > range.1)
                && Descriptor(before[((blk - UVA) / KB4) as usize]).contiguous()
        };
        for i in 0..512u64 {
            let at = UVA + i * KB4;
            let (c, p, old) = (
                Descriptor(a.child(UVA)[i as usize]),
                a.raw(at),
                Descriptor(before[i as usize]),
            );
            if range.0 <= at && at < range.1 {
                assert_eq!(c.is_valid(), old.is_valid(), "{what}: {at:#x}");
                if cut_block(at) {
                    assert!(!c.contiguous() && !p.contiguous(), "{what}: {at:#x}");
                }
            } else {
                assert!(!c.is_valid(), "{what}: {at:#x}");
                assert_eq!(p.writable(), old.writable(), "{what}: {at:#x}");
                if cut_block(at) {
                    assert!(!p.contiguous(), "{what}: {at:#x}");
                }
            }
        }
        a.teardown();
        b.teardown();
    }
}

#[test]
fn an_unprotected_parent_is_not_written() {
    let (mut a, mut b) = pair(true, true);
    let range = (UVA, UVA + MB2);
    let before = a.parent(UVA);
    let n = a.copy(range, false, |_| Ok(CopyPte::Share)).unwrap();
    b.reference(range, false);
    assert_same(&a, &b, "whole span");
    assert_eq!(a.parent(UVA), before);
    assert_eq!(n, 0);
    let s = *a.e.u.stats();
    assert_eq!((s.desc_writes, s.tlbi_batches, s.tlbi_total()), (0, 0, 0));
    // Still writable through the MMU.
    assert_eq!(
        a.e.m
            .access(a.e.u.pa(), super::USER_ASID.0, va(UVA), El::El0, Access::Write),
        Ok(PhysAddr(RAM))
    );
    a.teardown();
    b.teardown();
}

/// A range cutting folded blocks of an unprotected parent: the blocks are not unfolded, and
/// the child's pages of them are those `pte_get` reads (A/D gathered over the block).
#[test]
fn an_unprotected_parent_cut_block_is_copied_with_its_gathered_state() {
    let (mut a, mut b) = pair(false, true);
    // Block 1 holds a hardware write in its page 5 only; block 3 is cut at its end.
    let range = (UVA + KB64 + 2 * KB4, UVA + 3 * KB64 + 8 * KB4);
    let before = a.parent(UVA);
    let mut units = Vec::new();
    let n = a
        .copy(range, false, |u| {
            units.push(*u);
            Ok(CopyPte::Share)
        })
        .unwrap();
    assert_eq!((n, a.parent(UVA)), (0, before), "the parent is not written");
    assert_eq!(a.e.u.stats().unfolds, 0);
    b.reference(range, false);
    assert_same(&a, &b, "cut blocks");
    for u in &units {
        assert_eq!(Some(u.pte), a.e.u.pte_get(&a.e.m, u.va), "unit at {:?}", u.va);
    }
    a.teardown();
    b.teardown();
}

/// Block 0 folded, writable and clean with a hardware write in its page 7; block 1 folded,
/// writable and dirty. Returns the gathered descriptor of block 0.
fn split_parent(f: &mut Fork) -> Descriptor {
    let (m, u) = (&mut f.e.m, &mut f.e.u);
    u.set_ptes(m, va(UVA), page(RAM, true, false, false), 16, true)
        .unwrap();
    u.set_ptes(m, va(UVA + KB64), page(RAM + KB64, true, true, true), 16, true)
        .unwrap();
    m.hw_update(u.pa(), va(UVA + 7 * KB4), true).unwrap();
    f.check();
    f.e.u.reset_stats();
    f.e.u.pte_get(&f.e.m, va(UVA)).unwrap()
}

/// The answer of [`split_callback`] for page `k` of block 0: Share and Skip in turn.
fn split_answer(k: u64) -> CopyPte {
    if k.is_multiple_of(2) {
        CopyPte::Share
    } else {
        CopyPte::Skip
    }
}

/// Splits block 0, answers its pages by [`split_answer`], shares everything else; records
/// the units.
fn split_callback(units: &mut Vec<CopyUnit>) -> impl FnMut(&CopyUnit) -> Result<CopyPte, OutOfMemory> + '_ {
    |u| {
        units.push(*u);
        Ok(if u.va.0 < UVA + KB64 {
            if u.nr == 16 {
                CopyPte::Split
            } else {
                split_answer((u.va.0 - UVA) / KB4)
            }
        } else {
            CopyPte::Share
        })
    }
}

#[test]
fn split_unfolds_the_parent_block_and_asks_page_by_page() {
    for protect in [true, false] {
        let mut a = Fork::new(false, true);
        let g = split_parent(&mut a);
        assert!(g.dirty() && g.young());
        let mut units = Vec::new();
        a.copy((UVA, UVA + 2 * KB64), protect, split_callback(&mut units))
            .unwrap();

        // The block as one unit, then its 16 pages (each with the block's gathered state,
        // unfolded), then block 1.
        let seen: Vec<(u64, usize)> = units.iter().map(|u| (u.va.0, u.nr)).collect();
        let mut want = vec![(UVA, 16)];
        want.extend((0..16).map(|k| (UVA + k * KB4, 1)));
        want.push((UVA + KB64, 16));
        assert_eq!(seen, want, "protect {protect}");
        for (k, u) in units[1..17].iter().enumerate() {
            let d = g
                .with_contiguous(false)
                .with_address(PhysAddr(RAM + k as u64 * KB4));
            assert_eq!(u.pte, d, "page {k}");
        }

        // The child: Shared pages read-only and old, nothing for the Skipped ones; block 1
        // folded.
        let mut r = Fork::new(false, true);
        let m = &mut r.e.m;
        for k in 0..16 {
            if split_answer(k) == CopyPte::Share {
                let d = ro_old(g.with_address(PhysAddr(RAM + k * KB4)));
                r.c.set_ptes(m, va(UVA + k * KB4), d, 1, false).unwrap();
            }
        }
        let g1 = page(RAM + KB64, true, true, true);
        r.c.set_ptes(m, va(UVA + KB64), ro_old(g1), 16, true).unwrap();
        r.check();
        assert_eq!(a.child(UVA), r.child(UVA), "protect {protect}");

        // The parent: block 0 unfolded, only its Shared pages write-protected (if protecting),
        // dirty state kept; block 1 folded.
        for k in 0..16u64 {
            let d = a.raw(UVA + k * KB4);
            assert!(!d.contiguous() && d.dirty(), "page {k}");
            let shared = split_answer(k) == CopyPte::Share;
            assert_eq!(d.writable(), !(protect && shared), "protect {protect}, page {k}");
        }
        for k in 0..16u64 {
            let d = a.raw(UVA + KB64 + k * KB4);
            assert!(d.contiguous() && d.writable() != protect, "block 1 page {k}");
        }
        let s = *a.e.u.stats();
        assert_eq!(s.unfolds, 1);
        assert_eq!(
            s.tlbi_batches,
            1 + u64::from(protect),
            "the unfold, then the flush"
        );
        a.teardown();
        r.teardown();
    }
}

/// The count returned after a `Split`: only the write-protected entries, not the unfold's
/// rewrites of the block.
#[test]
fn split_counts_only_write_protected_entries() {
    for protect in [true, false] {
        let mut a = Fork::new(false, true);
        split_parent(&mut a);
        let mut units = Vec::new();
        let n = a
            .copy((UVA, UVA + 2 * KB64), protect, split_callback(&mut units))
            .unwrap();
        // Pages 0, 2, 4, .., 14 of block 0, and block 1.
        assert_eq!(n, if protect { 8 + 16 } else { 0 }, "protect {protect}");
        a.teardown();
    }
}

#[test]
fn read_only_entries_are_not_written() {
    let (mut a, mut b) = pair(false, false);
    // Blocks 2 and 3 (read-only, folded) and page 6 of block 5.
    for range in [
        (UVA + 2 * KB64, UVA + 4 * KB64),
        (UVA + 5 * KB64 + 6 * KB4, UVA + 5 * KB64 + 7 * KB4),
    ] {
        let before = a.parent(UVA);
        let n = a.copy(range, true, |_| Ok(CopyPte::Share)).unwrap();
        b.reference(range, true);
        assert_same(&a, &b, "read-only");
        assert_eq!((n, a.parent(UVA)), (0, before));
        let s = *a.e.u.stats();
        assert_eq!((s.desc_writes, s.tlbi_batches), (0, 0));
    }
    a.teardown();
    b.teardown();
}

#[test]
fn skip_everywhere_writes_nothing_into_the_child() {
    let mut a = Fork::new(false, true);
    parent(&mut a);
    let before = a.parent(UVA);
    let mut calls = 0;
    let n = a
        .copy((UVA, UVA + MB2), true, |_| {
            calls += 1;
            Ok(CopyPte::Skip)
        })
        .unwrap();
    assert_eq!(calls, FOLDED.len() + 26);
    assert_eq!((n, a.parent(UVA)), (0, before));
    let s = *a.e.u.stats();
    assert_eq!((s.desc_writes, s.tlbi_batches), (0, 0));
    // The child's table was allocated at the first valid entry, and holds nothing.
    assert_eq!(a.c.pte_tables(&a.e.m, UVA, UVA + MB2).len(), 1);
    assert!(a.child(UVA).iter().all(|&d| d == 0));
    assert_eq!(a.c.stats().tables_allocated, 3);

    // A range without a valid entry: no call, no table, nothing published.
    let mut b = Fork::new(false, true);
    parent(&mut b);
    let snap = b.e.m.snapshot();
    let n = b
        .copy((UVA + 6 * KB64, UVA + 7 * KB64), true, |_| {
            panic!("no unit in a hole")
        })
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(b.e.m.snapshot(), snap);
    assert!(b.c.pte_tables(&b.e.m, UVA, UVA + MB2).is_empty());
    assert_eq!(*b.c.stats(), Stats::default());
    assert_eq!(b.e.u.stats().tlbi_batches, 0);
    a.teardown();
    b.teardown();
}

#[test]
fn the_callback_error_stops_the_pass() {
    let range = (UVA, UVA + MB2);
    for err_at in [0usize, 1, 3, 6, 7, 20, 31] {
        let what = format!("error at call {err_at}");
        let (mut a, mut b) = pair(err_at % 2 == 0, true);
        let before = a.parent(UVA);
        let mut units = Vec::new();
        let r = a.copy(range, true, |u| {
            if units.len() == err_at {
                return Err(OutOfMemory);
            }
            units.push(*u);
            Ok(CopyPte::Share)
        });
        assert_eq!(r, Err(OutOfMemory), "{what}");
        assert_eq!(units.len(), err_at, "{what}");
        // The units before the failing one are copied, nothing from it on.
        let stop = if err_at == 0 {
            UVA
        } else {
            let last = units[err_at - 1];
            last.va.0 + last.nr as u64 * KB4
        };
        if stop > UVA {
            b.reference((UVA, stop), true);
        }
        assert_same(&a, &b, &what);
        let cut = ((stop - UVA) / KB4) as usize;
        assert_eq!(a.parent(UVA)[cut..], before[cut..], "{what}");
        assert!(a.child(UVA)[cut..].iter().all(|&d| d == 0), "{what}");
        let writable = before[..cut]
            .iter()
            .filter(|&&d| Descriptor(d).is_valid() && Descriptor(d).writable())
            .count() as u64;
        let s = *a.e.u.stats();
        assert_eq!(s.desc_writes, writable, "{what}");
        assert_eq!(s.tlbi_batches, u64::from(writable > 0), "{what}");
        a.teardown();
        b.teardown();
    }
}

/// Runs the copy of `range` (sharing everything) with the n-th allocation failing, for every
/// n until it succeeds, after `setup` of the child; returns how many runs failed.
fn every_failure_point(range: (u64, u64), setup: fn(&mut Fork)) -> u64 {
    for n in 1.. {
        let mut f = Fork::new(n % 2 == 0, true);
        parent(&mut f);
        setup(&mut f);
        f.check();
        let snap = f.e.m.snapshot();
        let child_tables = f.e.m.tables_under(f.c.pa());
        let pages: Vec<Option<Translation>> = (0..512)
            .map(|i| f.e.u.translate(&f.e.m, va(UVA + i * KB4)))
            .collect();
        f.e.m.set_alloc_failure(AllocFailure::Nth(n));
        let mut calls = 0;
        let r = f.copy(range, true, |_| {
            calls += 1;
            Ok(CopyPte::Share)
        });
        f.e.m.set_alloc_failure(AllocFailure::Never);
        match r {
            Err(OutOfMemory) => {
                assert_eq!(calls, 0, "failure {n}: the callback was called");
                assert_eq!(f.e.m.tables_under(f.c.pa()), child_tables, "failure {n}");
                if range == (UVA, UVA + MB2) {
                    assert_eq!(f.e.m.snapshot(), snap, "failure {n} changed the tables");
                } else {
                    // The parent's cut blocks are unfolded: the same translations.
                    for (i, t) in pages.iter().enumerate() {
                        let now = f.e.u.translate(&f.e.m, va(UVA + i as u64 * KB4));
                        assert_eq!(
                            now.map(|t| (t.pa, t.attrs)),
                            t.map(|t| (t.pa, t.attrs)),
                            "failure {n}"
                        );
                    }
                }
                assert!(f.child(UVA).iter().all(|&d| d == 0), "failure {n}");
                f.teardown();
            }
            Ok(_) => {
                assert!(calls > 0);
                f.teardown();
                return n - 1;
            }
        }
    }
    unreachable!()
}

#[test]
fn the_child_table_fails_cleanly_at_every_allocation() {
    let whole = (UVA, UVA + MB2);
    assert_eq!(
        every_failure_point(whole, |_| {}),
        3,
        "three tables below the root"
    );
    let cut = (UVA + 3 * KB4, UVA + 3 * KB64 + 5 * KB4);
    assert_eq!(every_failure_point(cut, |_| {}), 3);
    // The child has the tables above the level-3 one already.
    let above = |f: &mut Fork| {
        f.c.set_ptes(&mut f.e.m, va(UVA + MB2), page(RAM, true, true, true), 1, false)
            .unwrap();
    };
    assert_eq!(every_failure_point(whole, above), 1);
}

/// One 64 KiB block of a random parent: nothing, a folded block (write permission, dirty, AF
/// and a hardware update of one entry), or single pages (present, write permission, dirty
/// and AF per page, as masks).
#[derive(Clone, Debug)]
enum Block {
    Hole,
    Folded {
        writable: bool,
        dirty: bool,
        young: bool,
        hw: Option<(u64, bool)>,
    },
    Pages {
        present: u16,
        writable: u16,
        dirty: u16,
        young: u16,
    },
}

fn block() -> impl Strategy<Value = Block> {
    prop_oneof![
        Just(Block::Hole),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of((0u64..16, any::<bool>()))
        )
            .prop_map(|(writable, dirty, young, hw)| Block::Folded {
                writable,
                dirty,
                young,
                hw
            }),
        (any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>()).prop_map(
            |(present, writable, dirty, young)| Block::Pages {
                present,
                writable,
                dirty,
                young
            }
        ),
    ]
}

fn build(f: &mut Fork, blocks: &[Block]) {
    let (m, u) = (&mut f.e.m, &mut f.e.u);
    for (b, blk) in blocks.iter().enumerate() {
        let (at, pa) = (UVA + b as u64 * KB64, RAM + b as u64 * KB64);
        match *blk {
            Block::Hole => {}
            Block::Folded {
                writable,
                dirty,
                young,
                hw,
            } => {
                u.set_ptes(m, va(at), page(pa, writable, dirty, young), 16, true)
                    .unwrap();
                if let Some((k, write)) = hw {
                    m.hw_update(u.pa(), va(at + k * KB4), write).unwrap();
                }
            }
            Block::Pages {
                present,
                writable,
                dirty,
                young,
            } => {
                for k in (0..16).filter(|k| present & (1 << k) != 0) {
                    let bit = |mask: u16| mask & (1 << k) != 0;
                    let d = page(pa + k * KB4, bit(writable), bit(dirty), bit(young));
                    u.set_ptes(m, va(at + k * KB4), d, 1, false).unwrap();
                }
            }
        }
    }
    f.check();
    f.e.u.reset_stats();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_tables_share_what_the_single_range_operations_give(
        blocks in prop::collection::vec(block(), 32),
        first in 0u64..512,
        len in 1u64..=512,
        tlbi_range in any::<bool>(),
        child_contpte in any::<bool>(),
    ) {
        let range = (UVA + first * KB4, UVA + (first + len).min(512) * KB4);
        let mut a = Fork::new(tlbi_range, child_contpte);
        let mut b = Fork::new(tlbi_range, child_contpte);
        build(&mut a, &blocks);
        build(&mut b, &blocks);
        // Folded blocks the range cuts.
        let cut = [range.0, range.1 - KB4]
            .iter()
            .map(|&at| at & !(KB64 - 1))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|&blk| {
                (blk < range.0 || blk + KB64 > range.1) && a.raw(blk).contiguous()
            })
            .count() as u64;
        let writable = writable_pages(&a, range);
        let n = a.copy(range, true, |_| Ok(CopyPte::Share)).unwrap();
        b.reference(range, true);
        assert_same(&a, &b, "random");
        let s = *a.e.u.stats();
        prop_assert_eq!(n, writable);
        prop_assert_eq!(s.unfolds, cut);
        prop_assert_eq!(s.tlbi_batches, cut + u64::from(writable > 0));
        prop_assert_eq!(a.c.stats().tlbi_batches, 0);
        prop_assert_eq!(a.c.stats().cont_blocks_mapped, b.c.stats().cont_blocks_mapped);
        a.teardown();
        b.teardown();
    }
}
