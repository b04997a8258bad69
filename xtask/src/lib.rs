//! Tessera build driver (`cargo xtask ...`).
//!
//! The library half is shared with the host-side integration tests in
//! `tests/` (package `tessera-tests`): they use [`builder::build`] to build
//! images and [`qemu::QemuRunner`] to boot them.
//!
//! Layout:
//! - [`board`]: the supported boards and their QEMU machines,
//! - [`apps`]: discovery of the apps under `apps/`,
//! - [`toolchain`]: rustc sysroot, target and `llvm-objcopy` lookup,
//! - [`builder`]: `cargo build` of an app for a board (+ raw image, DTB),
//! - [`dtb`]: the minimal DTB handed to QEMU for the raspi boards,
//! - [`qemu`]: QEMU detection and the runner (command line, timeout, capture),
//! - [`process`]: child processes with a timeout and captured/teed output,
//! - [`parse`]: parsers for the boot-test protocol and cargo's test summaries,
//! - [`programs`], [`cpio`]: the EL0 programs (static Linux arm64 executables) and the newc
//!   archive that carries them in an image,
//! - [`cli`]: the `cargo xtask` commands,
//! - [`setup`], [`bench`], [`sdcard`]: the `setup`, `bench` and `image` commands,
//! - [`profile`]: `profile`, the guest's instructions by function from QEMU's block log.

pub mod apps;
pub mod bench;
pub mod board;
pub mod builder;
pub mod cli;
pub mod cpio;
pub mod dtb;
pub mod parse;
pub mod plot;
pub mod process;
pub mod profile;
pub mod programs;
pub mod qemu;
pub mod sdcard;
pub mod setup;
pub mod testcmd;
pub mod toolchain;

use std::path::{Path, PathBuf};

pub use board::Board;

/// The Rust target all images are built for.
pub const TARGET: &str = "aarch64-unknown-none-softfloat";

/// The one-line remedy printed whenever a tool is missing.
pub const SETUP_HINT: &str = "run 'cargo xtask setup'";

/// Root of the Tessera workspace (the parent of the `xtask` directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `<workspace>/target`, honouring nothing but the workspace layout (the
/// per-board target directories must not move when the caller happens to
/// have `CARGO_TARGET_DIR` set).
pub fn target_root() -> PathBuf {
    workspace_root().join("target")
}
