//! Queries about the Rust toolchain: sysroot, host triple, installed target,
//! the `llvm-objcopy` shipped with the `llvm-tools` component.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::{workspace_root, SETUP_HINT, TARGET};

/// The `cargo` to run nested builds with: the one running us, if any.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A `rustc` command run from the workspace root, so `rust-toolchain.toml`
/// selects the toolchain.
fn rustc(args: &[&str]) -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("cannot run {}", rustc.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "rustc {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `rustc --print sysroot` (cached).
pub fn sysroot() -> Result<PathBuf> {
    static CELL: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CELL.get_or_init(|| {
        rustc(&["--print", "sysroot"])
            .map(PathBuf::from)
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The host triple from `rustc -vV` (cached).
pub fn host_triple() -> Result<String> {
    static CELL: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    CELL.get_or_init(|| {
        let v = rustc(&["-vV"]).map_err(|e| format!("{e:#}"))?;
        v.lines()
            .find_map(|l| l.strip_prefix("host: "))
            .map(|h| h.trim().to_string())
            .ok_or_else(|| "rustc -vV printed no host line".to_string())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Whether the standard library for [`TARGET`] is installed.
pub fn target_installed() -> bool {
    sysroot().is_ok_and(|s| s.join("lib/rustlib").join(TARGET).join("lib").is_dir())
}

/// Errors with the setup hint unless [`TARGET`] is installed.
pub fn require_target() -> Result<()> {
    if !target_installed() {
        bail!("the Rust target {TARGET} is not installed; {SETUP_HINT}");
    }
    Ok(())
}

/// Path of the tool `name` (`llvm-objcopy`, `llvm-nm`, ...) from the `llvm-tools` component, if
/// installed.
pub fn llvm_tool(name: &str) -> Option<PathBuf> {
    let path = sysroot()
        .ok()?
        .join("lib/rustlib")
        .join(host_triple().ok()?)
        .join("bin")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

/// Path of `llvm-objcopy` from the `llvm-tools` component, if installed.
pub fn llvm_objcopy() -> Option<PathBuf> {
    llvm_tool("llvm-objcopy")
}

/// Like [`llvm_objcopy`], but errors with the setup hint.
pub fn require_llvm_objcopy() -> Result<PathBuf> {
    llvm_objcopy()
        .with_context(|| format!("llvm-objcopy not found (rustup component llvm-tools); {SETUP_HINT}"))
}

/// The Rust target of the EL0 programs.
pub const MUSL_TARGET: &str = "aarch64-unknown-linux-musl";
/// The C cross compiler.
pub const CROSS_CC: &str = "aarch64-linux-gnu-gcc";
/// The Debian packages that provide [`CROSS_CC`]: the static C library comes in
/// `libc6-dev-arm64-cross`, which the compiler only recommends.
pub const CROSS_CC_PACKAGES: [&str; 2] = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];

/// Whether the standard library for [`MUSL_TARGET`] is installed.
pub fn musl_target_installed() -> bool {
    sysroot().is_ok_and(|s| s.join("lib/rustlib").join(MUSL_TARGET).join("lib").is_dir())
}

/// `None` if [`CROSS_CC`] can link static programs, else why not.
pub fn cross_cc_problem() -> Option<String> {
    // Without the C library, gcc prints the bare name back instead of a path.
    match Command::new(CROSS_CC).arg("-print-file-name=libc.a").output() {
        Err(_) => Some(format!("{CROSS_CC} not found")),
        Ok(o) if !o.status.success() => Some(format!("{CROSS_CC} does not run")),
        Ok(o) if !std::path::Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_absolute() => {
            Some(format!("{CROSS_CC} has no static C library (libc.a)"))
        }
        Ok(_) => None,
    }
}
