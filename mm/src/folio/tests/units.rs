//! Every operation and its failure cases.

use core::mem::MaybeUninit;

use super::*;
use crate::PA_END;

const A: u32 = 1;
const B: u32 = 2;
const C: u32 = 3;

// -----------------------------------------------------------------------------------------
// Metadata storage and lookup.

#[test]
fn page_meta_is_32_bytes_and_zero_means_free() {
    assert_eq!(core::mem::size_of::<PageMeta>(), 32);
    assert_eq!(core::mem::align_of::<PageMeta>(), 32);
    assert!(PageMeta::new().is_clean());
    assert_eq!(MemMap::bytes_needed(1000), 32_000);
}

#[test]
fn memmap_names_live_address_spaces() {
    let mut st = storage(16);
    let mem = memmap(&mut st);
    assert_eq!(mem.live_space_ids(), []);
    let (a, b, c) = (mem.new_space_id(), mem.new_space_id(), mem.new_space_id());
    assert_eq!([a.get(), b.get(), c.get()], [1, 2, 3]);
    mem.free_space_id(b);
    assert_eq!(mem.live_space_ids(), [a, c]);
    // Not reused at once: a freed id comes back only after the others.
    let d = mem.new_space_id();
    assert_eq!(d.get(), 4);
    assert_eq!(mem.live_space_ids(), [a, c, d]);
    for id in [a, c, d] {
        mem.free_space_id(id);
    }
    assert_eq!(mem.live_space_ids(), []);
}

#[test]
#[should_panic(expected = "already free")]
fn memmap_refuses_to_free_a_free_space_id() {
    let mut st = storage(16);
    let mem = memmap(&mut st);
    let a = mem.new_space_id();
    mem.free_space_id(a);
    mem.free_space_id(a);
}

#[test]
fn memmap_from_bytes_zeroes_and_validates() {
    // Over-allocate u128s (16-byte aligned) and pick a 32-byte aligned window.
    let frames = 64;
    let mut raw: Vec<MaybeUninit<u8>> = vec![MaybeUninit::new(0xAA); MemMap::bytes_needed(frames) + 64];
    let off = raw.as_ptr().align_offset(32);
    {
        let bytes = &mut raw[off..];
        let mem = MemMap::from_bytes(PhysAddr(RAM), frames, bytes).unwrap();
        assert_eq!(mem.frames(), frames);
        assert_eq!(
            (mem.base(), mem.end()),
            (PhysAddr(RAM), PhysAddr(RAM + 64 * 4096))
        );
        assert!(
            check(&mem, []).is_ok(),
            "garbage bytes were zeroed into free frames"
        );
        assert_eq!(check(&mem, []).unwrap().free_frames, frames);
    }
    let e = MemMap::from_bytes(PhysAddr(RAM), frames, &mut raw[off + 1..]).unwrap_err();
    assert_eq!(e, MemMapError::UnalignedStorage);
    let e = MemMap::from_bytes(PhysAddr(RAM), frames, &mut raw[off..off + 100]).unwrap_err();
    assert_eq!(
        e,
        MemMapError::StorageTooSmall {
            needed: 2048,
            given: 100
        }
    );
    let e = MemMap::from_bytes(PhysAddr(RAM + 1), frames, &mut raw[off..]).unwrap_err();
    assert_eq!(e, MemMapError::UnalignedBase(PhysAddr(RAM + 1)));
    let mut s = storage(4);
    assert!(matches!(
        MemMap::new(PhysAddr(PA_END - 4096), &mut s),
        Err(MemMapError::BadRange { .. })
    ));
    assert!(matches!(
        MemMap::new(PhysAddr(RAM), &mut []),
        Err(MemMapError::BadRange { .. })
    ));
    assert!(MemMap::new(PhysAddr(PA_END - 4 * 4096), &mut s).is_ok());
}

#[test]
fn memmap_over_bytes_already_zeroed() {
    let frames = 64;
    let mut raw = vec![0u64; MemMap::bytes_needed(frames) / 8 + 4];
    // SAFETY: u64 storage viewed as bytes, all zero.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut(
            raw.as_mut_ptr().cast::<core::mem::MaybeUninit<u8>>(),
            raw.len() * 8,
        )
    };
    // PageMeta is 32-byte aligned; a Vec<u64> only 8.
    let off = bytes.as_ptr().align_offset(32);
    // SAFETY: the storage is all zero.
    let mem = unsafe { MemMap::from_zeroed_bytes(PhysAddr(RAM), frames, &mut bytes[off..]) }.unwrap();
    assert_eq!(mem.frames(), frames);
}

#[test]
fn lookup_from_any_page_to_the_head() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f0 = mem
        .alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::Anon)
        .unwrap();
    let f4 = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::File)
        .unwrap();
    let f9 = mem
        .alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::Anon)
        .unwrap();
    for f in [f0, f4, f9] {
        assert!(f.pa().is_aligned(f.size()));
        for i in 0..f.nr_pages() {
            let (g, j) = mem.folio_page(PhysAddr(f.page_pa(i).0 + 123)).unwrap();
            assert_eq!((g, j), (f, i));
            assert!(!mem.is_free(f.page_pa(i)));
        }
        assert_eq!(f.refcount(), 1);
        assert_eq!(f.mapcount(), 0);
    }
    assert_eq!((f0.nr_pages(), f4.nr_pages(), f9.nr_pages()), (1, 16, 512));
    assert_eq!(f9.size(), 2 << 20);
    assert_eq!(f4.kind(), FolioKind::File);
    assert!(f9.is_anon());
    let listed: Vec<_> = mem.folios().map(|f| f.pa()).collect();
    let mut want = vec![f0.pa(), f4.pa(), f9.pa()];
    want.sort();
    assert_eq!(listed, want);
    // Free and uncovered frames.
    let free = (0..FRAMES as u64)
        .map(|i| PhysAddr(RAM + i * 4096))
        .find(|&pa| mem.is_free(pa))
        .unwrap();
    assert!(mem.folio(free).is_none());
    assert!(mem.folio(PhysAddr(RAM - 4096)).is_none());
    assert!(mem.folio(PhysAddr(RAM + RAM_SIZE)).is_none());
    assert!(!mem.contains(PhysAddr(RAM + RAM_SIZE)));
    let s = check(&mem, []).unwrap();
    assert_eq!(
        (s.folios, s.allocated_frames, s.free_frames),
        (3, 529, FRAMES - 529)
    );
    for f in [f0, f4, f9] {
        assert!(f.put(&mut fr));
    }
    fr.assert_all_back();
    assert!(st.iter().all(PageMeta::is_clean));
}

// -----------------------------------------------------------------------------------------
// Allocation and references.

#[test]
fn frames_return_exactly_at_the_last_put() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    for order in [FolioOrder::SMALL, FolioOrder::CONT, FolioOrder::PMD] {
        let f = mem.alloc_folio(&mut fr, order, FolioKind::Anon).unwrap();
        assert_eq!(fr.frames_out(), order.pages());
        f.get();
        assert!(f.try_get());
        assert_eq!(f.refcount(), 3);
        assert!(!f.put(&mut fr));
        assert!(!f.put_many(0, &mut fr));
        assert!(!f.put(&mut fr));
        assert_eq!(fr.frames_out(), order.pages(), "freed early");
        assert!(f.put(&mut fr));
        assert_eq!(fr.frames_out(), 0);
        assert!(mem.is_free(f.pa()));
        assert!(check(&mem, []).is_ok(), "metadata reset to clean");
        // A speculative get on a freed folio fails.
        assert!(!f.try_get());
    }
    fr.assert_all_back();
}

#[test]
#[should_panic(expected = "refcount underflow")]
fn put_below_zero_panics() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::Anon)
        .unwrap();
    f.get();
    let _ = f.put_many(3, &mut fr);
}

#[test]
#[should_panic(expected = "freed while mapped")]
fn dropping_a_mapping_reference_panics_at_free() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::File)
        .unwrap();
    f.add_file_ptes(sp(A), 0, 1).unwrap();
    f.put(&mut fr);
    f.put(&mut fr); // the mapping's reference: the folio would be freed while mapped
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "dropped without release")]
fn unreleased_references_are_caught() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::File)
        .unwrap();
    f.add_file_ptes(sp(A), 0, 1).unwrap();
    drop(f.remove_ptes(sp(A), 0, 1).unwrap());
}

#[test]
fn allocation_failures() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let mut all = Vec::new();
    while let Ok(f) = mem.alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::File) {
        all.push(f);
    }
    assert_eq!(all.len(), FRAMES / 512);
    assert_eq!(
        mem.alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::File),
        Err(FolioError::OutOfMemory)
    );
    for f in all {
        f.put(&mut fr);
    }
    fr.assert_all_back();

    // A source handing out misaligned or uncovered blocks: refused, block given back.
    struct Bad(u64, Vec<u64>);
    impl FrameSource for Bad {
        fn alloc(&mut self, _: FolioOrder) -> Result<PhysAddr, OutOfMemory> {
            Ok(PhysAddr(self.0))
        }
        fn free(&mut self, pa: PhysAddr, _: FolioOrder) {
            self.1.push(pa.0);
        }
    }
    for pa in [RAM + 4096, RAM + RAM_SIZE, RAM - (2 << 20)] {
        let mut bad = Bad(pa, Vec::new());
        let e = mem.alloc_folio(&mut bad, FolioOrder::PMD, FolioKind::Anon);
        assert_eq!(e, Err(FolioError::BadFrame(PhysAddr(pa))));
        assert_eq!(bad.1, [pa]);
    }
    assert_eq!(FolioOrder::new(10), None);
    assert_eq!(FolioOrder::new(4), Some(FolioOrder::CONT));
    assert_eq!(SpaceId::new(0), None);
}

// -----------------------------------------------------------------------------------------
// Mapping operations.

#[test]
fn anon_ptes_exclusive_map_and_unmap() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let mut lv = Leaves::default();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::Anon)
        .unwrap();
    f.add_anon_ptes(sp(A), 0, 16, true).unwrap();
    lv.map_ptes(sp(A), 0x10000, &f, 0, 16);
    assert_eq!((f.refcount(), f.mapcount(), f.entire_mapcount()), (17, 16, 0));
    assert!((0..16).all(|i| f.is_anon_exclusive(i) && f.page_mapcount(i) == 1));
    assert!(!f.maybe_mapped_shared());
    assert!(f.mapped_exclusively_by(sp(A)) && !f.mapped_exclusively_by(sp(B)));
    assert_eq!(f.tracked_spaces(), [Some((sp(A), 16)), None]);
    lv.check(&mem).unwrap();

    // Refused, nothing changed: exclusive over mapped pages; shared over exclusive pages.
    let before = snapshot(&f);
    assert_eq!(
        f.add_anon_ptes(sp(B), 3, 2, true),
        Err(FolioError::AlreadyMapped { page: 3 })
    );
    assert_eq!(
        f.add_anon_ptes(sp(B), 15, 1, false),
        Err(FolioError::AnonExclusive { page: 15 })
    );
    assert_eq!(f.add_file_ptes(sp(B), 0, 1), Err(FolioError::NotFile));
    assert_eq!(snapshot(&f), before);

    // Partial unmap: mapcounts drop now, references only at release.
    let u = f.remove_ptes(sp(A), 4, 8).unwrap();
    lv.unmap_ptes(sp(A), 0x10000 + 4 * 4096, 8);
    assert_eq!(u.refs(), 8);
    assert_eq!((f.refcount(), f.mapcount()), (17, 8));
    assert!((4..12).all(|i| !f.is_anon_exclusive(i) && f.pte_mapcount(i) == 0));
    assert!(f.is_anon_exclusive(3) && f.is_anon_exclusive(12));
    lv.check(&mem).unwrap();
    assert!(!u.release(&mut fr));
    assert_eq!(f.refcount(), 9);
    // Unmapping unmapped pages is refused.
    let before = snapshot(&f);
    assert_eq!(
        f.remove_ptes(sp(A), 2, 4).unwrap_err(),
        FolioError::NotMapped { page: 4 }
    );
    assert_eq!(snapshot(&f), before);
    // Now-unmapped pages can be mapped exclusively again.
    f.add_anon_ptes(sp(A), 4, 8, true).unwrap();
    lv.map_ptes(sp(A), 0x10000 + 4 * 4096, &f, 4, 8);
    lv.check(&mem).unwrap();

    let mut u = f.remove_ptes(sp(A), 0, 8).unwrap();
    u.merge(f.remove_ptes(sp(A), 8, 8).unwrap());
    lv.unmap_ptes(sp(A), 0x10000, 16);
    assert_eq!(u.refs(), 16);
    assert_eq!(f.tracked_spaces(), [None, None]);
    assert!(!u.release(&mut fr));
    assert!(f.put(&mut fr));
    lv.check(&mem).unwrap();
    fr.assert_all_back();
}

#[test]
fn range_and_kind_errors_change_nothing() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::File)
        .unwrap();
    let g = mem
        .alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::Anon)
        .unwrap();
    let before = (snapshot(&f), snapshot(&g));
    for (first, nr) in [(0, 0), (16, 1), (10, 7), (usize::MAX, 2)] {
        let e = FolioError::PageRange { first, nr };
        assert_eq!(f.add_file_ptes(sp(A), first, nr), Err(e));
        assert_eq!(f.remove_ptes(sp(A), first, nr).unwrap_err(), e);
        assert_eq!(
            g.try_dup_anon_ptes(sp(A), first, nr.max(2)),
            Err(FolioError::PageRange { first, nr: nr.max(2) })
        );
    }
    assert_eq!(f.add_anon_ptes(sp(A), 0, 1, true), Err(FolioError::NotAnon));
    assert_eq!(f.try_dup_anon_ptes(sp(A), 0, 1), Err(FolioError::NotAnon));
    assert_eq!(f.try_clear_anon_exclusive(0, 1), Err(FolioError::NotAnon));
    assert_eq!(g.add_file_ptes(sp(A), 0, 1), Err(FolioError::NotFile));
    assert_eq!(f.add_file_entire(sp(A)), Err(FolioError::NotPmdMappable));
    assert_eq!(g.add_anon_entire(sp(A), true), Err(FolioError::NotPmdMappable));
    assert_eq!(f.remove_entire(sp(A)).unwrap_err(), FolioError::NotPmdMappable);
    assert_eq!(
        f.split_entire(sp(A), 0, 1).unwrap_err(),
        FolioError::NotPmdMappable
    );
    assert_eq!(g.try_dup_anon_entire(sp(A)), Err(FolioError::NotPmdMappable));
    assert_eq!(
        g.remove_ptes(sp(A), 0, 1).unwrap_err(),
        FolioError::NotMapped { page: 0 }
    );
    assert_eq!(
        g.try_dup_anon_ptes(sp(A), 0, 1),
        Err(FolioError::NotMapped { page: 0 })
    );
    assert_eq!(g.pin(1), Err(FolioError::PageRange { first: 1, nr: 1 }));
    assert_eq!((snapshot(&f), snapshot(&g)), before);
    f.put(&mut fr);
    g.put(&mut fr);
    fr.assert_all_back();
}

#[test]
fn order0_total_is_the_page_mapcount() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let mut lv = Leaves::default();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::File)
        .unwrap();
    for (s, va) in [(A, 0x1000), (A, 0x5000), (B, 0x1000)] {
        f.add_file_ptes(sp(s), 0, 1).unwrap();
        lv.map_ptes(sp(s), va, &f, 0, 1);
    }
    assert_eq!(
        (f.mapcount(), f.pte_mapcount(0), f.page_mapcount(0), f.refcount()),
        (3, 3, 3, 4)
    );
    assert_eq!(f.entire_mapcount(), 0);
    assert!(f.maybe_mapped_shared());
    assert_eq!(f.tracked_spaces(), [Some((sp(A), 2)), Some((sp(B), 1))]);
    lv.check(&mem).unwrap();
    f.remove_ptes(sp(B), 0, 1).unwrap().release(&mut fr);
    lv.unmap_ptes(sp(B), 0x1000, 1);
    // The same space mapping a file page twice is not "shared".
    assert!(!f.maybe_mapped_shared() && f.mapped_exclusively_by(sp(A)));
    lv.check(&mem).unwrap();
    for va in [0x1000, 0x5000] {
        f.remove_ptes(sp(A), 0, 1).unwrap().release(&mut fr);
        lv.unmap_ptes(sp(A), va, 1);
    }
    assert!(f.put(&mut fr));
    fr.assert_all_back();
}

#[test]
fn entire_mapping_split_and_partial_unmap() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let mut lv = Leaves::default();
    let va = 0x4000_0000u64;
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::Anon)
        .unwrap();
    assert_eq!(f.remove_entire(sp(A)).unwrap_err(), FolioError::NoEntireMapping);
    assert_eq!(
        f.split_entire(sp(A), 0, 512).unwrap_err(),
        FolioError::NoEntireMapping
    );
    f.add_anon_entire(sp(A), true).unwrap();
    lv.map_block(sp(A), va, &f);
    assert_eq!((f.refcount(), f.mapcount(), f.entire_mapcount()), (2, 1, 1));
    assert!((0..512).all(|i| f.page_mapcount(i) == 1 && f.pte_mapcount(i) == 0 && f.is_anon_exclusive(i)));
    lv.check(&mem).unwrap();
    let before = snapshot(&f);
    assert_eq!(
        f.add_anon_entire(sp(B), true),
        Err(FolioError::AlreadyMapped { page: 0 })
    );
    assert_eq!(
        f.add_anon_entire(sp(B), false),
        Err(FolioError::AnonExclusive { page: 0 })
    );
    assert_eq!(
        f.split_entire(sp(A), 500, 13).unwrap_err(),
        FolioError::PageRange { first: 500, nr: 13 }
    );
    assert_eq!(snapshot(&f), before);

    // munmap of the first 100 pages and the last 12: keep 100..500 as PTEs.
    let u = f.split_entire(sp(A), 100, 400).unwrap();
    lv.unmap_block(sp(A), va);
    lv.map_ptes(sp(A), va + 100 * 4096, &f, 100, 400);
    assert_eq!(u.refs(), 1);
    assert_eq!((f.refcount(), f.mapcount(), f.entire_mapcount()), (402, 400, 0));
    assert!((0..512).all(|i| f.is_anon_exclusive(i) == (100..500).contains(&i)));
    assert_eq!(f.tracked_spaces(), [Some((sp(A), 400)), None]);
    lv.check(&mem).unwrap();
    assert!(!u.release(&mut fr));
    assert_eq!(f.refcount(), 401);

    // Map it entirely again (non-exclusively: other pages are mapped), then punch a hole in
    // the middle of the block: split keeping everything, then unmap the hole.
    let g = mem
        .alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::File)
        .unwrap();
    g.add_file_entire(sp(B)).unwrap();
    lv.map_block(sp(B), va, &g);
    g.add_file_entire(sp(C)).unwrap();
    lv.map_block(sp(C), va, &g);
    lv.check(&mem).unwrap();
    let u = g.split_entire(sp(B), 0, 512).unwrap();
    lv.unmap_block(sp(B), va);
    lv.map_ptes(sp(B), va, &g, 0, 512);
    let h = g.remove_ptes(sp(B), 200, 10).unwrap();
    lv.unmap_ptes(sp(B), va + 200 * 4096, 10);
    assert_eq!(
        (g.entire_mapcount(), g.mapcount(), g.refcount()),
        (1, 503, 504 + 10 + 1)
    );
    assert_eq!(g.page_mapcount(200), 1);
    assert_eq!(g.page_mapcount(199), 2);
    assert!(g.maybe_mapped_shared());
    lv.check(&mem).unwrap();
    u.release(&mut fr);
    h.release(&mut fr);
    assert_eq!(g.refcount(), 504);

    // Tear down.
    g.remove_entire(sp(C)).unwrap().release(&mut fr);
    lv.unmap_block(sp(C), va);
    g.remove_ptes(sp(B), 0, 200).unwrap().release(&mut fr);
    g.remove_ptes(sp(B), 210, 302).unwrap().release(&mut fr);
    f.remove_ptes(sp(A), 100, 400).unwrap().release(&mut fr);
    lv.0.clear();
    lv.check(&mem).unwrap();
    assert!(g.put(&mut fr) && f.put(&mut fr));
    fr.assert_all_back();
}

// -----------------------------------------------------------------------------------------
// Fork, pins, reuse.

#[test]
fn fork_dup_shares_then_reuse_after_the_child_unmaps() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::Anon)
        .unwrap();
    f.add_anon_ptes(sp(A), 0, 16, true).unwrap();
    f.put(&mut fr); // only the mappings keep it alive now
    assert!(
        f.try_reuse_anon(sp(A), 5, 0),
        "exclusive pages are reused as they are"
    );
    f.try_dup_anon_ptes(sp(B), 0, 16).unwrap();
    assert_eq!((f.refcount(), f.mapcount()), (32, 32));
    assert!((0..16).all(|i| !f.is_anon_exclusive(i) && f.page_mapcount(i) == 2));
    assert!(f.maybe_mapped_shared());
    assert!(!f.mapped_exclusively_by(sp(A)));
    assert_eq!(f.tracked_spaces(), [Some((sp(A), 16)), Some((sp(B), 16))]);
    // Shared: a COW fault copies.
    assert!(!f.try_reuse_anon(sp(A), 5, 0));
    assert!(!f.try_reuse_anon(sp(B), 5, 0));
    // The child unmaps half: still shared through the other half.
    f.remove_ptes(sp(B), 0, 8).unwrap().release(&mut fr);
    assert!(f.maybe_mapped_shared());
    assert!(
        !f.try_reuse_anon(sp(A), 5, 0),
        "page 5 is single-mapped, but the folio is shared"
    );
    f.remove_ptes(sp(B), 8, 8).unwrap().release(&mut fr);
    assert!(!f.maybe_mapped_shared() && f.mapped_exclusively_by(sp(A)));
    // A caller reference the caller does not declare blocks reuse; declared, it does not.
    f.get();
    assert!(!f.try_reuse_anon(sp(A), 5, 0));
    assert!(!f.try_reuse_anon(sp(B), 5, 1), "wrong space");
    assert!(f.try_reuse_anon(sp(A), 5, 1));
    assert!(f.is_anon_exclusive(5) && !f.is_anon_exclusive(6));
    f.put(&mut fr);
    assert!(f.try_reuse_anon(sp(A), 6, 0));
    assert!(!f.try_reuse_anon(sp(A), 16, 0), "out of range");
    let u = f.remove_ptes(sp(A), 0, 16).unwrap();
    assert!(!f.try_reuse_anon(sp(A), 6, 1), "unmapped");
    assert!(u.release(&mut fr), "the last mapping reference frees the folio");
    fr.assert_all_back();
}

#[test]
fn dup_is_refused_for_pinned_exclusive_pages() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::Anon)
        .unwrap();
    f.add_anon_ptes(sp(A), 0, 4, true).unwrap();
    f.add_anon_ptes(sp(A), 4, 4, false).unwrap();
    assert_eq!(
        f.pin(5),
        Err(FolioError::NotExclusive { page: 5 }),
        "unshare before pinning"
    );
    f.pin(1).unwrap();
    assert!(f.maybe_pinned());
    assert_eq!((f.refcount(), f.pincount()), (10, 1));
    let before = snapshot(&f);
    assert_eq!(
        f.try_dup_anon_ptes(sp(B), 2, 4),
        Err(FolioError::MaybePinned { page: 2 })
    );
    assert_eq!(
        f.try_dup_anon_ptes(sp(B), 0, 8),
        Err(FolioError::MaybePinned { page: 0 })
    );
    assert_eq!(
        f.try_clear_anon_exclusive(3, 1),
        Err(FolioError::MaybePinned { page: 3 })
    );
    assert_eq!(snapshot(&f), before, "refusals changed nothing");
    // Non-exclusive pages of a pinned folio can be shared.
    f.try_dup_anon_ptes(sp(B), 4, 4).unwrap();
    assert_eq!(f.refcount(), 14);
    // The pin keeps the folio alive after every mapping and the owner's reference are gone.
    for (s, first) in [(A, 0), (B, 4)] {
        let n = if s == A { 8 } else { 4 };
        f.remove_ptes(sp(s), first, n).unwrap().release(&mut fr);
    }
    assert!(!f.put(&mut fr));
    assert_eq!((f.refcount(), f.pincount(), fr.frames_out()), (1, 1, 16));
    assert_eq!(f.unpin(&mut fr), Ok(true));
    fr.assert_all_back();

    // Unpinned: exclusive pages are shared by dup; clearing works too.
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::SMALL, FolioKind::Anon)
        .unwrap();
    f.add_anon_ptes(sp(A), 0, 1, true).unwrap();
    f.pin(0).unwrap();
    assert_eq!(f.unpin(&mut fr), Ok(false));
    assert_eq!(f.unpin(&mut fr), Err(FolioError::NotPinned));
    f.try_clear_anon_exclusive(0, 1).unwrap();
    assert!(!f.is_anon_exclusive(0));
    assert!(
        f.try_reuse_anon(sp(A), 0, 1),
        "sole mapping, sole extra reference"
    );
    f.try_dup_anon_ptes(sp(B), 0, 1).unwrap();
    f.remove_ptes(sp(A), 0, 1).unwrap().release(&mut fr);
    f.remove_ptes(sp(B), 0, 1).unwrap().release(&mut fr);
    assert!(f.put(&mut fr));
    fr.assert_all_back();
}

#[test]
fn pins_block_reuse_even_when_their_references_are_declared() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::Anon)
        .unwrap();
    f.add_anon_ptes(sp(A), 0, 1, true).unwrap();
    f.add_anon_ptes(sp(A), 1, 1, false).unwrap();
    f.pin(0).unwrap();
    // refcount 4 = 2 mappings + 1 pin + 1 owner. Even a caller claiming 2 extra references
    // (owner + the pin's) does not get a pinned folio's shared page reused.
    assert_eq!(f.refcount(), 4);
    assert!(!f.try_reuse_anon(sp(A), 1, 2));
    assert!(
        f.try_reuse_anon(sp(A), 0, 0),
        "the pinned page itself is exclusive"
    );
    assert_eq!(f.unpin(&mut fr), Ok(false));
    assert!(f.try_reuse_anon(sp(A), 1, 1));
    f.remove_ptes(sp(A), 0, 2).unwrap().release(&mut fr);
    assert!(f.put(&mut fr));
    fr.assert_all_back();
}

#[test]
fn entire_fork_pin_and_reuse() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::Anon)
        .unwrap();
    assert_eq!(f.try_dup_anon_entire(sp(B)), Err(FolioError::NoEntireMapping));
    f.add_anon_entire(sp(A), true).unwrap();
    f.pin(77).unwrap();
    let before = snapshot(&f);
    assert_eq!(
        f.try_dup_anon_entire(sp(B)),
        Err(FolioError::MaybePinned { page: 0 })
    );
    assert_eq!(snapshot(&f), before);
    assert!(f.try_reuse_anon_entire(sp(A), 1), "exclusive");
    assert_eq!(f.unpin(&mut fr), Ok(false));
    f.try_dup_anon_entire(sp(B)).unwrap();
    assert!((0..512).all(|i| !f.is_anon_exclusive(i) && f.page_mapcount(i) == 2));
    assert!(!f.try_reuse_anon_entire(sp(A), 1), "two entire mappings");
    f.remove_entire(sp(B)).unwrap().release(&mut fr);
    assert!(
        !f.try_reuse_anon_entire(sp(A), 0),
        "the allocation reference is undeclared"
    );
    assert!(!f.try_reuse_anon_entire(sp(B), 1), "wrong space");
    assert!(f.try_reuse_anon_entire(sp(A), 1));
    assert!((0..512).all(|i| f.is_anon_exclusive(i)));
    // Split, then a PTE-level reuse decision on one page.
    f.split_entire(sp(A), 0, 512).unwrap().release(&mut fr);
    assert!(f.try_reuse_anon(sp(A), 3, 1));
    f.remove_ptes(sp(A), 0, 512).unwrap().release(&mut fr);
    assert!(f.put(&mut fr));
    let g = mem
        .alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::File)
        .unwrap();
    g.add_file_entire(sp(A)).unwrap();
    assert!(
        !g.try_reuse_anon_entire(sp(A), 1),
        "file folios are never reused as anon"
    );
    assert!(!g.try_reuse_anon(sp(A), 0, 1));
    g.pin(0).unwrap();
    g.remove_entire(sp(A)).unwrap().release(&mut fr);
    assert!(!g.put(&mut fr));
    assert_eq!(g.unpin(&mut fr), Ok(true));
    fr.assert_all_back();
}

#[test]
fn mapped_shared_is_exact_with_two_spaces_and_conservative_beyond() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::CONT, FolioKind::File)
        .unwrap();
    // Two spaces: exact in both directions, at every step.
    f.add_file_ptes(sp(A), 0, 4).unwrap();
    assert!(!f.maybe_mapped_shared());
    f.add_file_ptes(sp(B), 4, 4).unwrap();
    assert!(f.maybe_mapped_shared());
    f.remove_ptes(sp(A), 0, 4).unwrap().release(&mut fr);
    assert!(!f.maybe_mapped_shared() && f.mapped_exclusively_by(sp(B)));
    // Three spaces at once: C finds no free slot.
    f.add_file_ptes(sp(A), 0, 1).unwrap();
    f.add_file_ptes(sp(C), 8, 2).unwrap();
    assert_eq!(f.tracked_spaces(), [Some((sp(A), 1)), Some((sp(B), 4))]);
    f.remove_ptes(sp(A), 0, 1).unwrap().release(&mut fr);
    f.remove_ptes(sp(B), 4, 4).unwrap().release(&mut fr);
    // Only C maps it now, but untracked: conservatively "maybe shared".
    assert!(f.maybe_mapped_shared() && !f.mapped_exclusively_by(sp(C)));
    // C maps more: it takes a slot, under-counted (1 of 3).
    f.add_file_ptes(sp(C), 10, 1).unwrap();
    assert_eq!(f.tracked_spaces(), [Some((sp(C), 1)), None]);
    assert!(f.maybe_mapped_shared());
    let mut lv = Leaves::default();
    lv.map_ptes(sp(C), 0, &f, 8, 3);
    lv.check(&mem).unwrap();
    // Once everything is unmapped, tracking is exact again.
    f.remove_ptes(sp(C), 8, 3).unwrap().release(&mut fr);
    assert_eq!(f.tracked_spaces(), [None, None]);
    assert!(!f.maybe_mapped_shared());
    f.add_file_ptes(sp(C), 0, 1).unwrap();
    assert!(f.mapped_exclusively_by(sp(C)));
    f.remove_ptes(sp(C), 0, 1).unwrap().release(&mut fr);
    assert!(f.put(&mut fr));
    fr.assert_all_back();
}

#[test]
fn references_outlive_mapcounts_until_release() {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut fr = Frames::new();
    let f = mem
        .alloc_folio(&mut fr, FolioOrder::PMD, FolioKind::Anon)
        .unwrap();
    f.add_anon_ptes(sp(A), 0, 512, true).unwrap();
    assert!(!f.put(&mut fr));
    let u = f.remove_ptes(sp(A), 0, 512).unwrap();
    // Unmapped but not yet flushed: the frames must stay allocated.
    assert_eq!((f.mapcount(), f.refcount(), fr.frames_out()), (0, 512, 512));
    assert!(check(&mem, []).is_ok());
    assert!(u.release(&mut fr));
    fr.assert_all_back();
}

/// The raw metadata words of `f`'s pages.
fn words(f: &Folio<'_>) -> Vec<[u32; 8]> {
    use core::sync::atomic::Ordering::Relaxed;
    f.pages
        .iter()
        .map(|p| {
            let mut w = [p.flags.load(Relaxed), p.mapcount.load(Relaxed), 0, 0, 0, 0, 0, 0];
            for (i, x) in p.w.iter().enumerate() {
                w[2 + i] = x.load(Relaxed);
            }
            w
        })
        .collect()
}

#[test]
fn alloc_anon_mapped_is_alloc_then_add_anon_ptes() {
    for order in [FolioOrder::SMALL, FolioOrder::CONT, FolioOrder::PMD] {
        let mut st = storage(FRAMES);
        let mem = memmap(&mut st);
        let mut fr = Frames::new();
        let n = order.pages();
        // The reference: the two calls the fault path made before.
        let r = mem.alloc_folio(&mut fr, order, FolioKind::Anon).unwrap();
        r.add_anon_ptes(sp(A), 0, n, true).unwrap();
        let f = mem.alloc_anon_mapped(&mut fr, order, sp(A)).unwrap();
        assert_eq!(words(&f), words(&r), "{order:?}");
        assert_eq!((f.refcount(), f.mapcount()), (1 + n as u32, n as u32));
        assert!((0..n).all(|i| f.is_anon_exclusive(i) && f.page_mapcount(i) == 1));
        assert_eq!(f.tracked_spaces(), [Some((sp(A), n as u32)), None]);
        let mut lv = Leaves::default();
        lv.map_ptes(sp(A), 0x4000_0000, &r, 0, n);
        lv.map_ptes(sp(A), 0x8000_0000, &f, 0, n);
        lv.check(&mem).unwrap();
        for x in [r, f] {
            let gone = x.remove_ptes(sp(A), 0, n).unwrap();
            gone.release(&mut fr);
            x.put(&mut fr);
        }
        assert_eq!(fr.frames_out(), 0);
        check(&mem, vec![]).unwrap();
    }
}

/// Whether every frame of `[pa, pa + pages)` has clean metadata.
fn clean(mem: &MemMap<'_>, pa: PhysAddr, pages: usize) -> bool {
    (0..pages).all(|i| {
        mem.page_meta(PhysAddr(pa.0 + (i * crate::PAGE_SIZE as usize) as u64))
            .is_some_and(PageMeta::is_clean)
    })
}

#[test]
fn remove_sole_ptes_is_remove_ptes_then_release() {
    for order in [FolioOrder::SMALL, FolioOrder::CONT, FolioOrder::PMD] {
        let mut st = storage(FRAMES);
        let mem = memmap(&mut st);
        let mut fr = Frames::new();
        let n = order.pages();
        // Both mapped whole in A, the fault's own reference dropped: only the mappings'
        // references are left.
        let r = mem.alloc_folio(&mut fr, order, FolioKind::Anon).unwrap();
        r.add_anon_ptes(sp(A), 0, n, true).unwrap();
        r.put(&mut fr);
        let f = mem.alloc_anon_mapped(&mut fr, order, sp(A)).unwrap();
        f.put(&mut fr);
        assert_eq!(words(&f), words(&r), "{order:?}");
        let mut lv = Leaves::default();
        lv.map_ptes(sp(A), 0x4000_0000, &r, 0, n);
        lv.map_ptes(sp(A), 0x8000_0000, &f, 0, n);
        lv.check(&mem).unwrap();
        let (rpa, fpa) = (r.pa(), f.pa());

        // The reference: the general path.
        lv.unmap_ptes(sp(A), 0x4000_0000, n);
        let u = r.remove_ptes(sp(A), 0, n).unwrap();
        lv.check(&mem).unwrap();
        let frees = fr.frees;
        assert!(u.release(&mut fr));
        assert_eq!(fr.frees, frees + 1);
        assert!(clean(&mem, rpa, n));
        assert!(!fr.out.contains_key(&rpa.0));

        // The fast path: the metadata is free at once, the frames after `release`.
        lv.unmap_ptes(sp(A), 0x8000_0000, n);
        let frames = f.remove_sole_ptes(sp(A)).expect("mapped whole, only by A");
        assert_eq!(frames.pa(), fpa);
        assert!(clean(&mem, fpa, n), "{order:?}");
        assert!(mem.is_free(fpa) && mem.folio_page(fpa).is_none());
        assert_eq!(fr.out.get(&fpa.0), Some(&order), "frames kept until release");
        lv.check(&mem).unwrap();
        let frees = fr.frees;
        frames.release(&mut fr);
        assert_eq!(fr.frees, frees + 1);
        assert!(!fr.out.contains_key(&fpa.0));
        assert_eq!(fr.frames_out(), 0);
        check(&mem, vec![]).unwrap();
        fr.assert_all_back();
    }
}

#[test]
fn remove_sole_ptes_declines_unless_sole_and_changes_nothing() {
    type Setup = fn(&MemMap<'static>, &mut Frames, Folio<'static>, &mut Leaves);
    let n = FolioOrder::CONT.pages();
    let va = 0x4000_0000;
    // Each case leaves a CONT folio whose pages A maps once each (or not, as named).
    let cases: [(&str, Setup); 7] = [
        ("a caller's reference", |_, _, f, _| f.get()),
        ("a speculative reference", |_, _, f, _| assert!(f.try_get())),
        ("a pin", |_, _, f, _| f.pin(0).unwrap()),
        ("also mapped by B", |_, _, f, lv| {
            f.try_dup_anon_ptes(sp(B), 0, 16).unwrap();
            lv.map_ptes(sp(B), 0x4000_0000, &f, 0, 16);
        }),
        ("a page mapped twice by A", |_, _, f, lv| {
            f.add_anon_ptes(sp(A), 3, 1, false).unwrap_err();
            f.try_dup_anon_ptes(sp(A), 3, 1).unwrap();
            lv.map_ptes(sp(A), 0x8000_0000, &f, 3, 1);
        }),
        ("a page not mapped", |_, fr, f, lv| {
            lv.unmap_ptes(sp(A), 0x4000_0000 + 5 * crate::PAGE_SIZE, 1);
            assert!(!f.remove_ptes(sp(A), 5, 1).unwrap().release(fr));
        }),
        ("asked for another space", |_, _, _, _| {}),
    ];
    for (name, setup) in cases {
        let st: &'static mut Vec<PageMeta> = Box::leak(Box::new(storage(FRAMES)));
        let mem: &'static MemMap<'static> = Box::leak(Box::new(memmap(st)));
        let mut fr = Frames::new();
        let f = mem.alloc_anon_mapped(&mut fr, FolioOrder::CONT, sp(A)).unwrap();
        f.put(&mut fr);
        let mut lv = Leaves::default();
        lv.map_ptes(sp(A), va, &f, 0, n);
        setup(mem, &mut fr, f, &mut lv);
        lv.check(mem).unwrap();
        let before = words(&f);
        let ask = if name == "asked for another space" {
            sp(B)
        } else {
            sp(A)
        };
        assert!(f.remove_sole_ptes(ask).is_none(), "{name}");
        assert_eq!(words(&f), before, "{name}: changed on a refusal");
        lv.check(mem).unwrap();
        // The general path still takes everything apart.
        for ((space, at), (pa, _)) in core::mem::take(&mut lv.0) {
            let (g, idx) = mem.folio_page(PhysAddr(pa)).unwrap();
            g.remove_ptes(sp(space), idx, 1).unwrap().release(&mut fr);
            let _ = at;
        }
        if f.pincount() > 0 {
            f.unpin(&mut fr).unwrap();
        } else if f.refcount() > 0 {
            f.put(&mut fr);
        }
        check(mem, vec![]).unwrap();
        fr.assert_all_back();
    }
}
