//! The initial stack of a process, laid out as Linux arm64 does (`create_elf_tables` in
//! `fs/binfmt_elf.c`).
//!
//! From `sp` upwards (every word 8 bytes, little endian):
//!
//! ```text
//! sp ->  argc
//!        argv[0] .. argv[argc - 1]   pointers to the strings below
//!        0
//!        envp[0] .. envp[envc - 1]
//!        0
//!        auxv: (key, value) pairs, the caller's, then AT_RANDOM, AT_EXECFN, then AT_NULL (0, 0)
//!        zero padding
//!        16 random bytes             (AT_RANDOM points here; 16-byte aligned)
//!        argv strings, envp strings  NUL-terminated, in order
//!        8 zero bytes                (end marker)
//! top
//! ```
//!
//! `sp` is 16-byte aligned, as AArch64 requires. There is no `AT_PLATFORM` string: arm64 Linux
//! does not provide one. `AT_EXECFN` points at the copy of `argv[0]` (Linux points it at the
//! path given to `execve`, which for the programs started here is `argv[0]`).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// End of the auxiliary vector.
pub const AT_NULL: u64 = 0;
/// Address of the program headers.
pub const AT_PHDR: u64 = 3;
/// Size of a program header.
pub const AT_PHENT: u64 = 4;
/// Number of program headers.
pub const AT_PHNUM: u64 = 5;
/// Page size.
pub const AT_PAGESZ: u64 = 6;
/// Base address of the interpreter (0 for static programs).
pub const AT_BASE: u64 = 7;
/// Flags (0).
pub const AT_FLAGS: u64 = 8;
/// Entry point of the program.
pub const AT_ENTRY: u64 = 9;
/// Real user id.
pub const AT_UID: u64 = 11;
/// Effective user id.
pub const AT_EUID: u64 = 12;
/// Real group id.
pub const AT_GID: u64 = 13;
/// Effective group id.
pub const AT_EGID: u64 = 14;
/// CPU capabilities (`HWCAP_*`).
pub const AT_HWCAP: u64 = 16;
/// Clock ticks per second (`times()`).
pub const AT_CLKTCK: u64 = 17;
/// Non-zero for a set-uid style secure mode.
pub const AT_SECURE: u64 = 23;
/// Address of 16 random bytes.
pub const AT_RANDOM: u64 = 25;
/// More CPU capabilities (`HWCAP2_*`).
pub const AT_HWCAP2: u64 = 26;
/// Address of the program's file name.
pub const AT_EXECFN: u64 = 31;
/// Minimal signal stack size.
pub const AT_MINSIGSTKSZ: u64 = 51;

/// Largest accepted string, its NUL included (Linux's `MAX_ARG_STRLEN`: 32 pages).
pub const MAX_ARG_STRLEN: usize = 128 * 1024;
/// Largest accepted stack image (`top - sp`): strings, pointers, auxv and padding.
pub const MAX_STACK_IMAGE: usize = 256 * 1024;

/// Which string list a [`StackError`] refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strings {
    Argv,
    Envp,
}

/// Why a stack could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackError {
    /// `top` is not 16-byte aligned.
    MisalignedTop { top: u64 },
    /// `argv` is empty (there would be no `argv[0]` for `AT_EXECFN`).
    EmptyArgv,
    /// String `index` of `which` contains a NUL byte.
    InteriorNul { which: Strings, index: usize },
    /// String `index` of `which` is `len` bytes long: with its NUL, more than [`MAX_ARG_STRLEN`].
    StringTooLong {
        which: Strings,
        index: usize,
        len: usize,
    },
    /// The caller passed an auxv entry that [`build`] adds itself (`AT_NULL`, `AT_RANDOM`,
    /// `AT_EXECFN`).
    ReservedAux { key: u64 },
    /// The image would be `size` bytes, more than `limit` ([`MAX_STACK_IMAGE`]).
    TooLarge { size: usize, limit: usize },
    /// The image of `size` bytes does not fit below `top`.
    TopTooLow { top: u64, size: usize },
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StackError::MisalignedTop { top } => write!(f, "stack: top {top:#x} is not 16-byte aligned"),
            StackError::EmptyArgv => write!(f, "stack: argv is empty"),
            StackError::InteriorNul { which, index } => write!(f, "stack: {which:?}[{index}] contains NUL"),
            StackError::StringTooLong { which, index, len } => {
                write!(
                    f,
                    "stack: {which:?}[{index}] is {len} bytes, above {MAX_ARG_STRLEN} with its NUL"
                )
            }
            StackError::ReservedAux { key } => write!(f, "stack: auxv key {key} is added by the builder"),
            StackError::TooLarge { size, limit } => {
                write!(
                    f,
                    "stack: {size} bytes of arguments and environment exceed {limit}"
                )
            }
            StackError::TopTooLow { top, size } => {
                write!(f, "stack: {size} bytes do not fit below {top:#x}")
            }
        }
    }
}

/// A built stack: copy `bytes` to `[sp, sp + bytes.len())` (which ends at the `top` given to
/// [`build`]) and start the program with `sp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialStack {
    /// The initial stack pointer (16-byte aligned); `argc` is the word at `sp`.
    pub sp: u64,
    /// The stack contents from `sp` to `top`.
    pub bytes: Vec<u8>,
    /// Address of the 16 random bytes (the value of `AT_RANDOM`).
    pub random: u64,
    /// Address of the copy of `argv[0]` (the value of `AT_EXECFN`).
    pub execfn: u64,
}

fn align16(n: usize) -> usize {
    n.next_multiple_of(16)
}

fn check_strings(which: Strings, strings: &[&str]) -> Result<usize, StackError> {
    let mut total = 0usize;
    for (index, s) in strings.iter().enumerate() {
        if s.len() >= MAX_ARG_STRLEN {
            return Err(StackError::StringTooLong {
                which,
                index,
                len: s.len(),
            });
        }
        if s.as_bytes().contains(&0) {
            return Err(StackError::InteriorNul { which, index });
        }
        total = total.saturating_add(s.len() + 1);
    }
    Ok(total)
}

/// Lays out the initial stack below `top` (see the module documentation). `aux` holds the
/// caller's auxv entries (`AT_PHDR`, `AT_ENTRY`, `AT_PAGESZ`, `AT_HWCAP`, ...); `build` appends
/// `AT_RANDOM`, `AT_EXECFN` and `AT_NULL` with the right addresses.
pub fn build(
    top: u64,
    argv: &[&str],
    envp: &[&str],
    aux: &[(u64, u64)],
    random: [u8; 16],
) -> Result<InitialStack, StackError> {
    if !top.is_multiple_of(16) {
        return Err(StackError::MisalignedTop { top });
    }
    if argv.is_empty() {
        return Err(StackError::EmptyArgv);
    }
    let argv_len = check_strings(Strings::Argv, argv)?;
    let envp_len = check_strings(Strings::Envp, envp)?;
    if let Some(&(key, _)) = aux
        .iter()
        .find(|(key, _)| matches!(*key, AT_NULL | AT_RANDOM | AT_EXECFN))
    {
        return Err(StackError::ReservedAux { key });
    }

    // Distances below `top`, computed so that nothing can overflow before the size check.
    let limit = MAX_STACK_IMAGE;
    let too_large = |size: usize| StackError::TooLarge { size, limit };
    let strings_len = argv_len.saturating_add(envp_len);
    if strings_len > limit {
        return Err(too_large(strings_len));
    }
    let strings_below = 8 + strings_len;
    let random_below = align16(strings_below + 16);
    let words = 1 + argv.len() + 1 + envp.len() + 1 + 2 * (aux.len() + 3);
    let size = align16(random_below.saturating_add(words.saturating_mul(8)));
    if size > limit {
        return Err(too_large(size));
    }
    if top < size as u64 {
        return Err(StackError::TopTooLow { top, size });
    }
    let sp = top - size as u64;
    let mut bytes = vec![0u8; size];

    // Strings, from `top - strings_below` upwards.
    let mut at = size - strings_below;
    let mut copy = |s: &str| {
        let addr = sp + at as u64;
        bytes[at..at + s.len()].copy_from_slice(s.as_bytes());
        at += s.len() + 1;
        addr
    };
    let argv_addrs: Vec<u64> = argv.iter().map(|s| copy(s)).collect();
    let envp_addrs: Vec<u64> = envp.iter().map(|s| copy(s)).collect();
    let random_at = size - random_below;
    bytes[random_at..random_at + 16].copy_from_slice(&random);
    let random_addr = sp + random_at as u64;
    let execfn = argv_addrs[0];

    let mut words_out = Vec::with_capacity(words);
    words_out.push(argv.len() as u64);
    words_out.extend_from_slice(&argv_addrs);
    words_out.push(0);
    words_out.extend_from_slice(&envp_addrs);
    words_out.push(0);
    let fixed = [(AT_RANDOM, random_addr), (AT_EXECFN, execfn), (AT_NULL, 0)];
    for &(key, value) in aux.iter().chain(&fixed) {
        words_out.push(key);
        words_out.push(value);
    }
    for (slot, word) in bytes.chunks_exact_mut(8).zip(&words_out) {
        slot.copy_from_slice(&word.to_le_bytes());
    }
    Ok(InitialStack {
        sp,
        bytes,
        random: random_addr,
        execfn,
    })
}

#[cfg(test)]
mod tests;
