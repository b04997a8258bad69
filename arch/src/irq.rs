//! The board's interrupt controller: reset at boot so that nothing the firmware left behind can
//! fire, then just enough to route the EL1 virtual timer to core 0 as an IRQ.
//!
//! * GICv2 (QEMU `virt`, Pi 4's GIC-400): full distributor and CPU-interface reset ([`crate::gic`]),
//!   then the timer PPI enabled at its priority.
//! * BCM2836/7 ARM-local block (Pi 3): every interrupt of the BCM2835 ARM interrupt controller
//!   (the GPU's peripherals) disabled, FIQ routing off, the local block's mailbox interrupts off,
//!   and `nCNTVIRQ` routed to IRQ in core 0's timer control register; the pending source register
//!   tells which timer fired. ("BCM2835 ARM Peripherals" 7.5; "BCM2836 ARM-local peripherals"
//!   4.6–4.10.)

use crate::board::{phys_to_virt, IntController, BOARD};
use crate::gic;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    Bcm2836Local {
        (0x00 => _reserved0),
        (0x40 => core_timer_irq_ctl: [ReadWrite<u32>; 4]),
        (0x50 => core_mailbox_irq_ctl: [ReadWrite<u32>; 4]),
        (0x60 => core0_irq_source: ReadOnly<u32>),
        (0x64 => @END),
    }
}

register_structs! {
    /// The BCM2835 ARM interrupt controller (base + 0x200 of its 4 KiB page).
    pub Bcm2835Legacy {
        (0x00 => pub basic_pending: ReadOnly<u32>),
        (0x04 => pub pending: [ReadOnly<u32>; 2]),
        (0x0C => pub fiq_control: ReadWrite<u32>),
        (0x10 => pub enable: [ReadWrite<u32>; 2]),
        (0x18 => pub enable_basic: ReadWrite<u32>),
        (0x1C => pub disable: [WriteOnly<u32>; 2]),
        (0x24 => pub disable_basic: WriteOnly<u32>),
        (0x28 => @END),
    }
}

/// BCM local: `nCNTVIRQ` IRQ enable / pending bit (bit 3) in the core timer registers.
const BCM_CNTV_IRQ: u32 = 1 << 3;

fn gicd(base: usize) -> &'static gic::Distributor {
    // SAFETY: `base` is the board's GIC distributor, mapped Device by the boot map and the kernel
    // map for the whole life of the image; the register block layout matches the GICv2 architecture.
    unsafe { &*(phys_to_virt(base) as *const gic::Distributor) }
}

fn gicc(base: usize) -> &'static gic::CpuInterface {
    // SAFETY: as for `gicd`, for the GIC CPU interface.
    unsafe { &*(phys_to_virt(base) as *const gic::CpuInterface) }
}

fn bcm_local(base: usize) -> &'static Bcm2836Local {
    // SAFETY: the ARM-local block of the BCM2836/7, mapped Device by the boot and kernel maps.
    unsafe { &*(phys_to_virt(base) as *const Bcm2836Local) }
}

/// The Pi 3's BCM2835 ARM interrupt controller (`None` on other boards).
pub fn bcm2835_legacy() -> Option<&'static Bcm2835Legacy> {
    match BOARD.int_controller {
        IntController::Bcm2836Local { legacy, .. } => {
            // SAFETY: the board's legacy interrupt controller, in the Device window of both maps.
            Some(unsafe { &*(phys_to_virt(legacy) as *const Bcm2835Legacy) })
        }
        IntController::GicV2 { .. } => None,
    }
}

/// The board's GIC (`None` on boards without one).
pub fn gic() -> Option<(&'static gic::Distributor, &'static gic::CpuInterface)> {
    match BOARD.int_controller {
        IntController::GicV2 { distributor, cpu } => Some((gicd(distributor), gicc(cpu))),
        IntController::Bcm2836Local { .. } => None,
    }
}

/// Resets the interrupt controller and leaves every interrupt disabled but the virtual timer's.
pub fn init() {
    match BOARD.int_controller {
        IntController::GicV2 { distributor, cpu } => {
            let (d, c) = (gicd(distributor), gicc(cpu));
            gic::reset(d, c);
            gic::enable_interrupt(d, BOARD.virtual_timer_intid, gic::TIMER_PRIORITY);
            gic::enable(d, c);
        }
        IntController::Bcm2836Local { base, .. } => {
            if let Some(legacy) = bcm2835_legacy() {
                legacy.fiq_control.set(0);
                legacy.disable[0].set(u32::MAX);
                legacy.disable[1].set(u32::MAX);
                legacy.disable_basic.set(u32::MAX);
            }
            let local = bcm_local(base);
            for core in 0..4 {
                local.core_mailbox_irq_ctl[core].set(0);
                local.core_timer_irq_ctl[core].set(0);
            }
            local.core_timer_irq_ctl[0].set(BCM_CNTV_IRQ);
        }
    }
}

/// Takes the highest-priority pending interrupt: its ID, or `None` if spurious.
pub fn acknowledge() -> Option<u32> {
    match BOARD.int_controller {
        IntController::GicV2 { cpu, .. } => gic::acknowledge(gicc(cpu)),
        IntController::Bcm2836Local { base, .. } => {
            (bcm_local(base).core0_irq_source.get() & BCM_CNTV_IRQ != 0).then_some(BOARD.virtual_timer_intid)
        }
    }
}

/// Signals the end of handling for an ID returned by [`acknowledge`].
pub fn end_of_interrupt(id: u32) {
    if let IntController::GicV2 { cpu, .. } = BOARD.int_controller {
        gicc(cpu).eoir.set(id);
    }
}

/// Interrupt ID that [`acknowledge`] returns for the EL1 virtual timer.
pub fn timer_id() -> u32 {
    BOARD.virtual_timer_intid & 0x3FF
}
