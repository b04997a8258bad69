//! The Raspberry Pi GPIO block: just enough to give GPIO14/15 to the PL011 (TXD0/RXD0, function
//! ALT0) with the pull resistors off, as the console needs on a real board whatever the firmware
//! left. BCM2837 ("BCM2835 ARM Peripherals", 6.1: GPFSELn, GPPUD, GPPUDCLKn and the pull-change
//! sequence) and BCM2711 ("BCM2711 ARM Peripherals", 5.2: GPIO_PUP_PDN_CNTRL_REGn, which replaces
//! the sequence with two bits per pin).
//!
//! The functions take the register block by reference, so they are tested on the host.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;

register_structs! {
    /// The GPIO registers used here (both chips share the layout up to 0xA0).
    pub Registers {
        (0x00 => pub gpfsel: [ReadWrite<u32>; 6]),
        (0x18 => _reserved0),
        (0x94 => pub gppud: ReadWrite<u32>),
        (0x98 => pub gppudclk: [ReadWrite<u32>; 2]),
        (0xA0 => _reserved1),
        (0xE4 => pub pup_pdn_cntrl: [ReadWrite<u32>; 4]),
        (0xF4 => @END),
    }
}

/// Which GPIO block a board has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// BCM2835/6/7 (Pi 1–3): pulls set through GPPUD and a clocked GPPUDCLK sequence.
    Bcm2837,
    /// BCM2711 (Pi 4): pulls set directly in GPIO_PUP_PDN_CNTRL_REGn.
    Bcm2711,
}

/// A pin's function select value (3 bits in GPFSELn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Function {
    Input = 0b000,
    Output = 0b001,
    Alt0 = 0b100,
}

/// The pins of UART0 (the PL011): TXD0 and RXD0 on function ALT0.
pub const UART0_PINS: [u32; 2] = [14, 15];

/// Sets `pin`'s function, leaving the other pins of its GPFSEL register as they are.
pub fn set_function(r: &Registers, pin: u32, f: Function) {
    let reg = &r.gpfsel[(pin / 10) as usize];
    let shift = (pin % 10) * 3;
    reg.set((reg.get() & !(0b111 << shift)) | ((f as u32) << shift));
}

/// The function `pin` is set to (the raw 3-bit value).
pub fn function(r: &Registers, pin: u32) -> u32 {
    (r.gpfsel[(pin / 10) as usize].get() >> ((pin % 10) * 3)) & 0b111
}

/// Turns the pull-up/down resistors of `pins` off. On the BCM2837 this is the documented
/// sequence: write the control signal, wait 150 cycles, clock it into the pins, wait 150 cycles,
/// remove signal and clock; `wait_150_cycles` provides the waits.
pub fn pulls_off(r: &Registers, kind: Kind, pins: &[u32], mut wait_150_cycles: impl FnMut()) {
    match kind {
        Kind::Bcm2837 => {
            let mut clk = [0u32; 2];
            for &p in pins {
                clk[(p / 32) as usize] |= 1 << (p % 32);
            }
            r.gppud.set(0);
            wait_150_cycles();
            for (reg, bits) in r.gppudclk.iter().zip(clk) {
                reg.set(bits);
            }
            wait_150_cycles();
            r.gppud.set(0);
            for reg in &r.gppudclk {
                reg.set(0);
            }
        }
        Kind::Bcm2711 => {
            // Two bits per pin, sixteen pins per register; 0b00 is "no resistor".
            for &p in pins {
                let reg = &r.pup_pdn_cntrl[(p / 16) as usize];
                reg.set(reg.get() & !(0b11 << ((p % 16) * 2)));
            }
        }
    }
}

/// Gives GPIO14/15 to the PL011 (ALT0) with no pull resistors.
pub fn route_uart0(r: &Registers, kind: Kind, wait_150_cycles: impl FnMut()) {
    pulls_off(r, kind, &UART0_PINS, wait_150_cycles);
    for pin in UART0_PINS {
        set_function(r, pin, Function::Alt0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> Box<[u32; 61]> {
        Box::new([0xFFFF_FFFF; 61])
    }

    fn regs(m: &[u32; 61]) -> &Registers {
        // SAFETY: 61 u32s are the 0xF4 bytes of the block, u32-aligned; the block is plain cells.
        unsafe { &*(m.as_ptr() as *const Registers) }
    }

    #[test]
    fn uart_pins_alt0_keeps_the_other_pins() {
        let m = fake();
        let r = regs(&m);
        route_uart0(r, Kind::Bcm2711, || {});
        // GPFSEL1 holds pins 10..19, three bits each: 14 at 12..15, 15 at 15..18.
        let fsel1 = m[1];
        assert_eq!((fsel1 >> 12) & 0b111, 0b100);
        assert_eq!((fsel1 >> 15) & 0b111, 0b100);
        assert_eq!(
            fsel1 | (0b011_011 << 12),
            0xFFFF_FFFF,
            "only pins 14 and 15 changed"
        );
        assert_eq!(function(r, 14), Function::Alt0 as u32);
        assert_eq!(m[0], 0xFFFF_FFFF, "GPFSEL0 untouched");
        // BCM2711 pulls: pins 14 and 15 are bits 28..32 of GPIO_PUP_PDN_CNTRL_REG0 (index 57).
        assert_eq!(m[57], 0x0FFF_FFFF);
        assert_eq!(m[58], 0xFFFF_FFFF);
    }

    #[test]
    fn bcm2837_pull_sequence() {
        let m = fake();
        let r = regs(&m);
        let mut seen = Vec::new();
        // Record GPPUD (index 37) and GPPUDCLK0 (index 38) at each wait.
        let words = m.as_ptr();
        route_uart0(r, Kind::Bcm2837, || {
            // SAFETY: reading the fake block's words between the function's writes.
            seen.push(unsafe { (words.add(37).read_volatile(), words.add(38).read_volatile()) })
        });
        assert_eq!(seen, [(0, 0xFFFF_FFFF), (0, (1 << 14) | (1 << 15))]);
        assert_eq!((m[37], m[38], m[39]), (0, 0, 0), "signal and clocks removed");
        assert_eq!(m[57], 0xFFFF_FFFF, "no BCM2711 register written");
        assert_eq!(function(r, 15), Function::Alt0 as u32);
    }
}
