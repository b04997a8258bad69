//! Property tests: random call sequences against a per-page reference model.

use super::*;
use crate::{VirtAddr, KERNEL_BASE, PAGE_SIZE, USER_END};
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;
use std::collections::BTreeMap as Map;

const P: u64 = PAGE_SIZE;
/// The search window: 128 pages (eight 64 KiB blocks) just above the reserved range.
const LOW: u64 = MMAP_MIN_ADDR;
const HIGH: u64 = MMAP_MIN_ADDR + 128 * P;
/// Generated addresses mostly lie in the first `SPAN` pages: the reserved range, the
/// window, and some room above it.
const SPAN: u64 = 176;
const TOP_PAGE: u64 = !(P - 1);

/// The state of one mapped page: permissions, `(object, offset of this page, shared)`,
/// flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    prot: VmProt,
    obj: Option<(u64, u64, bool)>,
    flags: VmaFlags,
}
/// Page number → state.
type Model = Map<u64, Page>;

/// The merge rule, restated on pages: `b` (the next page) continues `a`.
fn continues(a: &Page, b: &Page) -> bool {
    a.prot == b.prot
        && a.flags == b.flags
        && match (a.obj, b.obj) {
            (None, None) => true,
            (Some((o1, f1, s1)), Some((o2, f2, s2))) => o1 == o2 && s1 == s2 && f1.checked_add(P) == Some(f2),
            _ => false,
        }
}

/// Number of regions of a maximally merged tree with this per-page state.
fn runs(m: &Model) -> usize {
    let mut n = 0;
    let mut prev: Option<(u64, &Page)> = None;
    for (&p, s) in m {
        match prev {
            Some((q, t)) if q + 1 == p && continues(t, s) => {}
            _ => n += 1,
        }
        prev = Some((p, s));
    }
    n
}

/// Per-page view of address-ordered regions (or pieces); checks they are well formed.
fn pages_of(vmas: &[&Vma]) -> Model {
    let mut m = Model::new();
    let mut last_end = 0;
    for v in vmas {
        let (s, e) = (v.start.as_u64(), v.end.as_u64());
        assert!(
            s.is_multiple_of(P) && e.is_multiple_of(P) && s < e,
            "bad piece {v:?}"
        );
        assert!(s >= last_end, "pieces unsorted or overlapping");
        last_end = e;
        for (i, pg) in (s / P..e / P).enumerate() {
            let obj = match &v.kind {
                VmaKind::AnonPrivate => None,
                VmaKind::Shared { obj, offset } => Some((obj.0, offset + i as u64 * P, true)),
                VmaKind::FilePrivate { obj, offset } => Some((obj.0, offset + i as u64 * P, false)),
            };
            m.insert(
                pg,
                Page {
                    prot: v.prot,
                    obj,
                    flags: v.flags,
                },
            );
        }
    }
    m
}
fn view(t: &VmaTree) -> Model {
    pages_of(&t.iter().collect::<Vec<_>>())
}
fn pieces(v: &[Vma]) -> Model {
    pages_of(&v.iter().collect::<Vec<_>>())
}
fn restrict(m: &Model, s: u64, e: u64) -> Model {
    m.range(s / P..e / P).map(|(&k, &v)| (k, v)).collect()
}
fn all_mapped(m: &Model, s: u64, e: u64) -> bool {
    m.range(s / P..e / P).count() as u64 == (e - s) / P
}

/// The argument checks, restated.
fn range(addr: u64, len: u64) -> Result<(u64, u64), VmaError> {
    if !addr.is_multiple_of(P) || !len.is_multiple_of(P) {
        Err(VmaError::Unaligned)
    } else if len == 0 {
        Err(VmaError::ZeroLength)
    } else if addr >= USER_END {
        Err(VmaError::NotUser)
    } else if addr as u128 + len as u128 > USER_END as u128 {
        Err(VmaError::Overflow)
    } else {
        Ok((addr, addr + len))
    }
}

#[derive(Clone, Copy, Debug)]
enum Place {
    Any,
    Hint(u64),
    Fixed(u64),
    NoReplace(u64),
}

/// The range of a munmap / mprotect / madvise: absolute, or relative to an existing region
/// (chosen when the call runs) so that calls often hit mapped memory.
#[derive(Clone, Copy, Debug)]
enum Rng {
    Abs {
        addr: u64,
        len: u64,
    },
    /// Starts `off` pages into region `idx`; its length is derived from `pages`.
    Rel {
        idx: prop::sample::Index,
        off: u8,
        pages: u8,
    },
}

fn resolve(t: &VmaTree, r: Rng) -> (u64, u64) {
    match r {
        Rng::Abs { addr, len } => (addr, len),
        Rng::Rel { idx, off, pages } => {
            let regions: Vec<&Vma> = t.iter().collect();
            if regions.is_empty() {
                return (LOW, u64::from(pages) * P);
            }
            let v = regions[idx.index(regions.len())];
            let n = v.len() / P;
            let first = u64::from(off) % n;
            let pages = u64::from(pages);
            let len = if pages < 160 {
                // Inside the region, often up to one of its ends.
                match pages % 3 {
                    0 => n - first,
                    _ => 1 + pages % (n - first),
                }
            } else {
                // Possibly into the next region or a hole (or of length 0).
                pages % (2 * n + 2)
            };
            (v.start.as_u64() + first * P, len * P)
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mmap {
        place: Place,
        len: u64,
        prot: VmProt,
        obj: Option<(u64, u64, bool)>,
        align: MapAlign,
    },
    /// A fixed mapping of `pages` right before or after region `idx`, with its
    /// permissions, kind (offset continuing) and alignment: a merge candidate.
    MmapNextTo {
        idx: prop::sample::Index,
        after: bool,
        pages: u64,
    },
    Munmap {
        rng: Rng,
    },
    Mprotect {
        rng: Rng,
        prot: VmProt,
    },
    Madvise {
        rng: Rng,
    },
    /// Fork; continue with the child if `switch`, else with the parent.
    Fork {
        switch: bool,
    },
}

fn addr_s() -> impl Strategy<Value = u64> {
    prop_oneof![
        16 => (0..SPAN).prop_map(|p| p * P),
        4 => (0..SPAN / 16).prop_map(|b| b * LARGE_FOLIO_SIZE),
        1 => 0..SPAN * P,
        1 => prop::sample::select(vec![
            0,
            2 << 20,
            USER_END - P,
            USER_END - 16 * P,
            USER_END,
            KERNEL_BASE,
            TOP_PAGE,
            1 << 63,
        ]),
    ]
}
/// Lengths for mmap: every valid one is small (the model is per page).
fn map_len_s() -> impl Strategy<Value = u64> {
    prop_oneof![
        16 => (0..=24u64).prop_map(|n| n * P),
        3 => (1..=4u64).prop_map(|n| n * LARGE_FOLIO_SIZE),
        1 => 0..64 * P,
        1 => prop::sample::select(vec![USER_END, TOP_PAGE, 1 << 63]),
    ]
}
/// Lengths for the other calls: may be huge and valid.
fn len_s() -> impl Strategy<Value = u64> {
    prop_oneof![
        16 => (0..=40u64).prop_map(|n| n * P),
        1 => 0..64 * P,
        1 => prop::sample::select(vec![1 << 47, USER_END, TOP_PAGE]),
    ]
}
fn rng_s() -> impl Strategy<Value = Rng> {
    prop_oneof![
        1 => (addr_s(), len_s()).prop_map(|(addr, len)| Rng::Abs { addr, len }),
        1 => (any::<prop::sample::Index>(), any::<u8>(), any::<u8>())
            .prop_map(|(idx, off, pages)| Rng::Rel { idx, off, pages }),
    ]
}
fn prot_s() -> impl Strategy<Value = VmProt> {
    prop_oneof![
        3 => Just(VmProt::RW),
        3 => Just(VmProt::READ),
        1 => (0..8u8).prop_map(VmProt::from_bits_truncate),
    ]
}
fn op_s() -> impl Strategy<Value = Op> {
    let place = prop_oneof![
        3 => Just(Place::Any),
        2 => addr_s().prop_map(Place::Hint),
        4 => addr_s().prop_map(Place::Fixed),
        2 => addr_s().prop_map(Place::NoReplace),
    ];
    let obj = prop_oneof![
        3 => Just(None),
        3 => (1..=3u64, 0..8u64, any::<bool>()).prop_map(|(o, f, s)| Some((o, f * P, s))),
        1 => (prop::sample::select(vec![(1, 1), (2, TOP_PAGE)]), any::<bool>())
            .prop_map(|((o, f), s)| Some((o, f, s))),
    ];
    let align = prop_oneof![
        4 => Just(MapAlign::Page),
        3 => Just(MapAlign::Size64K),
        1 => Just(MapAlign::Size2M),
    ];
    prop_oneof![
        6 => (place, map_len_s(), prot_s(), obj, align).prop_map(
            |(place, len, prot, obj, align)| Op::Mmap { place, len, prot, obj, align }
        ),
        2 => (any::<prop::sample::Index>(), any::<bool>(), 1..=8u64)
            .prop_map(|(idx, after, pages)| Op::MmapNextTo { idx, after, pages }),
        3 => rng_s().prop_map(|rng| Op::Munmap { rng }),
        4 => (rng_s(), prot_s()).prop_map(|(rng, prot)| Op::Mprotect { rng, prot }),
        1 => rng_s().prop_map(|rng| Op::Madvise { rng }),
        1 => any::<bool>().prop_map(|switch| Op::Fork { switch }),
    ]
}

/// The address the model expects `mmap` to choose, or its argument/placement error.
fn model_place(
    m: &Model,
    cfg: &VmaConfig,
    place: Place,
    len: u64,
    obj: Option<(u64, u64, bool)>,
    align: MapAlign,
) -> Result<u64, VmaError> {
    let a = align.bytes();
    let free = |s: u64, e: u64| m.range(s / P..e / P).next().is_none();
    let offset_ok = |len: u64| match obj {
        Some((_, off, _)) => off.is_multiple_of(P) && off as u128 + len as u128 <= u64::MAX as u128,
        None => true,
    };
    match place {
        Place::Fixed(addr) | Place::NoReplace(addr) => {
            let (s, e) = range(addr, len)?;
            if s < MMAP_MIN_ADDR {
                return Err(VmaError::Reserved);
            }
            if !s.is_multiple_of(a) {
                return Err(VmaError::FixedMisaligned);
            }
            if !offset_ok(len) {
                return Err(VmaError::BadOffset);
            }
            if matches!(place, Place::NoReplace(_)) && !free(s, e) {
                return Err(VmaError::Exists);
            }
            Ok(s)
        }
        Place::Any | Place::Hint(_) => {
            if !len.is_multiple_of(P) {
                return Err(VmaError::Unaligned);
            }
            if len == 0 {
                return Err(VmaError::ZeroLength);
            }
            if !offset_ok(len) {
                return Err(VmaError::BadOffset);
            }
            if let Place::Hint(h) = place {
                let s = (h as u128).div_ceil(a as u128) * a as u128;
                let e = s + len as u128;
                if s >= MMAP_MIN_ADDR as u128 && e <= USER_END as u128 && free(s as u64, e as u64) {
                    return Ok(s as u64);
                }
            }
            let (lo, hi) = (cfg.search_low.as_u64(), cfg.search_high.as_u64());
            if len > hi - lo {
                return Err(VmaError::NoSpace);
            }
            let first = lo.div_ceil(a) * a;
            let mut cands: Vec<u64> = (first..=hi - len).step_by(a as usize).collect();
            if cfg.direction == SearchDirection::TopDown {
                cands.reverse();
            }
            cands
                .into_iter()
                .find(|&s| free(s, s + len))
                .ok_or(VmaError::NoSpace)
        }
    }
}

/// The `Mmap` op of `MmapNextTo`, or `None` if the tree is empty or there is no room.
fn next_to(t: &VmaTree, idx: prop::sample::Index, after: bool, pages: u64) -> Option<Op> {
    let regions: Vec<&Vma> = t.iter().collect();
    if regions.is_empty() {
        return None;
    }
    let v = regions[idx.index(regions.len())];
    let len = pages * P;
    let (addr, obj) = if after {
        let off = v.kind.offset().map(|o| o + v.len());
        (v.end.as_u64(), off)
    } else {
        let off = v.kind.offset().map(|o| o.wrapping_sub(len));
        (v.start.as_u64().checked_sub(len)?, off)
    };
    let obj = v
        .kind
        .object()
        .map(|o| o.0)
        .zip(obj)
        .map(|(o, f)| (o, f, v.kind.is_shared()));
    let align = if v.flags.contains(VmaFlags::LARGE_FOLIOS) {
        MapAlign::Size64K
    } else {
        MapAlign::Page
    };
    Some(Op::Mmap {
        place: Place::Fixed(addr),
        len,
        prot: v.prot,
        obj,
        align,
    })
}

/// Whether the model would have too many regions after going from `m` to `next`.
fn too_many(m: &Model, next: &Model, max: usize) -> bool {
    let after = runs(next);
    after > max && after > runs(m)
}

fn unchanged(t: &VmaTree, before: &(Vec<Vma>, u64)) {
    assert_eq!(&t.iter().cloned().collect::<Vec<_>>(), &before.0);
    assert_eq!(t.mapped_bytes(), before.1);
}

fn run(cfg: VmaConfig, ops: Vec<Op>) {
    let max = cfg.max_mappings;
    let mut t: VmaTree = VmaTree::with_config(cfg);
    let mut m = Model::new();
    // The other side of the last fork, with its state then: it must never change.
    let mut other: Option<(VmaTree, Model)> = None;
    for op in ops {
        let before = (t.iter().cloned().collect::<Vec<_>>(), t.mapped_bytes());
        let op = match op {
            Op::MmapNextTo { idx, after, pages } => match next_to(&t, idx, after, pages) {
                Some(op) => op,
                None => continue,
            },
            op => op,
        };
        match op {
            Op::MmapNextTo { .. } => unreachable!(),
            Op::Mmap {
                place,
                len,
                prot,
                obj,
                align,
            } => {
                let want = model_place(&m, &cfg, place, len, obj, align).and_then(|s| {
                    let e = s + len;
                    let mut next = m.clone();
                    let replaced = restrict(&m, s, e);
                    for (i, pg) in (s / P..e / P).enumerate() {
                        let obj = obj.map(|(o, off, sh)| (o, off + i as u64 * P, sh));
                        let flags = align.flags();
                        next.insert(pg, Page { prot, obj, flags });
                    }
                    if too_many(&m, &next, max) {
                        return Err(VmaError::TooManyMappings);
                    }
                    Ok((s, replaced, next))
                });
                let placement = match place {
                    Place::Any => Placement::Any,
                    Place::Hint(a) => Placement::Hint(VirtAddr::new(a)),
                    Place::Fixed(a) => Placement::Fixed(VirtAddr::new(a)),
                    Place::NoReplace(a) => Placement::FixedNoReplace(VirtAddr::new(a)),
                };
                let kind = match obj {
                    None => VmaKind::AnonPrivate,
                    Some((o, offset, true)) => VmaKind::Shared {
                        obj: ObjectId(o),
                        offset,
                    },
                    Some((o, offset, false)) => VmaKind::FilePrivate {
                        obj: ObjectId(o),
                        offset,
                    },
                };
                let got = t.mmap(placement, len, prot, kind, align);
                match (want, got) {
                    (Ok((s, replaced, next)), Ok(got)) => {
                        assert_eq!(got.addr.as_u64(), s);
                        assert_eq!(pieces(&got.replaced), replaced);
                        m = next;
                    }
                    (Err(w), Err(g)) => {
                        assert_eq!(w, g);
                        unchanged(&t, &before);
                    }
                    (w, g) => panic!("mmap: model {w:?}, tree {g:?}"),
                }
            }
            Op::Munmap { rng } => {
                let (addr, len) = resolve(&t, rng);
                let want = range(addr, len).and_then(|(s, e)| {
                    let removed = restrict(&m, s, e);
                    let mut next = m.clone();
                    next.retain(|&k, _| k < s / P || k >= e / P);
                    if too_many(&m, &next, max) {
                        return Err(VmaError::TooManyMappings);
                    }
                    Ok((removed, next))
                });
                match (want, t.munmap(VirtAddr::new(addr), len)) {
                    (Ok((removed, next)), Ok(got)) => {
                        assert_eq!(pieces(&got), removed);
                        m = next;
                    }
                    (Err(w), Err(g)) => {
                        assert_eq!(w, g);
                        unchanged(&t, &before);
                    }
                    (w, g) => panic!("munmap: model {w:?}, tree {g:?}"),
                }
            }
            Op::Mprotect { rng, prot } => {
                let (addr, len) = resolve(&t, rng);
                let want = range(addr, len).and_then(|(s, e)| {
                    if !all_mapped(&m, s, e) {
                        return Err(VmaError::NotMapped);
                    }
                    let mut next = m.clone();
                    let mut changed = Map::new();
                    for (&k, pg) in next.range_mut(s / P..e / P) {
                        if pg.prot != prot {
                            changed.insert(k, (Page { prot, ..*pg }, pg.prot));
                            pg.prot = prot;
                        }
                    }
                    if too_many(&m, &next, max) {
                        return Err(VmaError::TooManyMappings);
                    }
                    Ok((changed, next))
                });
                match (want, t.mprotect(VirtAddr::new(addr), len, prot)) {
                    (Ok((changed, next)), Ok(got)) => {
                        let new_pieces: Vec<Vma> = got.iter().map(|c| c.piece.clone()).collect();
                        let mut seen = Map::new();
                        for (c, (k, pg)) in got
                            .iter()
                            .flat_map(|c| {
                                let n = c.piece.len() / P;
                                core::iter::repeat_n(c, n as usize)
                            })
                            .zip(pieces(&new_pieces))
                        {
                            assert_ne!(c.old, c.piece.prot);
                            seen.insert(k, (pg, c.old));
                        }
                        assert_eq!(seen, changed);
                        m = next;
                    }
                    (Err(w), Err(g)) => {
                        assert_eq!(w, g);
                        unchanged(&t, &before);
                    }
                    (w, g) => panic!("mprotect: model {w:?}, tree {g:?}"),
                }
            }
            Op::Madvise { rng } => {
                let (addr, len) = resolve(&t, rng);
                let want = range(addr, len).and_then(|(s, e)| {
                    if all_mapped(&m, s, e) {
                        Ok(restrict(&m, s, e))
                    } else {
                        Err(VmaError::NotMapped)
                    }
                });
                match (want, t.madvise_dontneed(VirtAddr::new(addr), len)) {
                    (Ok(zap), Ok(got)) => assert_eq!(pieces(&got), zap),
                    (Err(w), Err(g)) => assert_eq!(w, g),
                    (w, g) => panic!("madvise: model {w:?}, tree {g:?}"),
                }
                unchanged(&t, &before);
            }
            Op::Fork { switch } => {
                let child = t.fork();
                child.check().unwrap();
                assert_eq!(view(&child), m);
                assert_eq!(child.config(), t.config());
                if switch {
                    other = Some((core::mem::replace(&mut t, child), m.clone()));
                } else {
                    other = Some((child, m.clone()));
                }
            }
        }
        // After every step: the tree is well formed, maximally merged, and its per-page
        // view is the model's.
        t.check().unwrap();
        assert_eq!(view(&t), m);
        assert_eq!(t.len(), runs(&m));
        assert_eq!(t.mapped_bytes(), m.len() as u64 * P);
        let regions: Vec<&Vma> = t.iter().collect();
        for w in regions.windows(2) {
            if w[0].end == w[1].start {
                let last = pages_of(&[w[0]]).into_values().next_back().unwrap();
                let first = pages_of(&[w[1]]).into_values().next().unwrap();
                assert!(!continues(&last, &first), "not merged: {w:?}");
            }
        }
        for v in &regions {
            assert!(v.start.as_u64() >= MMAP_MIN_ADDR);
            assert_eq!(t.find(v.start).unwrap(), *v);
            assert_eq!(t.find(VirtAddr::new(v.end.as_u64() - 1)).unwrap(), *v);
        }
    }
    if let Some((o, om)) = other {
        o.check().unwrap();
        assert_eq!(view(&o), om);
    }
}

fn cfg_s() -> impl Strategy<Value = VmaConfig> {
    let dir = prop_oneof![Just(SearchDirection::TopDown), Just(SearchDirection::BottomUp)];
    let max = prop_oneof![Just(3usize), Just(8), Just(MAX_MAPPINGS)];
    (dir, max).prop_map(|(direction, max_mappings)| VmaConfig {
        search_low: VirtAddr::new(LOW),
        search_high: VirtAddr::new(HIGH),
        direction,
        max_mappings,
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_match_the_page_model(
        cfg in cfg_s(),
        ops in prop::collection::vec(op_s(), 1..64),
    ) {
        run(cfg, ops);
    }
}
