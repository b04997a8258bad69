//! Physical memory: ranges of it, which RAM is free at boot, and the buddy frame allocator over it.
//!
//! The frame allocator hands out naturally aligned blocks of 2^order 4 KiB frames, orders
//! 0..=[`MAX_ORDER`] (4 KiB .. 4 MiB), and coalesces a freed block with its free buddy.
//!
//! Placement is deterministic, which the tests rely on: an allocation takes the smallest order
//! that has a free block, the lowest-addressed free block of that order, and splits it, giving
//! the upper halves back as free blocks of the orders in between. [`FrameAllocator::add_range`]
//! cuts a range into maximal naturally aligned blocks (at most order [`MAX_ORDER`]) and does not
//! merge them with free neighbours; [`FrameAllocator::free`] merges a block with its free buddy
//! repeatedly, up to order [`MAX_ORDER`].
//!
//! The free blocks live in zones: a zone covers a span of whole order-[`MAX_ORDER`] blocks (so a
//! block's buddy is always in the same zone) containing one or more added ranges; zones are
//! disjoint and sorted by address. Each zone keeps, in one heap allocation made when ranges are
//! added:
//!
//! - per order, a hierarchical bitmap of free blocks: a leaf bit per block of that order (set:
//!   the block is free), and above it levels whose bit `i` is set whenever word `i` of the level
//!   below is non-zero, up to a single top word. Setting a leaf bit sets the bits above it only
//!   when its word was zero; clearing one changes only the leaf word, and a summary bit left set
//!   over an empty word is cleared by the next search that comes across it. Finding the lowest
//!   free block is one `trailing_zeros` per level.
//! - a bitmap of the frames handed out (set: allocated). A free checks that every frame of the
//!   block is allocated, which catches double frees and frees of memory the allocator never
//!   handed out, before anything changes.
//!
//! A per-order count of free blocks over all zones, and a mask of the orders that have any, let
//! an allocation pick its order with one `trailing_zeros`; it then takes the lowest block of the
//! first zone whose tree of that order is not empty. A free finds its zone by a linear search
//! (there are few). Allocating and freeing never touch the heap; only
//! [`FrameAllocator::add_range`] does. The per-frame metadata of the memory manager
//! (`folio::MemMap`) is separate.
//!
//! [`usable_ranges`] computes free RAM from the device tree's memory ranges minus everything that
//! must survive: the image, the device tree blob, reserved ranges and low firmware memory.

use alloc::boxed::Box;
use alloc::vec;
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

/// Frames in a block of the largest order: zones span whole blocks of it.
const MAX_BLOCK: u64 = 1 << MAX_ORDER;
/// Levels of a zone's hierarchical bitmaps: enough for 2^36 blocks (256 TiB of 4 KiB frames).
const LEVELS: usize = 6;

/// Where one order's hierarchical bitmap lies in its zone's words: level `l` starts at
/// `start[l]`; level 0 holds a bit per block, level `depth - 1` is a single word.
#[derive(Clone, Copy, Debug, Default)]
struct Tree {
    start: [usize; LEVELS],
    depth: usize,
}

impl Tree {
    /// Lays out a tree of `bits` leaf bits from word `at` on; returns it and the word after it.
    fn layout(bits: u64, mut at: usize) -> (Tree, usize) {
        let mut tree = Tree::default();
        let mut bits = bits.max(1);
        loop {
            assert!(tree.depth < LEVELS, "frame allocator: zone too large");
            let words = bits.div_ceil(64) as usize;
            tree.start[tree.depth] = at;
            tree.depth += 1;
            at += words;
            if words == 1 {
                return (tree, at);
            }
            bits = words as u64;
        }
    }

    /// Whether leaf bit `index` is set.
    #[inline(always)]
    fn test(&self, words: &[u64], index: u64) -> bool {
        words[self.start[0] + (index / 64) as usize] & (1 << (index % 64)) != 0
    }

    /// Sets leaf bit `index`, and the summary bits above it that were clear.
    #[inline(always)]
    fn set(&self, words: &mut [u64], mut index: u64) {
        for &start in &self.start[..self.depth] {
            let w = &mut words[start + (index / 64) as usize];
            let old = *w;
            *w = old | 1 << (index % 64);
            if old != 0 {
                return;
            }
            index /= 64;
        }
    }

    /// Clears leaf bit `index`. Only the leaf changes: a summary bit left over an empty word is
    /// cleared by [`first`](Self::first) when it comes across it.
    #[inline(always)]
    fn clear(&self, words: &mut [u64], index: u64) {
        words[self.start[0] + (index / 64) as usize] &= !(1 << (index % 64));
    }

    /// The lowest set leaf bit, if any.
    #[inline(always)]
    fn first(&self, words: &mut [u64]) -> Option<u64> {
        let top = self.start[self.depth - 1];
        'search: loop {
            let word = words[top];
            if word == 0 {
                return None;
            }
            let mut index = u64::from(word.trailing_zeros());
            for level in (0..self.depth - 1).rev() {
                let w = words[self.start[level] + index as usize];
                if w == 0 {
                    // A stale summary bit: clear it and search again.
                    words[self.start[level + 1] + (index / 64) as usize] &= !(1 << (index % 64));
                    continue 'search;
                }
                index = index * 64 + u64::from(w.trailing_zeros());
            }
            return Some(index);
        }
    }
}

/// A span of whole order-[`MAX_ORDER`] blocks holding added ranges, with its free blocks.
struct Zone {
    /// First frame number of the span (a multiple of 2^[`MAX_ORDER`]).
    base: u64,
    /// Frames in the span (a multiple of 2^[`MAX_ORDER`]).
    frames: u64,
    /// The free-block trees per order and the allocated-frames bitmap.
    words: Box<[u64]>,
    /// The free-block tree of each order in `words`.
    trees: [Tree; MAX_ORDER + 1],
    /// Where the allocated-frames bitmap (a bit per frame of the span) starts in `words`.
    used: usize,
}

impl Zone {
    /// An empty zone over `frames` frames from frame `base` (both multiples of 2^MAX_ORDER).
    fn new(base: u64, frames: u64) -> Zone {
        let mut trees = [Tree::default(); MAX_ORDER + 1];
        let mut at = 0;
        for (order, tree) in trees.iter_mut().enumerate() {
            (*tree, at) = Tree::layout(frames >> order, at);
        }
        let used = at;
        let words = vec![0; used + frames.div_ceil(64) as usize].into_boxed_slice();
        Zone {
            base,
            frames,
            words,
            trees,
            used,
        }
    }

    /// Whether frame number `frame` is in the span.
    #[inline(always)]
    fn contains(&self, frame: u64) -> bool {
        frame.wrapping_sub(self.base) < self.frames
    }

    /// Marks block `index` of `order` free.
    fn set_free(&mut self, order: usize, index: u64) {
        self.trees[order].set(&mut self.words, index);
    }

    /// Marks the block of `order` at frame offset `offset` in the span allocated.
    #[inline(always)]
    fn mark_used(&mut self, offset: u64, order: usize) {
        let w = self.used + (offset / 64) as usize;
        if order < 6 {
            self.words[w] |= ((1 << (1 << order)) - 1) << (offset % 64);
        } else {
            self.words[w..w + (1 << (order - 6))].fill(!0);
        }
    }

    /// Marks the block of `order` at frame offset `offset` no longer allocated; false (and no
    /// change) if some frame of it is not allocated.
    #[inline(always)]
    fn unmark_used(&mut self, offset: u64, order: usize) -> bool {
        let w = self.used + (offset / 64) as usize;
        if order < 6 {
            let mask = ((1u64 << (1 << order)) - 1) << (offset % 64);
            if self.words[w] & mask != mask {
                return false;
            }
            self.words[w] &= !mask;
        } else {
            let words = &mut self.words[w..w + (1 << (order - 6))];
            if words.iter().any(|&x| x != !0) {
                return false;
            }
            words.fill(0);
        }
        true
    }

    /// Moves the free blocks and allocated frames of `old` (whose span lies in this zone's) here.
    fn absorb(&mut self, old: &Zone) {
        let shift = old.base - self.base;
        for order in 0..=MAX_ORDER {
            let leaves = old.trees[order].start[0];
            let words = (old.frames >> order).div_ceil(64) as usize;
            for (i, &word) in old.words[leaves..leaves + words].iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let index = i as u64 * 64 + u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    self.set_free(order, index + (shift >> order));
                }
            }
        }
        // The spans start at multiples of 2^MAX_ORDER frames, so the bitmaps line up by words.
        let at = self.used + (shift / 64) as usize;
        let words = old.frames.div_ceil(64) as usize;
        self.words[at..at + words].copy_from_slice(&old.words[old.used..old.used + words]);
    }
}

/// Buddy allocator of physical frames.
pub struct FrameAllocator {
    /// Disjoint, sorted by address.
    zones: Vec<Zone>,
    /// The frame ranges `[start, end)` added, to refuse adding one twice.
    ranges: Vec<(u64, u64)>,
    /// Free blocks of each order, over all zones.
    blocks: [usize; MAX_ORDER + 1],
    /// Bit `order` set iff `blocks[order] > 0`.
    nonempty: u32,
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
            zones: Vec::new(),
            ranges: Vec::new(),
            blocks: [0; MAX_ORDER + 1],
            nonempty: 0,
            total_frames: 0,
            free_frames: 0,
        }
    }

    /// Adds the whole frames inside `range` (partial frames at either end are dropped).
    ///
    /// # Panics
    ///
    /// If some of those frames were added before.
    pub fn add_range(&mut self, range: PhysRange) {
        let frame = FRAME_SIZE as u64;
        let start = range.base.div_ceil(frame);
        let end = range.end() / frame;
        if end <= start {
            return;
        }
        assert!(
            self.ranges.iter().all(|&(s, e)| end <= s || start >= e),
            "frame allocator: frames {start:#x}..{end:#x} overlap a range added before"
        );
        self.ranges.push((start, end));
        let z = self.zone_for(start, end);
        let zone = &mut self.zones[z];
        // Maximal naturally aligned blocks, at most of MAX_ORDER, from the start up.
        let mut at = start;
        while at < end {
            let align = if at == 0 {
                MAX_BLOCK
            } else {
                1 << at.trailing_zeros()
            };
            let fit = 1 << (63 - (end - at).leading_zeros());
            let size = align.min(fit).min(MAX_BLOCK);
            let order = size.trailing_zeros() as usize;
            zone.set_free(order, (at - zone.base) >> order);
            self.blocks[order] += 1;
            self.nonempty |= 1 << order;
            at += size;
        }
        self.total_frames += (end - start) as usize;
        self.free_frames += (end - start) as usize;
    }

    /// The zone the frames `[start, end)` go in: one spanning them, made by growing (merging)
    /// the zones whose spans meet theirs, or a new one. Returns its index.
    fn zone_for(&mut self, start: u64, end: u64) -> usize {
        let mut lo = start / MAX_BLOCK * MAX_BLOCK;
        let mut hi = end.next_multiple_of(MAX_BLOCK);
        let first = self.zones.partition_point(|z| z.base + z.frames <= lo);
        let last = first + self.zones[first..].partition_point(|z| z.base < hi);
        if last == first + 1
            && self.zones[first].base <= lo
            && hi <= self.zones[first].base + self.zones[first].frames
        {
            return first;
        }
        if last > first {
            lo = lo.min(self.zones[first].base);
            hi = hi.max(self.zones[last - 1].base + self.zones[last - 1].frames);
        }
        let mut zone = Zone::new(lo, hi - lo);
        for old in self.zones.drain(first..last) {
            zone.absorb(&old);
        }
        self.zones.insert(first, zone);
        first
    }

    /// Allocates a block of 2^order frames, aligned to its size; returns its physical address.
    pub fn alloc(&mut self, order: usize) -> Result<u64, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::Invalid(FrameError::OrderTooLarge(order)));
        }
        let orders = self.nonempty >> order;
        if orders == 0 {
            return Err(AllocError::OutOfMemory(OutOfMemory));
        }
        let from = order + orders.trailing_zeros() as usize;
        // The first zone in address order with a block of `from` has the lowest one.
        let (zone, index) = self
            .zones
            .iter_mut()
            .find_map(|z| z.trees[from].first(&mut z.words).map(|i| (z, i)))
            .expect("frame allocator: free-block count without a free block");
        let trees = &zone.trees;
        trees[from].clear(&mut zone.words, index);
        let offset = index << from;
        // The upper halves of the splits go back free, one per order below `from`.
        for o in (order..from).rev() {
            trees[o].set(&mut zone.words, (offset >> o) | 1);
        }
        zone.mark_used(offset, order);
        let pa = (zone.base + offset) * FRAME_SIZE as u64;
        for o in order..from {
            self.blocks[o] += 1;
        }
        self.nonempty |= (1 << from) - (1 << order);
        self.blocks[from] -= 1;
        if self.blocks[from] == 0 {
            self.nonempty &= !(1 << from);
        }
        self.free_frames -= 1 << order;
        Ok(pa)
    }

    /// Returns a block obtained from [`alloc`](Self::alloc) with the same order.
    ///
    /// # Panics
    ///
    /// If some frame of the block is not allocated: a double free, or a block the allocator never
    /// handed out (outside every added range, or a different order than allocated). The
    /// allocator's state is unchanged then.
    pub fn free(&mut self, pa: u64, order: usize) -> Result<(), FrameError> {
        if order > MAX_ORDER {
            return Err(FrameError::OrderTooLarge(order));
        }
        if !pa.is_multiple_of((FRAME_SIZE as u64) << order) {
            return Err(FrameError::Misaligned(pa));
        }
        let frame = pa / FRAME_SIZE as u64;
        let Some(zone) = self.zones.iter_mut().find(|z| z.contains(frame)) else {
            panic!("frame allocator: free of {pa:#x} (order {order}) outside all its memory");
        };
        let mut offset = frame - zone.base;
        // Checked in release builds too: going on would corrupt the free-block trees.
        assert!(
            zone.unmark_used(offset, order),
            "frame allocator: free of {pa:#x} (order {order}), which is not allocated with that \
             order: a double free or a stray address"
        );
        let (trees, words) = (&zone.trees, &mut *zone.words);
        let mut o = order;
        while o < MAX_ORDER {
            let buddy = (offset >> o) ^ 1;
            if !trees[o].test(words, buddy) {
                break;
            }
            trees[o].clear(words, buddy);
            self.blocks[o] -= 1;
            if self.blocks[o] == 0 {
                self.nonempty &= !(1 << o);
            }
            offset &= !(1 << o);
            o += 1;
        }
        trees[o].set(words, offset >> o);
        self.blocks[o] += 1;
        self.nonempty |= 1 << o;
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

    /// Frames `[start, end)` as a range with partial frames at both ends (dropped by `add_range`).
    fn frames(start: u64, end: u64) -> PhysRange {
        let base = (start * 4096).saturating_sub(0x123);
        PhysRange {
            base,
            size: end * 4096 + 0x456 - base,
        }
    }

    #[test]
    fn crate_example_placement() {
        // Frames [0, 3): an order-1 block at 0 and an order-0 block at 2.
        let mut a = FrameAllocator::new();
        a.add_range(frames(0, 3));
        assert_eq!(a.total_frames(), 3);
        assert_eq!(a.alloc(1), Ok(0));
        assert_eq!(a.alloc(0), Ok(0x2000));
        assert_eq!(a.alloc(0), Err(AllocError::OutOfMemory(OutOfMemory)));
        // Splits hand out the lowest half and keep the upper halves free.
        let mut a = FrameAllocator::new();
        a.add_range(frames(1024, 2048));
        assert_eq!(a.alloc(0), Ok(1024 << 12));
        assert_eq!(a.alloc(3), Ok(1032 << 12));
        assert_eq!(a.alloc(0), Ok(1025 << 12));
        assert_eq!(a.alloc(1), Ok(1026 << 12));
        assert_eq!(a.free_frames(), 1024 - 12);
    }

    #[test]
    fn exhaustion_and_merging_back() {
        let mut a = FrameAllocator::new();
        a.add_range(r(0x4000_0000, 16 << 20));
        for order in [0, 4, MAX_ORDER] {
            let mut got = Vec::new();
            while let Ok(pa) = a.alloc(order) {
                got.push(pa);
            }
            assert_eq!(got.len(), 4096 >> order);
            assert_eq!(a.free_frames(), 0);
            for o in 0..=MAX_ORDER {
                assert_eq!(a.alloc(o), Err(AllocError::OutOfMemory(OutOfMemory)));
            }
            // Free in a scrambled order; everything must merge back to order-10 blocks.
            let n = got.len();
            for i in 0..n {
                let j = (i * 7919) % n;
                a.free(got[j], order).unwrap();
            }
            assert_eq!(a.free_frames(), 4096);
            let big: Vec<_> = (0..4).map(|_| a.alloc(MAX_ORDER).unwrap()).collect();
            assert_eq!(big, [0x4000_0000, 0x4040_0000, 0x4080_0000, 0x40C0_0000]);
            for pa in big {
                a.free(pa, MAX_ORDER).unwrap();
            }
        }
    }

    #[test]
    fn disjoint_ranges() {
        let mut a = FrameAllocator::new();
        // Added out of order, far apart, and two sharing one order-10 span.
        a.add_range(frames(5000, 5010));
        a.add_range(frames(1 << 24, (1 << 24) + 1024));
        a.add_range(frames(3, 8));
        a.add_range(frames(0, 3));
        a.add_range(frames(4096, 4098));
        assert_eq!(a.total_frames(), 10 + 1024 + 8 + 2);
        // Order 0: frame 2 (the only order-0 block of [0, 3)); 3 is order 0 too but higher.
        assert_eq!(a.alloc(0), Ok(2 << 12));
        assert_eq!(a.alloc(0), Ok(3 << 12));
        // Freeing 2 and 3 merges across the two ranges: [2, 4) then [0, 4) then [0, 8).
        a.free(2 << 12, 0).unwrap();
        a.free(3 << 12, 0).unwrap();
        assert_eq!(a.alloc(3), Ok(0));
        assert_eq!(a.alloc(MAX_ORDER), Ok(1 << 36));
        assert_eq!(a.alloc(MAX_ORDER), Err(AllocError::OutOfMemory(OutOfMemory)));
        assert_eq!(a.alloc(1), Ok(4096 << 12));
        // [5000, 5010) is an order-3 block at 5000 and an order-1 block at 5008.
        assert_eq!(a.alloc(1), Ok(5008 << 12));
        assert_eq!(a.free_frames(), 10 + 1024 + 8 + 2 - 8 - 1024 - 4);
    }

    #[test]
    fn errors_leave_state_alone() {
        let mut a = FrameAllocator::new();
        assert_eq!(a.alloc(0), Err(AllocError::OutOfMemory(OutOfMemory)));
        a.add_range(r(0x1000, 0x800)); // no whole frame
        assert_eq!(a.total_frames(), 0);
        a.add_range(r(0x10_0000, 0x10_0000));
        assert_eq!(
            a.alloc(11),
            Err(AllocError::Invalid(FrameError::OrderTooLarge(11)))
        );
        assert_eq!(a.free(0x10_0000, 11), Err(FrameError::OrderTooLarge(11)));
        assert_eq!(a.free(0x10_1000, 3), Err(FrameError::Misaligned(0x10_1000)));
        assert_eq!(a.alloc(8), Ok(0x10_0000));
        assert_eq!(a.alloc(8), Err(AllocError::OutOfMemory(OutOfMemory)));
        assert_eq!(a.free_frames(), 0);
    }

    /// Runs `f` on `a` and checks that it panicked.
    fn panics(a: &mut FrameAllocator, f: impl FnOnce(&mut FrameAllocator)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(a)));
        assert!(r.is_err());
    }

    #[test]
    fn bad_frees_panic_without_damage() {
        let mut a = FrameAllocator::new();
        a.add_range(frames(256, 512));
        let x = a.alloc(2).unwrap();
        let y = a.alloc(6).unwrap();
        a.free(x, 2).unwrap();
        panics(&mut a, |a| a.free(x, 2).unwrap()); // double free
        panics(&mut a, |a| a.free(x, 0).unwrap()); // a part of a free block
        panics(&mut a, |a| a.free(y, 7).unwrap()); // larger than allocated
        panics(&mut a, |a| a.free(0, 0).unwrap()); // outside every zone
        panics(&mut a, |a| a.free(1024 << 12, 4).unwrap()); // in no range, outside every zone
        panics(&mut a, |a| a.free(0x1F_0000, 4).unwrap()); // in the zone, in no range
        panics(&mut a, |a| a.add_range(frames(500, 600))); // overlaps
        assert_eq!(a.free_frames(), 256 - 64);
        a.free(y, 6).unwrap();
        assert_eq!(a.alloc(8), Ok(256 << 12));
    }

    /// An operation of the differential test.
    #[derive(Clone, Debug)]
    enum Op {
        /// Add the next range not added yet.
        Add,
        Alloc(usize),
        /// Free the outstanding block at this index (modulo their number).
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => Just(Op::Add),
            6 => (0..=MAX_ORDER).prop_map(Op::Alloc),
            2 => (0..=3usize).prop_map(Op::Alloc),
            6 => any::<usize>().prop_map(Op::Free),
        ]
    }

    /// Disjoint frame ranges cut from `[base, base + 8192)` at `cuts`, each kept or not; adjacent
    /// kept pieces are separate ranges.
    fn ranges(base: u64, mut cuts: Vec<u64>, keep: Vec<bool>) -> Vec<(u64, u64)> {
        cuts.push(0);
        cuts.push(8192);
        cuts.sort();
        cuts.dedup();
        cuts.windows(2)
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(w, _)| (base + w[0], base + w[1]))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The same calls give the same addresses, failures and free counts as the reference
        /// buddy allocator (`buddy_system_allocator`).
        #[test]
        fn matches_reference(
            base in prop_oneof![Just(0u64), (1u64..1 << 20), (1u64..64).prop_map(|b| b << 14)],
            cuts in proptest::collection::vec(0u64..8192, 0..12),
            keep in proptest::collection::vec(any::<bool>(), 13),
            mut order_of_adds in proptest::collection::vec(any::<u32>(), 13),
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let mut pieces = ranges(base, cuts, keep);
            order_of_adds.truncate(pieces.len());
            // Add the pieces in a random order.
            let mut keyed: Vec<_> = pieces.drain(..).zip(order_of_adds.iter().chain(core::iter::repeat(&0))).collect();
            keyed.sort_by_key(|(_, k)| **k);
            let mut pending: Vec<_> = keyed.into_iter().map(|(p, _)| p).collect();
            pending.reverse();
            // Start with one range so allocations have something to work on.
            let mut ops = ops;
            ops.insert(0, Op::Add);

            let mut ours = FrameAllocator::new();
            let mut reference = buddy_system_allocator::FrameAllocator::<{ MAX_ORDER + 1 }>::new();
            let mut out: Vec<(u64, usize)> = Vec::new();
            let mut free = 0usize;
            for op in ops {
                match op {
                    Op::Add => {
                        let Some((s, e)) = pending.pop() else { continue };
                        ours.add_range(frames(s, e));
                        reference.add_frame(s as usize, e as usize);
                        free += (e - s) as usize;
                    }
                    Op::Alloc(order) => {
                        let got = ours.alloc(order);
                        let want = reference.alloc(1 << order);
                        match want {
                            Some(f) => {
                                prop_assert_eq!(got, Ok(f as u64 * 4096), "alloc({})", order);
                                out.push((f as u64 * 4096, order));
                                free -= 1 << order;
                            }
                            None => prop_assert_eq!(got, Err(AllocError::OutOfMemory(OutOfMemory))),
                        }
                    }
                    Op::Free(i) => {
                        if out.is_empty() { continue }
                        let (pa, order) = out.swap_remove(i % out.len());
                        prop_assert_eq!(ours.free(pa, order), Ok(()));
                        reference.dealloc((pa / 4096) as usize, 1 << order);
                        free += 1 << order;
                    }
                }
                prop_assert_eq!(ours.free_frames(), free);
            }
            // Free everything: both must then hand out the same blocks again.
            for (pa, order) in out.drain(..) {
                ours.free(pa, order).unwrap();
                reference.dealloc((pa / 4096) as usize, 1 << order);
            }
            prop_assert_eq!(ours.free_frames(), ours.total_frames());
            for order in (0..=MAX_ORDER).rev().chain(0..=MAX_ORDER) {
                let got = ours.alloc(order).ok();
                let want = reference.alloc(1 << order).map(|f| f as u64 * 4096);
                prop_assert_eq!(got, want, "alloc({}) after freeing all", order);
            }
        }
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
