//! What a memory access is and how the MMU refuses one: the vocabulary shared by the fault
//! handling of address spaces ([`crate::space`]), the abort hook on the target and the
//! hardware model of the host tests.

/// What an access was trying to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Exec,
}

/// The exception level an access was made at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum El {
    /// User (EL0).
    El0,
    /// Kernel (EL1).
    El1,
}

/// What the MMU reported: the class of a translation fault, in the order of the fault status
/// codes (translation, access flag, permission).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// No valid descriptor.
    Translation,
    /// The leaf's access flag is clear.
    AccessFlag,
    /// The permissions of the leaf (or the limits of the tables above it) refused the access.
    Permission,
}

impl FaultKind {
    /// The class of a fault status code (`ESR_ELx.ISS.DFSC` / `IFSC`, bits \[5:0\]) of a data
    /// or instruction abort: translation `0b0001LL`, access flag `0b0010LL`, permission
    /// `0b0011LL` (`LL` the level); `None` for any other status (alignment, external abort,
    /// TLB conflict, ...).
    pub const fn from_status(fsc: u64) -> Option<FaultKind> {
        match fsc & 0x3c {
            0x04 => Some(FaultKind::Translation),
            0x08 => Some(FaultKind::AccessFlag),
            0x0c => Some(FaultKind::Permission),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_status_codes() {
        for level in 0..4 {
            assert_eq!(FaultKind::from_status(0x04 | level), Some(FaultKind::Translation));
            assert_eq!(FaultKind::from_status(0x08 | level), Some(FaultKind::AccessFlag));
            assert_eq!(FaultKind::from_status(0x0c | level), Some(FaultKind::Permission));
        }
        // Address size, synchronous external abort, alignment, TLB conflict.
        for fsc in [0x00, 0x10, 0x21, 0x30] {
            assert_eq!(FaultKind::from_status(fsc), None);
        }
    }
}
