//! The kernel heap: a static region at first, grown from the frame allocator through a reserve
//! that is refilled outside any lock.

use super::frames::FRAMES;
use crate::memory;
use arch::board::phys_to_virt;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::Mutex;

const HEAP_STATIC_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct HeapSpace([u8; HEAP_STATIC_SIZE]);

static mut HEAP_SPACE: HeapSpace = HeapSpace([0; HEAP_STATIC_SIZE]);

/// The kernel heap: starts on a static 8 MiB region and grows by 4 MiB blocks (the largest buddy
/// order) when exhausted, so one heap allocation can be at most about 4 MiB once the static
/// region is used up; larger buffers belong in frames or mappings.
///
/// The growth hook runs with the heap locked, and the frame allocator keeps its free lists on the
/// heap, so the hook must never call the frame allocator (it would deadlock on the heap lock when
/// the allocator splits or merges blocks). It takes blocks from [`HEAP_RESERVE`] instead, which
/// [`refill_heap_reserve`] tops up from the frame allocator *outside* any lock, after every frame
/// allocator call and at boot.
#[global_allocator]
static HEAP: buddy_system_allocator::LockedHeapWithRescue<32> =
    buddy_system_allocator::LockedHeapWithRescue::new(grow_heap);

/// Bytes the heap took from the frame allocator (blocks in the reserve count as taken).
pub(super) static HEAP_GROWN_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Blocks set aside for the heap to grow into (physical addresses, each `HEAP_BLOCK_ORDER`).
const HEAP_RESERVE_BLOCKS: usize = 2;
const HEAP_BLOCK_ORDER: usize = memory::MAX_ORDER;
static HEAP_RESERVE: Mutex<[Option<u64>; HEAP_RESERVE_BLOCKS]> = Mutex::new([None; HEAP_RESERVE_BLOCKS]);

fn grow_heap(heap: &mut buddy_system_allocator::Heap<32>, layout: &core::alloc::Layout) {
    let bytes = memory::FRAME_SIZE << HEAP_BLOCK_ORDER;
    if layout.size().max(layout.align()) > bytes {
        return;
    }
    let Some(mut reserve) = HEAP_RESERVE.try_lock() else {
        return;
    };
    if let Some(pa) = reserve.iter_mut().find_map(|b| b.take()) {
        let va = phys_to_virt(pa as usize);
        // SAFETY: the block was taken from the frame allocator for the heap by
        // `refill_heap_reserve`, is mapped by the kernel map, and is given to the heap for good.
        unsafe { heap.add_to_heap(va, va + bytes) };
    }
}

/// Tops the heap reserve up from the frame allocator. Never called with the heap or the frame
/// allocator locked.
pub(super) fn refill_heap_reserve() {
    loop {
        let Some(mut reserve) = HEAP_RESERVE.try_lock() else {
            return;
        };
        let Some(slot) = reserve.iter_mut().find(|b| b.is_none()) else {
            return;
        };
        let Ok(pa) = FRAMES.lock().alloc(HEAP_BLOCK_ORDER) else {
            return;
        };
        *slot = Some(pa);
        HEAP_GROWN_BYTES.fetch_add(memory::FRAME_SIZE << HEAP_BLOCK_ORDER, Ordering::Relaxed);
    }
}

/// Hands the static region to the heap. Called once, first thing at boot.
pub(super) fn init() {
    // SAFETY: the static heap region is used only by the heap, handed over exactly once here.
    unsafe {
        HEAP.lock()
            .init(core::ptr::addr_of_mut!(HEAP_SPACE) as usize, HEAP_STATIC_SIZE)
    };
}

/// Heap statistics: (bytes requested by live allocations, bytes the heap manages).
pub fn heap_usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_user(), h.stats_total_bytes())
}
