//! The fixture of the tests that build a model machine: simulated RAM (where it is, page
//! metadata and a memory map for it, a buddy allocator over it, a checking frame source), and
//! the hardware model with roots registered.

use std::collections::BTreeMap;

use crate::folio::{FolioOrder, FrameSource, MemMap, PageMeta};
use crate::frames::{FrameAllocator, OutOfMemory, PhysRange, MAX_ORDER};
use crate::model::{Model, ModelRoot};
use crate::{Asid, PhysAddr, Root};

/// Start of the simulated RAM folios come from (its contents are simulated only where a test
/// machine keeps them).
pub(crate) const RAM: u64 = 0x4000_0000;
/// Bytes of simulated RAM: four order-10 buddy blocks.
pub(crate) const RAM_SIZE: u64 = 16 << 20;
/// Frames of simulated RAM.
pub(crate) const FRAMES: usize = (RAM_SIZE >> 12) as usize;

/// Zeroed metadata for `n` frames.
pub(crate) fn storage(n: usize) -> Vec<PageMeta> {
    (0..n).map(|_| PageMeta::new()).collect()
}

/// The memory map of the simulated RAM over `storage` (metadata from [`storage`]).
pub(crate) fn memmap(storage: &mut [PageMeta]) -> MemMap<'_> {
    MemMap::new(PhysAddr(RAM), storage).unwrap()
}

/// A buddy allocator over `[RAM, RAM + RAM_SIZE)`.
pub(crate) fn ram_buddy() -> FrameAllocator {
    let mut buddy = FrameAllocator::new();
    buddy.add_range(PhysRange {
        base: RAM,
        size: RAM_SIZE,
    });
    buddy
}

/// A frame source over the buddy allocator that records every block it hands out, refuses
/// double or mismatched frees, and counts.
pub(crate) struct Frames {
    pub buddy: FrameAllocator,
    pub out: BTreeMap<u64, FolioOrder>,
    pub allocs: usize,
    pub frees: usize,
}

impl Frames {
    /// The buddy over `[RAM, RAM + RAM_SIZE)`.
    pub fn new() -> Frames {
        Frames {
            buddy: ram_buddy(),
            out: BTreeMap::new(),
            allocs: 0,
            frees: 0,
        }
    }

    /// Frames currently handed out.
    pub fn frames_out(&self) -> usize {
        self.out.values().map(|o| o.pages()).sum()
    }

    /// Every frame is back and the free blocks have coalesced: the whole RAM can be taken
    /// again as maximal (order-10) blocks, hence also as order-9 blocks.
    pub fn assert_all_back(&mut self) {
        assert!(self.out.is_empty(), "blocks not returned: {:x?}", self.out);
        assert_eq!(self.allocs, self.frees);
        assert_eq!(self.buddy.free_frames(), FRAMES);
        let mut big = Vec::new();
        while let Ok(pa) = self.buddy.alloc(MAX_ORDER) {
            big.push(pa);
        }
        assert_eq!(big.len(), FRAMES >> MAX_ORDER, "free blocks did not coalesce");
        for pa in big {
            self.buddy.free(pa, MAX_ORDER).unwrap();
        }
        let pa = FrameSource::alloc(&mut self.buddy, FolioOrder::PMD).expect("an order-9 block");
        FrameSource::free(&mut self.buddy, pa, FolioOrder::PMD);
    }
}

impl FrameSource for Frames {
    fn alloc(&mut self, order: FolioOrder) -> Result<PhysAddr, OutOfMemory> {
        let pa = FrameSource::alloc(&mut self.buddy, order)?;
        assert!(self.out.insert(pa.0, order).is_none(), "{pa} handed out twice");
        self.allocs += 1;
        Ok(pa)
    }
    fn free(&mut self, pa: PhysAddr, order: FolioOrder) {
        assert_eq!(self.out.remove(&pa.0), Some(order), "free of {pa} with {order:?}");
        self.frees += 1;
        FrameSource::free(&mut self.buddy, pa, order);
    }
}

/// The hardware model with its log off (the tests that run long sequences).
pub(crate) fn quiet_model() -> Model {
    let mut m = Model::new();
    m.set_logging(false);
    m
}

/// A new user root running with `asid`, registered with the model.
pub(crate) fn user_root(m: &mut Model, asid: Asid) -> Root {
    let root = Root::new_user(m, asid).unwrap();
    m.add_root(root.pa(), ModelRoot::User { asid });
    root
}

/// The ASID the test user root runs with.
pub(crate) const USER_ASID: Asid = Asid(7);

/// A model with a kernel and a user root registered.
pub(crate) struct Env {
    pub m: Model,
    pub k: Root,
    pub u: Root,
}

impl Env {
    pub fn new(tlbi_range: bool) -> Env {
        let mut m = Model::new().with_tlbi_range(tlbi_range);
        let k = Root::new_kernel(&mut m).unwrap();
        m.add_root(k.pa(), ModelRoot::Kernel);
        let u = Root::new_user(&mut m, USER_ASID).unwrap();
        m.add_root(u.pa(), ModelRoot::User { asid: USER_ASID });
        Env { m, k, u }
    }

    /// The root for `kernel`, with the model.
    pub fn split(&mut self, kernel: bool) -> (&mut Model, &mut Root) {
        if kernel {
            (&mut self.m, &mut self.k)
        } else {
            (&mut self.m, &mut self.u)
        }
    }

    pub fn check(&self) {
        self.m.check_all();
    }

    /// Retires and destroys both roots; asserts every frame came back.
    pub fn teardown(self) {
        let Env { mut m, k, u } = self;
        for r in [k, u] {
            let tables = m.tables_under(r.pa());
            m.retire_root(r.pa());
            assert_eq!(
                r.destroy(&mut m),
                tables,
                "destroy freed a different number of tables"
            );
        }
        m.check_all();
        assert_eq!(m.live_frames(), 0, "table frames leaked");
    }
}
