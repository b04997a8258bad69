//! Boot-time tests: folios on the real machine, with the metadata carved out of RAM through
//! the linear map (as the boot code will do for all of RAM) and frames from a 4 MiB block of
//! the global frame allocator.

use alloc::vec::Vec;
use core::mem::MaybeUninit;

use arch::board::phys_to_virt;

use crate::mm::folio::*;
use crate::mm::frames::{FrameAllocator, PhysRange, MAX_ORDER};
use crate::mm::{Level, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::runtime;

const MB2: u64 = 2 << 20;

fn leaf(space: SpaceId, va: u64, pa: PhysAddr, level: Level) -> MappedLeaf {
    MappedLeaf {
        space,
        va: VirtAddr(va),
        pa,
        size: level.entry_size(),
        level,
    }
}

crate::boot_test! {
    /// Metadata from raw RAM (zeroed by `MemMap::from_bytes`), folios of orders 0, 4 and 9,
    /// entire and PTE mappings in two address spaces, fork dup and its pinned refusal, a PMD
    /// split, the checker after each step, and every frame back at the end.
    fn folios_on_the_target() {
        let block = runtime::alloc_frames(MAX_ORDER).expect("a 4 MiB block");
        let frames = 1usize << MAX_ORDER;
        let meta_order = MemMap::bytes_needed(frames).div_ceil(PAGE_SIZE as usize).next_power_of_two().trailing_zeros() as usize;
        let meta_pa = runtime::alloc_frames(meta_order).expect("metadata frames");
        let meta_len = (PAGE_SIZE as usize) << meta_order;
        // SAFETY: the frames at `meta_pa` were just taken from the frame allocator, so nothing
        // else uses them; the linear map maps them read-write; the slice lives only inside this
        // test, which returns the frames after the last use.
        let bytes: &mut [MaybeUninit<u8>] = unsafe {
            core::slice::from_raw_parts_mut(phys_to_virt(meta_pa as usize) as *mut MaybeUninit<u8>, meta_len)
        };
        {
            let mem = MemMap::from_bytes(PhysAddr(block), frames, bytes).unwrap();
            let mut src = FrameAllocator::new();
            src.add_range(PhysRange { base: block, size: PAGE_SIZE << MAX_ORDER });
            let (a, b) = (SpaceId::new(1).unwrap(), SpaceId::new(2).unwrap());
            let mut lv: Vec<MappedLeaf> = Vec::new();

            let f9 = mem.alloc_folio(&mut src, FolioOrder::PMD, FolioKind::Anon).unwrap();
            let f4 = mem.alloc_folio(&mut src, FolioOrder::CONT, FolioKind::Anon).unwrap();
            let f0 = mem.alloc_folio(&mut src, FolioOrder::SMALL, FolioKind::File).unwrap();
            f9.add_anon_entire(a, true).unwrap();
            lv.push(leaf(a, 0, f9.pa(), Level::L2));
            f4.add_anon_ptes(a, 0, 16, true).unwrap();
            for i in 0..16 {
                lv.push(leaf(a, MB2 + i as u64 * PAGE_SIZE, f4.page_pa(i), Level::L3));
            }
            f0.add_file_ptes(a, 0, 1).unwrap();
            f0.add_file_ptes(b, 0, 1).unwrap();
            lv.push(leaf(a, 2 * MB2, f0.pa(), Level::L3));
            lv.push(leaf(b, 2 * MB2, f0.pa(), Level::L3));
            let sum = check(&mem, lv.iter().copied()).unwrap();
            assert_eq!((sum.folios, sum.leaves, sum.free_frames), (3, 19, frames - 529));

            // Fork a → b: the pinned exclusive run is refused, the block is shared.
            f4.pin(2).unwrap();
            assert_eq!(f4.try_dup_anon_ptes(b, 0, 16), Err(FolioError::MaybePinned { page: 0 }));
            f9.try_dup_anon_entire(b).unwrap();
            lv.push(leaf(b, 0, f9.pa(), Level::L2));
            assert!(f9.maybe_mapped_shared() && !f4.maybe_mapped_shared() && f0.maybe_mapped_shared());
            check(&mem, lv.iter().copied()).unwrap();

            // b splits its block keeping the first half.
            lv.retain(|l| !(l.space == b && l.level == Level::L2));
            let u = f9.split_entire(b, 0, 256).unwrap();
            for i in 0..256 {
                lv.push(leaf(b, i as u64 * PAGE_SIZE, f9.page_pa(i), Level::L3));
            }
            check(&mem, lv.iter().copied()).unwrap();
            assert!(!u.release(&mut src));

            // Teardown.
            let pending = [
                f9.remove_ptes(b, 0, 256).unwrap(),
                f9.remove_entire(a).unwrap(),
                f4.remove_ptes(a, 0, 16).unwrap(),
                f0.remove_ptes(a, 0, 1).unwrap(),
                f0.remove_ptes(b, 0, 1).unwrap(),
            ];
            lv.clear();
            check(&mem, lv.iter().copied()).unwrap();
            for u in pending {
                assert!(!u.release(&mut src));
            }
            assert_eq!(f4.unpin(&mut src), Ok(false));
            assert!(f9.put(&mut src) && f4.put(&mut src) && f0.put(&mut src));
            let sum = check(&mem, []).unwrap();
            assert_eq!((sum.folios, sum.free_frames), (0, frames));
            assert_eq!(src.free_frames(), frames);
            assert_eq!(src.alloc(MAX_ORDER), Ok(block), "the block coalesced");
        }
        runtime::free_frames(meta_pa, meta_order).unwrap();
        runtime::free_frames(block, MAX_ORDER).unwrap();
    }
}
