//! Physical frames: the frame allocator every frame comes from, the reserve of blocks it keeps
//! topped up for the kernel heap to grow into, and the page metadata array (Tessera's
//! `struct page`) carved out of RAM at boot.

use crate::devicetree::PhysRange;
use crate::mm::frames::{AllocError, FrameAllocator, FrameError, FRAME_SIZE, MAX_ORDER};
use arch::board::phys_to_virt;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use spin::{Mutex, Once};

/// Bytes the heap took from the frame allocator (blocks in the reserve count as taken).
pub(super) static HEAP_GROWN_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Blocks set aside for the heap to grow into (physical addresses, each `HEAP_BLOCK_ORDER`).
const HEAP_RESERVE_BLOCKS: usize = 2;
pub(super) const HEAP_BLOCK_ORDER: usize = MAX_ORDER;
pub(super) static HEAP_RESERVE: Mutex<[Option<u64>; HEAP_RESERVE_BLOCKS]> =
    Mutex::new([None; HEAP_RESERVE_BLOCKS]);
/// Whether every slot of [`HEAP_RESERVE`] holds a block: set by [`refill_heap_reserve`] when it
/// finds no empty slot, cleared by the heap when it takes a block (both with the reserve locked),
/// so that the refill after each frame allocator call is one load while the reserve is full.
pub(super) static HEAP_RESERVE_FULL: AtomicBool = AtomicBool::new(false);

/// Tops the heap reserve up from the frame allocator. Never called with the heap or the frame
/// allocator locked.
pub(super) fn refill_heap_reserve() {
    if HEAP_RESERVE_FULL.load(Ordering::Relaxed) {
        return;
    }
    loop {
        let Some(mut reserve) = HEAP_RESERVE.try_lock() else {
            return;
        };
        let Some(slot) = reserve.iter_mut().find(|b| b.is_none()) else {
            HEAP_RESERVE_FULL.store(true, Ordering::Relaxed);
            return;
        };
        let Ok(pa) = FRAMES.lock().alloc(HEAP_BLOCK_ORDER) else {
            return;
        };
        *slot = Some(pa);
        HEAP_GROWN_BYTES.fetch_add(FRAME_SIZE << HEAP_BLOCK_ORDER, Ordering::Relaxed);
    }
}

pub(super) static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::new());

/// Allocates 2^order physical frames; returns the physical address.
pub fn alloc_frames(order: usize) -> Result<u64, AllocError> {
    let r = FRAMES.lock().alloc(order);
    refill_heap_reserve();
    r
}

/// Frees every block of `blocks` (`(pa, order)`, each from [`alloc_frames`]) under one lock.
/// Stops at the first bad block.
pub fn free_frames_many(blocks: impl IntoIterator<Item = (u64, usize)>) -> Result<(), FrameError> {
    let r = {
        let mut frames = FRAMES.lock();
        blocks
            .into_iter()
            .try_for_each(|(pa, order)| frames.free(pa, order))
    };
    refill_heap_reserve();
    r
}

/// Frees frames obtained from [`alloc_frames`].
pub fn free_frames(pa: u64, order: usize) -> Result<(), FrameError> {
    let r = FRAMES.lock().free(pa, order);
    refill_heap_reserve();
    r
}

/// Frames that are free or owned by the kernel heap (its reserve and what it grew into; the heap
/// never gives frames back): the boot-test runner's leak check compares this before and after
/// each test.
pub fn frames_free_or_heap() -> usize {
    frame_counts().0 + HEAP_GROWN_BYTES.load(Ordering::Relaxed) / FRAME_SIZE
}

/// (free frames, total frames).
pub fn frame_counts() -> (usize, usize) {
    let f = FRAMES.lock();
    (f.free_frames(), f.total_frames())
}

// ---------------------------------------------------------------------------------------------
// Page metadata

static MEMMAP: Once<crate::mm::folio::MemMap<'static>> = Once::new();

/// The page metadata of every frame the frame allocator can hand out and of the kernel image
/// (Tessera's `struct page` array), set up at boot. The image's frames are never the
/// allocator's: their metadata only serves folios adopted in place (the program archive's pages,
/// `crate::programs`).
pub fn memmap() -> &'static crate::mm::folio::MemMap<'static> {
    MEMMAP.get().expect("page metadata used before boot set it up")
}

/// Carves the page-metadata array for the span of `usable` and `image` (the kernel image's
/// frames) out of the top of the largest usable range (before the frame allocator gets the
/// ranges, as Linux's memblock does), zeroes it — zero is the metadata of a free frame — and
/// installs [`memmap`]. Returns the carved range.
pub(super) fn carve_memmap(usable: &mut [PhysRange], image: PhysRange) -> Option<PhysRange> {
    use crate::mm::folio::MemMap;
    use crate::mm::PhysAddr;
    let page = FRAME_SIZE as u64;
    let base = usable.iter().map(|r| r.base).min()?.min(image.base / page * page);
    let end = usable
        .iter()
        .map(|r| r.end())
        .max()?
        .max(image.end().next_multiple_of(page));
    let frames = ((end - base) / page) as usize;
    let bytes = (MemMap::bytes_needed(frames) as u64).next_multiple_of(page);
    let largest = usable.iter_mut().max_by_key(|r| r.size)?;
    if largest.size < bytes + page {
        return None;
    }
    largest.size -= bytes;
    let carved = PhysRange {
        base: largest.end(),
        size: bytes,
    };
    // SAFETY: the carved range is RAM removed from the usable ranges before the frame allocator
    // or anything else saw it, mapped by the boot map (and later the kernel map) at
    // `phys_to_virt`, and handed to the metadata for the rest of the image's life.
    let storage = unsafe {
        core::slice::from_raw_parts_mut(
            phys_to_virt(carved.base as usize) as *mut core::mem::MaybeUninit<u8>,
            bytes as usize,
        )
    };
    // Zeroing the metadata is most of the boot time: `arch::cpu::zero` uses `DC ZVA`.
    // SAFETY: the carved range is ours (above) and Normal memory in the boot map.
    unsafe { arch::cpu::zero(phys_to_virt(carved.base as usize), bytes as usize) };
    // SAFETY: every byte of the storage was just zeroed.
    let map = unsafe { MemMap::from_zeroed_bytes(PhysAddr(base), frames, storage) }.ok()?;
    MEMMAP.call_once(|| map);
    Some(carved)
}
