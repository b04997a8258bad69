//! Bringing the machine up and down: the kernel entry called by `arch::boot`, the boot
//! configuration, the kernel heap and the frame allocator, exception and interrupt hooks, timers,
//! panics, and exit.
//!
//! Exit statuses (semihosting SYS_EXIT, visible as QEMU's exit status):
//! 0 success · 1 the app reported failure (e.g. a boot test failed) · 2 panic outside a test ·
//! 3 fatal exception · 4 boot configuration error.

use crate::bootargs::BootArgs;
use crate::devicetree::{self, DtInfo, PhysRange};
use crate::memory::{self, AllocError, FrameAllocator, FrameError};
use alloc::vec::Vec;
use arch::board::{phys_to_virt, BOARD};
use arch::exception::{self, Disposition, Handlers, Kind, TrapFrame};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::{Mutex, Once};

/// Exit status: the app reported failure.
pub const EXIT_APP_FAILURE: u32 = 1;
/// Exit status: panic outside a boot test.
pub const EXIT_PANIC: u32 = 2;
/// Exit status: unhandled exception.
pub const EXIT_FATAL_EXCEPTION: u32 = 3;
/// Exit status: the machine could not be brought up.
pub const EXIT_BOOT_ERROR: u32 = 4;

/// How the app's `main` result becomes an exit status.
pub trait Termination {
    /// The exit status (0 = success).
    fn report(self) -> u32;
}

impl Termination for () {
    fn report(self) -> u32 {
        0
    }
}

impl Termination for u32 {
    fn report(self) -> u32 {
        self
    }
}

impl<E: core::fmt::Debug> Termination for Result<(), E> {
    fn report(self) -> u32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                crate::println!("error: {e:?}");
                EXIT_APP_FAILURE
            }
        }
    }
}

/// Where the RAM layout came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RamSource {
    DeviceTree,
    BoardDefault,
}

/// What the runtime learned while booting.
#[derive(Debug)]
pub struct BootConfig {
    /// Board name (`qemu-virt`, `raspi3`, `raspi4`).
    pub board: &'static str,
    /// Exception level the image was entered at.
    pub entry_el: u8,
    /// Physical address of the device tree, if one was found.
    pub dtb: Option<usize>,
    /// The parsed device tree.
    pub dt: Option<DtInfo>,
    /// RAM ranges (from the device tree, else the board default).
    pub ram: Vec<PhysRange>,
    /// Where [`BootConfig::ram`] came from.
    pub ram_source: RamSource,
    /// Ranges handed to the frame allocator.
    pub usable: Vec<PhysRange>,
    /// Where the page metadata array ([`memmap`]) lives.
    pub memmap: PhysRange,
    /// The kernel command line.
    pub bootargs: BootArgs,
    /// Counter value when the first Rust code ran.
    pub entry_ticks: u64,
}

static BOOT: Once<BootConfig> = Once::new();
static MAIN_TICKS: AtomicU64 = AtomicU64::new(0);

/// The boot configuration (available once the app runs).
pub fn boot_config() -> &'static BootConfig {
    BOOT.get().expect("boot configuration read before boot finished")
}

/// Virtual time from reset to the app's `main`, in nanoseconds.
pub fn boot_to_main_ns() -> u64 {
    arch::timer::ticks_to_ns(MAIN_TICKS.load(Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Heap and frames

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
static HEAP_GROWN_BYTES: AtomicUsize = AtomicUsize::new(0);

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
fn refill_heap_reserve() {
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

/// Heap statistics: (bytes requested by live allocations, bytes the heap manages).
pub fn heap_usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_user(), h.stats_total_bytes())
}

static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::new());

/// Allocates 2^order physical frames; returns the physical address.
pub fn alloc_frames(order: usize) -> Result<u64, AllocError> {
    let r = FRAMES.lock().alloc(order);
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
    frame_counts().0 + HEAP_GROWN_BYTES.load(Ordering::Relaxed) / memory::FRAME_SIZE
}

/// (free frames, total frames).
pub fn frame_counts() -> (usize, usize) {
    let f = FRAMES.lock();
    (f.free_frames(), f.total_frames())
}

// ---------------------------------------------------------------------------------------------
// Page metadata

static MEMMAP: Once<crate::mm::folio::MemMap<'static>> = Once::new();

/// The page metadata of every frame the frame allocator can hand out (Tessera's `struct page`
/// array), set up at boot.
pub fn memmap() -> &'static crate::mm::folio::MemMap<'static> {
    MEMMAP.get().expect("page metadata used before boot set it up")
}

/// Carves the page-metadata array for the span of `usable` out of the top of the largest usable
/// range (before the frame allocator gets the ranges, as Linux's memblock does), zeroes it —
/// zero is the metadata of a free frame — and installs [`memmap`]. Returns the carved range.
fn carve_memmap(usable: &mut [PhysRange]) -> Option<PhysRange> {
    use crate::mm::folio::MemMap;
    use crate::mm::PhysAddr;
    let page = memory::FRAME_SIZE as u64;
    let base = usable.iter().map(|r| r.base).min()?;
    let end = usable.iter().map(|r| r.end()).max()?;
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
    let map = MemMap::from_bytes(PhysAddr(base), frames, storage).ok()?;
    MEMMAP.call_once(|| map);
    Some(carved)
}

// ---------------------------------------------------------------------------------------------
// Entry

fn find_device_tree(x0: usize) -> Option<usize> {
    let candidates = [Some(x0), BOARD.dtb_fallback];
    candidates.into_iter().flatten().find(|&pa| {
        if pa == 0 || pa % 8 != 0 || pa >= BOARD.ram_limit {
            return false;
        }
        // SAFETY: `pa` is below the board's RAM limit, hence inside the boot map; the header read is
        // 8 bytes.
        let header = unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, 8) };
        devicetree::fdt_total_size(header).is_some()
    })
}

fn boot_error(msg: core::fmt::Arguments) -> ! {
    crate::println!("boot error: {msg}");
    exit(EXIT_BOOT_ERROR)
}

#[no_mangle]
fn __tessera_kernel_main(info: arch::boot::BootInfo) -> ! {
    let entry_ticks = arch::timer::ticks();
    crate::console::init();
    exception::install(&HANDLERS);
    crate::console::init_logging(crate::console::default_level());

    // SAFETY: the static heap region is used only by the heap, handed over exactly once here.
    unsafe {
        HEAP.lock()
            .init(core::ptr::addr_of_mut!(HEAP_SPACE) as usize, HEAP_STATIC_SIZE)
    };

    let dtb = find_device_tree(info.x0);
    let dt = dtb.map(|pa| {
        // SAFETY: the header was validated by `find_device_tree`; the blob lies in RAM below the
        // board's RAM limit, inside the boot map, and nothing writes to it.
        let header = unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, 8) };
        let size = devicetree::fdt_total_size(header).unwrap_or(0);
        // SAFETY: as above, for the whole blob.
        let blob = unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, size) };
        devicetree::parse(blob).unwrap_or_else(|e| boot_error(format_args!("device tree at {pa:#x}: {e:?}")))
    });

    let bootargs = BootArgs::new(dt.as_ref().map(|d| d.bootargs.as_str()).unwrap_or(""));
    match bootargs.log_level() {
        Some(Ok(level)) => log::set_max_level(level),
        Some(Err(bad)) => {
            log::warn!("ignoring unknown log level '{bad}' (use off|error|warn|info|debug|trace)")
        }
        None => {}
    }
    arch::cpu::set_psci_conduit(dt.as_ref().and_then(|d| d.psci).map(|m| match m {
        devicetree::PsciMethod::Hvc => arch::cpu::PsciConduit::Hvc,
        devicetree::PsciMethod::Smc => arch::cpu::PsciConduit::Smc,
    }));

    let (ram, ram_source) = match dt.as_ref().filter(|d| !d.memory.is_empty()) {
        Some(d) => (d.memory.clone(), RamSource::DeviceTree),
        None => {
            let (base, size) = BOARD.default_ram;
            (
                alloc::vec![PhysRange {
                    base: base as u64,
                    size: size as u64
                }],
                RamSource::BoardDefault,
            )
        }
    };
    let (img_start, img_end) = arch::boot::image_phys_range();
    let mut reserved = alloc::vec![
        PhysRange {
            base: 0,
            size: BOARD.reserved_low as u64
        },
        PhysRange {
            base: img_start as u64,
            size: (img_end - img_start) as u64
        },
    ];
    if let (Some(pa), Some(d)) = (dtb, dt.as_ref()) {
        reserved.push(PhysRange {
            base: pa as u64,
            size: d.total_size as u64,
        });
        reserved.extend(d.reserved.iter().copied());
    }
    // Frames come from RAM below the board's limit (inside the boot map, which covers the low
    // 4 GiB): RAM above it is mapped by the kernel map but not handed out; the log says how much.
    let mut usable = memory::usable_ranges(&ram, &reserved, BOARD.ram_limit as u64);
    let above: u64 = ram
        .iter()
        .map(|r| r.end().saturating_sub(r.base.max(BOARD.ram_limit as u64)))
        .sum();
    if above > 0 {
        log::info!(
            "{} MiB of RAM above {:#x} is not used (frames come from below it)",
            above >> 20,
            BOARD.ram_limit
        );
    }
    let memmap_range = carve_memmap(&mut usable)
        .unwrap_or_else(|| boot_error(format_args!("no room for page metadata in {usable:?}")));
    {
        let mut frames = FRAMES.lock();
        for r in &usable {
            frames.add_range(*r);
        }
        if frames.total_frames() == 0 {
            drop(frames);
            boot_error(format_args!("no usable RAM (ram {ram:?}, reserved {reserved:?})"));
        }
    }
    refill_heap_reserve();

    // Replace the boot map with the kernel's own W^X map; TTBR0 becomes free for address spaces.
    // The linear map covers RAM but the firmware's no-map regions: nothing may reach those, not
    // even a cacheable speculative access.
    let no_map = dt.as_ref().map(|d| d.no_map.clone()).unwrap_or_default();
    let mapped = memory::usable_ranges(&ram, &no_map, u64::MAX);
    if let Err(e) = crate::vm::init_kernel_map(&mapped) {
        boot_error(format_args!("kernel map: {e:?}"));
    }

    BOOT.call_once(|| BootConfig {
        board: BOARD.name,
        memmap: memmap_range,
        entry_el: info.entry_el,
        dtb,
        dt,
        ram,
        ram_source,
        usable,
        bootargs,
        entry_ticks,
    });

    arch::irq::init();
    arch::cpu::unmask_interrupts();
    let cfg = boot_config();
    log::debug!(
        "{} (entered at EL{}), RAM {:?} from {:?}, {} free frames, bootargs '{}'",
        cfg.board,
        cfg.entry_el,
        cfg.ram,
        cfg.ram_source,
        frame_counts().0,
        cfg.bootargs.as_str()
    );

    extern "Rust" {
        fn __tessera_app_main() -> u32;
    }
    MAIN_TICKS.store(arch::timer::ticks(), Ordering::Relaxed);
    // SAFETY: defined exactly once by the app through `libos::main!`.
    let status = unsafe { __tessera_app_main() };
    exit(status)
}

/// Leaves the machine with `status` (0 = success). On QEMU the status becomes QEMU's exit status
/// (semihosting). Without a semihosting host, as on a real board, the console says how the machine
/// stops: powered off through PSCI where the device tree names it, else halted with this core
/// parked and interrupts masked.
pub fn exit(status: u32) -> ! {
    arch::cpu::semihosting_exit(status);
    let w = crate::console::emergency_write_fmt;
    if arch::cpu::has_psci() {
        w(format_args!(
            "tessera: exit status {status}; powering off (PSCI SYSTEM_OFF)\n"
        ));
        arch::cpu::system_off();
    }
    w(format_args!(
        "tessera: halted with exit status {status}; reset or power-cycle the board\n"
    ));
    crate::console::flush();
    arch::cpu::park()
}

// ---------------------------------------------------------------------------------------------
// Exceptions, interrupts, timers

static HANDLERS: Handlers = Handlers {
    sync: on_sync,
    irq: on_irq,
    fatal: on_fatal,
};

/// A handler for data/instruction aborts (a running process installs one): `None` when the fault
/// is not its business, else what to do (`Resume` to retry the access after resolving it,
/// `Abandon` to end the enclosing abandonable call with an error).
pub type FaultHook = fn(&mut TrapFrame) -> Option<Disposition>;

static FAULT_HOOK: Mutex<Option<FaultHook>> = Mutex::new(None);

/// Installs (or removes) the abort handler hook.
pub fn set_fault_hook(hook: Option<FaultHook>) {
    *FAULT_HOOK.lock() = hook;
}

/// The installed abort handler hook.
pub fn fault_hook() -> Option<FaultHook> {
    *FAULT_HOOK.lock()
}

fn on_sync(_kind: Kind, frame: &mut TrapFrame) -> Disposition {
    use arch::exception::ec;
    if matches!(
        frame.ec(),
        ec::DATA_ABORT_SAME | ec::DATA_ABORT_LOWER | ec::INSTR_ABORT_SAME | ec::INSTR_ABORT_LOWER
    ) {
        let hook = *FAULT_HOOK.lock();
        if let Some(d) = hook.and_then(|h| h(frame)) {
            return d;
        }
    }
    crate::testing::on_unexpected_exception(frame)
}

fn on_irq(_kind: Kind, _frame: &mut TrapFrame) -> Disposition {
    let mut disposition = Disposition::Resume;
    while let Some(id) = arch::irq::acknowledge() {
        if id == arch::irq::timer_id() {
            if let Some(d) = timers_fired() {
                disposition = d;
            }
        } else {
            log::warn!("unexpected interrupt {id}");
        }
        arch::irq::end_of_interrupt(id);
    }
    disposition
}

fn on_fatal(kind: Kind, frame: &TrapFrame) -> ! {
    print_exception("FATAL", kind, frame);
    exit(EXIT_FATAL_EXCEPTION)
}

/// Prints an exception report: class, syndrome, addresses and registers.
pub fn print_exception(what: &str, kind: Kind, frame: &TrapFrame) {
    use crate::console::emergency_write_fmt as w;
    w(format_args!(
        "{what}: {} ({:?}) ESR={:#010x} EC={:#04x}",
        frame.ec_name(),
        kind,
        frame.esr,
        frame.ec()
    ));
    if matches!(frame.ec(), 0x20 | 0x21 | 0x24 | 0x25) {
        w(format_args!(
            " {} {}",
            frame.fault_status_name(),
            if frame.is_write() { "(write)" } else { "(read)" }
        ));
    }
    w(format_args!(
        "\n  ELR={:#018x} FAR={:#018x} SPSR={:#010x} SP={:#018x}\n",
        frame.elr, frame.far, frame.spsr, frame.sp
    ));
    for (i, pair) in frame.x.chunks(4).enumerate() {
        w(format_args!(" "));
        for (j, v) in pair.iter().enumerate() {
            w(format_args!(" x{:<2}={:#018x}", i * 4 + j, v));
        }
        w(format_args!("\n"));
    }
}

/// One-shot timer slots multiplexed on the EL1 virtual timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerSlot {
    /// The boot-test watchdog.
    Watchdog = 0,
    /// General use (apps, tests).
    User = 1,
}

const NO_DEADLINE: u64 = u64::MAX;
static DEADLINES: [AtomicU64; 2] = [AtomicU64::new(NO_DEADLINE), AtomicU64::new(NO_DEADLINE)];
static TIMER_FIRED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn rearm() {
    let next = DEADLINES
        .iter()
        .map(|d| d.load(Ordering::Acquire))
        .min()
        .unwrap_or(NO_DEADLINE);
    if next == NO_DEADLINE {
        arch::timer::disarm();
    } else {
        arch::timer::arm_at(next);
    }
}

/// Arms `slot` to fire `ns` nanoseconds from now (replacing its previous deadline).
pub fn timer_arm(slot: TimerSlot, ns: u64) {
    let masked = !arch::cpu::interrupts_enabled();
    arch::cpu::mask_interrupts();
    DEADLINES[slot as usize].store(
        arch::timer::ticks() + arch::timer::ns_to_ticks(ns),
        Ordering::Release,
    );
    rearm();
    if !masked {
        arch::cpu::unmask_interrupts();
    }
}

/// Cancels `slot`.
pub fn timer_cancel(slot: TimerSlot) {
    let masked = !arch::cpu::interrupts_enabled();
    arch::cpu::mask_interrupts();
    DEADLINES[slot as usize].store(NO_DEADLINE, Ordering::Release);
    rearm();
    if !masked {
        arch::cpu::unmask_interrupts();
    }
}

/// How many times `slot` has fired since boot.
pub fn timer_fired_count(slot: TimerSlot) -> u64 {
    TIMER_FIRED[slot as usize].load(Ordering::Acquire)
}

fn timers_fired() -> Option<Disposition> {
    let now = arch::timer::ticks();
    let mut result = None;
    for (i, d) in DEADLINES.iter().enumerate() {
        if d.load(Ordering::Acquire) <= now {
            d.store(NO_DEADLINE, Ordering::Release);
            TIMER_FIRED[i].fetch_add(1, Ordering::AcqRel);
            if i == TimerSlot::Watchdog as usize {
                result = crate::testing::on_watchdog();
            }
        }
    }
    rearm();
    result
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if exception::in_try_call() {
        crate::testing::on_panic(info);
    }
    crate::console::emergency_write_fmt(format_args!("\npanicked: {info}\n"));
    exit(EXIT_PANIC)
}

#[cfg(feature = "boot-tests")]
mod boot_tests {
    use super::*;
    use crate::memory::{OutOfMemory, FRAME_SIZE, MAX_ORDER};
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    crate::boot_test! {
        /// Every order 0..=10 allocates a naturally aligned block and gives it back.
        fn frame_orders_are_aligned_and_returned() {
            let before = frames_free_or_heap();
            let mut blocks = Vec::new();
            for order in 0..=MAX_ORDER {
                let pa = alloc_frames(order).expect("RAM for every order");
                assert_eq!(pa % ((FRAME_SIZE as u64) << order), 0, "order {order} block at {pa:#x} misaligned");
                assert_eq!(frames_free_or_heap(), before - blocks.iter().map(|&(_, o)| 1usize << o).sum::<usize>() - (1 << order));
                blocks.push((pa, order));
            }
            // Distinct, non-overlapping blocks, and really memory: write and read back through the
            // kernel map.
            for (i, &(pa, order)) in blocks.iter().enumerate() {
                let len = FRAME_SIZE << order;
                for &(other, o2) in &blocks[i + 1..] {
                    let l2 = (FRAME_SIZE << o2) as u64;
                    assert!(pa + len as u64 <= other || other + l2 <= pa, "blocks overlap");
                }
                let p = phys_to_virt(pa as usize) as *mut u64;
                // SAFETY: the block is ours; first and last word are inside it.
                unsafe {
                    p.write_volatile(pa ^ 0x5a5a);
                    p.add(len / 8 - 1).write_volatile(!pa);
                    assert_eq!(p.read_volatile(), pa ^ 0x5a5a);
                    assert_eq!(p.add(len / 8 - 1).read_volatile(), !pa);
                }
            }
            for (pa, order) in blocks {
                free_frames(pa, order).unwrap();
            }
            assert_eq!(frames_free_or_heap(), before);
        }
    }

    crate::boot_test! {
        /// Exhausting RAM returns OutOfMemory; two freed buddies merge into one order-1 block; all
        /// memory comes back.
        fn frame_exhaustion_and_coalescing() {
            let before = frames_free_or_heap();
            // Set one order-1 block aside, then take everything else.
            let pair = alloc_frames(1).unwrap();
            let mut held: Vec<(u64, usize)> = Vec::with_capacity(4096);
            for order in (0..=MAX_ORDER).rev() {
                while let Ok(pa) = alloc_frames(order) {
                    held.push((pa, order));
                }
            }
            assert_eq!(frame_counts().0, 0, "every frame handed out");
            assert_eq!(alloc_frames(0), Err(AllocError::OutOfMemory(OutOfMemory)));
            // Only the pair is free now: it splits into its two buddies...
            free_frames(pair, 1).unwrap();
            let a = alloc_frames(0).unwrap();
            let b = alloc_frames(0).unwrap();
            assert_eq!((a.min(b), a.max(b)), (pair, pair + FRAME_SIZE as u64));
            // ...one lone free frame is not an order-1 block...
            free_frames(pair + FRAME_SIZE as u64, 0).unwrap();
            assert_eq!(alloc_frames(1), Err(AllocError::OutOfMemory(OutOfMemory)));
            // ...and once both are free they coalesce.
            free_frames(pair, 0).unwrap();
            assert_eq!(alloc_frames(1), Ok(pair), "buddies coalesced");
            held.push((pair, 1));
            for (pa, order) in held {
                free_frames(pa, order).unwrap();
            }
            assert_eq!(frames_free_or_heap(), before);
            let big = alloc_frames(MAX_ORDER).expect("order-10 block after everything was freed");
            free_frames(big, MAX_ORDER).unwrap();
        }
    }

    crate::boot_test! {
        /// Bad frame-allocator arguments are rejected without changing anything.
        fn frame_bad_arguments() {
            let before = frames_free_or_heap();
            assert_eq!(alloc_frames(MAX_ORDER + 1), Err(AllocError::Invalid(FrameError::OrderTooLarge(MAX_ORDER + 1))));
            assert_eq!(free_frames(0x1000, 3), Err(FrameError::Misaligned(0x1000)));
            assert_eq!(frames_free_or_heap(), before);
        }
    }

    crate::boot_test! {
        /// The global allocator serves small, large and over-aligned allocations and takes them back.
        fn heap_allocations() {
            let (used_before, _) = heap_usage();
            {
                let v: Vec<u64> = (0..100_000).collect();
                assert_eq!(v.iter().sum::<u64>(), 100_000 * 99_999 / 2);
                #[repr(align(4096))]
                struct Page([u8; 4096]);
                let p = Box::new(Page([7; 4096]));
                assert_eq!(&*p as *const Page as usize % 4096, 0);
                assert!(p.0.iter().all(|&b| b == 7));
                let s = alloc::format!("{}-{}", "tessera", 42);
                assert_eq!(s, "tessera-42");
                assert!(heap_usage().0 >= used_before + 800_000);
            }
            assert_eq!(heap_usage().0, used_before, "heap returns to its previous use");
        }
    }

    crate::boot_test! {
        /// When the static heap is exhausted the heap grows by taking 4 MiB blocks from the frame
        /// allocator (frames it keeps do not count as leaked).
        fn heap_grows_from_frames() {
            let (used, total_before) = heap_usage();
            // More 1 MiB chunks than the heap has room for now, whatever earlier tests did.
            let n = ((total_before - used) >> 20) + 4;
            let chunks: Vec<Vec<u8>> = (0..n).map(|i| alloc::vec![i as u8; 1 << 20]).collect();
            for (i, c) in chunks.iter().enumerate() {
                assert!(c.iter().step_by(4096).all(|&b| b == i as u8));
            }
            assert!(heap_usage().1 > total_before, "heap grew");
            assert!(HEAP_GROWN_BYTES.load(Ordering::Relaxed) >= 4 << 20);
        }
    }

    crate::boot_test! {
        /// The heap can grow while the frame allocator (which keeps its free lists on the heap) is
        /// in the middle of an operation: regression test for a deadlock in which the heap's
        /// growth hook called the frame allocator with the heap locked.
        fn heap_grows_during_frame_allocator_work() {
            let grown_before = HEAP_GROWN_BYTES.load(Ordering::Relaxed);
            // Fill the heap past its current size with small objects...
            let (used, total) = heap_usage();
            let mut junk: Vec<Vec<u8>> = Vec::new();
            let mut filled = used;
            while filled < total + (2 << 20) {
                junk.push(alloc::vec![0x5a; 256]);
                filled += 256 + 32;
            }
            // ...then make the frame allocator's free sets grow: scattered frees of single frames.
            let mut frames = Vec::with_capacity(40_000);
            for _ in 0..40_000 {
                frames.push(alloc_frames(0).unwrap());
            }
            for (i, &pa) in frames.iter().enumerate() {
                if i % 2 == 1 {
                    free_frames(pa, 0).unwrap();
                }
                if i % 64 == 0 {
                    junk.push(alloc::vec![0xa5; 4096]);
                }
            }
            for (i, &pa) in frames.iter().enumerate() {
                if i % 2 == 0 {
                    free_frames(pa, 0).unwrap();
                }
            }
            assert!(HEAP_GROWN_BYTES.load(Ordering::Relaxed) > grown_before, "the heap grew during the test");
            assert!(junk.iter().all(|v| v[0] == 0x5a || v[0] == 0xa5));
        }
    }

    crate::boot_test! {
        /// The virtual counter advances, conversions agree, and a timer interrupt is delivered.
        fn timer_interrupt_fires() {
            let f = arch::timer::frequency();
            assert!(f >= 1_000_000, "counter frequency {f} Hz");
            assert_eq!(arch::timer::ns_to_ticks(1_000_000_000), f);
            let t0 = arch::timer::now_ns();
            arch::timer::spin_ns(200_000);
            let t1 = arch::timer::now_ns();
            assert!(t1 >= t0 + 200_000, "spun {} ns", t1 - t0);
            let fired = timer_fired_count(TimerSlot::User);
            timer_arm(TimerSlot::User, 1_000_000);
            let deadline = arch::timer::now_ns() + 5_000_000_000;
            while timer_fired_count(TimerSlot::User) == fired {
                assert!(arch::timer::now_ns() < deadline, "timer interrupt not delivered within 5 s");
                arch::cpu::wait_for_interrupt();
            }
            let elapsed = arch::timer::now_ns() - t1;
            assert!(elapsed >= 1_000_000, "fired early: after {elapsed} ns");
        }
    }

    crate::boot_test! {
        /// RAM comes from the device tree (whatever its size: a real Pi 4 has 1 to 8 GiB), holds
        /// the image, stays clear of the device window and, on a Pi, of the VideoCore's memory at
        /// the top of the first GiB; the frame allocator covers exactly the usable part of it.
        fn device_tree_memory_size() {
            let cfg = boot_config();
            assert_eq!(cfg.ram_source, RamSource::DeviceTree, "no device tree found (x0 or board fallback)");
            let ram: u64 = cfg.ram.iter().map(|r| r.size).sum();
            assert!(ram >= 64 << 20, "RAM from the device tree: {:?}", cfg.ram);
            let (img_s, img_e) = arch::boot::image_phys_range();
            assert!(
                cfg.ram.iter().any(|r| r.base <= img_s as u64 && img_e as u64 <= r.end()),
                "the image {img_s:#x}..{img_e:#x} is not inside RAM {:?}",
                cfg.ram
            );
            let (dlo, dhi) = (BOARD.device_window.0 as u64, BOARD.device_window.1 as u64);
            for r in &cfg.ram {
                assert!(r.end() <= dlo || r.base >= dhi, "RAM {r:?} overlaps the device window");
            }
            if cfg.board != "qemu-virt" {
                let first = cfg.ram.iter().min_by_key(|r| r.base).unwrap();
                assert_eq!(first.base, 0, "a Pi's ARM memory starts at 0");
                assert!(first.end() <= 0x3C00_0000, "{first:?} reaches into the VideoCore's memory");
            }
            let usable: u64 = cfg.usable.iter().map(|r| r.size).sum();
            let (_, total) = frame_counts();
            assert_eq!(total as u64 * FRAME_SIZE as u64, usable);
            for r in &cfg.usable {
                assert!(r.end() <= img_s as u64 || r.base >= img_e as u64, "usable {r:?} overlaps the image");
                if let (Some(dtb), Some(dt)) = (cfg.dtb, cfg.dt.as_ref()) {
                    let (ds, de) = (dtb as u64, (dtb + dt.total_size) as u64);
                    assert!(r.end() <= ds || r.base >= de, "usable {r:?} overlaps the device tree");
                }
            }
        }
    }

    crate::boot_test! {
        /// The interrupt controller was reset: of all the interrupts the distributor implements,
        /// only the virtual timer is enabled, and nothing but it can be pending or active; on the
        /// Pi 3 every interrupt of the BCM2835 controller is disabled and FIQ routing is off.
        fn interrupt_controller_reset_leaves_only_the_timer() {
            use tock_registers::interfaces::Readable;
            if let Some((d, _)) = arch::irq::gic() {
                let words = arch::gic::lines(d).div_ceil(32) as usize;
                let timer = BOARD.virtual_timer_intid;
                for i in 0..words {
                    let expected = if i == (timer / 32) as usize { 1 << (timer % 32) } else { 0 };
                    // Whether SGIs (IDs 0..16) can be disabled at all is implementation defined.
                    let mask = if i == 0 { 0xFFFF_0000 } else { u32::MAX };
                    assert_eq!(d.isenabler[i].get() & mask, expected, "GICD_ISENABLER{i}");
                    assert_eq!(d.isactiver[i].get() & !expected, 0, "GICD_ISACTIVER{i}");
                    if i > 0 {
                        assert_eq!(d.ispendr[i].get(), 0, "GICD_ISPENDR{i}: shared interrupts pending");
                    }
                }
                assert_eq!(d.ctlr.get() & 1, 1, "distributor enabled");
            }
            if let Some(legacy) = arch::irq::bcm2835_legacy() {
                assert_eq!(legacy.enable[0].get(), 0, "IRQ enable 1");
                assert_eq!(legacy.enable[1].get(), 0, "IRQ enable 2");
                assert_eq!(legacy.enable_basic.get() & 0xff, 0, "basic IRQ enable");
                assert_eq!(legacy.fiq_control.get() & 0x80, 0, "FIQ routing off");
            }
        }
    }

    crate::boot_test! {
        /// The boot path recorded the entry EL the board is documented to use.
        fn entry_exception_level() {
            let el = boot_config().entry_el;
            match boot_config().board {
                "qemu-virt" => assert_eq!(el, 1),
                _ => assert_eq!(el, 2, "Raspberry Pi boards enter at EL2"),
            }
            assert_eq!(arch::cpu::current_el(), 1);
        }
    }
}
