//! From the first Rust code to the app's `main` and back out: the kernel entry called by
//! `arch::boot`, the boot configuration it gathers (device tree, RAM, command line), and exit.

use super::frames::{self, FRAMES};
use super::{heap, EXIT_BOOT_ERROR};
use crate::bootargs::BootArgs;
use crate::devicetree::{self, DtInfo, PhysRange};
use crate::mm::frames::usable_ranges;
use alloc::vec::Vec;
use arch::board::{phys_to_virt, BOARD};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;

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
    arch::exception::install(&super::trap::HANDLERS);
    // Privileged Access Never from here on, where the CPU has it: kernel code reaches user memory
    // through the linear map, or by user address only inside `Process::run`.
    let pan = arch::cpu::enable_pan();
    crate::console::init_logging(crate::console::default_level());

    heap::init();

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
    let mut usable = usable_ranges(&ram, &reserved, BOARD.ram_limit as u64);
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
    let image = PhysRange {
        base: img_start as u64,
        size: (img_end - img_start) as u64,
    };
    let memmap_range = frames::carve_memmap(&mut usable, image)
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
    frames::refill_heap_reserve();

    // Replace the boot map with the kernel's own W^X map; TTBR0 becomes free for address spaces.
    // The linear map covers RAM but the firmware's no-map regions: nothing may reach those, not
    // even a cacheable speculative access.
    let no_map = dt.as_ref().map(|d| d.no_map.clone()).unwrap_or_default();
    let mapped = usable_ranges(&ram, &no_map, u64::MAX);
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
    arch::timer::limit_el0_access();
    arch::cpu::unmask_interrupts();
    let cfg = boot_config();
    log::debug!(
        "{} (entered at EL{}), RAM {:?} from {:?}, {} free frames, bootargs '{}', PAN {}",
        cfg.board,
        cfg.entry_el,
        cfg.ram,
        cfg.ram_source,
        frames::frame_counts().0,
        cfg.bootargs.as_str(),
        if pan { "on" } else { "not implemented by this CPU" }
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
