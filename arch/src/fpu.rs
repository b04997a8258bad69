//! The FP/SIMD register file of a user program: `q0..q31`, `FPCR`, `FPSR`.
//!
//! The kernel is built for a soft-float target and never touches these registers, so they keep
//! the running program's values across its exceptions and system calls (nothing saves them on
//! exception entry). A process switch saves the outgoing program's with [`save`] and loads the
//! incoming one's with [`restore`].

/// The FP/SIMD registers of one program.
#[repr(C, align(16))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FpState {
    pub q: [u128; 32],
    pub fpcr: u64,
    pub fpsr: u64,
}

impl FpState {
    /// All registers zero: what a program starts with.
    pub const fn new() -> FpState {
        FpState {
            q: [0; 32],
            fpcr: 0,
            fpsr: 0,
        }
    }
}

impl Default for FpState {
    fn default() -> Self {
        FpState::new()
    }
}

const _: () = assert!(core::mem::offset_of!(FpState, fpcr) == 512);

/// Stores the CPU's FP/SIMD registers into `s`.
#[cfg(target_os = "none")]
pub fn save(s: &mut FpState) {
    // SAFETY: stores 528 bytes into `*s` (exactly its size, 16-byte aligned); reads registers
    // only. The directives let the soft-float target assemble FP/SIMD instructions (FP/SIMD is
    // enabled at EL1 by `CPACR_EL1.FPEN`).
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "stp q0, q1, [{p}, #0]",
            "stp q2, q3, [{p}, #32]",
            "stp q4, q5, [{p}, #64]",
            "stp q6, q7, [{p}, #96]",
            "stp q8, q9, [{p}, #128]",
            "stp q10, q11, [{p}, #160]",
            "stp q12, q13, [{p}, #192]",
            "stp q14, q15, [{p}, #224]",
            "stp q16, q17, [{p}, #256]",
            "stp q18, q19, [{p}, #288]",
            "stp q20, q21, [{p}, #320]",
            "stp q22, q23, [{p}, #352]",
            "stp q24, q25, [{p}, #384]",
            "stp q26, q27, [{p}, #416]",
            "stp q28, q29, [{p}, #448]",
            "stp q30, q31, [{p}, #480]",
            "mrs {a}, fpcr",
            "mrs {b}, fpsr",
            "str {a}, [{p}, #512]",
            "str {b}, [{p}, #520]",
            p = in(reg) s as *mut FpState,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
}

/// Loads the CPU's FP/SIMD registers from `s`.
#[cfg(target_os = "none")]
pub fn restore(s: &FpState) {
    // SAFETY: reads 528 bytes of `*s`; writes only FP/SIMD registers, which no kernel code uses
    // (see the module docs).
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "ldp q0, q1, [{p}, #0]",
            "ldp q2, q3, [{p}, #32]",
            "ldp q4, q5, [{p}, #64]",
            "ldp q6, q7, [{p}, #96]",
            "ldp q8, q9, [{p}, #128]",
            "ldp q10, q11, [{p}, #160]",
            "ldp q12, q13, [{p}, #192]",
            "ldp q14, q15, [{p}, #224]",
            "ldp q16, q17, [{p}, #256]",
            "ldp q18, q19, [{p}, #288]",
            "ldp q20, q21, [{p}, #320]",
            "ldp q22, q23, [{p}, #352]",
            "ldp q24, q25, [{p}, #384]",
            "ldp q26, q27, [{p}, #416]",
            "ldp q28, q29, [{p}, #448]",
            "ldp q30, q31, [{p}, #480]",
            "ldr {a}, [{p}, #512]",
            "ldr {b}, [{p}, #520]",
            "msr fpcr, {a}",
            "msr fpsr, {b}",
            p = in(reg) s as *const FpState,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
}
