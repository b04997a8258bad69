//! Interrupt controllers: just enough to route the EL1 virtual timer to core 0 as an IRQ.
//!
//! * GICv2 (QEMU `virt`, Pi 4's GIC-400): enable the distributor and the CPU interface, set the
//!   timer PPI's priority and enable it.
//! * BCM2836/7 ARM-local block (Pi 3): set `nCNTVIRQ` routing to IRQ in core 0's timer control
//!   register; the pending source register tells which timer fired.

use crate::board::{phys_to_virt, IntController, BOARD};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    GicDistributor {
        (0x000 => ctlr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => icenabler: [ReadWrite<u32>; 32]),
        (0x200 => _reserved1),
        (0x400 => ipriorityr: [ReadWrite<u32>; 255]),
        (0x7FC => _reserved2),
        (0x1000 => @END),
    }
}

register_structs! {
    GicCpuInterface {
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => pmr: ReadWrite<u32>),
        (0x08 => bpr: ReadWrite<u32>),
        (0x0C => iar: ReadOnly<u32>),
        (0x10 => eoir: WriteOnly<u32>),
        (0x14 => @END),
    }
}

register_structs! {
    Bcm2836Local {
        (0x00 => control: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x40 => core0_timer_irq_ctl: ReadWrite<u32>),
        (0x44 => _reserved1),
        (0x60 => core0_irq_source: ReadOnly<u32>),
        (0x64 => @END),
    }
}

/// GICD_CTLR / GICC_CTLR: enable group 0 and group 1 (whichever the security state exposes).
const GIC_ENABLE_GROUPS: u32 = 0b11;
/// GICC_PMR: let every priority through.
const GIC_PRIORITY_MASK_ALL: u32 = 0xFF;
/// Priority given to the timer PPI.
const TIMER_PRIORITY: u32 = 0x80;
/// Spurious interrupt ID on a GIC.
const GIC_SPURIOUS: u32 = 1023;
/// BCM local: `nCNTVIRQ` IRQ enable / pending bit (bit 3) in the core timer registers.
const BCM_CNTV_IRQ: u32 = 1 << 3;

fn gicd(base: usize) -> &'static GicDistributor {
    // SAFETY: `base` is the board's GIC distributor, mapped Device by the boot map for the whole
    // life of the image; the register block layout matches the GICv2 architecture.
    unsafe { &*(phys_to_virt(base) as *const GicDistributor) }
}

fn gicc(base: usize) -> &'static GicCpuInterface {
    // SAFETY: as for `gicd`, for the GIC CPU interface.
    unsafe { &*(phys_to_virt(base) as *const GicCpuInterface) }
}

fn bcm_local(base: usize) -> &'static Bcm2836Local {
    // SAFETY: the ARM-local block of the BCM2836/7, mapped Device by the boot map.
    unsafe { &*(phys_to_virt(base) as *const Bcm2836Local) }
}

/// Initialises the interrupt controller with every interrupt disabled but the virtual timer's.
pub fn init() {
    let timer = BOARD.virtual_timer_intid;
    match BOARD.int_controller {
        IntController::GicV2 { distributor, cpu } => {
            let d = gicd(distributor);
            let c = gicc(cpu);
            d.ctlr.set(0);
            d.icenabler[0].set(u32::MAX);
            let reg = (timer / 4) as usize;
            let shift = (timer % 4) * 8;
            let prio = d.ipriorityr[reg].get() & !(0xFF << shift);
            d.ipriorityr[reg].set(prio | (TIMER_PRIORITY << shift));
            d.isenabler[(timer / 32) as usize].set(1 << (timer % 32));
            d.ctlr.set(GIC_ENABLE_GROUPS);
            c.pmr.set(GIC_PRIORITY_MASK_ALL);
            c.ctlr.set(GIC_ENABLE_GROUPS);
        }
        IntController::Bcm2836Local { base } => {
            bcm_local(base).core0_timer_irq_ctl.set(BCM_CNTV_IRQ);
        }
    }
}

/// Takes the highest-priority pending interrupt: its ID, or `None` if spurious.
pub fn acknowledge() -> Option<u32> {
    match BOARD.int_controller {
        IntController::GicV2 { cpu, .. } => {
            let id = gicc(cpu).iar.get();
            if id & 0x3FF == GIC_SPURIOUS {
                None
            } else {
                Some(id)
            }
        }
        IntController::Bcm2836Local { base } => {
            if bcm_local(base).core0_irq_source.get() & BCM_CNTV_IRQ != 0 {
                Some(BOARD.virtual_timer_intid)
            } else {
                None
            }
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
