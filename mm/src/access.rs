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
/// codes (translation, access flag, permission). On the target the syndrome is decoded by
/// `arch::esr` and only named here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// No valid descriptor.
    Translation,
    /// The leaf's access flag is clear.
    AccessFlag,
    /// The permissions of the leaf (or the limits of the tables above it) refused the access.
    Permission,
}
