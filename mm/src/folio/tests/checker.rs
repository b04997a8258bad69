//! The checker accepts a consistent state and catches every kind of wrong count.

use core::sync::atomic::Ordering;

use super::super::meta::{flag, head, second};
use super::*;

const A: u32 = 1;
const B: u32 = 2;
const C: u32 = 3;
const VA: u64 = 0x4000_0000;

/// A consistent scene: an order-9 file folio entirely mapped in A and B, an order-4 anon
/// folio PTE-mapped exclusively in A, an order-0 file folio mapped twice in A.
struct Scene<'m> {
    f9: Folio<'m>,
    f4: Folio<'m>,
    f0: Folio<'m>,
    lv: Leaves,
}

fn scene<'m>(mem: &MemMap<'m>, fr: &mut Frames) -> Scene<'m> {
    let mut lv = Leaves::default();
    let f9 = mem.alloc_folio(fr, FolioOrder::PMD, FolioKind::File).unwrap();
    let f4 = mem.alloc_folio(fr, FolioOrder::CONT, FolioKind::Anon).unwrap();
    let f0 = mem.alloc_folio(fr, FolioOrder::SMALL, FolioKind::File).unwrap();
    for s in [A, B] {
        f9.add_file_entire(sp(s)).unwrap();
        lv.map_block(sp(s), VA, &f9);
    }
    f4.add_anon_ptes(sp(A), 0, 16, true).unwrap();
    lv.map_ptes(sp(A), VA + (4 << 20), &f4, 0, 16);
    for va in [VA + (8 << 20), VA + (8 << 20) + 4096] {
        f0.add_file_ptes(sp(A), 0, 1).unwrap();
        lv.map_ptes(sp(A), va, &f0, 0, 1);
    }
    let s = lv.check(mem).unwrap();
    assert_eq!((s.folios, s.leaves, s.ignored_leaves), (3, 20, 0));
    Scene { f9, f4, f0, lv }
}

fn meta<'m>(mem: &MemMap<'m>, pa: PhysAddr) -> &'m PageMeta {
    mem.page_meta(pa).unwrap()
}

fn free_frame(mem: &MemMap<'_>) -> PhysAddr {
    (0..FRAMES as u64)
        .map(|i| PhysAddr(RAM + i * 4096))
        .find(|&pa| mem.is_free(pa))
        .unwrap()
}

macro_rules! setup {
    ($mem:ident, $fr:ident, $s:ident) => {
        let mut st = storage(FRAMES);
        let $mem = memmap(&mut st);
        #[allow(unused_mut)]
        let mut $fr = Frames::new();
        let $s = scene(&$mem, &mut $fr);
    };
}

#[test]
fn consistent_scene_passes_and_outside_leaves_are_ignored() {
    setup!(mem, fr, s);
    let mut leaves = s.lv.mapped();
    leaves.push(MappedLeaf {
        space: sp(C),
        va: VirtAddr(0),
        pa: PhysAddr(0x8000_0000),
        size: 1 << 30,
        level: Level::L1,
    });
    leaves.push(MappedLeaf {
        space: sp(C),
        va: VirtAddr(0),
        pa: PhysAddr(RAM + RAM_SIZE),
        size: 4096,
        level: Level::L3,
    });
    let sum = check(&mem, leaves).unwrap();
    assert_eq!((sum.leaves, sum.ignored_leaves), (20, 2));
    assert_eq!(sum.allocated_frames, 529);
    assert_eq!(sum.free_frames, FRAMES - 529);
    assert!(s.f9.maybe_mapped_shared() && !s.f4.maybe_mapped_shared() && !s.f0.maybe_mapped_shared());
}

#[test]
fn missing_or_extra_leaves_are_caught() {
    setup!(mem, fr, s);
    let f4 = s.f4.pa();
    let mut lv = s.lv.clone();
    lv.unmap_ptes(sp(A), VA + (4 << 20) + 5 * 4096, 1);
    assert_eq!(
        lv.check(&mem),
        Err(CheckError::PteMapcount {
            folio: f4,
            page: 5,
            stored: 1,
            actual: 0
        })
    );
    let mut lv = s.lv.clone();
    lv.map_ptes(sp(C), 0, &s.f4, 3, 1);
    assert_eq!(
        lv.check(&mem),
        Err(CheckError::PteMapcount {
            folio: f4,
            page: 3,
            stored: 1,
            actual: 2
        })
    );
    let mut lv = s.lv.clone();
    lv.unmap_block(sp(B), VA);
    assert_eq!(
        lv.check(&mem),
        Err(CheckError::EntireMapcount {
            folio: s.f9.pa(),
            stored: 2,
            actual: 1
        })
    );
    // The same mappings attributed to the wrong space: slot A counts more than A has.
    let mut lv = s.lv.clone();
    lv.unmap_ptes(sp(A), VA + (8 << 20), 1);
    lv.map_ptes(sp(C), VA + (8 << 20), &s.f0, 0, 1);
    assert_eq!(
        lv.check(&mem),
        Err(CheckError::Slot {
            folio: s.f0.pa(),
            slot: 0,
            space: A,
            stored: 2,
            actual: 1
        })
    );
}

#[test]
fn impossible_leaves_are_caught() {
    setup!(mem, fr, s);
    let bad = |pa: u64, size: u64, level: Level| {
        let mut leaves = s.lv.mapped();
        let l = MappedLeaf {
            space: sp(C),
            va: VirtAddr(0),
            pa: PhysAddr(pa),
            size,
            level,
        };
        leaves.push(l);
        check(&mem, leaves)
    };
    let f4 = s.f4.pa().0;
    let l2 = |pa: u64| MappedLeaf {
        space: sp(C),
        va: VirtAddr(0),
        pa: PhysAddr(pa),
        size: 2 << 20,
        level: Level::L2,
    };
    // A 2 MiB block over something that is not exactly an order-9 folio.
    let aligned = f4 & !((2 << 20) - 1);
    assert!(matches!(
        bad(aligned, 2 << 20, Level::L2),
        Err(CheckError::BadLeaf(_) | CheckError::LeafOnFreeFrame(_))
    ));
    assert_eq!(
        bad(s.f9.pa().0 + 4096, 2 << 20, Level::L2),
        Err(CheckError::BadLeaf(l2(s.f9.pa().0 + 4096)))
    );
    // Level-1 blocks and size / level mismatches inside the map.
    assert!(matches!(
        bad(RAM, 1 << 30, Level::L1),
        Err(CheckError::BadLeaf(_))
    ));
    assert!(matches!(bad(f4, 8192, Level::L3), Err(CheckError::BadLeaf(_))));
    // Straddling the start of the map.
    assert_eq!(
        bad(RAM - (1 << 20), 2 << 20, Level::L2),
        Err(CheckError::BadLeaf(l2(RAM - (1 << 20))))
    );
    // A page leaf on a free frame.
    let free = free_frame(&mem);
    assert!(matches!(bad(free.0, 4096, Level::L3), Err(CheckError::LeafOnFreeFrame(l)) if l.pa == free));
}

#[test]
fn corrupted_counters_are_caught() {
    setup!(mem, fr, s);
    let (f9, f4, f0) = (s.f9.pa(), s.f4.pa(), s.f0.pa());
    let second9 = &meta(&mem, PhysAddr(f9.0 + 4096)).w;
    let head4 = meta(&mem, f4);

    // Each corruption is undone before the next.
    let refs = &head4.w[head::REFS];
    refs.store(15, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::Refcount {
            folio: f4,
            refcount: 15,
            mapcount: 16,
            pincount: 0
        })
    );
    head4.w[head::PINS].store(1, Ordering::Relaxed);
    refs.store(16, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::Refcount {
            folio: f4,
            refcount: 16,
            mapcount: 16,
            pincount: 1
        })
    );
    head4.w[head::PINS].store(0, Ordering::Relaxed);
    refs.store(17, Ordering::Relaxed);
    s.lv.check(&mem).unwrap();

    second9[second::TOTAL].fetch_add(1, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::TotalMapcount {
            folio: f9,
            stored: 3,
            actual: 2
        })
    );
    second9[second::TOTAL].fetch_sub(1, Ordering::Relaxed);

    second9[second::ENTIRE].fetch_add(1, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::EntireMapcount {
            folio: f9,
            stored: 3,
            actual: 2
        })
    );
    second9[second::ENTIRE].fetch_sub(1, Ordering::Relaxed);

    let page2 = meta(&mem, s.f4.page_pa(2));
    page2.mapcount.fetch_add(1, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::PteMapcount {
            folio: f4,
            page: 2,
            stored: 2,
            actual: 1
        })
    );
    page2.mapcount.fetch_sub(1, Ordering::Relaxed);

    let f0m = meta(&mem, f0);
    f0m.mapcount.fetch_add(1, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::PteMapcount {
            folio: f0,
            page: 0,
            stored: 3,
            actual: 2
        })
    );
    f0m.mapcount.fetch_sub(1, Ordering::Relaxed);
    s.lv.check(&mem).unwrap();
}

#[test]
fn corrupted_space_tracking_is_caught() {
    setup!(mem, fr, s);
    let (f9, f4) = (s.f9.pa(), s.f4.pa());
    let h4 = &meta(&mem, f4).w;
    let h9 = meta(&mem, f9);

    // A slot counting more than its space has.
    h4[head::SLOT_COUNT].fetch_add(5, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::Slot {
            folio: f4,
            slot: 0,
            space: A,
            stored: 21,
            actual: 16
        })
    );
    h4[head::SLOT_COUNT].fetch_sub(5, Ordering::Relaxed);
    // An occupied slot with count 0; a free slot with a count; a duplicate slot.
    h4[head::SLOT_ID + 2].store(B, Ordering::Relaxed);
    assert!(matches!(
        s.lv.check(&mem),
        Err(CheckError::Slot {
            slot: 1,
            space: B,
            stored: 0,
            ..
        })
    ));
    h4[head::SLOT_ID + 2].store(0, Ordering::Relaxed);
    h4[head::SLOT_COUNT + 2].store(1, Ordering::Relaxed);
    assert!(matches!(
        s.lv.check(&mem),
        Err(CheckError::Slot {
            slot: 1,
            space: 0,
            stored: 1,
            ..
        })
    ));
    h4[head::SLOT_ID + 2].store(A, Ordering::Relaxed);
    assert!(matches!(
        s.lv.check(&mem),
        Err(CheckError::Slot {
            slot: 1,
            space: A,
            stored: 1,
            ..
        })
    ));
    h4[head::SLOT_ID + 2].store(0, Ordering::Relaxed);
    h4[head::SLOT_COUNT + 2].store(0, Ordering::Relaxed);
    s.lv.check(&mem).unwrap();

    // The shared flag disagreeing with the slots, both ways.
    h9.flags.fetch_and(!flag::SHARED, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::SharedFlag {
            folio: f9,
            stored: false
        })
    );
    h9.flags.fetch_or(flag::SHARED, Ordering::Relaxed);
    let hf4 = &meta(&mem, f4).flags;
    hf4.fetch_or(flag::SHARED, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::SharedFlag {
            folio: f4,
            stored: true
        })
    );
    hf4.fetch_and(!flag::SHARED, Ordering::Relaxed);
    s.lv.check(&mem).unwrap();
}

#[test]
fn corrupted_flags_and_free_frames_are_caught() {
    setup!(mem, fr, s);
    let (f9, f4, f0) = (s.f9.pa(), s.f4.pa(), s.f0.pa());

    // Anon-exclusive on a page mapped twice; on a file folio.
    let p9 = &meta(&mem, s.f9.page_pa(7)).flags;
    p9.fetch_or(flag::ANON_EXCLUSIVE, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::Exclusive {
            folio: f9,
            page: 7,
            mapcount: 2
        })
    );
    p9.fetch_and(!flag::ANON_EXCLUSIVE, Ordering::Relaxed);
    let p0 = &meta(&mem, f0).flags;
    p0.fetch_or(flag::ANON_EXCLUSIVE, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::Exclusive {
            folio: f0,
            page: 0,
            mapcount: 2
        })
    );
    p0.fetch_and(!flag::ANON_EXCLUSIVE, Ordering::Relaxed);
    let g = mem
        .alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::File)
        .unwrap();
    g.add_file_ptes(sp(C), 0, 1).unwrap();
    let mut lv = s.lv.clone();
    lv.map_ptes(sp(C), VA, &g, 0, 1);
    lv.check(&mem).unwrap();
    meta(&mem, g.pa())
        .flags
        .fetch_or(flag::ANON_EXCLUSIVE, Ordering::Relaxed);
    assert_eq!(
        lv.check(&mem),
        Err(CheckError::Exclusive {
            folio: g.pa(),
            page: 0,
            mapcount: 1
        })
    );
    meta(&mem, g.pa())
        .flags
        .fetch_and(!flag::ANON_EXCLUSIVE, Ordering::Relaxed);
    lv.check(&mem).unwrap();
    g.remove_ptes(sp(C), 0, 1).unwrap().release(&mut fr);
    assert!(g.put(&mut fr));
    // An exclusive page whose leaf vanished.
    let mut lv = s.lv.clone();
    lv.unmap_ptes(sp(A), VA + (4 << 20), 1);
    assert!(matches!(
        lv.check(&mem),
        Err(CheckError::PteMapcount { page: 0, .. })
    ));

    // Tail metadata: wrong order, a stray word, a held lock.
    let t = meta(&mem, s.f4.page_pa(3));
    let saved = t.flags.load(Ordering::Relaxed);
    t.flags
        .store(flag::TAIL | (3 << flag::ORDER_SHIFT), Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::BadMeta {
            pa: s.f4.page_pa(3),
            what: "frame does not lead to a folio head"
        })
    );
    let mut lv = s.lv.clone();
    lv.unmap_ptes(sp(A), VA + (4 << 20), 16);
    assert_eq!(
        lv.check(&mem),
        Err(CheckError::BadMeta {
            pa: s.f4.page_pa(3),
            what: "tail flags do not match the head"
        })
    );
    t.flags.store(saved, Ordering::Relaxed);
    t.w[4].store(1, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::BadMeta {
            pa: s.f4.page_pa(3),
            what: "unused tail word is not zero"
        })
    );
    t.w[4].store(0, Ordering::Relaxed);
    let h = &meta(&mem, f4).flags;
    h.fetch_or(flag::LOCK, Ordering::Relaxed);
    assert!(matches!(s.lv.check(&mem), Err(CheckError::BadMeta { pa, .. }) if pa == f4));
    h.fetch_and(!flag::LOCK, Ordering::Relaxed);
    s.lv.check(&mem).unwrap();

    // Free frames: a dirty word, a stray tail.
    let free = free_frame(&mem);
    let m = meta(&mem, free);
    m.w[0].store(1, Ordering::Relaxed);
    assert_eq!(s.lv.check(&mem), Err(CheckError::DirtyFreeFrame(free)));
    m.w[0].store(0, Ordering::Relaxed);
    m.flags.store(flag::TAIL, Ordering::Relaxed);
    assert_eq!(
        s.lv.check(&mem),
        Err(CheckError::BadMeta {
            pa: free,
            what: "tail frame without its head"
        })
    );
    m.flags.store(0, Ordering::Relaxed);
    // Metadata left behind by a "free" that skipped the reset.
    m.mapcount.store(1, Ordering::Relaxed);
    assert_eq!(s.lv.check(&mem), Err(CheckError::DirtyFreeFrame(free)));
    m.mapcount.store(0, Ordering::Relaxed);
    s.lv.check(&mem).unwrap();
}
