//! Unit tests of the region tree.

use super::*;
use crate::{Prot, VirtAddr, KERNEL_BASE, PAGE_SIZE, USER_END};
use alloc::vec;
use alloc::vec::Vec;

const P: u64 = PAGE_SIZE;
type T = VmaTree<ObjectId>;

fn va(x: u64) -> VirtAddr {
    VirtAddr::new(x)
}
fn anon() -> VmaKind {
    VmaKind::AnonPrivate
}
fn shared(obj: u64, offset: u64) -> VmaKind {
    VmaKind::Shared {
        obj: ObjectId(obj),
        offset,
    }
}
fn file_private(obj: u64, offset: u64) -> VmaKind {
    VmaKind::FilePrivate {
        obj: ObjectId(obj),
        offset,
    }
}
fn fixed(t: &mut T, at: u64, pages: u64, prot: VmProt, kind: VmaKind) -> Vec<Vma> {
    t.mmap(Placement::Fixed(va(at)), pages * P, prot, kind, MapAlign::Page)
        .unwrap()
        .replaced
}
/// `(start, end, prot, offset)` of every region.
fn layout(t: &T) -> Vec<(u64, u64, VmProt, Option<u64>)> {
    t.iter()
        .map(|v| (v.start.as_u64(), v.end.as_u64(), v.prot, v.kind.offset()))
        .collect()
}
fn snapshot(t: &T) -> (Vec<Vma>, u64) {
    (t.iter().cloned().collect(), t.mapped_bytes())
}
fn small(max: usize) -> T {
    T::with_config(VmaConfig {
        max_mappings: max,
        ..VmaConfig::default()
    })
}
const B: u64 = 0x100_0000; // a base address for fixed mappings

#[test]
fn any_is_top_down_first_fit_and_merges() {
    let mut t = T::new();
    let a = t
        .mmap(Placement::Any, 3 * P, VmProt::RW, anon(), MapAlign::Page)
        .unwrap();
    assert_eq!(a.addr, va(USER_END - 3 * P));
    assert!(a.replaced.is_empty());
    let b = t
        .mmap(Placement::Any, 2 * P, VmProt::RW, anon(), MapAlign::Page)
        .unwrap();
    assert_eq!(b.addr, va(USER_END - 5 * P));
    // Same permissions and kind: one region.
    assert_eq!(layout(&t), vec![(USER_END - 5 * P, USER_END, VmProt::RW, None)]);
    // 64 KiB alignment: highest aligned fit below, separate region (different flags).
    let c = t
        .mmap(Placement::Any, 16 * P, VmProt::RW, anon(), MapAlign::Size64K)
        .unwrap();
    assert_eq!(c.addr, va((USER_END - 5 * P - 16 * P) & !(LARGE_FOLIO_SIZE - 1)));
    assert_eq!(t.len(), 2);
    assert_eq!(t.find(c.addr).unwrap().flags, VmaFlags::LARGE_FOLIOS);
    let d = t
        .mmap(Placement::Any, P, VmProt::READ, anon(), MapAlign::Size2M)
        .unwrap();
    assert_eq!(d.addr, va(USER_END - (2 << 20)));
    t.check().unwrap();
}

#[test]
fn any_bottom_up_and_window() {
    let mut t = T::with_config(VmaConfig {
        search_low: va(B),
        search_high: va(B + 64 * P),
        direction: SearchDirection::BottomUp,
        max_mappings: MAX_MAPPINGS,
    });
    let map = |t: &mut T, pages, align| {
        t.mmap(Placement::Any, pages * P, VmProt::READ, anon(), align)
            .map(|m| m.addr.as_u64())
    };
    assert_eq!(map(&mut t, 2, MapAlign::Page), Ok(B));
    assert_eq!(map(&mut t, 1, MapAlign::Size64K), Ok(B + LARGE_FOLIO_SIZE));
    assert_eq!(map(&mut t, 3, MapAlign::Page), Ok(B + 2 * P));
    // A gap of 11 pages before the 64K region, 47 after it.
    assert_eq!(map(&mut t, 47, MapAlign::Page), Ok(B + 17 * P));
    assert_eq!(map(&mut t, 12, MapAlign::Page), Err(VmaError::NoSpace));
    assert_eq!(map(&mut t, 11, MapAlign::Page), Ok(B + 5 * P));
    assert_eq!(map(&mut t, 1, MapAlign::Page), Err(VmaError::NoSpace));
    assert_eq!(t.mapped_bytes(), 64 * P);
    // Fixed and hinted mappings may lie outside the window.
    fixed(&mut t, B + 100 * P, 1, VmProt::READ, anon());
    t.check().unwrap();
}

#[test]
fn hint_is_rounded_used_or_ignored() {
    let mut t = T::new();
    let m = |t: &mut T, h: u64, align| {
        t.mmap(Placement::Hint(va(h)), 2 * P, VmProt::RW, anon(), align)
            .unwrap()
            .addr
            .as_u64()
    };
    assert_eq!(m(&mut t, B, MapAlign::Page), B);
    // Occupied: falls back to the search (top-down).
    assert_eq!(m(&mut t, B + P, MapAlign::Page), USER_END - 2 * P);
    // Unaligned hint: rounded up to the alignment.
    assert_eq!(m(&mut t, B + 0x20_0001, MapAlign::Size64K), B + 0x21_0000);
    // Reserved low range, kernel address, wrapping: ignored.
    assert_eq!(m(&mut t, 0, MapAlign::Page), USER_END - 4 * P);
    assert_eq!(m(&mut t, KERNEL_BASE, MapAlign::Page), USER_END - 6 * P);
    assert_eq!(m(&mut t, u64::MAX, MapAlign::Page), USER_END - 8 * P);
    assert_eq!(m(&mut t, USER_END - P, MapAlign::Page), USER_END - 10 * P);
    t.check().unwrap();
}

#[test]
fn fixed_replaces_and_returns_the_pieces() {
    let mut t = T::new();
    fixed(&mut t, B, 4, VmProt::RW, shared(7, 0x10_0000));
    fixed(&mut t, B + 6 * P, 4, VmProt::READ, anon());
    // [B+2P, B+8P) covers the tail of the first, a hole, the head of the second.
    let replaced = fixed(&mut t, B + 2 * P, 6, VmProt::RX, anon());
    assert_eq!(
        replaced,
        vec![
            Vma {
                start: va(B + 2 * P),
                end: va(B + 4 * P),
                prot: VmProt::RW,
                kind: shared(7, 0x10_0000 + 2 * P),
                flags: VmaFlags::NONE,
            },
            Vma {
                start: va(B + 6 * P),
                end: va(B + 8 * P),
                prot: VmProt::READ,
                kind: anon(),
                flags: VmaFlags::NONE,
            },
        ]
    );
    assert_eq!(
        layout(&t),
        vec![
            (B, B + 2 * P, VmProt::RW, Some(0x10_0000)),
            (B + 2 * P, B + 8 * P, VmProt::RX, None),
            (B + 8 * P, B + 10 * P, VmProt::READ, None),
        ]
    );
    // Fixed over the whole of it with the neighbours' attributes merges everything.
    let replaced = fixed(&mut t, B + 2 * P, 6, VmProt::READ, anon());
    assert_eq!(replaced.len(), 1);
    assert_eq!(
        layout(&t),
        vec![
            (B, B + 2 * P, VmProt::RW, Some(0x10_0000)),
            (B + 2 * P, B + 10 * P, VmProt::READ, None),
        ]
    );
    t.check().unwrap();
}

#[test]
fn fixed_noreplace() {
    let mut t = T::new();
    fixed(&mut t, B, 2, VmProt::RW, anon());
    let before = snapshot(&t);
    let r = t.mmap(
        Placement::FixedNoReplace(va(B + P)),
        2 * P,
        VmProt::RW,
        anon(),
        MapAlign::Page,
    );
    assert_eq!(r, Err(VmaError::Exists));
    assert_eq!(snapshot(&t), before);
    let r = t
        .mmap(
            Placement::FixedNoReplace(va(B + 2 * P)),
            2 * P,
            VmProt::RW,
            anon(),
            MapAlign::Page,
        )
        .unwrap();
    assert!(r.replaced.is_empty());
    assert_eq!(layout(&t), vec![(B, B + 4 * P, VmProt::RW, None)]);
}

#[test]
fn argument_errors_change_nothing() {
    use VmaError::*;
    let mut t = T::new();
    fixed(&mut t, B, 4, VmProt::RW, anon());
    let before = snapshot(&t);
    let mm = |t: &mut T, place, len, kind, align| t.mmap(place, len, VmProt::RW, kind, align).map(|_| ());
    let f = |a| Placement::Fixed(va(a));
    let cases: Vec<(Result<(), VmaError>, VmaError)> = vec![
        (mm(&mut t, f(B + 1), P, anon(), MapAlign::Page), Unaligned),
        (mm(&mut t, f(B), P + 1, anon(), MapAlign::Page), Unaligned),
        (mm(&mut t, Placement::Any, 3, anon(), MapAlign::Page), Unaligned),
        (mm(&mut t, f(B), 0, anon(), MapAlign::Page), ZeroLength),
        (mm(&mut t, Placement::Any, 0, anon(), MapAlign::Page), ZeroLength),
        (mm(&mut t, f(USER_END), P, anon(), MapAlign::Page), NotUser),
        (mm(&mut t, f(KERNEL_BASE), P, anon(), MapAlign::Page), NotUser),
        (mm(&mut t, f(!(P - 1)), P, anon(), MapAlign::Page), NotUser),
        (
            mm(&mut t, f(USER_END - P), 2 * P, anon(), MapAlign::Page),
            Overflow,
        ),
        (mm(&mut t, f(B), !(P - 1), anon(), MapAlign::Page), Overflow),
        (mm(&mut t, f(0), P, anon(), MapAlign::Page), Reserved),
        (
            mm(&mut t, f(MMAP_MIN_ADDR - P), 2 * P, anon(), MapAlign::Page),
            Reserved,
        ),
        (
            mm(&mut t, f(B + P), P, anon(), MapAlign::Size64K),
            FixedMisaligned,
        ),
        (
            mm(&mut t, f(B + LARGE_FOLIO_SIZE), P, anon(), MapAlign::Size2M),
            FixedMisaligned,
        ),
        (mm(&mut t, f(B), P, shared(1, 5), MapAlign::Page), BadOffset),
        (
            mm(&mut t, f(B), 2 * P, shared(1, !(P - 1)), MapAlign::Page),
            BadOffset,
        ),
        (
            mm(&mut t, Placement::Any, P, shared(1, 1), MapAlign::Page),
            BadOffset,
        ),
        (
            mm(&mut t, Placement::Any, USER_END, anon(), MapAlign::Page),
            NoSpace,
        ),
        (t.munmap(va(B + 1), P).map(|_| ()), Unaligned),
        (t.munmap(va(B), 0).map(|_| ()), ZeroLength),
        (t.munmap(va(KERNEL_BASE), P).map(|_| ()), NotUser),
        (t.munmap(va(B), !(P - 1)).map(|_| ()), Overflow),
        (t.munmap(va(USER_END - P), 2 * P).map(|_| ()), Overflow),
        (t.mprotect(va(B), P + 1, VmProt::READ).map(|_| ()), Unaligned),
        (t.mprotect(va(B), 0, VmProt::READ).map(|_| ()), ZeroLength),
        (t.mprotect(va(B), 5 * P, VmProt::READ).map(|_| ()), NotMapped),
        (t.mprotect(va(B - P), 2 * P, VmProt::READ).map(|_| ()), NotMapped),
        (t.mprotect(va(0), P, VmProt::READ).map(|_| ()), NotMapped),
        (t.mprotect(va(USER_END), P, VmProt::READ).map(|_| ()), NotUser),
        (t.madvise_dontneed(va(B), 5 * P).map(|_| ()), NotMapped),
        (t.madvise_dontneed(va(B + 3), P).map(|_| ()), Unaligned),
        (t.madvise_dontneed(va(B), 0).map(|_| ()), ZeroLength),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, Err(want), "case {i}");
    }
    assert_eq!(snapshot(&t), before);
    // munmap of the reserved low range: nothing there, a no-op.
    assert_eq!(t.munmap(va(0), MMAP_MIN_ADDR), Ok(vec![]));
    assert_eq!(snapshot(&t), before);
}

#[test]
fn plans_change_nothing_until_applied() {
    let mut t = T::new();
    fixed(&mut t, B, 4, VmProt::RW, anon());
    let before = snapshot(&t);
    // Every error of the one-step calls comes from the plan, the region limit's too.
    let mut one = small(1);
    fixed(&mut one, B, 4, VmProt::RW, anon());
    let split = one.plan_munmap(va(B + P), P).map(|_| ());
    assert_eq!(split, Err(VmaError::TooManyMappings));
    // Plans: what they will change, nothing changed yet.
    let p = t.plan_munmap(va(B + P), P).unwrap();
    assert_eq!(p.pages(), Some((va(B + P), va(B + 2 * P))));
    assert_eq!(p.output().len(), 1);
    assert_eq!(t.plan_munmap(va(B + 8 * P), P).unwrap().pages(), None, "a hole");
    let same = t.plan_mprotect(va(B), P, VmProt::RW).unwrap();
    assert_eq!(same.pages(), None, "same permissions");
    let m = t
        .plan_mmap(Placement::Any, P, VmProt::READ, &anon(), MapAlign::Page)
        .unwrap();
    assert_eq!(m.pages(), None, "replaces nothing");
    let m = t
        .plan_mmap(
            Placement::Fixed(va(B + 3 * P)),
            2 * P,
            VmProt::READ,
            &anon(),
            MapAlign::Page,
        )
        .unwrap();
    assert_eq!(m.pages(), Some((va(B + 3 * P), va(B + 5 * P))));
    let d = t.plan_madvise_dontneed(va(B), 4 * P).unwrap();
    assert_eq!(d.pages(), Some((va(B), va(B + 4 * P))));
    assert_eq!(snapshot(&t), before);
    // Applied: the same as the one-step call.
    assert_eq!(t.apply(same), vec![]);
    let mut u = t.clone();
    assert_eq!(t.apply(p), u.munmap(va(B + P), P).unwrap());
    assert_eq!(snapshot(&t), snapshot(&u));
}

#[test]
#[should_panic(expected = "plan applied to a changed tree")]
fn a_plan_applies_only_to_the_tree_it_was_made_from() {
    let mut t = T::new();
    fixed(&mut t, B, 4, VmProt::RW, anon());
    let p = t.plan_munmap(va(B), P).unwrap();
    t.munmap(va(B + 2 * P), P).unwrap();
    t.apply(p);
}

#[test]
fn munmap_splits_over_holes() {
    let mut t = T::new();
    fixed(&mut t, B, 8, VmProt::RW, shared(3, 0));
    fixed(&mut t, B + 10 * P, 4, VmProt::READ, anon());
    // Middle of the first: split in two, offsets kept.
    let removed = t.munmap(va(B + 2 * P), 2 * P).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].kind, shared(3, 2 * P));
    assert_eq!(
        layout(&t),
        vec![
            (B, B + 2 * P, VmProt::RW, Some(0)),
            (B + 4 * P, B + 8 * P, VmProt::RW, Some(4 * P)),
            (B + 10 * P, B + 14 * P, VmProt::READ, None),
        ]
    );
    // Across a hole: the tail of one, the head of the next.
    let removed = t.munmap(va(B + 6 * P), 6 * P).unwrap();
    let r: Vec<_> = removed
        .iter()
        .map(|v| (v.start.as_u64(), v.end.as_u64(), v.kind.offset()))
        .collect();
    assert_eq!(
        r,
        vec![
            (B + 6 * P, B + 8 * P, Some(6 * P)),
            (B + 10 * P, B + 12 * P, None)
        ]
    );
    // Nothing mapped: empty result, nothing changes.
    let before = snapshot(&t);
    assert_eq!(t.munmap(va(B + 20 * P), 100 * P), Ok(vec![]));
    assert_eq!(snapshot(&t), before);
    // Everything.
    let removed = t.munmap(va(MMAP_MIN_ADDR), USER_END - MMAP_MIN_ADDR).unwrap();
    assert_eq!(removed.len(), 3);
    assert!(t.is_empty());
    assert_eq!(t.mapped_bytes(), 0);
}

#[test]
fn mprotect_splits_and_merges_back() {
    let mut t = T::new();
    fixed(&mut t, B, 8, VmProt::RW, shared(1, 0));
    let ch = t.mprotect(va(B + 2 * P), 3 * P, VmProt::READ).unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].old, VmProt::RW);
    assert_eq!(ch[0].piece.prot, VmProt::READ);
    assert_eq!(ch[0].piece.kind, shared(1, 2 * P));
    assert_eq!(
        layout(&t),
        vec![
            (B, B + 2 * P, VmProt::RW, Some(0)),
            (B + 2 * P, B + 5 * P, VmProt::READ, Some(2 * P)),
            (B + 5 * P, B + 8 * P, VmProt::RW, Some(5 * P)),
        ]
    );
    // Over the whole range: only the read-only piece changes, and all merges back.
    let ch = t.mprotect(va(B), 8 * P, VmProt::RW).unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(
        (ch[0].piece.start, ch[0].piece.end),
        (va(B + 2 * P), va(B + 5 * P))
    );
    assert_eq!(layout(&t), vec![(B, B + 8 * P, VmProt::RW, Some(0))]);
    // No-op: nothing returned.
    assert_eq!(t.mprotect(va(B + P), P, VmProt::RW), Ok(vec![]));
    // Merges with a compatible neighbour region too.
    fixed(&mut t, B + 8 * P, 2, VmProt::READ, shared(1, 8 * P));
    assert_eq!(t.len(), 2);
    t.mprotect(va(B + 8 * P), 2 * P, VmProt::RW).unwrap();
    assert_eq!(layout(&t), vec![(B, B + 10 * P, VmProt::RW, Some(0))]);
    t.check().unwrap();
}

#[test]
fn mprotect_over_several_regions_and_holes() {
    let mut t = T::new();
    fixed(&mut t, B, 2, VmProt::RW, anon());
    fixed(&mut t, B + 2 * P, 2, VmProt::RW, shared(1, 0));
    fixed(&mut t, B + 5 * P, 2, VmProt::RW, anon());
    let before = snapshot(&t);
    assert_eq!(t.mprotect(va(B), 7 * P, VmProt::READ), Err(VmaError::NotMapped));
    assert_eq!(snapshot(&t), before);
    let ch = t.mprotect(va(B + P), 3 * P, VmProt::NONE).unwrap();
    assert_eq!(ch.len(), 2);
    assert_eq!(
        layout(&t),
        vec![
            (B, B + P, VmProt::RW, None),
            (B + P, B + 2 * P, VmProt::NONE, None),
            (B + 2 * P, B + 4 * P, VmProt::NONE, Some(0)),
            (B + 5 * P, B + 7 * P, VmProt::RW, None),
        ]
    );
}

#[test]
fn madvise_returns_pieces_and_changes_nothing() {
    let mut t = T::new();
    fixed(&mut t, B, 4, VmProt::RW, anon());
    fixed(&mut t, B + 4 * P, 4, VmProt::READ, shared(2, 0));
    let before = snapshot(&t);
    let pieces = t.madvise_dontneed(va(B + 3 * P), 2 * P).unwrap();
    assert_eq!(pieces.len(), 2);
    assert_eq!(pieces[0].fork_policy(), ForkPolicy::CopyOnWrite);
    assert_eq!(pieces[1].kind, shared(2, 0));
    assert_eq!(pieces[1].end, va(B + 5 * P));
    assert_eq!(snapshot(&t), before);
    assert_eq!(t.madvise_dontneed(va(B + 7 * P), 2 * P), Err(VmaError::NotMapped));
}

#[test]
fn merge_rule() {
    let mut t = T::new();
    // Same object, contiguous offsets: merged. Discontiguous / other object: not.
    fixed(&mut t, B, 2, VmProt::RW, shared(1, 4 * P));
    fixed(&mut t, B + 2 * P, 2, VmProt::RW, shared(1, 6 * P));
    assert_eq!(t.len(), 1);
    fixed(&mut t, B + 4 * P, 2, VmProt::RW, shared(1, 9 * P));
    fixed(&mut t, B + 6 * P, 2, VmProt::RW, shared(2, 11 * P));
    fixed(&mut t, B + 8 * P, 2, VmProt::RW, anon());
    fixed(&mut t, B + 10 * P, 2, VmProt::READ, anon());
    t.mmap(
        Placement::Fixed(va(B + 16 * P)),
        2 * P,
        VmProt::READ,
        anon(),
        MapAlign::Size64K,
    )
    .unwrap();
    fixed(&mut t, B + 18 * P, 2, VmProt::READ, anon());
    assert_eq!(t.len(), 7);
    t.check().unwrap();
    // Filling the hole merges the anonymous read-only regions on both sides, except the
    // one with other flags.
    fixed(&mut t, B + 12 * P, 4, VmProt::READ, anon());
    assert_eq!(t.len(), 7);
    assert_eq!(t.find(va(B + 15 * P)).unwrap().start, va(B + 10 * P));
    t.check().unwrap();
}

#[test]
fn mapping_limit() {
    let mut t = small(3);
    fixed(&mut t, B, 8, VmProt::RW, anon());
    fixed(&mut t, B + 10 * P, 2, VmProt::RW, anon());
    fixed(&mut t, B + 20 * P, 2, VmProt::RW, anon());
    let before = snapshot(&t);
    let e = Err(VmaError::TooManyMappings);
    assert_eq!(
        t.mmap(Placement::Any, P, VmProt::RW, anon(), MapAlign::Page)
            .map(|_| ()),
        e
    );
    assert_eq!(t.munmap(va(B + 2 * P), P).map(|_| ()), e);
    assert_eq!(
        t.mprotect(va(B + 2 * P), P, VmProt::READ).map(|_| ()),
        Err(VmaError::TooManyMappings)
    );
    // Even a change that splits once and then merges is judged on the final count: the
    // end of the first region cannot become read-only (4 regions) ...
    assert_eq!(
        t.mprotect(va(B + 6 * P), 2 * P, VmProt::READ).map(|_| ()),
        Err(VmaError::TooManyMappings)
    );
    assert_eq!(snapshot(&t), before);
    // ... but trimming does not add a region, merging removes one, and so on.
    t.munmap(va(B), P).unwrap();
    fixed(&mut t, B + 8 * P, 2, VmProt::RW, anon());
    assert_eq!(t.len(), 2);
    t.mprotect(va(B + P), P, VmProt::READ).unwrap();
    assert_eq!(t.len(), 3);
    t.check().unwrap();
}

#[test]
fn default_limit_is_65536() {
    let mut t = T::new();
    // Alternate permissions so that nothing merges: 65536 one-page regions.
    for i in 0..MAX_MAPPINGS as u64 {
        let prot = if i % 2 == 0 { VmProt::RW } else { VmProt::READ };
        fixed(&mut t, B + i * P, 1, prot, anon());
    }
    assert_eq!(t.len(), MAX_MAPPINGS);
    let end = B + MAX_MAPPINGS as u64 * P;
    let r = t.mmap(
        Placement::Fixed(va(end + P)),
        P,
        VmProt::RW,
        anon(),
        MapAlign::Page,
    );
    assert_eq!(r, Err(VmaError::TooManyMappings));
    // Adjacent and compatible with the last region (READ): merges, allowed.
    fixed(&mut t, end, 2, VmProt::READ, anon());
    assert_eq!(t.len(), MAX_MAPPINGS);
    // Splitting its middle would add two.
    assert_eq!(t.mprotect(va(end), P, VmProt::RW), Err(VmaError::TooManyMappings));
    // Making page 1 RW merges pages 0..=2: two fewer.
    t.mprotect(va(B + P), P, VmProt::RW).unwrap();
    assert_eq!(t.len(), MAX_MAPPINGS - 2);
    t.check().unwrap();
}

#[test]
fn fork_copies_and_is_independent() {
    let mut t = T::new();
    fixed(&mut t, B, 4, VmProt::RW, anon());
    fixed(&mut t, B + 4 * P, 4, VmProt::RW, shared(9, 0));
    let mut child = t.fork();
    assert_eq!(snapshot(&child), snapshot(&t));
    assert_eq!(child.config(), t.config());
    let policies: Vec<_> = child.iter().map(|v| v.fork_policy()).collect();
    assert_eq!(policies, vec![ForkPolicy::CopyOnWrite, ForkPolicy::Share]);
    assert_eq!(
        child.find(va(B + 5 * P)).unwrap().kind.object(),
        Some(&ObjectId(9))
    );
    let before = snapshot(&t);
    child.munmap(va(B), 6 * P).unwrap();
    child.mprotect(va(B + 6 * P), P, VmProt::READ).unwrap();
    assert_eq!(snapshot(&t), before);
    assert_eq!(child.find(va(B + 7 * P)).unwrap().kind, shared(9, 3 * P));
}

#[test]
fn private_object_mappings() {
    let mut t = T::new();
    let k = file_private(5, 3 * P);
    assert!(!k.is_shared());
    assert_eq!(k.object(), Some(&ObjectId(5)));
    assert_eq!(k.offset(), Some(3 * P));
    assert_eq!(k.fork_policy(), ForkPolicy::CopyOnWrite);
    // Continuing offsets of the same object merge; a shared mapping of the same object
    // at the continuing offset does not, nor does another object.
    fixed(&mut t, B, 2, VmProt::RW, file_private(5, 0));
    fixed(&mut t, B + 2 * P, 2, VmProt::RW, file_private(5, 2 * P));
    assert_eq!(t.len(), 1);
    fixed(&mut t, B + 4 * P, 2, VmProt::RW, shared(5, 4 * P));
    fixed(&mut t, B + 6 * P, 2, VmProt::RW, file_private(6, 6 * P));
    fixed(&mut t, B + 8 * P, 2, VmProt::RW, anon());
    assert_eq!(t.len(), 4);
    // Splitting adjusts the offsets; the pieces keep the kind.
    let ch = t.mprotect(va(B + P), 2 * P, VmProt::READ).unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].piece.kind, file_private(5, P));
    assert_eq!(
        layout(&t)[..3],
        [
            (B, B + P, VmProt::RW, Some(0)),
            (B + P, B + 3 * P, VmProt::READ, Some(P)),
            (B + 3 * P, B + 4 * P, VmProt::RW, Some(3 * P)),
        ]
    );
    let v = t.find(va(B + 3 * P)).unwrap();
    assert_eq!(v.object_offset(va(B + 3 * P + 5)), Some(3 * P));
    assert_eq!(v.fork_policy(), ForkPolicy::CopyOnWrite);
    // Fork keeps the kind.
    let child = t.fork();
    assert_eq!(child.find(va(B)).unwrap().kind, file_private(5, 0));
    // Bad offsets are refused as for shared mappings.
    assert_eq!(
        t.mmap(
            Placement::Fixed(va(B + 16 * P)),
            P,
            VmProt::READ,
            file_private(5, 1),
            MapAlign::Page
        )
        .unwrap_err(),
        VmaError::BadOffset
    );
    t.check().unwrap();
}

#[test]
fn queries() {
    let mut t = T::new();
    assert!(t.find(va(B)).is_none());
    fixed(&mut t, B, 2, VmProt::RW, anon());
    fixed(&mut t, B + 4 * P, 2, VmProt::READ, shared(1, 0x8000));
    assert_eq!(t.find(va(B + 2 * P - 1)).unwrap().start, va(B));
    assert!(t.find(va(B + 2 * P)).is_none());
    assert!(t.find(va(B - 1)).is_none());
    let v = t.find(va(B + 5 * P + 12)).unwrap();
    assert_eq!(v.object_offset(va(B + 5 * P + 12)), Some(0x8000 + P));
    assert_eq!(v.object_offset(va(B)), None);
    assert_eq!(t.overlapping(va(B + P), va(B + 5 * P)).count(), 2);
    assert_eq!(t.overlapping(va(B + 2 * P), va(B + 4 * P)).count(), 0);
    assert_eq!(t.overlapping(va(B + 5 * P), va(B + P)).count(), 0);
    assert_eq!(t.overlapping(va(0), va(u64::MAX)).count(), 2);
    assert_eq!(t.mapped_bytes(), 4 * P);
    assert_eq!(t.len(), 2);
    let all = t.unmap_all();
    assert_eq!(all.len(), 2);
    assert!(t.is_empty());
    t.check().unwrap();
}

#[test]
fn large_folio_blocks() {
    let mut t = T::new();
    let k = LARGE_FOLIO_SIZE;
    let a = t
        .mmap(Placement::Any, 3 * k, VmProt::RW, anon(), MapAlign::Size64K)
        .unwrap()
        .addr;
    // Trim a page off both ends: only the middle block stays whole.
    t.munmap(a, P).unwrap();
    t.munmap(va(a.as_u64() + 3 * k - P), P).unwrap();
    let v = t.find(va(a.as_u64() + k)).unwrap();
    assert_eq!(v.large_folio_block(va(a.as_u64() + P)), None);
    assert_eq!(
        v.large_folio_block(va(a.as_u64() + k + 5 * P)),
        Some(va(a.as_u64() + k))
    );
    assert_eq!(v.large_folio_block(va(a.as_u64() + 2 * k + P)), None);
    // Shared: the object offset must be aligned too.
    fixed(&mut t, B, 16, VmProt::RW, anon());
    assert_eq!(t.find(va(B)).unwrap().large_folio_block(va(B)), None);
    for (off, want) in [(0, Some(va(0x200_0000))), (P, None)] {
        t.mmap(
            Placement::Fixed(va(0x200_0000)),
            k,
            VmProt::RW,
            shared(1, off),
            MapAlign::Size64K,
        )
        .unwrap();
        let v = t.find(va(0x200_0000)).unwrap();
        assert_eq!(v.large_folio_block(va(0x200_0000 + P)), want);
    }
}

#[test]
fn reference_counted_handles() {
    use std::sync::Arc;
    #[derive(Clone, Debug)]
    struct Obj(Arc<u32>);
    impl PartialEq for Obj {
        fn eq(&self, other: &Obj) -> bool {
            Arc::ptr_eq(&self.0, &other.0)
        }
    }
    impl Eq for Obj {}

    let obj = Obj(Arc::new(0));
    let count = |o: &Obj| Arc::strong_count(&o.0) - 1; // minus our own
    let mut t: VmaTree<Obj> = VmaTree::new();
    let kind = VmaKind::Shared {
        obj: obj.clone(),
        offset: 0,
    };
    t.mmap(Placement::Fixed(va(B)), 8 * P, VmProt::RW, kind, MapAlign::Page)
        .unwrap();
    assert_eq!(count(&obj), 1);
    t.mprotect(va(B + 2 * P), P, VmProt::READ).unwrap();
    assert_eq!(count(&obj), 3);
    let child = t.fork();
    assert_eq!(count(&obj), 6);
    drop(child);
    // A different object with equal contents does not merge.
    let other = Obj(Arc::new(0));
    t.mmap(
        Placement::Fixed(va(B + 8 * P)),
        P,
        VmProt::RW,
        VmaKind::Shared {
            obj: other.clone(),
            offset: 8 * P,
        },
        MapAlign::Page,
    )
    .unwrap();
    assert_eq!(t.len(), 4);
    t.mprotect(va(B + 2 * P), P, VmProt::RW).unwrap();
    assert_eq!(count(&obj), 1);
    let removed = t.munmap(va(B), 9 * P).unwrap();
    assert_eq!(count(&obj), 1); // held by the returned piece
    drop(removed);
    assert_eq!(count(&obj), 0);
    assert_eq!(count(&other), 0);
}

#[test]
fn errno_and_pte_prot() {
    assert_eq!(VmaError::Exists.errno(), 17);
    assert_eq!(VmaError::NotMapped.errno(), 12);
    assert_eq!(VmaError::Unaligned.errno(), 22);
    assert_eq!(VmaError::Reserved.errno(), 1);
    assert_eq!(VmProt::NONE.pte_prot(), None);
    assert_eq!(VmProt::READ.pte_prot(), Some(Prot::READ | Prot::USER));
    assert_eq!(
        VmProt::WRITE.pte_prot(),
        Some(Prot::READ | Prot::USER | Prot::WRITE)
    );
    assert_eq!(
        VmProt::RX.pte_prot(),
        Some(Prot::READ | Prot::USER | Prot::EXEC_USER)
    );
    assert_eq!(alloc::format!("{:?}", VmProt::RX), "r-x");
}
