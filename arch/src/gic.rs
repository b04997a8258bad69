//! The Arm GICv2 (QEMU `virt`'s GIC, the Pi 4's GIC-400): register blocks, and a full reset of
//! the distributor and CPU interface so that nothing the firmware left enabled, pending or active
//! can fire. Arm IHI 0048B (GICv2 architecture specification), 4.3 "Distributor register
//! descriptions" and 4.4 "CPU interface register descriptions"; GIC-400 TRM (DDI 0471B) 3.2.
//!
//! The functions take the register blocks by reference, so they are tested on the host against
//! blocks in ordinary memory.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    /// `GICD_*`.
    pub Distributor {
        (0x000 => pub ctlr: ReadWrite<u32>),
        (0x004 => pub typer: ReadOnly<u32>),
        (0x008 => _reserved0),
        (0x080 => pub igroupr: [ReadWrite<u32>; 32]),
        (0x100 => pub isenabler: [ReadWrite<u32>; 32]),
        (0x180 => pub icenabler: [ReadWrite<u32>; 32]),
        (0x200 => pub ispendr: [ReadWrite<u32>; 32]),
        (0x280 => pub icpendr: [ReadWrite<u32>; 32]),
        (0x300 => pub isactiver: [ReadWrite<u32>; 32]),
        (0x380 => pub icactiver: [ReadWrite<u32>; 32]),
        (0x400 => pub ipriorityr: [ReadWrite<u32>; 255]),
        (0x7FC => _reserved1),
        (0x800 => pub itargetsr: [ReadWrite<u32>; 255]),
        (0xBFC => _reserved2),
        (0xC00 => pub icfgr: [ReadWrite<u32>; 64]),
        (0xD00 => _reserved3),
        (0x1000 => @END),
    }
}

register_structs! {
    /// `GICC_*`.
    pub CpuInterface {
        (0x00 => pub ctlr: ReadWrite<u32>),
        (0x04 => pub pmr: ReadWrite<u32>),
        (0x08 => pub bpr: ReadWrite<u32>),
        (0x0C => pub iar: ReadOnly<u32>),
        (0x10 => pub eoir: WriteOnly<u32>),
        (0x14 => @END),
    }
}

/// `GICD_CTLR` / `GICC_CTLR`: enable group 0 and group 1 (whichever the security state exposes).
pub const ENABLE_GROUPS: u32 = 0b11;
/// `GICC_PMR`: let every priority through.
pub const PRIORITY_MASK_ALL: u32 = 0xFF;
/// The priority every interrupt gets at reset (lower urgency than [`TIMER_PRIORITY`]).
pub const DEFAULT_PRIORITY: u8 = 0xA0;
/// Priority given to the timer PPI.
pub const TIMER_PRIORITY: u8 = 0x80;
/// The first shared peripheral interrupt (IDs below are SGIs and PPIs, banked per core).
pub const FIRST_SPI: u32 = 32;

/// Number of interrupt IDs the distributor implements (`GICD_TYPER.ITLinesNumber`).
pub fn lines(d: &Distributor) -> u32 {
    (32 * ((d.typer.get() & 0x1f) + 1)).min(1020)
}

/// Resets the distributor and the CPU interface: both disabled; every interrupt disabled, not
/// pending, not active, in group 0 (the reset value; from the non-secure state a kernel below the
/// Pi's firmware runs in, the register reads as zero and ignores writes, and group 1 interrupts
/// would be acknowledged as the special ID 1022 by a secure access), at
/// [`DEFAULT_PRIORITY`], level-sensitive and routed to CPU 0 (shared interrupts). Leaves both
/// disabled: [`enable`] turns them on.
pub fn reset(d: &Distributor, c: &CpuInterface) {
    c.ctlr.set(0);
    d.ctlr.set(0);
    let words = lines(d).div_ceil(32) as usize;
    for i in 0..words {
        d.icenabler[i].set(u32::MAX);
        d.icpendr[i].set(u32::MAX);
        d.icactiver[i].set(u32::MAX);
        d.igroupr[i].set(0);
    }
    let prio = u32::from_ne_bytes([DEFAULT_PRIORITY; 4]);
    for i in 0..(lines(d) / 4) as usize {
        d.ipriorityr[i].set(prio);
    }
    // SGIs and PPIs (IDs 0..32) have fixed targets and configurations: start at the first SPI.
    for i in (FIRST_SPI / 4) as usize..(lines(d) / 4) as usize {
        d.itargetsr[i].set(0x0101_0101);
    }
    for i in (FIRST_SPI / 16) as usize..(lines(d) / 16) as usize {
        d.icfgr[i].set(0);
    }
    c.pmr.set(PRIORITY_MASK_ALL);
    c.bpr.set(0);
}

/// Sets `id`'s priority and enables it.
pub fn enable_interrupt(d: &Distributor, id: u32, priority: u8) {
    let reg = (id / 4) as usize;
    let shift = (id % 4) * 8;
    let old = d.ipriorityr[reg].get() & !(0xFF << shift);
    d.ipriorityr[reg].set(old | (u32::from(priority) << shift));
    d.isenabler[(id / 32) as usize].set(1 << (id % 32));
}

/// Turns the distributor and the CPU interface on.
pub fn enable(d: &Distributor, c: &CpuInterface) {
    d.ctlr.set(ENABLE_GROUPS);
    c.ctlr.set(ENABLE_GROUPS);
}

/// Takes the highest-priority pending interrupt: its ID, or `None` for the special IDs 1020..=1023
/// (spurious, or nothing this security state may acknowledge).
pub fn acknowledge(c: &CpuInterface) -> Option<u32> {
    let id = c.iar.get();
    (id & 0x3FF < 1020).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A distributor and CPU interface in ordinary memory, every word set to a sentinel.
    struct Fake {
        d: Box<[u32; 1024]>,
        c: Box<[u32; 5]>,
    }

    const SENTINEL: u32 = 0xDEAD_BEEF;

    impl Fake {
        fn new(it_lines_number: u32) -> Fake {
            let mut d = Box::new([SENTINEL; 1024]);
            d[1] = it_lines_number;
            Fake {
                d,
                c: Box::new([SENTINEL; 5]),
            }
        }
        fn regs(&self) -> (&Distributor, &CpuInterface) {
            // SAFETY: the boxes are 4 KiB and 20 bytes of u32s, as large and as aligned as the
            // register blocks, which are plain `u32` cells.
            unsafe {
                (
                    &*(self.d.as_ptr() as *const Distributor),
                    &*(self.c.as_ptr() as *const CpuInterface),
                )
            }
        }
        fn word(&self, offset: usize) -> u32 {
            self.d[offset / 4]
        }
    }

    #[test]
    fn reset_covers_every_implemented_line_and_no_more() {
        // ITLinesNumber 2: 96 interrupt IDs, three words of each bit array.
        let f = Fake::new(2);
        let (d, c) = f.regs();
        assert_eq!(lines(d), 96);
        reset(d, c);
        assert_eq!(f.word(0x000), 0, "distributor disabled");
        for base in [0x180, 0x280, 0x380] {
            for i in 0..3 {
                assert_eq!(f.word(base + 4 * i), u32::MAX, "{base:#x}[{i}]");
            }
            assert_eq!(
                f.word(base + 12),
                SENTINEL,
                "{base:#x}: past the implemented lines"
            );
        }
        for i in 0..3 {
            assert_eq!(f.word(0x080 + 4 * i), 0, "group 0, word {i}");
        }
        assert_eq!(f.word(0x080 + 12), SENTINEL);
        for base in [0x100, 0x200, 0x300] {
            assert_eq!(f.word(base), SENTINEL, "{base:#x}: set-registers are not written");
        }
        for i in 0..24 {
            assert_eq!(f.word(0x400 + 4 * i), 0xA0A0_A0A0, "priority word {i}");
        }
        assert_eq!(f.word(0x400 + 4 * 24), SENTINEL);
        for i in 0..8 {
            assert_eq!(f.word(0x800 + 4 * i), SENTINEL, "SGI/PPI targets are read-only");
        }
        for i in 8..24 {
            assert_eq!(f.word(0x800 + 4 * i), 0x0101_0101, "SPI targets word {i}");
        }
        assert_eq!(f.word(0xC00 + 4), SENTINEL, "PPI configuration untouched");
        for i in 2..6 {
            assert_eq!(f.word(0xC00 + 4 * i), 0, "SPIs level-sensitive, word {i}");
        }
        assert_eq!(f.word(0xC00 + 4 * 6), SENTINEL);
        assert_eq!(f.c[0], 0, "CPU interface disabled");
        assert_eq!(f.c[1], 0xFF, "priority mask open");
    }

    #[test]
    fn the_largest_distributor_stops_at_1020() {
        let f = Fake::new(31);
        let (d, c) = f.regs();
        assert_eq!(lines(d), 1020);
        reset(d, c);
        assert_eq!(f.word(0x380 + 4 * 31), u32::MAX);
        assert_eq!(f.word(0x400 + 4 * 254), 0xA0A0_A0A0);
    }

    #[test]
    fn enable_sets_one_priority_byte_and_one_enable_bit() {
        let f = Fake::new(2);
        let (d, c) = f.regs();
        reset(d, c);
        enable_interrupt(d, 27, TIMER_PRIORITY);
        assert_eq!(
            f.word(0x400 + 4 * 6),
            0x80A0_A0A0,
            "ID 27 is the top byte of word 6"
        );
        assert_eq!(f.word(0x100), 1 << 27);
        enable(d, c);
        assert_eq!((f.word(0), f.c[0]), (ENABLE_GROUPS, ENABLE_GROUPS));
    }
}
