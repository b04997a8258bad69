//! Boot flow, from the first instruction to Rust.
//!
//! 1. `_start` (physical address, MMU off). Every core but core 0 parks in `wfe` (the kernel runs
//!    on one core). x0 holds the device-tree address on boards that pass one.
//! 2. If entered at EL2 (Raspberry Pi firmware and QEMU's raspi boards), configure EL2 so that EL1
//!    runs AArch64 with direct timer access and no FP traps, then `eret` to EL1h with interrupts
//!    masked. QEMU `virt` enters at EL1 directly.
//! 3. At EL1: enable FP/SIMD (`CPACR_EL1.FPEN`: the kernel, built for a soft-float target, never
//!    uses those registers, but user programs do and the process switch saves them), zero `.bss`, and build the *boot map*: one level-0 table, one level-1
//!    table and four level-2 tables that map the low 4 GiB of physical memory with 2 MiB blocks:
//!    the board's RAM window (from its RAM base up to `ram_limit`) as Normal write-back memory, the
//!    device window as Device-nGnRE, XN, and nothing else.
//!    Because translation ignores VA bits [63:48], the same tables serve as TTBR0 (identity, so the
//!    instruction after the MMU is switched on still fetches) and TTBR1 (`KERNEL_OFFSET + pa`).
//! 4. MMU and caches on; SP_EL1 set to the exception stack and SP_EL0 (selected) to the boot
//!    stack, both in the high half; `VBAR_EL1` pointed at the vectors, and a jump to [`rust_entry`]
//!    at its high-half address. Kernel code runs on SP_EL0 and every exception switches to SP_EL1,
//!    so an overflow of the boot stack into its guard page is reported like any other fault.
//!
//! The boot map is deliberately coarse: the memory manager replaces it with a W^X kernel map.
//! All register values are composed from `aarch64-cpu` field definitions below.

use crate::board::{BOARD, KERNEL_OFFSET};
use aarch64_cpu::registers::*;

/// Block descriptor bits for the boot map (level-2, 2 MiB). Kept here rather than in the memory
/// manager because this code runs before any Rust: valid block, AttrIndx, inner shareable,
/// access flag set, EL1-only read/write.
mod desc {
    pub const VALID: u64 = 1 << 0;
    pub const TABLE: u64 = 1 << 1;
    pub const ATTR_INDEX_SHIFT: u64 = 2;
    pub const SH_INNER: u64 = 0b11 << 8;
    pub const AF: u64 = 1 << 10;
    pub const PXN: u64 = 1 << 53;
    pub const UXN: u64 = 1 << 54;
}

/// MAIR_EL1 attribute indices (the memory manager uses the same layout).
pub const MAIR_DEVICE: u64 = 0;
/// Normal memory, inner/outer write-back, read/write-allocate.
pub const MAIR_NORMAL: u64 = 1;
/// Normal memory, non-cacheable.
pub const MAIR_NORMAL_NC: u64 = 2;

const MAIR_VALUE: u64 = MAIR_EL1::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck.value
    | MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc.value
    | MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc.value
    | MAIR_EL1::Attr2_Normal_Outer::NonCacheable.value
    | MAIR_EL1::Attr2_Normal_Inner::NonCacheable.value;

const BLOCK_NORMAL: u64 =
    desc::VALID | (MAIR_NORMAL << desc::ATTR_INDEX_SHIFT) | desc::SH_INNER | desc::AF | desc::UXN;
const BLOCK_DEVICE: u64 =
    desc::VALID | (MAIR_DEVICE << desc::ATTR_INDEX_SHIFT) | desc::AF | desc::PXN | desc::UXN;
const TABLE_DESC: u64 = desc::VALID | desc::TABLE;

/// 48-bit virtual addresses in both halves, 4 KiB granules, write-back walks, inner shareable.
/// IPS is filled in at boot from ID_AA64MMFR0_EL1.PARange.
const TCR_VALUE: u64 = TCR_EL1::T0SZ.val(16).value
    | TCR_EL1::T1SZ.val(16).value
    | TCR_EL1::TG0::KiB_4.value
    | TCR_EL1::TG1::KiB_4.value
    | TCR_EL1::SH0::Inner.value
    | TCR_EL1::SH1::Inner.value
    | TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
    | TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
    | TCR_EL1::IRGN1::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
    | TCR_EL1::ORGN1::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
    | TCR_EL1::AS::ASID16Bits.value;

/// SCTLR_EL1 bits that are RES1 in Armv8.0 and have no field name in `aarch64-cpu`
/// (EOS 11, TSCXT 20, EIS 22, SPAN 23, nTLSMD 28, LSMAOE 29). SPAN=1 leaves PAN unchanged on
/// exception entry; where the CPU has PAN, [`crate::cpu::enable_pan`] clears it once the kernel
/// runs, so that exceptions set PAN.
const SCTLR_RES1: u64 = (1 << 11) | (1 << 20) | (1 << 22) | (1 << 23) | (1 << 28) | (1 << 29);

/// MMU, caches and stack-alignment checks on; little-endian; no alignment faults for data.
const SCTLR_MMU_ON: u64 = SCTLR_RES1
    | SCTLR_EL1::M::Enable.value
    | SCTLR_EL1::C::Cacheable.value
    | SCTLR_EL1::I::Cacheable.value
    | SCTLR_EL1::SA::Enable.value
    | SCTLR_EL1::SA0::Enable.value;

/// Value for SCTLR_EL1 before the MMU is on (everything off, RES1 bits set).
const SCTLR_MMU_OFF: u64 = SCTLR_RES1;

/// EL1 runs AArch64.
const HCR_EL2_VALUE: u64 = HCR_EL2::RW::EL1IsAarch64.value;
/// EL1 may read the physical counter and use the physical timer.
const CNTHCTL_EL2_VALUE: u64 = CNTHCTL_EL2::EL1PCEN::SET.value | CNTHCTL_EL2::EL1PCTEN::SET.value;
/// CPTR_EL2 with no traps (bits 13:12, 9:0 are RES1 in the non-VHE layout).
const CPTR_EL2_VALUE: u64 = 0x33FF;
/// Return to EL1h with D, A, I, F masked.
const SPSR_EL2_VALUE: u64 = SPSR_EL2::D::Masked.value
    | SPSR_EL2::A::Masked.value
    | SPSR_EL2::I::Masked.value
    | SPSR_EL2::F::Masked.value
    | SPSR_EL2::M::EL1h.value;
/// No trapping of FP/SIMD at EL1 or EL0.
const CPACR_VALUE: u64 = CPACR_EL1::FPEN::TrapNothing.value;

/// Size of the boot stack (the guard page below it is unmapped by the memory manager).
pub const BOOT_STACK_SIZE: usize = 128 * 1024;

core::arch::global_asm!(
    r#"
.section .text.boot, "ax"
.global _start
_start:
    mrs     x1, mpidr_el1
    and     x1, x1, #0xff
    cbz     x1, 1f
0:  wfe
    b       0b

1:  mov     x19, x0                     // device tree (or garbage) for Rust
    mrs     x1, CurrentEL
    lsr     x1, x1, #2
    mov     x20, x1                     // entry exception level
    cmp     x1, #2
    b.ne    2f

    // ---- EL2: prepare EL1 and drop to it ----
    ldr     x1, ={hcr}
    msr     hcr_el2, x1
    mov     x1, #{cnthctl}
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr
    ldr     x1, ={cptr}
    msr     cptr_el2, x1
    ldr     x1, ={sctlr_off}
    msr     sctlr_el1, x1
    mov     x1, #{spsr}
    msr     spsr_el2, x1
    adr     x1, 2f
    msr     elr_el2, x1
    eret

    // ---- EL1 ----
2:  ldr     x1, ={cpacr}
    msr     cpacr_el1, x1
    isb

    // Zero .bss (physical addresses: adrp is PC-relative).
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
3:  cmp     x1, x2
    b.hs    4f
    stp     xzr, xzr, [x1], #16
    b       3b
4:
    // Boot map: L0[0] -> L1, L1[0..4] -> L2[0..4], L2[j] = 2 MiB block j.
    adrp    x1, __boot_l0
    adrp    x2, __boot_l1
    adrp    x3, __boot_l2
    orr     x4, x2, #{table}
    str     x4, [x1]
    mov     x5, #0
5:  add     x4, x3, x5, lsl #12
    orr     x4, x4, #{table}
    str     x4, [x2, x5, lsl #3]
    add     x5, x5, #1
    cmp     x5, #4
    b.lo    5b
    // Block j at x4 = j << 21: Device inside the device window, Normal inside the RAM window,
    // invalid elsewhere (no speculative access to holes).
    ldr     x6, ={dev_lo}
    ldr     x7, ={dev_hi}
    ldr     x8, ={block_normal}
    ldr     x9, ={block_device}
    ldr     x11, ={ram_lo}
    ldr     x12, ={ram_hi}
    mov     x5, #0
6:  lsl     x4, x5, #21
    cmp     x4, x6
    b.lo    61f
    cmp     x4, x7
    b.hs    61f
    orr     x10, x9, x4
    b       7f
61: mov     x10, xzr
    cmp     x4, x11
    b.lo    7f
    cmp     x4, x12
    b.hs    7f
    orr     x10, x8, x4
7:  str     x10, [x3, x5, lsl #3]
    add     x5, x5, #1
    cmp     x5, #2048
    b.lo    6b

    // Everything written so far went to memory with the data cache off; drop any stale lines for
    // .bss (tables and stack live there) so cached reads after the MMU is on see it.
    mrs     x3, ctr_el0
    ubfx    x3, x3, #16, #4             // DminLine: log2(words per line)
    mov     x4, #4
    lsl     x3, x4, x3                  // line size in bytes
    sub     x4, x3, #1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    bic     x1, x1, x4
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
8:  dc      ivac, x1
    add     x1, x1, x3
    cmp     x1, x2
    b.lo    8b
    dsb     sy

    // Translation registers.
    ldr     x1, ={mair}
    msr     mair_el1, x1
    ldr     x1, ={tcr}
    mrs     x2, id_aa64mmfr0_el1
    and     x2, x2, #0x7                // PARange
    cmp     x2, #5
    mov     x3, #5
    csel    x2, x2, x3, ls              // 48 bits at most with this TCR layout
    bfi     x1, x2, #32, #3             // IPS
    msr     tcr_el1, x1
    adrp    x1, __boot_l0
    msr     ttbr0_el1, x1
    msr     ttbr1_el1, x1
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    ldr     x1, ={sctlr_on}
    msr     sctlr_el1, x1
    isb

    // Now in the high half. Exceptions run on SP_EL1 (the exception stack); all other code on
    // SP_EL0 (the boot stack), so a stack overflow into the guard page still has a stack to report it.
    ldr     x1, =__exception_stack_top
    mov     sp, x1
    msr     spsel, #0
    ldr     x1, =__boot_stack_top
    mov     sp, x1
    ldr     x1, =__exception_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    mov     x1, x20
    ldr     x2, ={entry}
    br      x2
.ltorg
"#,
    hcr = const HCR_EL2_VALUE,
    cnthctl = const CNTHCTL_EL2_VALUE,
    cptr = const CPTR_EL2_VALUE,
    sctlr_off = const SCTLR_MMU_OFF,
    spsr = const SPSR_EL2_VALUE,
    cpacr = const CPACR_VALUE,
    table = const TABLE_DESC,
    dev_lo = const BOARD.device_window.0,
    dev_hi = const BOARD.device_window.1,
    ram_lo = const BOARD.default_ram.0,
    ram_hi = const BOARD.ram_limit,
    block_normal = const BLOCK_NORMAL,
    block_device = const BLOCK_DEVICE,
    mair = const MAIR_VALUE,
    tcr = const TCR_VALUE,
    sctlr_on = const SCTLR_MMU_ON,
    entry = sym rust_entry,
);

/// The boot-map tables: one L0, one L1, four L2 (4 GiB of 2 MiB blocks). Page-aligned, in `.bss`.
#[repr(C, align(4096))]
struct BootTables([[u64; 512]; 6]);

#[no_mangle]
#[link_section = ".bss.boot_tables"]
static mut __boot_tables: BootTables = BootTables([[0; 512]; 6]);

core::arch::global_asm!(
    ".global __boot_l0, __boot_l1, __boot_l2",
    ".set __boot_l0, __boot_tables",
    ".set __boot_l1, __boot_tables + 4096",
    ".set __boot_l2, __boot_tables + 8192",
);

/// Size of the exception stack (SP_EL1).
pub const EXCEPTION_STACK_SIZE: usize = 32 * 1024;

/// A stack in `.bss` with a guard page at its bottom: `$sym` is the guard page, `$sym_top` the
/// initial stack pointer, `$sym_guard` the guard page's address (unmapped by the kernel map).
macro_rules! guarded_stack {
    ($sym:ident, $size:expr, $doc:literal) => {
        #[doc = $doc]
        #[no_mangle]
        #[link_section = ".bss.boot_stack"]
        static mut $sym: GuardedStack<{ $size }> = GuardedStack([0; $size]);

        core::arch::global_asm!(
            concat!(".global ", stringify!($sym), "_top, ", stringify!($sym), "_guard"),
            concat!(".set ", stringify!($sym), "_guard, ", stringify!($sym)),
            concat!(".set ", stringify!($sym), "_top, ", stringify!($sym), " + {size}"),
            size = const $size,
        );
    };
}

/// Page-aligned stack storage: one guard page followed by the stack proper.
#[repr(C, align(4096))]
struct GuardedStack<const N: usize>([u8; N]);

guarded_stack!(
    __exception_stack,
    4096 + EXCEPTION_STACK_SIZE,
    "The exception stack (SP_EL1)."
);
guarded_stack!(
    __boot_stack,
    4096 + BOOT_STACK_SIZE,
    "The boot stack (SP_EL0 of the boot thread)."
);

extern "Rust" {
    /// Provided by `libos`: the machine-independent kernel entry.
    fn __tessera_kernel_main(boot_info: BootInfo) -> !;
}

/// What the boot code hands to the machine-independent kernel.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// Value of x0 at entry: a device-tree physical address on boards that pass one.
    pub x0: usize,
    /// Exception level the image was entered at (1 or 2).
    pub entry_el: u8,
}

/// First Rust code: runs at EL1 in the high half with the boot map, on the boot stack.
extern "C" fn rust_entry(x0: usize, entry_el: u64) -> ! {
    let info = BootInfo {
        x0,
        entry_el: entry_el as u8,
    };
    // SAFETY: `__tessera_kernel_main` is defined exactly once by libos with this signature.
    unsafe { __tessera_kernel_main(info) }
}

/// Virtual address ranges [start, end) of the boot stack's and the exception stack's guard pages.
pub fn guard_pages() -> [(usize, usize); 2] {
    extern "C" {
        static __boot_stack_guard: u8;
        static __exception_stack_guard: u8;
    }
    let boot = core::ptr::addr_of!(__boot_stack_guard) as usize;
    let exc = core::ptr::addr_of!(__exception_stack_guard) as usize;
    [(boot, boot + 4096), (exc, exc + 4096)]
}

/// Virtual address ranges of the image's sections, as laid out by the linker script: text
/// (read-execute), read-only data, and read-write data + `.bss` (which holds the stacks, their
/// guard pages and the boot tables). Page aligned.
#[derive(Clone, Copy, Debug)]
pub struct ImageSections {
    pub text: (usize, usize),
    pub rodata: (usize, usize),
    pub data: (usize, usize),
}

/// The image's sections (virtual addresses).
pub fn image_sections() -> ImageSections {
    extern "C" {
        static __image_start: u8;
        static __text_end: u8;
        static __rodata_end: u8;
        static __image_end: u8;
    }
    let a = |p: *const u8| p as usize;
    let start = a(core::ptr::addr_of!(__image_start));
    let text_end = a(core::ptr::addr_of!(__text_end));
    let rodata_end = a(core::ptr::addr_of!(__rodata_end));
    let end = a(core::ptr::addr_of!(__image_end)).next_multiple_of(4096);
    ImageSections {
        text: (start, text_end),
        rodata: (text_end, rodata_end),
        data: (rodata_end, end),
    }
}

/// Physical extent of the loaded image: [start, end) including .bss and the boot stack.
pub fn image_phys_range() -> (usize, usize) {
    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    // Only the addresses of the linker-defined symbols are taken, never their contents.
    let (s, e) = (
        core::ptr::addr_of!(__image_start) as usize,
        core::ptr::addr_of!(__image_end) as usize,
    );
    (s - KERNEL_OFFSET, e - KERNEL_OFFSET)
}
