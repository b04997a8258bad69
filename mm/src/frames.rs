//! Physical memory: ranges of it, which RAM is free at boot, and the buddy frame allocator over it.
//!
//! The frame allocator hands out naturally aligned blocks of 2^order 4 KiB frames, orders
//! 0..=[`MAX_ORDER`] (4 KiB .. 4 MiB), and coalesces a freed block with its free buddy. It wraps
//! `buddy_system_allocator::FrameAllocator`: a well-kept buddy implementation (split on allocate,
//! merge buddies on free) whose free lists are ordered sets, so allocation is deterministic
//! (lowest address first), which the tests rely on. Its bookkeeping lives on the kernel heap; the
//! per-frame metadata of the memory manager (`folio::MemMap`) is separate.
//!
//! [`usable_ranges`] computes free RAM from the device tree's memory ranges minus everything that
//! must survive: the image, the device tree blob, reserved ranges and low firmware memory.

use alloc::vec::Vec;

/// A physical range [base, base + size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhysRange {
    pub base: u64,
    pub size: u64,
}

impl PhysRange {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// Size of a frame (the 4 KiB translation granule).
pub const FRAME_SIZE: usize = 4096;
/// Largest block order: 2^10 frames = 4 MiB.
pub const MAX_ORDER: usize = 10;

/// Allocation failed: no free block of the requested order. The one out-of-memory error of
/// physical memory: frame blocks here, folio frames ([`crate::folio::FrameSource`]) and
/// translation-table frames ([`crate::Platform::alloc_table`], which re-exports it as
/// `mm::OutOfMemory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

impl core::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("out of physical memory")
    }
}

/// Invalid argument to the frame allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The order is above [`MAX_ORDER`].
    OrderTooLarge(usize),
    /// Freeing an address that is not aligned to the block size.
    Misaligned(u64),
}

/// Buddy allocator of physical frames.
pub struct FrameAllocator {
    inner: buddy_system_allocator::FrameAllocator<{ MAX_ORDER + 1 }>,
    total_frames: usize,
    free_frames: usize,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAllocator {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        FrameAllocator {
            inner: buddy_system_allocator::FrameAllocator::new(),
            total_frames: 0,
            free_frames: 0,
        }
    }

    /// Adds the whole frames inside `range` (partial frames at either end are dropped).
    pub fn add_range(&mut self, range: PhysRange) {
        let start = (range.base as usize).div_ceil(FRAME_SIZE);
        let end = range.end() as usize / FRAME_SIZE;
        if end > start {
            self.inner.add_frame(start, end);
            self.total_frames += end - start;
            self.free_frames += end - start;
        }
    }

    /// Allocates a block of 2^order frames, aligned to its size; returns its physical address.
    pub fn alloc(&mut self, order: usize) -> Result<u64, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::Invalid(FrameError::OrderTooLarge(order)));
        }
        let frame = self
            .inner
            .alloc(1 << order)
            .ok_or(AllocError::OutOfMemory(OutOfMemory))?;
        self.free_frames -= 1 << order;
        Ok((frame * FRAME_SIZE) as u64)
    }

    /// Returns a block obtained from [`alloc`](Self::alloc) with the same order.
    pub fn free(&mut self, pa: u64, order: usize) -> Result<(), FrameError> {
        if order > MAX_ORDER {
            return Err(FrameError::OrderTooLarge(order));
        }
        if !pa.is_multiple_of((FRAME_SIZE as u64) << order) {
            return Err(FrameError::Misaligned(pa));
        }
        self.inner.dealloc(pa as usize / FRAME_SIZE, 1 << order);
        self.free_frames += 1 << order;
        Ok(())
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> usize {
        self.free_frames
    }

    /// Frames ever added.
    pub fn total_frames(&self) -> usize {
        self.total_frames
    }
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    OutOfMemory(OutOfMemory),
    Invalid(FrameError),
}

impl From<OutOfMemory> for AllocError {
    fn from(e: OutOfMemory) -> Self {
        AllocError::OutOfMemory(e)
    }
}

/// RAM ranges minus `reserved`, each clamped to `[0, limit)`, sorted and page-aligned inwards.
pub fn usable_ranges(ram: &[PhysRange], reserved: &[PhysRange], limit: u64) -> Vec<PhysRange> {
    let page = FRAME_SIZE as u64;
    let mut out: Vec<PhysRange> = Vec::new();
    for r in ram {
        let end = r.end().min(limit);
        if end > r.base {
            out.push(PhysRange {
                base: r.base,
                size: end - r.base,
            });
        }
    }
    for hole in reserved {
        let (hs, he) = (hole.base / page * page, hole.end().div_ceil(page) * page);
        let mut next = Vec::with_capacity(out.len() + 1);
        for r in out {
            let (s, e) = (r.base, r.end());
            if he <= s || hs >= e {
                next.push(r);
                continue;
            }
            if hs > s {
                next.push(PhysRange {
                    base: s,
                    size: hs - s,
                });
            }
            if he < e {
                next.push(PhysRange {
                    base: he,
                    size: e - he,
                });
            }
        }
        out = next;
    }
    out.sort();
    out.into_iter()
        .filter_map(|r| {
            let s = r.base.div_ceil(page) * page;
            let e = r.end() / page * page;
            (e > s).then_some(PhysRange { base: s, size: e - s })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(base: u64, size: u64) -> PhysRange {
        PhysRange { base, size }
    }

    #[test]
    fn carves_holes_and_clamps() {
        let ram = [r(0x4000_0000, 0x4000_0000)];
        let reserved = [
            r(0x4008_0000, 0x20_0000),
            r(0x4000_0000, 0x123),
            r(0x7FFF_F800, 0x10),
        ];
        let u = usable_ranges(&ram, &reserved, 0x7000_0000);
        assert_eq!(
            u,
            [
                r(0x4000_1000, 0x7_F000),
                r(0x4028_0000, 0x7000_0000 - 0x4028_0000)
            ]
        );
    }

    #[test]
    fn orders_alignment_and_coalescing() {
        let mut a = FrameAllocator::new();
        a.add_range(r(0x10_0000, 4 << 20)); // 1024 frames, one order-10 block (aligned at 1 MiB? no: split)
        let total = a.free_frames();
        assert_eq!(total, 1024);
        for order in 0..=MAX_ORDER {
            if let Ok(pa) = a.alloc(order) {
                assert_eq!(
                    pa % ((FRAME_SIZE as u64) << order),
                    0,
                    "order {order} block misaligned"
                );
                a.free(pa, order).unwrap();
            }
        }
        assert_eq!(a.free_frames(), total);
        // Exhaust with order 0, free two buddies, and the order-1 allocation must find them merged.
        let mut frames = Vec::new();
        while let Ok(pa) = a.alloc(0) {
            frames.push(pa);
        }
        assert_eq!(frames.len(), 1024);
        assert_eq!(a.alloc(0), Err(AllocError::OutOfMemory(OutOfMemory)));
        let buddy = frames
            .iter()
            .copied()
            .find(|p| p % 0x2000 == 0 && frames.contains(&(p + 0x1000)))
            .unwrap();
        frames.retain(|&p| p != buddy && p != buddy + 0x1000);
        a.free(buddy, 0).unwrap();
        a.free(buddy + 0x1000, 0).unwrap();
        assert_eq!(a.alloc(1), Ok(buddy));
        a.free(buddy, 1).unwrap();
        for p in frames {
            a.free(p, 0).unwrap();
        }
        assert_eq!(a.free_frames(), total);
    }

    #[test]
    fn bad_arguments() {
        let mut a = FrameAllocator::new();
        a.add_range(r(0, 1 << 20));
        assert_eq!(
            a.alloc(MAX_ORDER + 1),
            Err(AllocError::Invalid(FrameError::OrderTooLarge(11)))
        );
        assert_eq!(a.free(0x1000, 1), Err(FrameError::Misaligned(0x1000)));
        assert_eq!(a.free_frames(), 256);
    }

    proptest! {
        /// Usable ranges never overlap a reserved range, stay inside RAM and below the limit.
        #[test]
        fn usable_excludes_reserved(
            ram in proptest::collection::vec((0u64..1 << 34, 1u64..1 << 30), 1..4),
            holes in proptest::collection::vec((0u64..1 << 34, 1u64..1 << 26), 0..6),
            limit in (1u64 << 30)..(1 << 35),
        ) {
            let ram: Vec<_> = ram.into_iter().map(|(b, s)| r(b, s)).collect();
            let holes: Vec<_> = holes.into_iter().map(|(b, s)| r(b, s)).collect();
            for u in usable_ranges(&ram, &holes, limit) {
                prop_assert!(u.size > 0 && u.base % 4096 == 0 && u.size % 4096 == 0);
                prop_assert!(u.end() <= limit);
                prop_assert!(ram.iter().any(|m| m.base <= u.base && u.end() <= m.end()));
                for h in &holes {
                    prop_assert!(u.end() <= h.base || u.base >= h.end(), "{u:?} overlaps {h:?}");
                }
            }
        }
    }
}
