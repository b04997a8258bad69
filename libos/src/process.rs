//! Processes on the machine: user address spaces ([`mm::space::Space`](crate::mm::space)) run
//! over the real MMU, with page faults resolved by the memory manager. A [`Process`] owns its
//! address space and speaks for the machine ([`TargetMachine`]): apps map, protect, pin and fork
//! through it without naming the machine.

use crate::mm::space::{
    Access, El, FaultError, FaultKind, ForkMode, Peek, PinHandle, Shm, Space, SpaceError,
};
use crate::mm::vma::{MapAlign, Placement, VmProt, VmaKind};
use crate::mm::{AsidContext, VirtAddr};
pub use crate::platform::TargetMachine;
use crate::runtime;
use arch::esr::{AbortAccess, FaultStatus};
use arch::exception::{Disposition, TrapFrame};
use core::sync::atomic::{AtomicPtr, Ordering};
use spin::Mutex;

/// A process: a user address space with process-fork semantics, run on this core through
/// [`Process::run`].
pub struct Process {
    space: Option<Space>,
    asid: AsidContext,
}

/// An access the memory manager could not resolve: the application's segmentation fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segfault {
    /// Faulting address.
    pub va: u64,
    /// What the access was.
    pub access: Access,
    /// Why it failed (`Segv` with its cause, `Bus` past the end of a mapped file, or `Oom`).
    pub error: FaultError,
}

/// The space whose faults the abort hook resolves (set by `run` for its duration).
/// Per CPU (indexed by `arch::cpu::index`).
static CURRENT: [AtomicPtr<Space>; arch::cpu::MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; arch::cpu::MAX_CPUS];

/// This CPU's current space.
fn current() -> &'static AtomicPtr<Space> {
    &CURRENT[arch::cpu::index()]
}
static LAST_SEGFAULT: Mutex<Option<Segfault>> = Mutex::new(None);
/// Abandon code of a segfault inside `run`.
const CODE_SEGV: u64 = 0x5e6f;

impl Process {
    /// A process with an empty address space.
    pub fn new() -> Result<Process, SpaceError> {
        let space = Space::new(&mut TargetMachine)?;
        Ok(Process {
            space: Some(space),
            asid: AsidContext::new(),
        })
    }

    /// The address space, to read its state (regions, statistics, fork mode).
    pub fn space(&self) -> &Space {
        self.space.as_ref().expect("process exited")
    }

    fn space_mut(&mut self) -> &mut Space {
        self.space.as_mut().expect("process exited")
    }

    /// Maps `len` bytes anywhere (`mmap(NULL, len, prot, ...)`), aligned for 64 KiB folios when
    /// `len` is at least that large. The region's pages are demand-paged by [`run`](Self::run).
    pub fn mmap(&mut self, len: u64, prot: VmProt, kind: VmaKind<Shm>) -> Result<VirtAddr, SpaceError> {
        let align = if len >= 64 << 10 {
            MapAlign::Size64K
        } else {
            MapAlign::Page
        };
        self.map(Placement::Any, len, prot, kind, align)
    }

    /// Maps with an explicit placement and alignment (`MAP_FIXED`, hints, 2 MiB alignment). On
    /// failure the object of `kind` is released (see [`Space::mmap`]).
    pub fn map(
        &mut self,
        placement: Placement,
        len: u64,
        prot: VmProt,
        kind: VmaKind<Shm>,
        align: MapAlign,
    ) -> Result<VirtAddr, SpaceError> {
        self.space_mut()
            .mmap(&mut TargetMachine, placement, len, prot, kind, align)
    }

    /// Unmaps `[addr, addr + len)`.
    pub fn munmap(&mut self, addr: VirtAddr, len: u64) -> Result<(), SpaceError> {
        self.space_mut().munmap(&mut TargetMachine, addr, len)
    }

    /// Changes the protection of `[addr, addr + len)`.
    pub fn mprotect(&mut self, addr: VirtAddr, len: u64, prot: VmProt) -> Result<(), SpaceError> {
        self.space_mut().mprotect(&mut TargetMachine, addr, len, prot)
    }

    /// Drops the pages of `[addr, addr + len)` (`MADV_DONTNEED`): private pages read as zero again.
    pub fn madvise_dontneed(&mut self, addr: VirtAddr, len: u64) -> Result<(), SpaceError> {
        self.space_mut().madvise_dontneed(&mut TargetMachine, addr, len)
    }

    /// Pins the pages of `[va, va + len)` (for DMA or a kernel access that must not fault).
    pub fn pin(&mut self, va: VirtAddr, len: u64, write: bool) -> Result<PinHandle, FaultError> {
        self.space_mut().pin(&mut TargetMachine, va, len, write)
    }

    /// Releases a pin.
    pub fn unpin(&mut self, h: PinHandle) {
        self.space_mut().unpin(&mut TargetMachine, h)
    }

    /// What backs the page at `va`, without faulting anything in.
    pub fn peek(&self, va: VirtAddr) -> Peek {
        self.space().peek(&TargetMachine, va)
    }

    /// How the next forks copy this address space (children inherit it).
    pub fn set_fork_mode(&mut self, mode: ForkMode) {
        self.space_mut().set_fork_mode(mode)
    }

    /// Forks: a child whose private memory is copy-on-write and whose shared memory is shared.
    pub fn fork(&mut self) -> Result<Process, SpaceError> {
        let child = self.space_mut().fork(&mut TargetMachine)?;
        Ok(Process {
            space: Some(child),
            asid: AsidContext::new(),
        })
    }

    /// Runs `f` with this address space in TTBR0: `f` touches user addresses directly (with
    /// Privileged Access Never lifted for its duration where the CPU has it), and page
    /// faults are resolved by the memory manager (demand paging, copy-on-write, access flag). An
    /// access that cannot be resolved ends `f` and returns `Err(Segfault)`; destructors of `f`'s
    /// frames do not run in that case (like a signal that kills the computation).
    pub fn run<T>(&mut self, f: impl FnOnce() -> T) -> Result<T, Segfault> {
        match self.run_until(f) {
            Ok(v) => Ok(v),
            Err(RunEnd::Segfault(s)) => Err(s),
            Err(RunEnd::Abandoned(code)) => {
                // A panic or timeout inside `f` belongs to whoever encloses `run`.
                arch::exception::abandon(code);
                unreachable!("process run outside an abandonable context aborted with {code}")
            }
        }
    }

    /// Like [`run`](Self::run), but an abandon code other than a segfault's (a user program's
    /// exit, raised by the system-call hook) is returned to the caller instead of passed on.
    pub(crate) fn run_until<T>(&mut self, f: impl FnOnce() -> T) -> Result<T, RunEnd> {
        let space: *mut Space = self.space.as_mut().expect("process exited");
        // SAFETY: `space` points at our live space, exclusively borrowed through `self` for the
        // whole call.
        let root_pa = unsafe { (*space).root().pa().0 };
        // SAFETY: the root is our space's, live while the process is; the space's exit retires it
        // from TTBR0 (`Machine::root_retiring`) before destroying it.
        let asid = unsafe { crate::ttbr0::switch_ttbr0(root_pa, &mut self.asid) };
        // SAFETY: as above.
        unsafe { (*space).set_asid(asid) };
        let outer = current().swap(space, Ordering::AcqRel);
        let outer_hook = runtime::fault_hook();
        runtime::set_fault_hook(Some(on_abort));
        let mut out = None;
        // `f` touches user memory by user address: PAN is clear for its duration only (an
        // abandoned call puts PAN back itself; see `arch::cpu::UserAccess`).
        let user_access = arch::cpu::UserAccess::open();
        let r = crate::runtime::abandonable(|| out = Some(f()));
        drop(user_access);
        runtime::set_fault_hook(outer_hook);
        current().store(outer, Ordering::Release);
        match r {
            Ok(()) => Ok(out.expect("ran")),
            Err(CODE_SEGV) => Err(RunEnd::Segfault(
                LAST_SEGFAULT.lock().take().expect("segfault recorded"),
            )),
            Err(other) => Err(RunEnd::Abandoned(other)),
        }
    }

    /// Installs this address space for this CPU without running anything in it (a process
    /// switch): TTBR0 translates it, its faults go to it, and the system calls reach it through
    /// [`with_current_space`].
    pub(crate) fn activate(&mut self) {
        let space: *mut Space = self.space.as_mut().expect("process exited");
        // SAFETY: `space` points at our live space.
        let root_pa = unsafe { (*space).root().pa().0 };
        // SAFETY: the root is our space's, live while the process is; the space's exit retires it
        // from TTBR0 (`Machine::root_retiring`) before destroying it.
        let asid = unsafe { crate::ttbr0::switch_ttbr0(root_pa, &mut self.asid) };
        // SAFETY: as above.
        unsafe { (*space).set_asid(asid) };
        current().store(space, Ordering::Release);
    }

    /// Ends the process: every page, table and folio reference is released.
    pub fn exit(mut self) {
        if let Some(space) = self.space.take() {
            space.exit(&mut TargetMachine);
        }
    }
}

/// No address space is current for the system calls and faults any more (the switch to a
/// process installs one).
pub(crate) fn deactivate() {
    current().store(core::ptr::null_mut(), Ordering::Release);
}

/// [`deactivate`], if `p`'s space is the current one (it is about to be destroyed).
pub(crate) fn deactivate_if(p: &Process) {
    if let Some(space) = p.space.as_ref() {
        let ptr = space as *const Space as *mut Space;
        let _ = current().compare_exchange(ptr, core::ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The fault an EL0 access took that the memory manager could not resolve (the abort hook
/// records it and leaves the exception to the user hook, which kills the process).
pub(crate) fn take_user_segfault() -> Option<Segfault> {
    LAST_SEGFAULT.lock().take()
}

/// The abort hook for user processes (see [`take_user_segfault`]).
pub(crate) fn user_fault_hook(frame: &mut TrapFrame) -> Option<Disposition> {
    on_abort(frame)
}

/// How [`Process::run_until`] ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunEnd {
    Segfault(Segfault),
    /// Abandoned with this code (a panic, the watchdog, or a user program's exit).
    Abandoned(u64),
}

/// The address space of the process running on this core, for the system-call handlers: `None`
/// outside [`Process::run`].
pub(crate) fn with_current_space<R>(f: impl FnOnce(&mut Space) -> R) -> Option<R> {
    let space = current().load(Ordering::Acquire);
    // SAFETY: as in `on_abort`: `run` set CURRENT to its exclusively borrowed space for the
    // duration of the call, and this core handles one exception at a time.
    (!space.is_null()).then(|| f(unsafe { &mut *space }))
}

/// Any error of a process operation, for apps that just want `?` to work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// An address-space call was refused (bad arguments, out of memory, ...).
    Space(SpaceError),
    /// A pin could not be taken.
    Fault(FaultError),
    /// The code run in the process made an access the memory manager could not resolve.
    Segfault(Segfault),
}

impl From<SpaceError> for Error {
    fn from(e: SpaceError) -> Self {
        Error::Space(e)
    }
}

impl From<FaultError> for Error {
    fn from(e: FaultError) -> Self {
        Error::Fault(e)
    }
}

impl From<Segfault> for Error {
    fn from(e: Segfault) -> Self {
        Error::Segfault(e)
    }
}

/// A read-only file in RAM made from `data` (copied into folios), to map into processes with
/// `VmaKind::Shared` (read-only) or `VmaKind::FilePrivate` (copy-on-write).
pub fn file(data: &[u8]) -> Result<Shm, SpaceError> {
    Shm::file(&mut TargetMachine, data)
}

/// Releases a handle to a memory object (a file or shared anonymous memory): the object is freed
/// with its last handle, once no region maps it.
pub fn release(obj: Shm) {
    obj.release(&mut TargetMachine);
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(space) = self.space.take() {
            space.exit(&mut TargetMachine);
        }
    }
}

/// The abort hook while a process runs: user-half faults go to its space.
fn on_abort(frame: &mut TrapFrame) -> Option<Disposition> {
    let space = current().load(Ordering::Acquire);
    if space.is_null() || frame.far >= crate::mm::USER_END {
        return None;
    }
    // The syndrome is decoded in one place, `arch::esr`; here it only changes vocabulary.
    let abort = frame.abort()?;
    let access = match abort.access {
        AbortAccess::Read => Access::Read,
        AbortAccess::Write => Access::Write,
        AbortAccess::Execute => Access::Exec,
    };
    let el = if abort.from_lower_el { El::El0 } else { El::El1 };
    let kind = match abort.status {
        FaultStatus::Translation { .. } => FaultKind::Translation,
        FaultStatus::AccessFlag { .. } => FaultKind::AccessFlag,
        // Kernel code that touched user memory with PAN set: a kernel bug, not the memory
        // manager's to resolve (it would find the page mapped and retry the access forever).
        FaultStatus::Permission { .. } if el == El::El1 && frame.spsr & arch::cpu::PSTATE_PAN != 0 => {
            return None
        }
        FaultStatus::Permission { .. } => FaultKind::Permission,
        _ => return None,
    };
    // SAFETY: `run` set CURRENT to its exclusively borrowed space and clears it before returning;
    // the code it runs cannot reach the space (it is borrowed by `run`), and this core handles one
    // exception at a time.
    let space = unsafe { &mut *space };
    match space.handle_fault(&mut TargetMachine, VirtAddr(frame.far), access, el, kind) {
        Ok(()) => Some(Disposition::Resume),
        Err(error) => {
            *LAST_SEGFAULT.lock() = Some(Segfault {
                va: frame.far,
                access,
                error,
            });
            // A user process's fault is the user hook's to act on (it kills the process); a
            // kernel closure's ends `run`.
            match el {
                El::El0 => None,
                El::El1 => Some(Disposition::Abandon(CODE_SEGV)),
            }
        }
    }
}

#[cfg(feature = "boot-tests")]
mod boot_tests {
    use super::*;
    use crate::mm::space::Machine;
    use crate::mm::space::{ForkMode, SegvCause};
    use crate::mm::vma::{MapAlign, Placement, VmProt, VmaKind};
    use crate::mm::PAGE_SIZE;

    const MIB: u64 = 1 << 20;

    fn anon(p: &mut Process, len: u64, prot: VmProt) -> u64 {
        p.map(Placement::Any, len, prot, VmaKind::AnonPrivate, MapAlign::Size64K)
            .expect("mmap")
            .as_u64()
    }

    fn write(va: u64, v: u64) {
        // SAFETY: a user address inside a mapped region of the running process; faults are
        // resolved by the memory manager (or end `run` with a segfault).
        unsafe { core::ptr::write_volatile(va as *mut u64, v) }
    }

    fn read(va: u64) -> u64 {
        // SAFETY: as for `write`.
        unsafe { core::ptr::read_volatile(va as *const u64) }
    }

    crate::boot_test! {
        /// Demand paging on the real MMU: first touches fault in zeroed 64 KiB folios, mapped
        /// folded; data written is read back.
        fn demand_faults_map_zeroed_folded_folios() {
            let mut p = Process::new().unwrap();
            let base = anon(&mut p, MIB, VmProt::RW);
            let sum = p.run(|| {
                let mut sum = 0;
                for i in 0..MIB / PAGE_SIZE {
                    sum += read(base + i * PAGE_SIZE + 8);
                    write(base + i * PAGE_SIZE, i);
                }
                sum
            });
            assert_eq!(sum, Ok(0), "fresh anonymous memory reads as zero");
            let folded = (0..MIB / PAGE_SIZE)
                .filter(|i| {
                    p.space().root().translate(&TargetMachine, VirtAddr(base + i * PAGE_SIZE)).is_some_and(|t| t.desc.contiguous())
                })
                .count();
            assert_eq!(folded as u64, MIB / PAGE_SIZE, "every page in a folded 64 KiB block");
            assert_eq!(p.run(|| (0..MIB / PAGE_SIZE).all(|i| read(base + i * PAGE_SIZE) == i)), Ok(true));
            p.space().check(&TargetMachine).expect("mapcounts");
            p.exit();
        }
    }

    crate::boot_test! {
        /// fork on the real MMU: parent and child write the same address and each reads its own
        /// value; untouched pages stay shared and read the same in both.
        fn parent_and_child_see_their_own_writes() {
            let mut parent = Process::new().unwrap();
            let base = anon(&mut parent, 256 << 10, VmProt::RW);
            parent.run(|| for i in 0..64 { write(base + i * PAGE_SIZE, 100 + i) }).unwrap();
            let mut child = parent.fork().unwrap();
            child.run(|| {
                assert_eq!(read(base), 100);
                write(base, 7);
                assert_eq!(read(base), 7);
            })
            .unwrap();
            parent.run(|| {
                assert_eq!(read(base), 100, "the parent keeps its value");
                write(base, 8);
            })
            .unwrap();
            assert_eq!(child.run(|| (read(base), read(base + 5 * PAGE_SIZE))), Ok((7, 105)));
            assert_eq!(parent.run(|| (read(base), read(base + 5 * PAGE_SIZE))), Ok((8, 105)));
            let spaces = [parent.space.as_ref().unwrap(), child.space.as_ref().unwrap()];
            crate::mm::space::check_spaces(&TargetMachine, &spaces).expect("mapcounts over both spaces");
            child.exit();
            parent.exit();
        }
    }

    crate::boot_test! {
        /// After the child exits, the parent's write reuses its folio in place (no copy).
        fn cow_reuses_an_exclusive_folio() {
            let mut parent = Process::new().unwrap();
            let base = anon(&mut parent, 64 << 10, VmProt::RW);
            parent.run(|| write(base, 1)).unwrap();
            let before = parent.peek(VirtAddr(base)).pa().unwrap();
            let child = parent.fork().unwrap();
            child.exit();
            parent.run(|| write(base, 2)).unwrap();
            assert_eq!(parent.peek(VirtAddr(base)).pa(), Some(before), "reused in place");
            parent.exit();
        }
    }

    crate::boot_test! {
        /// Accesses outside any region or against its permissions end `run` with a segfault
        /// error, not a kernel panic; the process keeps working afterwards.
        fn segfaults_are_errors() {
            let mut p = Process::new().unwrap();
            let ro = anon(&mut p, 64 << 10, VmProt::READ);
            let e = p.run(|| write(0x0000_4000_0000_0000, 1)).unwrap_err();
            assert_eq!(e.error, FaultError::Segv { va: VirtAddr(0x0000_4000_0000_0000), cause: SegvCause::Unmapped });
            assert_eq!(e.access, Access::Write);
            let e = p.run(|| write(ro + 8, 1)).unwrap_err();
            assert_eq!(e.error, FaultError::Segv { va: VirtAddr(ro + 8), cause: SegvCause::Access });
            assert_eq!(p.run(|| read(ro + 8)), Ok(0), "reads of the read-only region still work");
            p.exit();
        }
    }

    crate::boot_test! {
        /// The kernel never executes user memory: a call into an executable user region at
        /// EL1 ends `run` with a segmentation fault at once (user pages are PXN), instead of
        /// faulting forever; the process keeps working afterwards.
        fn el1_fetches_from_user_pages_segfault() {
            let mut p = Process::new().unwrap();
            let code = anon(&mut p, 64 << 10, VmProt::RX);
            assert_eq!(p.run(|| read(code)), Ok(0), "the page is mapped and readable");
            // SAFETY: the address is never executed: the fetch faults (PXN) and the fault ends
            // `run`.
            let f: extern "C" fn() = unsafe { core::mem::transmute(code as usize) };
            let e = p.run(|| f()).unwrap_err();
            assert_eq!(e.access, Access::Exec);
            assert_eq!(e.error, FaultError::Segv { va: VirtAddr(code), cause: SegvCause::Access });
            assert_eq!(p.run(|| read(code + 8)), Ok(0));
            p.exit();
        }
    }

    /// An in-image blob: a little over two pages, a different byte almost everywhere.
    static BLOB: [u8; 9000] = blob();

    const fn blob() -> [u8; 9000] {
        let mut b = [0; 9000];
        let mut i = 0;
        while i < b.len() {
            b[i] = (i as u8).wrapping_mul(31) ^ (i >> 8) as u8 ^ 0x5a;
            i += 1;
        }
        b
    }

    fn read_u8(va: u64) -> u8 {
        // SAFETY: as for `write`.
        unsafe { core::ptr::read_volatile(va as *const u8) }
    }

    fn write_u8(va: u64, v: u8) {
        // SAFETY: as for `write`.
        unsafe { core::ptr::write_volatile(va as *mut u8, v) }
    }

    crate::boot_test! {
        /// A read-only file made from an in-image blob, mapped shared (read-only) and private on
        /// the real MMU: reads reach the file's own pages; a private write copies one page and
        /// leaves the blob and the file unchanged; a write to the shared mapping segfaults, an
        /// access past the end of the file is a bus error; fork shares the file pages.
        fn files_map_shared_and_private() {
            use crate::mm::space::Shm;
            let m = &mut TargetMachine;
            let file = Shm::file(m, &BLOB).unwrap();
            let mut p = Process::new().unwrap();
            let shared = VmaKind::Shared { obj: file.clone(), offset: 0 };
            let sh = p.map(Placement::Any, 64 << 10, VmProt::READ, shared, MapAlign::Size64K).unwrap().as_u64();
            let private = VmaKind::FilePrivate { obj: file.clone(), offset: 0 };
            let pr = p.map(Placement::Any, 64 << 10, VmProt::RW, private, MapAlign::Size64K).unwrap().as_u64();
            let same = |base: u64| (0..BLOB.len()).all(|i| read_u8(base + i as u64) == BLOB[i]);
            assert_eq!(p.run(|| (same(sh), same(pr), read_u8(sh + 9000), read_u8(pr + 3 * PAGE_SIZE - 1))), Ok((true, true, 0, 0)));
            let page1 = file.lookup(PAGE_SIZE).unwrap().0;
            assert_eq!(p.peek(VirtAddr(sh + PAGE_SIZE)).pa(), Some(page1), "the file's page is mapped");
            assert_eq!(p.peek(VirtAddr(pr + PAGE_SIZE)).pa(), Some(page1), "the file's page is mapped");

            // A private write: one copy, the shared mapping and the file keep the blob.
            let off = PAGE_SIZE as usize + 5;
            p.run(|| write_u8(pr + off as u64, !BLOB[off])).unwrap();
            assert_eq!(p.space().stats().file_cow, 1);
            assert_ne!(p.peek(VirtAddr(pr + PAGE_SIZE)).pa(), Some(page1));
            assert_eq!(p.run(|| (read_u8(pr + off as u64), read_u8(pr + off as u64 + 1))), Ok((!BLOB[off], BLOB[off + 1])));
            assert_eq!(p.run(|| read_u8(sh + off as u64)), Ok(BLOB[off]));
            let mut page = [0u8; PAGE_SIZE as usize];
            m.read_bytes(page1, &mut page);
            assert_eq!(page[..], BLOB[PAGE_SIZE as usize..2 * PAGE_SIZE as usize], "the file is unchanged");
            assert!(BLOB == blob(), "the blob is unchanged");

            // Refused: writes to the shared mapping, shared writable mappings, past the end.
            let e = p.run(|| write_u8(sh + 5, 1)).unwrap_err();
            assert_eq!(e.error, FaultError::Segv { va: VirtAddr(sh + 5), cause: SegvCause::Access });
            let shared_rw = VmaKind::Shared { obj: file.clone(), offset: 0 };
            let r = p.map(Placement::Any, 64 << 10, VmProt::RW, shared_rw, MapAlign::Page);
            assert_eq!(r, Err(SpaceError::ReadOnly));
            assert_eq!(p.mprotect(VirtAddr(sh), PAGE_SIZE, VmProt::RW), Err(SpaceError::ReadOnly));
            let e = p.run(|| read_u8(pr + 3 * PAGE_SIZE + 8)).unwrap_err();
            assert_eq!(e.error, FaultError::Bus { va: VirtAddr(pr + 3 * PAGE_SIZE + 8) });
            let e = p.run(|| write_u8(pr + 4 * PAGE_SIZE, 1)).unwrap_err();
            assert_eq!(e.error, FaultError::Bus { va: VirtAddr(pr + 4 * PAGE_SIZE) });

            // Fork: the child sees the private copy and the file pages, and copies its own.
            let mut c = p.fork().unwrap();
            assert_eq!(c.run(|| (read_u8(pr + off as u64), read_u8(pr + 7))), Ok((!BLOB[off], BLOB[7])));
            c.run(|| write_u8(pr + 7, !BLOB[7])).unwrap();
            assert_eq!(p.run(|| read_u8(pr + 7)), Ok(BLOB[7]));
            assert_eq!(c.run(|| same(sh)), Ok(true));
            let spaces = [p.space.as_ref().unwrap(), c.space.as_ref().unwrap()];
            crate::mm::space::check_spaces(m, &spaces).expect("mapcounts over both spaces");
            c.exit();
            p.exit();
            assert!(file.release(m), "the last handle frees the file");
        }
    }

    crate::boot_test! {
        /// Copy-on-write page tables on the real MMU: a `ShareTables` fork links the parent's
        /// level-3 tables into the child under APTable = NoWrite; the child reads everything
        /// without a single fault, its first write faults (on the table limit) and copies that
        /// one table, and each side keeps its own data.
        fn share_tables_fork_reads_without_faults_and_breaks_one_table_per_write() {
            const SPAN: u64 = 2 * MIB;
            let mut parent = Process::new().unwrap();
            let base = parent

                .map(Placement::Fixed(VirtAddr(0x0000_0310_0000_0000)), 2 * SPAN, VmProt::RW, VmaKind::AnonPrivate, MapAlign::Size64K)
                .unwrap()
                .as_u64();
            parent.run(|| (0..2 * SPAN).step_by(PAGE_SIZE as usize).for_each(|o| write(base + o, o))).unwrap();
            parent.set_fork_mode(ForkMode::ShareTables);
            let mut child = parent.fork().unwrap();
            assert_eq!(parent.space().stats().fork_tables_shared, 2);
            assert_eq!(child.space().shared_tables(), 2);
            let faults = |p: &mut Process| {
                let s = p.space().stats();
                s.faults_translation + s.faults_permission + s.faults_access_flag
            };
            let before = faults(&mut child);
            let ok = child.run(|| (0..2 * SPAN).step_by(PAGE_SIZE as usize).all(|o| read(base + o) == o));
            assert_eq!(ok, Ok(true));
            assert_eq!(faults(&mut child), before, "reads through shared tables do not fault");
            child.run(|| write(base + 8, 0xc0ffee)).unwrap();
            assert_eq!(child.space().stats().table_breaks, 1, "one table copied");
            assert_eq!(child.space().shared_tables(), 1);
            assert_eq!(parent.run(|| read(base + 8)), Ok(0));
            parent.run(|| write(base + SPAN + 8, 0xbeef)).unwrap();
            assert_eq!(parent.space().stats().table_breaks, 1);
            assert_eq!(child.run(|| (read(base + 8), read(base + SPAN + 8), read(base + SPAN))), Ok((0xc0ffee, 0, SPAN)));
            let spaces = [parent.space.as_ref().unwrap(), child.space.as_ref().unwrap()];
            crate::mm::space::check_spaces(&TargetMachine, &spaces).unwrap();
            parent.exit();
            // The child, last holder, takes its remaining shared table over.
            child.run(|| write(base + SPAN + 16, 7)).unwrap();
            assert_eq!(child.space().stats().table_takeovers, 1);
            assert_eq!(child.run(|| (read(base + SPAN + 16), read(base + SPAN + 8))), Ok((7, 0)));
            crate::mm::space::check_spaces(&TargetMachine, &[child.space.as_ref().unwrap()]).unwrap();
            child.exit();
        }
    }

    crate::boot_test! {
        /// A pinned page is copied for the child at fork: the parent's pinned frame stays the
        /// parent's, and the child sees the same data in a different frame.
        fn pinned_pages_are_copied_at_fork() {
            let mut parent = Process::new().unwrap();
            let base = anon(&mut parent, 64 << 10, VmProt::RW);
            parent.run(|| write(base, 0xabc)).unwrap();
            let pin = parent.pin(VirtAddr(base), PAGE_SIZE, true).unwrap();
            let pinned = parent.peek(VirtAddr(base)).pa().unwrap();
            let mut child = parent.fork().unwrap();
            let child_pa = child.peek(VirtAddr(base)).pa().unwrap();
            assert_ne!(child_pa, pinned, "the child got a copy");
            assert_eq!(child.run(|| read(base)), Ok(0xabc));
            parent.run(|| write(base, 0xdef)).unwrap();
            assert_eq!(parent.peek(VirtAddr(base)).pa(), Some(pinned), "no COW of the pinned page");
            assert_eq!(child.run(|| read(base)), Ok(0xabc));
            parent.unpin(pin);
            child.exit();
            parent.exit();
        }
    }

    crate::boot_test! {
        /// Differential test on the real MMU: random writes, reads, forks (both modes), exits,
        /// madvise and mprotect over up to three processes, against a plain byte copy per process; the
        /// mapcount checker runs over all live spaces after every step.
        #[timeout_ms = 120_000]
        fn random_process_ops_match_a_byte_model() {
            use alloc::vec::Vec;
            const BASE: u64 = 0x0000_0300_0000_0000;
            const LEN: usize = 256 << 10;
            const PAGES: usize = LEN / PAGE_SIZE as usize;
            struct P {
                proc_: Process,
                bytes: Vec<u8>,
                writable: Vec<bool>,
            }
            let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut first = Process::new().unwrap();
            first

                .map(Placement::Fixed(VirtAddr(BASE)), LEN as u64, VmProt::RW, VmaKind::AnonPrivate, MapAlign::Size64K)
                .unwrap();
            let mut procs = alloc::vec![P { proc_: first, bytes: alloc::vec![0; LEN], writable: alloc::vec![true; PAGES] }];
            for step in 0..300 {
                let i = next(procs.len() as u64) as usize;
                match next(100) {
                    0..=39 => {
                        let off = next(LEN as u64) as usize;
                        let v = next(255) as u8 + 1;
                        let p = &mut procs[i];
                        let r = p.proc_.run(|| {
                            // SAFETY: inside the mapped region; faults are resolved or reported.
                            unsafe { core::ptr::write_volatile((BASE + off as u64) as *mut u8, v) }
                        });
                        if p.writable[off / PAGE_SIZE as usize] {
                            assert_eq!(r, Ok(()), "step {step}: write to a writable page");
                            p.bytes[off] = v;
                        } else {
                            let e = r.expect_err("write to a read-only page must fail");
                            assert_eq!(e.error, FaultError::Segv { va: VirtAddr(BASE + off as u64), cause: SegvCause::Access });
                        }
                    }
                    40..=64 => {
                        let off = next(LEN as u64) as usize;
                        let p = &mut procs[i];
                        // SAFETY: as above.
                        let got = p.proc_.run(|| unsafe { core::ptr::read_volatile((BASE + off as u64) as *const u8) });
                        assert_eq!(got, Ok(p.bytes[off]), "step {step}: process {i} offset {off:#x}");
                    }
                    65..=74 if procs.len() < 3 => {
                        // Both fork modes, mixed: copied entries and shared level-3 tables.
                        let mode = if next(2) == 0 { ForkMode::Copy } else { ForkMode::ShareTables };
                        procs[i].proc_.set_fork_mode(mode);
                        let child = procs[i].proc_.fork().unwrap();
                        let (bytes, writable) = (procs[i].bytes.clone(), procs[i].writable.clone());
                        procs.push(P { proc_: child, bytes, writable });
                    }
                    75..=79 if procs.len() > 1 => {
                        procs.swap_remove(i).proc_.exit();
                    }
                    80..=89 => {
                        let first_page = next(PAGES as u64) as usize;
                        let n = 1 + next((PAGES - first_page) as u64).min(15) as usize;
                        let p = &mut procs[i];
                        p.proc_.madvise_dontneed(VirtAddr(BASE + (first_page as u64) * PAGE_SIZE), n as u64 * PAGE_SIZE).unwrap();
                        p.bytes[first_page * PAGE_SIZE as usize..(first_page + n) * PAGE_SIZE as usize].fill(0);
                    }
                    _ => {
                        let first_page = next(PAGES as u64) as usize;
                        let n = 1 + next((PAGES - first_page) as u64).min(31) as usize;
                        let rw = next(2) == 0;
                        let p = &mut procs[i];
                        let prot = if rw { VmProt::RW } else { VmProt::READ };
                        p.proc_.mprotect(VirtAddr(BASE + (first_page as u64) * PAGE_SIZE), n as u64 * PAGE_SIZE, prot).unwrap();
                        p.writable[first_page..first_page + n].fill(rw);
                    }
                }
                let spaces: Vec<&Space> = procs.iter().map(|p| p.proc_.space.as_ref().unwrap()).collect();
                crate::mm::space::check_spaces(&TargetMachine, &spaces).unwrap_or_else(|e| panic!("step {step}: {e:?}"));
            }
            for (i, p) in procs.iter_mut().enumerate() {
                let bytes = &p.bytes;
                // SAFETY: as above.
                let same = p.proc_.run(|| (0..LEN).all(|o| unsafe { core::ptr::read_volatile((BASE + o as u64) as *const u8) } == bytes[o]));
                assert_eq!(same, Ok(true), "process {i} differs from its model at the end");
            }
            for p in procs {
                p.proc_.exit();
            }
        }
    }
}
