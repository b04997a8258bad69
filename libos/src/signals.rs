//! Linux arm64 signal logic that needs no machine: which pending signal goes next, the mask a
//! handler runs with, and the signal frame (`struct rt_sigframe`) a handler finds on its stack,
//! written and read back byte for byte as Linux lays it out (`arch/arm64/kernel/signal.c`,
//! `include/uapi/asm/sigcontext.h`). The kernel's delivery (`user::deliver`) drives it.
//!
//! The frame, from its lowest address (the handler's `sp`, 16-aligned):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 128 | `siginfo_t` |
//! | 128 | 8 | `uc_flags` |
//! | 136 | 8 | `uc_link` |
//! | 144 | 24 | `uc_stack` (`ss_sp`, `ss_flags`, `ss_size`) |
//! | 168 | 128 | `uc_sigmask` (8 bytes) and the rest of glibc's 1024-bit set |
//! | 296 | 8 | padding to the 16-aligned `struct sigcontext` |
//! | 304 | 8 | `fault_address` |
//! | 312 | 248 | `regs[31]` |
//! | 560 | 8 | `sp` |
//! | 568 | 8 | `pc` |
//! | 576 | 8 | `pstate` |
//! | 592 | 4096 | `__reserved`: an `fpsimd_context` record (magic, size 528, `fpsr`, `fpcr`, `vregs[32]`), then a null record |
//! | 4688 | 16 | the frame record `{x29, x30}` of the interrupted code (`x29` of the handler points here) |

use alloc::vec::Vec;

/// `sa_flags` bits.
pub const SA_NOCLDWAIT: u64 = 2;
pub const SA_SIGINFO: u64 = 4;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

/// `ss_flags` of `sigaltstack`.
pub const SS_ONSTACK: u64 = 1;
pub const SS_DISABLE: u64 = 2;

/// `si_code` values.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_TKILL: i32 = -6;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const BUS_ADRALN: i32 = 1;
pub const BUS_ADRERR: i32 = 2;
pub const ILL_ILLOPC: i32 = 1;
pub const TRAP_BRKPT: i32 = 1;
pub const CLD_EXITED: i32 = 1;
pub const CLD_KILLED: i32 = 2;

/// `struct rt_sigframe`'s size (`siginfo_t` and `struct ucontext`).
pub const FRAME_SIZE: usize = 4688;
/// The frame and the frame record above it.
pub const FRAME_AND_RECORD: usize = FRAME_SIZE + 16;
/// Offsets in the frame.
pub const UCONTEXT: usize = 128;
const UC_STACK: usize = UCONTEXT + 16;
const UC_SIGMASK: usize = UCONTEXT + 40;
const MCONTEXT: usize = UCONTEXT + 176;
const MC_REGS: usize = MCONTEXT + 8;
const MC_SP: usize = MCONTEXT + 256;
const MC_PC: usize = MCONTEXT + 264;
const MC_PSTATE: usize = MCONTEXT + 272;
const RESERVED: usize = MCONTEXT + 288;
const RESERVED_SIZE: usize = 4096;
/// `fpsimd_context`: its magic and size.
pub const FPSIMD_MAGIC: u32 = 0x4650_8001;
pub const FPSIMD_SIZE: u32 = 528;
/// `esr_context`, which Linux adds for faults (read back and skipped).
const ESR_MAGIC: u32 = 0x4553_5201;

/// PSTATE bits: the condition flags, and what must be zero at EL0t (the mode, the execution
/// state and the `DAIF` masks).
pub const PSTATE_NZCV: u64 = 0xf000_0000;
const PSTATE_MODE_AND_MASKS: u64 = 0x1f | 0x3c0;

/// The signal bit of `signal` (1..=64) in a set.
pub const fn bit(signal: u8) -> u64 {
    1 << (signal - 1)
}

/// `SIGKILL` and `SIGSTOP`, which no mask blocks.
pub const UNBLOCKABLE: u64 = bit(9) | bit(19);

/// A mask as a process may hold it: `SIGKILL` and `SIGSTOP` never blocked.
pub const fn sanitize_mask(mask: u64) -> u64 {
    mask & !UNBLOCKABLE
}

/// The next signal to deliver from `pending` under `mask`: the lowest-numbered one not blocked.
pub fn next_signal(pending: u64, mask: u64) -> Option<u8> {
    let ready = pending & !mask;
    (ready != 0).then(|| ready.trailing_zeros() as u8 + 1)
}

/// The mask a handler for `signal` runs with: the old one, the action's `sa_mask`, and the
/// signal itself unless `SA_NODEFER`.
pub fn handler_mask(mask: u64, signal: u8, flags: u64, sa_mask: u64) -> u64 {
    let own = if flags & SA_NODEFER != 0 { 0 } else { bit(signal) };
    sanitize_mask(mask | sa_mask | own)
}

/// Where a handler's frame goes below `sp_top` (the interrupted stack pointer, or the top of
/// the alternate stack): the frame's address (the handler's `sp`) and the frame record's.
pub fn frame_place(sp_top: u64) -> Option<(u64, u64)> {
    let record = sp_top.checked_sub(16)? & !15;
    let frame = record.checked_sub(FRAME_SIZE as u64)?;
    Some((frame, record))
}

/// Whether `sp` lies on the alternate stack `(base, size)` (Linux's `on_sig_stack`).
pub fn on_stack(sp: u64, base: u64, size: u64) -> bool {
    sp > base && sp - base <= size
}

/// A `siginfo_t` as it is delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: u8,
    pub code: i32,
    /// Sender (`kill`) or child (`SIGCHLD`).
    pub pid: u32,
    pub uid: u32,
    /// `SIGCHLD`: the exit code or the killing signal.
    pub status: i32,
    /// Faults: the faulting address (takes the place of `pid`).
    pub addr: Option<u64>,
}

impl SigInfo {
    /// The 128 bytes of the `siginfo_t`.
    pub fn bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&i32::from(self.signo).to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        match self.addr {
            Some(a) => b[16..24].copy_from_slice(&a.to_le_bytes()),
            None => {
                b[16..20].copy_from_slice(&self.pid.to_le_bytes());
                b[20..24].copy_from_slice(&self.uid.to_le_bytes());
                b[24..28].copy_from_slice(&self.status.to_le_bytes());
            }
        }
        b
    }
}

/// What a signal frame saves of the interrupted code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub regs: [u64; 31],
    pub sp: u64,
    pub pc: u64,
    pub pstate: u64,
    pub fault_address: u64,
    /// The signal mask to restore.
    pub mask: u64,
    /// `uc_stack`: the alternate stack's base, flags and size.
    pub stack: [u64; 3],
    pub fpsr: u32,
    pub fpcr: u32,
    pub vregs: [u128; 32],
}

/// Why `rt_sigreturn` refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFrame {
    /// A PSTATE that is not EL0t with interrupts enabled.
    Pstate,
    /// The records in `__reserved` are malformed or lack the FP/SIMD one.
    Records,
}

fn put(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The bytes of a frame and its frame record (`FRAME_AND_RECORD` of them): `info`, the
/// `ucontext` holding `ctx`, and `{ctx.regs[29], ctx.regs[30]}`.
pub fn write_frame(ctx: &Context, info: &SigInfo) -> Vec<u8> {
    let mut b = alloc::vec![0u8; FRAME_AND_RECORD];
    b[..128].copy_from_slice(&info.bytes());
    put(&mut b, UC_STACK, ctx.stack[0]);
    put(&mut b, UC_STACK + 8, ctx.stack[1]);
    put(&mut b, UC_STACK + 16, ctx.stack[2]);
    put(&mut b, UC_SIGMASK, ctx.mask);
    put(&mut b, MCONTEXT, ctx.fault_address);
    for (i, r) in ctx.regs.iter().enumerate() {
        put(&mut b, MC_REGS + 8 * i, *r);
    }
    put(&mut b, MC_SP, ctx.sp);
    put(&mut b, MC_PC, ctx.pc);
    put(&mut b, MC_PSTATE, ctx.pstate);
    let fp = RESERVED;
    b[fp..fp + 4].copy_from_slice(&FPSIMD_MAGIC.to_le_bytes());
    b[fp + 4..fp + 8].copy_from_slice(&FPSIMD_SIZE.to_le_bytes());
    b[fp + 8..fp + 12].copy_from_slice(&ctx.fpsr.to_le_bytes());
    b[fp + 12..fp + 16].copy_from_slice(&ctx.fpcr.to_le_bytes());
    for (i, v) in ctx.vregs.iter().enumerate() {
        let at = fp + 16 + 16 * i;
        b[at..at + 16].copy_from_slice(&v.to_le_bytes());
    }
    // The null record that ends the list is the zeroes that follow.
    put(&mut b, FRAME_SIZE, ctx.regs[29]);
    put(&mut b, FRAME_SIZE + 8, ctx.regs[30]);
    b
}

/// Reads back what `rt_sigreturn` restores from the `FRAME_SIZE` bytes of a frame: the
/// registers (PSTATE reduced to its condition flags), the FP/SIMD record, the mask (sanitized)
/// and `uc_stack`. `fault_address` is not restored and reads as 0.
pub fn read_frame(b: &[u8]) -> Result<Context, BadFrame> {
    assert!(b.len() >= FRAME_SIZE);
    let pstate = get(b, MC_PSTATE);
    if pstate & PSTATE_MODE_AND_MASKS != 0 {
        return Err(BadFrame::Pstate);
    }
    let mut regs = [0u64; 31];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = get(b, MC_REGS + 8 * i);
    }
    let mut fpsimd = None;
    let mut at = RESERVED;
    let end = RESERVED + RESERVED_SIZE;
    loop {
        if at + 8 > end {
            return Err(BadFrame::Records);
        }
        let (magic, size) = (get32(b, at), get32(b, at + 4) as usize);
        if magic == 0 {
            if size != 0 {
                return Err(BadFrame::Records);
            }
            break;
        }
        if size < 8 || !size.is_multiple_of(16) || at + size > end {
            return Err(BadFrame::Records);
        }
        match magic {
            FPSIMD_MAGIC if size == FPSIMD_SIZE as usize && fpsimd.is_none() => fpsimd = Some(at),
            ESR_MAGIC => {}
            _ => return Err(BadFrame::Records),
        }
        at += size;
    }
    let fp = fpsimd.ok_or(BadFrame::Records)?;
    let mut vregs = [0u128; 32];
    for (i, v) in vregs.iter_mut().enumerate() {
        let at = fp + 16 + 16 * i;
        *v = u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"));
    }
    Ok(Context {
        regs,
        sp: get(b, MC_SP),
        pc: get(b, MC_PC),
        pstate: pstate & PSTATE_NZCV,
        fault_address: 0,
        mask: sanitize_mask(get(b, UC_SIGMASK)),
        stack: [get(b, UC_STACK), get(b, UC_STACK + 8), get(b, UC_STACK + 16)],
        fpsr: get32(b, fp + 8),
        fpcr: get32(b, fp + 12),
        vregs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn context(seed: u64) -> Context {
        let mut regs = [0u64; 31];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = seed.wrapping_mul(i as u64 + 1) ^ 0x5555;
        }
        let mut vregs = [0u128; 32];
        for (i, v) in vregs.iter_mut().enumerate() {
            *v = (u128::from(seed) << 64 | i as u128).wrapping_mul(0x1_0001);
        }
        Context {
            regs,
            sp: 0x7fff_0000 ^ (seed & 0xff0),
            pc: 0x40_1000 + 4 * (seed & 0xff),
            pstate: 0x6000_0000,
            fault_address: 0,
            mask: sanitize_mask(seed.rotate_left(7)),
            stack: [0x1000, SS_DISABLE, 0],
            fpsr: seed as u32 & 0x0800_009f,
            fpcr: 0x0040_0000,
            vregs,
        }
    }

    #[test]
    fn layout_matches_linux() {
        // struct sigcontext is 16-aligned inside the frame, __reserved too; the frame's size is
        // sizeof(struct rt_sigframe).
        assert_eq!(MCONTEXT % 16, 0);
        assert_eq!(RESERVED % 16, 0);
        assert_eq!(RESERVED + RESERVED_SIZE, FRAME_SIZE);
        let ctx = context(3);
        let info = SigInfo {
            signo: 10,
            code: SI_TKILL,
            pid: 7,
            uid: 0,
            status: 0,
            addr: None,
        };
        let b = write_frame(&ctx, &info);
        assert_eq!(b.len(), FRAME_AND_RECORD);
        assert_eq!(get32(&b, 0), 10);
        assert_eq!(get32(&b, 8) as i32, SI_TKILL);
        assert_eq!(get32(&b, 16), 7);
        assert_eq!(get(&b, UC_SIGMASK), ctx.mask);
        assert_eq!(get(&b, MC_REGS + 8 * 30), ctx.regs[30]);
        assert_eq!(get(&b, MC_PC), ctx.pc);
        assert_eq!(get32(&b, RESERVED), FPSIMD_MAGIC);
        assert_eq!(get32(&b, RESERVED + 4), 528);
        // The null record after it.
        assert_eq!(get(&b, RESERVED + 528), 0);
        assert_eq!(get(&b, FRAME_SIZE), ctx.regs[29]);
        assert_eq!(get(&b, FRAME_SIZE + 8), ctx.regs[30]);
    }

    #[test]
    fn fault_siginfo_holds_the_address() {
        let info = SigInfo {
            signo: 11,
            code: SEGV_ACCERR,
            addr: Some(0xdead_b000),
            ..SigInfo::default()
        };
        let b = info.bytes();
        assert_eq!(get(&b, 16), 0xdead_b000);
        assert_eq!(get32(&b, 8), 2);
    }

    #[test]
    fn frames_sit_below_the_stack_pointer_16_aligned() {
        let (frame, record) = frame_place(0x8000_0009).unwrap();
        assert_eq!(record, 0x7fff_fff0);
        assert_eq!(frame, record - FRAME_SIZE as u64);
        assert_eq!(frame % 16, 0);
        assert_eq!(frame_place(0x100), None);
    }

    #[test]
    fn a_frame_reads_back_what_was_written() {
        let ctx = context(0x1234_5678_9abc);
        let b = write_frame(&ctx, &SigInfo::default());
        assert_eq!(read_frame(&b), Ok(ctx));
    }

    #[test]
    fn sigreturn_refuses_bad_frames() {
        let ctx = context(1);
        let mut b = write_frame(&ctx, &SigInfo::default());
        // EL1h, or IRQs masked: refused.
        for bad in [0x5u64, 0x80] {
            let mut c = b.clone();
            put(&mut c, MC_PSTATE, bad);
            assert_eq!(read_frame(&c), Err(BadFrame::Pstate));
        }
        // Other PSTATE bits are dropped, the flags kept.
        put(&mut b, MC_PSTATE, 0xf000_0000 | 1 << 21);
        assert_eq!(read_frame(&b).unwrap().pstate, 0xf000_0000);
        // No FP/SIMD record, a bad size, an unknown record.
        let mut c = b.clone();
        put(&mut c, RESERVED, 0);
        assert_eq!(read_frame(&c), Err(BadFrame::Records));
        let mut c = b.clone();
        c[RESERVED + 4..RESERVED + 8].copy_from_slice(&512u32.to_le_bytes());
        assert_eq!(read_frame(&c), Err(BadFrame::Records));
        let mut c = b.clone();
        c[RESERVED + 528..RESERVED + 536].copy_from_slice(&[1, 0, 0, 0, 16, 0, 0, 0]);
        assert_eq!(read_frame(&c), Err(BadFrame::Records));
        // An ESR record after the FP/SIMD one is skipped.
        let mut c = b.clone();
        c[RESERVED + 528..RESERVED + 536].copy_from_slice(&[1, 0x52, 0x53, 0x45, 16, 0, 0, 0]);
        assert!(read_frame(&c).is_ok());
    }

    #[test]
    fn sigkill_and_sigstop_are_never_blocked() {
        let ctx = context(2);
        let mut b = write_frame(&ctx, &SigInfo::default());
        put(&mut b, UC_SIGMASK, u64::MAX);
        assert_eq!(read_frame(&b).unwrap().mask, !UNBLOCKABLE);
        assert_eq!(handler_mask(u64::MAX, 10, 0, 0), !UNBLOCKABLE);
    }

    #[test]
    fn the_mask_of_a_handler() {
        // The signal itself, sa_mask and the old mask; SA_NODEFER leaves the signal out.
        assert_eq!(handler_mask(bit(2), 10, 0, bit(12)), bit(2) | bit(10) | bit(12));
        assert_eq!(handler_mask(bit(2), 10, SA_NODEFER, bit(12)), bit(2) | bit(12));
    }

    #[test]
    fn the_lowest_unblocked_signal_goes_first() {
        assert_eq!(next_signal(0, 0), None);
        assert_eq!(next_signal(bit(10) | bit(15), 0), Some(10));
        assert_eq!(next_signal(bit(10) | bit(15), bit(10)), Some(15));
        assert_eq!(next_signal(bit(10), bit(10)), None);
        assert_eq!(next_signal(bit(64), 0), Some(64));
    }

    #[test]
    fn the_alternate_stack() {
        assert!(on_stack(0x2000, 0x1000, 0x1000));
        assert!(on_stack(0x1800, 0x1000, 0x1000));
        assert!(!on_stack(0x1000, 0x1000, 0x1000));
        assert!(!on_stack(0x2001, 0x1000, 0x1000));
    }

    proptest! {
        #[test]
        fn any_frame_round_trips(seed in any::<u64>(), nzcv in 0u64..16) {
            let mut ctx = context(seed);
            ctx.pstate = nzcv << 28;
            let b = write_frame(&ctx, &SigInfo::default());
            prop_assert_eq!(read_frame(&b), Ok(ctx));
        }

        #[test]
        fn next_signal_is_the_lowest_ready(pending in any::<u64>(), mask in any::<u64>()) {
            match next_signal(pending, mask) {
                None => prop_assert_eq!(pending & !mask, 0),
                Some(s) => {
                    prop_assert!(pending & !mask & bit(s) != 0);
                    prop_assert_eq!(pending & !mask & (bit(s) - 1), 0);
                }
            }
        }
    }
}
