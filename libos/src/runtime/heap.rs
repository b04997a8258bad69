//! The kernel heap: a static region at first, grown from the frame allocator through a reserve
//! that the frame allocator refills outside any lock.

use super::frames::{HEAP_BLOCK_ORDER, HEAP_RESERVE, HEAP_RESERVE_FULL};
use crate::mm::frames::FRAME_SIZE;
use arch::board::phys_to_virt;

const HEAP_STATIC_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct HeapSpace([u8; HEAP_STATIC_SIZE]);

/// In `.noinit`: the heap needs no initial value, so boot does not spend time clearing it.
#[link_section = ".noinit.heap"]
static mut HEAP_SPACE: core::mem::MaybeUninit<HeapSpace> = core::mem::MaybeUninit::uninit();

/// The kernel heap: starts on a static 8 MiB region and grows by 4 MiB blocks (the largest buddy
/// order) when exhausted, so one heap allocation can be at most about 4 MiB once the static
/// region is used up; larger buffers belong in frames or mappings.
///
/// The growth hook runs with the heap locked, and the frame allocator keeps its bitmaps on the
/// heap (allocated when RAM ranges are added to it), so the hook must never call the frame
/// allocator (it could deadlock on the frame allocator's lock or the heap's). It takes blocks from
/// [`HEAP_RESERVE`] instead, which `frames::refill_heap_reserve` tops up from the frame allocator
/// *outside* any lock, after every frame allocator call and at boot.
#[global_allocator]
static HEAP: buddy_system_allocator::LockedHeapWithRescue<32> =
    buddy_system_allocator::LockedHeapWithRescue::new(grow_heap);

fn grow_heap(heap: &mut buddy_system_allocator::Heap<32>, layout: &core::alloc::Layout) {
    let bytes = FRAME_SIZE << HEAP_BLOCK_ORDER;
    if layout.size().max(layout.align()) > bytes {
        return;
    }
    let Some(mut reserve) = HEAP_RESERVE.try_lock() else {
        return;
    };
    if let Some(pa) = reserve.iter_mut().find_map(|b| b.take()) {
        HEAP_RESERVE_FULL.store(false, core::sync::atomic::Ordering::Relaxed);
        let va = phys_to_virt(pa as usize);
        // SAFETY: the block was taken from the frame allocator for the heap by
        // `refill_heap_reserve`, is mapped by the kernel map, and is given to the heap for good.
        unsafe { heap.add_to_heap(va, va + bytes) };
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
