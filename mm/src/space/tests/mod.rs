//! Host tests of address spaces, over the hardware model (`mm::model`) plus a byte store of
//! simulated RAM keyed by physical address.
//!
//! * `units`: the policies one by one — COW between parent and child, reuse, whole-folio COW,
//!   pins across fork and unshare, segmentation faults, fork batching counts, PROT_NONE,
//!   shared memory;
//! * `files`: read-only files in RAM mapped shared and private — reads map the file's pages,
//!   private writes copy through the object's fault handler, bus errors past the end, fork,
//!   pins, private mappings of shared-memory objects;
//! * `adopted`: files made of frames that already hold their bytes (`Shm::from_frames`) —
//!   mapped in place in several spaces, copied privately, forked, and never given to the frame
//!   source;
//! * `oom`: allocation failure injected at every allocation point of fault, COW, fork, pin,
//!   file creation and file copy-on-write;
//! * `props`: random operation sequences over several address spaces (anonymous memory,
//!   shared-memory objects and files) against a reference model that keeps plain bytes per
//!   process.
//!
//! Every access goes through the model MMU (its TLB included): a fault calls
//! [`Space::handle_fault`] and the access is retried, as the data-abort hook does.

mod adopted;
mod files;
mod oom;
mod props;
mod shared_tables;
mod units;

use std::collections::HashMap;

use super::*;
use crate::fixture::{memmap, quiet_model, ram_buddy, storage, FRAMES};
use crate::folio::{FolioOrder, FrameSource, MemMap};
use crate::frames::{FrameAllocator, OutOfMemory};
use crate::model::{Model, ModelRoot};
use crate::{Descriptor, Platform, RootKind, TlbOp};

const KB4: usize = 4096;

/// The machine of the tests: the model for tables and TLBs, a buddy allocator over the
/// simulated RAM for folios, a sparse byte store for RAM contents, and allocation-failure
/// injection counting table and folio allocations together.
pub(crate) struct TestMachine<'m> {
    pub model: Model,
    buddy: FrameAllocator,
    /// Blocks handed out: address → order.
    out: HashMap<u64, FolioOrder>,
    mem: &'m MemMap<'m>,
    /// Page contents; a page not present holds junk (a pattern derived from its address), so
    /// that a frame mapped without being zeroed or copied is noticed.
    data: HashMap<u64, Box<[u8; KB4]>>,
    /// Fail the n-th allocation (1-based) after arming: once, or (`persistent`) that one and
    /// every later one.
    fail_at: Option<u64>,
    persistent: bool,
    /// Allocations (tables and folios) attempted since arming.
    pub attempts: u64,
    /// Whether an injected failure happened since arming.
    pub failed: bool,
    /// The exception level accesses are made at (the application may run at either).
    pub el: El,
}

fn junk(pa: u64) -> [u8; KB4] {
    let mut b = [0u8; KB4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = 0xA5 ^ (pa >> 12) as u8 ^ (i as u8).wrapping_mul(7);
    }
    b
}

impl<'m> TestMachine<'m> {
    pub fn new(mem: &'m MemMap<'m>) -> TestMachine<'m> {
        TestMachine {
            model: quiet_model(),
            buddy: ram_buddy(),
            out: HashMap::new(),
            mem,
            data: HashMap::new(),
            fail_at: None,
            persistent: false,
            attempts: 0,
            failed: false,
            el: El::El0,
        }
    }

    /// Fails the `n`-th allocation from now (1-based), once; `None` disarms.
    pub fn fail_nth(&mut self, n: Option<u64>) {
        self.fail_at = n;
        self.persistent = false;
        self.attempts = 0;
        self.failed = false;
    }

    /// Fails the `n`-th allocation from now and every later one (memory stays exhausted).
    pub fn fail_from(&mut self, n: u64) {
        self.fail_nth(Some(n));
        self.persistent = true;
    }

    /// Arms `fail_from(n)` if `persistent`, else `fail_nth(n)`.
    pub fn arm(&mut self, n: u64, persistent: bool) {
        if persistent {
            self.fail_from(n);
        } else {
            self.fail_nth(Some(n));
        }
    }

    fn should_fail(&mut self) -> bool {
        self.attempts += 1;
        let hit = match self.fail_at {
            Some(n) if self.persistent => self.attempts >= n,
            Some(n) => self.attempts == n,
            None => false,
        };
        if hit {
            self.failed = true;
            return true;
        }
        false
    }

    /// Takes a block of `order` from the buddy outside the frame source (nothing records it as
    /// handed out): frames that some other owner holds, as the kernel image holds its own.
    pub fn carve(&mut self, order: FolioOrder) -> PhysAddr {
        PhysAddr(self.buddy.alloc(order.get() as usize).expect("room to carve"))
    }

    /// Gives a block from [`carve`](Self::carve) back to the buddy.
    pub fn uncarve(&mut self, pa: PhysAddr, order: FolioOrder) {
        self.buddy.free(pa.0, order.get() as usize).unwrap();
    }

    /// Frames free in the buddy.
    pub fn buddy_free(&self) -> usize {
        self.buddy.free_frames()
    }

    /// Frames of folios currently allocated.
    pub fn frames_out(&self) -> usize {
        self.out.values().map(|o| o.pages()).sum()
    }

    /// The stored contents of the page at `pa`, or `None` if it holds junk (never zeroed,
    /// copied or written since allocation).
    pub fn page_data(&self, pa: u64) -> Option<&[u8; KB4]> {
        self.data.get(&pa).map(|b| &**b)
    }

    fn page(&self, pa: u64) -> [u8; KB4] {
        self.data.get(&pa).map_or_else(|| junk(pa), |b| **b)
    }

    fn page_mut(&mut self, pa: u64) -> &mut [u8; KB4] {
        self.data.entry(pa).or_insert_with(|| Box::new(junk(pa)))
    }
}

// SAFETY: forwards to the model, which writes only its simulated memory.
unsafe impl Platform for TestMachine<'_> {
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor {
        self.model.read(table, index)
    }
    fn write(&mut self, table: PhysAddr, index: usize, desc: Descriptor) {
        self.model.write(table, index, desc)
    }
    fn alloc_table(&mut self) -> Result<PhysAddr, OutOfMemory> {
        if self.should_fail() {
            return Err(OutOfMemory);
        }
        self.model.alloc_table()
    }
    fn free_table(&mut self, table: PhysAddr) {
        self.model.free_table(table)
    }
    fn tlb_maintenance(&mut self, ops: &[TlbOp]) {
        self.model.tlb_maintenance(ops)
    }
    fn publish(&mut self) {
        self.model.publish()
    }
    fn has_tlbi_range(&self) -> bool {
        self.model.has_tlbi_range()
    }
}

impl FrameSource for TestMachine<'_> {
    fn alloc(&mut self, order: FolioOrder) -> Result<PhysAddr, OutOfMemory> {
        if self.should_fail() {
            return Err(OutOfMemory);
        }
        let pa = self.buddy.alloc(order.get() as usize).map_err(|_| OutOfMemory)?;
        assert!(self.out.insert(pa, order).is_none(), "{pa:#x} handed out twice");
        Ok(PhysAddr(pa))
    }
    fn free(&mut self, pa: PhysAddr, order: FolioOrder) {
        assert_eq!(self.out.remove(&pa.0), Some(order), "bad free of {pa}");
        for i in 0..order.pages() as u64 {
            self.data.remove(&(pa.0 + i * KB4 as u64));
        }
        self.buddy.free(pa.0, order.get() as usize).unwrap();
    }
}

// SAFETY: data lives in a byte store keyed by physical address, frames come from a test
// frame allocator over simulated RAM; no real memory is written.
unsafe impl<'m> Machine<'m> for TestMachine<'m> {
    fn mem(&self) -> &'m MemMap<'m> {
        self.mem
    }
    fn zero(&mut self, pa: PhysAddr, len: u64) {
        assert!(pa.is_aligned(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE));
        for off in (0..len).step_by(KB4) {
            self.data.insert(pa.0 + off, Box::new([0; KB4]));
        }
    }
    fn copy(&mut self, dst: PhysAddr, src: PhysAddr, len: u64) {
        assert!(dst.is_aligned(PAGE_SIZE) && src.is_aligned(PAGE_SIZE));
        assert!(len.is_multiple_of(PAGE_SIZE) && dst != src);
        for off in (0..len).step_by(KB4) {
            let b = self.page(src.0 + off);
            self.data.insert(dst.0 + off, Box::new(b));
        }
    }
    fn read_bytes(&self, pa: PhysAddr, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = pa.0 + i as u64;
            *b = self.page(a & !(PAGE_SIZE - 1))[(a & (PAGE_SIZE - 1)) as usize];
        }
    }
    fn write_bytes(&mut self, pa: PhysAddr, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = pa.0 + i as u64;
            self.page_mut(a & !(PAGE_SIZE - 1))[(a & (PAGE_SIZE - 1)) as usize] = *b;
        }
    }
    fn new_asid(&mut self) -> Asid {
        // The model runs every root without activating it: the lowest ASID no live root has.
        (1..=u16::MAX)
            .map(Asid)
            .find(|&a| !self.model.asid_in_use(a))
            .expect("ASIDs exhausted")
    }
    fn root_created(&mut self, root: &Root) {
        let RootKind::User { asid } = root.kind() else {
            panic!("address spaces have user roots");
        };
        self.model.add_root(root.pa(), ModelRoot::User { asid });
    }
    fn root_retiring(&mut self, root: &Root) {
        self.model.retire_root(root.pa());
    }
}

/// Runs `f` with a fresh machine.
pub(crate) fn with_machine<R>(f: impl FnOnce(&mut TestMachine<'_>) -> R) -> R {
    let mut st = storage(FRAMES);
    let mem = memmap(&mut st);
    let mut m = TestMachine::new(&mem);
    f(&mut m)
}

/// A new space.
pub(crate) fn new_space(m: &mut TestMachine<'_>) -> Space {
    Space::new(m).unwrap()
}

/// Forks `s`.
pub(crate) fn fork(m: &mut TestMachine<'_>, s: &mut Space) -> Result<Space, SpaceError> {
    s.fork(m)
}

/// What an access through the model MMU did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    pub n: u32,
}

/// Translates `va` for `access` through the model MMU (TLB first, permissions of `m.el`), calling
/// the fault handler and retrying on a fault, as the abort hook does. Returns the physical
/// address, or the handler's error.
pub(crate) fn translate(
    m: &mut TestMachine<'_>,
    s: &mut Space,
    va: u64,
    access: Access,
    faults: &mut Faults,
) -> Result<PhysAddr, FaultError> {
    let root = s.root().pa();
    let asid = s.root().asid().unwrap().0;
    for _ in 0..6 {
        match m.model.access(root, asid, VirtAddr(va), m.el, access) {
            Ok(pa) => return Ok(pa),
            Err(f) => {
                faults.n += 1;
                s.handle_fault(m, VirtAddr(va), access, m.el, f.kind)?;
            }
        }
    }
    panic!("access to {va:#x} ({access:?}) keeps faulting");
}

/// Writes `data` at `va` (any length, any alignment) through the MMU.
pub(crate) fn write(
    m: &mut TestMachine<'_>,
    s: &mut Space,
    va: u64,
    data: &[u8],
) -> Result<Faults, FaultError> {
    let mut f = Faults::default();
    let mut done = 0;
    while done < data.len() {
        let a = va + done as u64;
        let n = ((PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize).min(data.len() - done);
        let pa = translate(m, s, a, Access::Write, &mut f)?;
        m.write_bytes(pa, &data[done..done + n]);
        done += n;
    }
    Ok(f)
}

/// Reads `len` bytes at `va` through the MMU.
pub(crate) fn read(
    m: &mut TestMachine<'_>,
    s: &mut Space,
    va: u64,
    len: usize,
) -> Result<Vec<u8>, FaultError> {
    let mut f = Faults::default();
    let mut out = vec![0; len];
    let mut done = 0;
    while done < len {
        let a = va + done as u64;
        let n = ((PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize).min(len - done);
        let pa = translate(m, s, a, Access::Read, &mut f)?;
        m.read_bytes(pa, &mut out[done..done + n]);
        done += n;
    }
    Ok(out)
}

/// Every check: the model's TLB coherence and contiguous groups, each space's invariants
/// and the folio checker over all of them.
pub(crate) fn check(m: &TestMachine<'_>, spaces: &[&Space]) {
    m.model.check_tlb_coherent();
    m.model.check_contiguous();
    if let Err(e) = check_spaces(m, spaces) {
        panic!("check failed: {e:?}");
    }
}

/// Exits every space and asserts that every frame and table came back.
pub(crate) fn teardown(m: &mut TestMachine<'_>, spaces: Vec<Space>) {
    for s in spaces {
        s.exit(m);
    }
    assert_eq!(m.mem().live_space_ids(), [], "spaces left live");
    m.model.check_all();
    assert_eq!(m.frames_out(), 0, "folio frames leaked");
    assert_eq!(m.model.live_frames(), 0, "table frames leaked");
    assert_eq!(m.buddy.free_frames(), FRAMES);
}

/// Whether the entry of `va` in `s` has the Contiguous bit.
pub(crate) fn folded(m: &TestMachine<'_>, s: &Space, va: u64) -> bool {
    s.root().pte_get(m, VirtAddr(va)).is_some_and(|d| d.contiguous())
}
