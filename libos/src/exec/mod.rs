//! The pure half of `exec`: everything needed to start a static Linux arm64 program that does
//! not touch the machine, so it builds and is tested on the host.
//!
//! - [`cpio`] reads (and, for tests and the build tool, writes) the `newc` cpio archive that is
//!   embedded in the kernel image and holds the programs;
//! - [`elf`] parses and validates a static AArch64 ELF64 executable (`ET_EXEC`, or `ET_DYN`
//!   without an interpreter: static-pie) and describes its loadable segments;
//! - [`stack`] lays out the initial process stack (argc, argv, envp, auxv, strings) the way
//!   Linux's `create_elf_tables` does.
//!
//! The target half (mapping the segments, switching to EL0) lives with the process code and
//! uses these descriptions; nothing here maps memory or trusts its input.

pub mod cpio;
pub mod elf;
pub mod stack;
