//! Board constants: everything that differs between the supported machines lives here, one block
//! per board, selected by exactly one `board-*` cargo feature (the build driver picks it).
//!
//! Physical addresses only. After the boot map is installed every physical address `pa` below
//! 4 GiB is also reachable at `pa + KERNEL_OFFSET` (see [`crate::boot`]).

/// The kernel image runs in the high half (TTBR1): virtual address = physical address + this.
pub const KERNEL_OFFSET: usize = 0xFFFF_0000_0000_0000;

/// The interrupt controller a board routes the generic timer through.
#[derive(Clone, Copy, Debug)]
pub enum IntController {
    /// Arm GICv2 (GIC-400 on the Pi 4): distributor and CPU interface bases.
    GicV2 { distributor: usize, cpu: usize },
    /// The BCM2836/7 "ARM local" block of the Pi 3: per-core timer routing and IRQ source registers;
    /// `legacy` is the BCM2835 ARM interrupt controller behind it (the GPU's peripheral
    /// interrupts), which Tessera masks.
    Bcm2836Local { base: usize, legacy: usize },
}

/// A board's hardware random number generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RngKind {
    /// The BCM2835 RNG (Pi 3).
    Bcm2835,
    /// The iproc RNG200 (Pi 4).
    Rng200,
}

/// Everything the boot code and drivers need to know about one board.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// Short name as used by `cargo xtask --board`.
    pub name: &'static str,
    /// PL011 UART (serial0) base.
    pub uart_base: usize,
    /// PL011 reference clock in Hz, from which the console computes its baud-rate divisors (on a
    /// Pi, `config.txt` sets it with `init_uart_clock`).
    pub uart_clock_hz: u32,
    /// The GPIO block that routes the UART's pins, where the board has one.
    pub gpio: Option<(usize, crate::gpio::Kind)>,
    /// The board's random number generator (used where the CPU has no `RNDR`).
    pub rng: Option<(usize, RngKind)>,
    /// How the timer interrupt reaches the core.
    pub int_controller: IntController,
    /// RAM assumed when the device tree does not say (base, size). On a Pi this must stay below the
    /// VideoCore's share at the top of the first GiB (with the default 76 MiB `gpu_mem`, ARM memory
    /// ends at 0x3B40_0000).
    pub default_ram: (usize, usize),
    /// Physical window mapped as Device memory by the boot map (2 MiB granularity): [lo, hi).
    pub device_window: (usize, usize),
    /// Usable RAM is clamped below this address (peripherals / VideoCore start here). The boot map
    /// maps [`Board::default_ram`]'s base up to here as Normal memory, the device window as Device,
    /// and nothing else.
    pub ram_limit: usize,
    /// Where to look for a device tree when x0 does not point at one (QEMU virt puts it at the start
    /// of RAM when booting an ELF image).
    pub dtb_fallback: Option<usize>,
    /// Physical memory at the start of RAM that must never be handed out (firmware spin tables).
    pub reserved_low: usize,
    /// Interrupt ID of the EL1 virtual timer (PPI 11 → INTID 27 on a GIC).
    pub virtual_timer_intid: u32,
}

#[cfg(all(
    feature = "board-qemu-virt",
    not(any(feature = "board-raspi3", feature = "board-raspi4"))
))]
/// QEMU `virt`: image at 0x4020_0000, RAM from 1 GiB, GICv2, PL011 at 0x0900_0000, boots at EL1, PSCI over HVC.
pub const BOARD: Board = Board {
    name: "qemu-virt",
    uart_base: 0x0900_0000,
    uart_clock_hz: 24_000_000,
    gpio: None,
    rng: None,
    int_controller: IntController::GicV2 {
        distributor: 0x0800_0000,
        cpu: 0x0801_0000,
    },
    default_ram: (0x4000_0000, 128 << 20),
    device_window: (0, 0x4000_0000),
    ram_limit: 0x1_0000_0000,
    dtb_fallback: Some(0x4000_0000),
    reserved_low: 0,
    virtual_timer_intid: 27,
};

#[cfg(all(
    feature = "board-raspi3",
    not(any(feature = "board-qemu-virt", feature = "board-raspi4"))
))]
/// Raspberry Pi 3 (BCM2837): 1 GiB RAM from 0, peripherals at 0x3F00_0000, ARM local block at
/// 0x4000_0000, boots at EL2.
pub const BOARD: Board = Board {
    name: "raspi3",
    uart_base: 0x3F20_1000,
    uart_clock_hz: 48_000_000,
    gpio: Some((0x3F20_0000, crate::gpio::Kind::Bcm2837)),
    rng: Some((0x3F10_4000, RngKind::Bcm2835)),
    int_controller: IntController::Bcm2836Local {
        base: 0x4000_0000,
        legacy: 0x3F00_B200,
    },
    default_ram: (0, 0x3B40_0000),
    device_window: (0x3F00_0000, 0x4020_0000),
    ram_limit: 0x3F00_0000,
    dtb_fallback: None,
    reserved_low: 0x1000,
    virtual_timer_intid: 27,
};

#[cfg(all(
    feature = "board-raspi4",
    not(any(feature = "board-qemu-virt", feature = "board-raspi3"))
))]
/// Raspberry Pi 4 (BCM2711, low-peripheral mode): RAM from 0, peripherals at 0xFE00_0000, GIC-400
/// at 0xFF84_0000, boots at EL2.
pub const BOARD: Board = Board {
    name: "raspi4",
    uart_base: 0xFE20_1000,
    uart_clock_hz: 48_000_000,
    gpio: Some((0xFE20_0000, crate::gpio::Kind::Bcm2711)),
    rng: Some((0xFE10_4000, RngKind::Rng200)),
    int_controller: IntController::GicV2 {
        distributor: 0xFF84_1000,
        cpu: 0xFF84_2000,
    },
    default_ram: (0, 0x3B40_0000),
    device_window: (0xFC00_0000, 0x1_0000_0000),
    ram_limit: 0xFC00_0000,
    dtb_fallback: None,
    reserved_low: 0x1000,
    virtual_timer_intid: 27,
};

#[cfg(all(
    target_os = "none",
    not(any(
        feature = "board-qemu-virt",
        feature = "board-raspi3",
        feature = "board-raspi4"
    ))
))]
compile_error!("choose a board: build through `cargo xtask` or pass --features libos/board-qemu-virt (or board-raspi3, board-raspi4)");

#[cfg(any(
    all(feature = "board-qemu-virt", feature = "board-raspi3"),
    all(feature = "board-qemu-virt", feature = "board-raspi4"),
    all(feature = "board-raspi3", feature = "board-raspi4")
))]
compile_error!("more than one board-* feature is enabled; an image is built for exactly one board");

/// Converts a physical address below 4 GiB to the kernel virtual address that maps it.
#[inline]
pub const fn phys_to_virt(pa: usize) -> usize {
    pa + KERNEL_OFFSET
}

/// Converts a kernel virtual address (linear/high-half) back to its physical address.
#[inline]
pub const fn virt_to_phys(va: usize) -> usize {
    va - KERNEL_OFFSET
}
