//! Decoding the exception syndrome register (`ESR_EL1`): the exception class and, for aborts, the
//! fault status (kind and table level) and the access. Arm ARM DDI 0487, D24.2.40 `ESR_EL1`, and
//! "ISS encoding for an exception from a Data Abort / Instruction Abort". Pure functions of the
//! register value, tested on the host.

/// Exception classes (`ESR_EL1.EC`, bits 31:26) that Tessera handles by name.
pub mod ec {
    pub const UNKNOWN: u64 = 0x00;
    pub const SVC64: u64 = 0x15;
    pub const INSTR_ABORT_LOWER: u64 = 0x20;
    pub const INSTR_ABORT_SAME: u64 = 0x21;
    pub const PC_ALIGNMENT: u64 = 0x22;
    pub const DATA_ABORT_LOWER: u64 = 0x24;
    pub const DATA_ABORT_SAME: u64 = 0x25;
    pub const SP_ALIGNMENT: u64 = 0x26;
    pub const SERROR: u64 = 0x2F;
    pub const BRK64: u64 = 0x3C;
}

/// The exception class of `esr`.
pub const fn class(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// A short name for the exception class of `esr`.
pub fn class_name(esr: u64) -> &'static str {
    match class(esr) {
        ec::UNKNOWN => "unknown/undefined instruction",
        ec::SVC64 => "SVC",
        ec::INSTR_ABORT_LOWER | ec::INSTR_ABORT_SAME => "instruction abort",
        ec::PC_ALIGNMENT => "PC alignment fault",
        ec::DATA_ABORT_LOWER | ec::DATA_ABORT_SAME => "data abort",
        ec::SP_ALIGNMENT => "SP alignment fault",
        ec::SERROR => "SError",
        ec::BRK64 => "BRK",
        _ => "other",
    }
}

/// What an abort tried to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortAccess {
    Read,
    Write,
    /// An instruction fetch.
    Execute,
}

/// The fault status of an abort (`DFSC`/`IFSC`, bits 5:0), with the translation-table level where
/// the architecture reports one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    AddressSize {
        level: u8,
    },
    Translation {
        level: u8,
    },
    AccessFlag {
        level: u8,
    },
    Permission {
        level: u8,
    },
    Alignment,
    SyncExternal,
    TlbConflict,
    /// Any other code (the raw 6-bit value).
    Other(u8),
}

impl FaultStatus {
    /// A short name, as printed in fault reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultStatus::AddressSize { .. } => "address size fault",
            FaultStatus::Translation { .. } => "translation fault",
            FaultStatus::AccessFlag { .. } => "access flag fault",
            FaultStatus::Permission { .. } => "permission fault",
            FaultStatus::Alignment => "alignment fault",
            FaultStatus::SyncExternal => "synchronous external abort",
            FaultStatus::TlbConflict => "TLB conflict abort",
            FaultStatus::Other(_) => "other fault",
        }
    }
}

/// An abort decoded from its syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort {
    pub access: AbortAccess,
    pub status: FaultStatus,
    /// Taken from a lower exception level (EL0), not from the kernel itself.
    pub from_lower_el: bool,
}

/// The fault status field of `esr` (meaningful for aborts only).
pub const fn fault_status(esr: u64) -> FaultStatus {
    let fsc = (esr & 0x3f) as u8;
    let level = fsc & 0b11;
    match fsc {
        0b00_0000..=0b00_0011 => FaultStatus::AddressSize { level },
        0b00_0100..=0b00_0111 => FaultStatus::Translation { level },
        0b00_1000..=0b00_1011 => FaultStatus::AccessFlag { level },
        0b00_1100..=0b00_1111 => FaultStatus::Permission { level },
        0b10_0001 => FaultStatus::Alignment,
        0b01_0000 => FaultStatus::SyncExternal,
        0b11_0000 => FaultStatus::TlbConflict,
        other => FaultStatus::Other(other),
    }
}

/// `ISS.WnR` (bit 6) of a data abort: the access was a write. (Cache maintenance and address
/// translation instructions also report WnR = 1; `ISS.CM`, bit 8, tells them apart.)
pub const fn is_write(esr: u64) -> bool {
    esr & (1 << 6) != 0
}

/// Decodes `esr` as an abort; `None` for any other exception class.
pub const fn abort(esr: u64) -> Option<Abort> {
    let (access, from_lower_el) = match class(esr) {
        ec::INSTR_ABORT_LOWER => (AbortAccess::Execute, true),
        ec::INSTR_ABORT_SAME => (AbortAccess::Execute, false),
        ec::DATA_ABORT_LOWER | ec::DATA_ABORT_SAME => (
            if is_write(esr) {
                AbortAccess::Write
            } else {
                AbortAccess::Read
            },
            class(esr) == ec::DATA_ABORT_LOWER,
        ),
        _ => return None,
    };
    Some(Abort {
        access,
        status: fault_status(esr),
        from_lower_el,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esr(class: u64, iss: u64) -> u64 {
        (class << 26) | (1 << 25) | iss
    }

    #[test]
    fn classes() {
        assert_eq!(class(esr(ec::DATA_ABORT_SAME, 0x47)), 0x25);
        assert_eq!(class_name(esr(ec::BRK64, 0x42)), "BRK");
        assert_eq!(class_name(esr(ec::UNKNOWN, 0)), "unknown/undefined instruction");
        assert_eq!(class_name(esr(0x3f, 0)), "other");
        assert_eq!(abort(esr(ec::SVC64, 0)), None);
        assert_eq!(abort(esr(ec::BRK64, 0)), None);
    }

    #[test]
    fn data_aborts() {
        // A write translation fault at level 3 from EL1 (DFSC 0b000111, WnR).
        let a = abort(esr(ec::DATA_ABORT_SAME, (1 << 6) | 0b00_0111)).unwrap();
        assert_eq!(
            a,
            Abort {
                access: AbortAccess::Write,
                status: FaultStatus::Translation { level: 3 },
                from_lower_el: false
            }
        );
        // A read permission fault at level 2 from EL0.
        let a = abort(esr(ec::DATA_ABORT_LOWER, 0b00_1110)).unwrap();
        assert_eq!(a.access, AbortAccess::Read);
        assert_eq!(a.status, FaultStatus::Permission { level: 2 });
        assert!(a.from_lower_el);
        assert_eq!(fault_status(0b00_1001), FaultStatus::AccessFlag { level: 1 });
        assert_eq!(fault_status(0b00_0000), FaultStatus::AddressSize { level: 0 });
        assert_eq!(fault_status(0b10_0001), FaultStatus::Alignment);
        assert_eq!(fault_status(0b01_0000), FaultStatus::SyncExternal);
        assert_eq!(fault_status(0b11_0000), FaultStatus::TlbConflict);
        assert_eq!(fault_status(0b11_0101), FaultStatus::Other(0b11_0101));
        assert_eq!(FaultStatus::Permission { level: 3 }.name(), "permission fault");
    }

    #[test]
    fn instruction_aborts_are_executes_whatever_wnr_says() {
        let a = abort(esr(ec::INSTR_ABORT_SAME, (1 << 6) | 0b00_1111)).unwrap();
        assert_eq!(a.access, AbortAccess::Execute);
        assert_eq!(a.status, FaultStatus::Permission { level: 3 });
        assert!(!a.from_lower_el);
        assert!(
            abort(esr(ec::INSTR_ABORT_LOWER, 0b00_0101))
                .unwrap()
                .from_lower_el
        );
    }
}
