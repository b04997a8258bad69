//! The machine an address space runs over: the translation-table engine's [`Platform`], the
//! folio [`FrameSource`], the page metadata, and physical data access.

use crate::folio::{FrameSource, MemMap};
use crate::{Asid, PhysAddr, Platform, Root};

/// Everything [`Space`](super::Space) needs from the machine.
///
/// On the target it is the kernel's linear map (data access), the buddy allocator (table frames
/// *and* folio frames) and the global [`MemMap`]; in host tests it is the hardware model plus a
/// byte store keyed by physical address.
///
/// # Safety
/// An implementation writes any physical address the address-space code names (zeroing, copying,
/// filling frames) and hands out the frames folios live in: the memory safety of every address
/// space rests on it keeping this contract.
///
/// # Contract
/// * [`Platform`]: as the engine documents it (descriptor access, table frames, TLB
///   maintenance, barriers).
/// * [`FrameSource`]: naturally aligned blocks for folios. Frames need not be zeroed: the
///   address-space code zeroes or overwrites every frame before it maps it.
/// * [`mem`](Machine::mem): the page metadata covering every frame `alloc` can return. The
///   reference is `'m`, not tied to the borrow of `self`, so that folio handles obtained
///   through it can be used while the machine is borrowed mutably.
/// * The data operations act on RAM through a kernel mapping (the linear map on the target):
///   `pa` and `len` are page aligned for [`zero`](Machine::zero) and
///   [`copy`](Machine::copy); [`read_bytes`](Machine::read_bytes) and
///   [`write_bytes`](Machine::write_bytes) take any range inside one frame or more. The
///   engine's ordering applies: the address-space code only copies from a frame that no
///   writable mapping can reach any more (it write-protected and invalidated it first) and
///   only zeroes or fills a frame before it is mapped (the `DSB ISHST` of the map publishes
///   the data along with the descriptors).
/// * The root hooks tell the ASID / TTBR layer about roots: [`root_created`] right after a
///   user root is made (before anything is mapped in it), [`root_retiring`] before it is
///   destroyed — when it returns, no CPU may have the root in TTBR0 (switch away first).
///
/// [`root_created`]: Machine::root_created
/// [`root_retiring`]: Machine::root_retiring
pub unsafe trait Machine<'m>: Platform + FrameSource {
    /// The page metadata of all RAM folios come from.
    fn mem(&self) -> &'m MemMap<'m>;
    /// Fills `len` bytes at `pa` with zeroes.
    fn zero(&mut self, pa: PhysAddr, len: u64);
    /// Copies `len` bytes from `src` to `dst` (distinct frames).
    fn copy(&mut self, dst: PhysAddr, src: PhysAddr, len: u64);
    /// Reads `buf.len()` bytes at `pa`.
    fn read_bytes(&self, pa: PhysAddr, buf: &mut [u8]);
    /// Writes `data` at `pa`.
    fn write_bytes(&mut self, pa: PhysAddr, data: &[u8]);
    /// The ASID a new address space's root starts with. A machine that gives address spaces
    /// their ASIDs when it activates them (the target: an
    /// [`AsidAllocator`](crate::AsidAllocator) at every switch, then
    /// [`Space::set_asid`](super::Space::set_asid)) answers [`Asid::RESERVED`]; one that
    /// runs address spaces without activating them (the host model) answers an ASID no live
    /// root has.
    fn new_asid(&mut self) -> Asid;
    /// A user root was created (register it with the ASID layer / a model).
    fn root_created(&mut self, _root: &Root) {}
    /// A user root is about to be destroyed: make sure no CPU runs on it.
    fn root_retiring(&mut self, _root: &Root) {}
}
