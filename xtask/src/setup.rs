//! `cargo xtask setup`: install what is missing on a Debian bookworm machine
//! (idempotent; fast when everything is present), then boot `hello` on every
//! board. `run`, `test` and `bench` call [`ensure_ready`] first, so the
//! README's two commands work as the first commands on a fresh machine.
//!
//! For the EL0 programs (see [`crate::programs`]) setup also adds the Rust target
//! `aarch64-unknown-linux-musl` and the C cross compiler `aarch64-linux-gnu-gcc`; the program
//! builder installs the compiler itself only when it is missing and a C program is built
//! ([`ensure_cross_cc`]).

use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process;
use crate::toolchain::{self, CROSS_CC, CROSS_CC_PACKAGES, MUSL_TARGET};
use crate::{workspace_root, Board, TARGET};

const BACKPORTS_LINE: &str = "deb http://deb.debian.org/debian bookworm-backports main";
const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.list";
const APT_SOURCES: &str = "/etc/apt/sources.list";
const APT_SOURCES_DIR: &str = "/etc/apt/sources.list.d";

pub fn run() -> Result<()> {
    rust(true)?;
    if let Some(problem) = qemu_problem(true) {
        install_qemu(&problem)?;
    }
    match toolchain::cross_cc_problem() {
        Some(problem) => install_cross_cc(&problem)?,
        None => println!("setup: {CROSS_CC}: installed"),
    }
    for board in Board::ALL {
        boot_hello(board)?;
    }
    println!("setup: done");
    Ok(())
}

/// The Rust targets ([`TARGET`] for the kernel, [`MUSL_TARGET`] for the EL0 programs) and
/// llvm-tools, added with rustup when missing (quietly when present).
pub fn ensure_rust() -> Result<()> {
    rust(false)
}

/// What `run`, `test` and `bench` need before they build: the Rust pieces, and a QEMU that has
/// the machines of every board. A missing QEMU is installed when running as root without a
/// terminal (as CI does; the install checks the machines again); otherwise this stops with the one
/// command that installs it.
pub fn ensure_ready() -> Result<()> {
    rust(false)?;
    let Some(problem) = qemu_problem(false) else {
        return Ok(());
    };
    if is_root() && !std::io::stdin().is_terminal() {
        install_qemu(&problem)
    } else {
        bail!(
            "{problem}.\nInstall it with:\n    cargo xtask setup\n\
             (installs qemu-system-arm >= 9 from Debian bookworm-backports, without recommended packages{})",
            if is_root() { "" } else { ", through sudo" }
        );
    }
}

/// Builds `hello` for `board` and boots it exactly as `cargo xtask run` does: it must greet and
/// exit 0, else the QEMU installation is broken and the error says how.
fn boot_hello(board: Board) -> Result<()> {
    let image = crate::builder::build(&crate::builder::BuildRequest::new("hello", board).quiet(true))
        .with_context(|| format!("building hello for {board}"))?;
    let runner = crate::qemu::QemuRunner::new(&image).timeout(Duration::from_secs(120));
    let command = process::render(&runner.command()?);
    let o = runner.run_captured(false)?;
    if o.success() && o.stdout.contains("Hello from Tessera") {
        println!("setup: hello boots on {board} ({})", o.describe());
        return Ok(());
    }
    bail!(
        "hello does not boot on {board}: QEMU {}\n$ {command}\n--- serial ---\n{}\n--- QEMU's stderr ---\n{}",
        o.describe(),
        o.stdout.trim_end(),
        o.stderr.trim_end()
    )
}

/// Runs a command, echoing it, failing on a non-zero status.
fn sh(cmd: &mut Command) -> Result<()> {
    println!("setup: $ {}", process::render(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", process::program_name(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", process::render(cmd));
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {}", process::program_name(cmd)))?;
    if !o.status.success() {
        bail!(
            "`{}` failed: {}",
            process::render(cmd),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn rustup(args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    // From the workspace root, so rust-toolchain.toml picks the toolchain.
    c.args(args).current_dir(workspace_root());
    c
}

fn rust(verbose: bool) -> Result<()> {
    if Command::new("rustup").arg("--version").output().is_err() {
        bail!("rustup not found; install Rust with rustup (https://rustup.rs) first");
    }
    let targets = output(&mut rustup(&["target", "list", "--installed"]))?;
    for target in [TARGET, MUSL_TARGET] {
        if targets.lines().any(|l| l.trim() == target) {
            if verbose {
                println!("setup: Rust target {target}: installed");
            }
        } else {
            sh(&mut rustup(&["target", "add", target]))?;
        }
    }
    let components = output(&mut rustup(&["component", "list", "--installed"]))?;
    if components.lines().any(|l| l.trim().starts_with("llvm-tools")) {
        if verbose {
            println!("setup: rustup component llvm-tools: installed");
        }
    } else {
        sh(&mut rustup(&["component", "add", "llvm-tools"]))?;
    }
    Ok(())
}

/// `None` if QEMU is fine, else why not.
fn qemu_problem(verbose: bool) -> Option<String> {
    let bin = crate::qemu::qemu_binary();
    let version = Command::new(&bin).arg("--version").output();
    let Ok(version) = version else {
        return Some(format!("{} not found", bin.display()));
    };
    let help = match Command::new(&bin).args(["-M", "help"]).output() {
        Ok(h) if h.status.success() => h,
        _ => return Some(format!("{} -M help failed", bin.display())),
    };
    let machines = crate::qemu::parse_machine_list(&String::from_utf8_lossy(&help.stdout));
    let missing: Vec<&str> = Board::ALL
        .iter()
        .map(|b| b.qemu_machine())
        .filter(|m| !machines.iter().any(|x| x == m))
        .collect();
    if missing.is_empty() {
        if !verbose {
            return None;
        }
        println!(
            "setup: {}: {} (machines virt, raspi3b, raspi4b present)",
            bin.display(),
            String::from_utf8_lossy(&version.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
        );
        None
    } else {
        Some(format!(
            "{} lacks machine(s) {} (QEMU >= 9 needed)",
            bin.display(),
            missing.join(", ")
        ))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as root: directly when root, else through sudo.
fn privileged(root: bool, program: &str) -> Command {
    if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

fn os_release_field(field: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}=")))
        .map(|v| v.trim().trim_matches('"').to_string())
}

/// Whether an enabled APT source already mentions bookworm-backports
/// (one-line `.list` and deb822 `.sources` formats).
pub fn backports_configured(sources_list: &Path, sources_dir: &Path) -> bool {
    let mut files = vec![sources_list.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(sources_dir) {
        files.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources")),
        );
    }
    files
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| mentions_backports(&t)))
}

fn mentions_backports(text: &str) -> bool {
    // deb822 stanzas with `Enabled: no` are ignored.
    text.split("\n\n").any(|stanza| {
        let disabled = stanza.lines().any(|l| {
            let l = l.trim().to_ascii_lowercase();
            l.starts_with("enabled:") && l.ends_with("no")
        });
        !disabled
            && stanza.lines().any(|l| {
                let l = l.trim();
                !l.starts_with('#') && l.split_whitespace().any(|w| w == "bookworm-backports")
            })
    })
}

fn install_qemu(problem: &str) -> Result<()> {
    println!("setup: {problem}; installing QEMU");
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!("{problem}; install QEMU >= 9 (qemu-system-aarch64) with your package manager");
    }
    let root = is_root();
    if !root && Command::new("sudo").arg("--version").output().is_err() {
        bail!("{problem}; not root and no sudo: install QEMU >= 9 (qemu-system-arm) as root");
    }
    let bookworm = os_release_field("VERSION_CODENAME").as_deref() == Some("bookworm");
    if bookworm {
        if backports_configured(Path::new(APT_SOURCES), Path::new(APT_SOURCES_DIR)) {
            println!("setup: bookworm-backports already in the APT sources");
        } else {
            println!("setup: adding '{BACKPORTS_LINE}' to {BACKPORTS_FILE}");
            if root {
                std::fs::write(BACKPORTS_FILE, format!("{BACKPORTS_LINE}\n"))
                    .with_context(|| format!("writing {BACKPORTS_FILE}"))?;
            } else {
                let mut c = Command::new("sudo");
                c.args(["sh", "-c", &format!("echo '{BACKPORTS_LINE}' > {BACKPORTS_FILE}")]);
                sh(&mut c)?;
            }
        }
    }
    let apt = |args: &[&str]| apt_get(root, args);
    sh(&mut apt(&["update", "-q"]))?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    if bookworm {
        install.extend(["-t", "bookworm-backports"]);
    }
    install.push("qemu-system-arm");
    sh(&mut apt(&install))?;
    if let Some(problem) = qemu_problem(true) {
        bail!("after installing qemu-system-arm: {problem}");
    }
    Ok(())
}

/// `apt-get ARGS`, non-interactive, as root (through sudo when not root).
fn apt_get(root: bool, args: &[&str]) -> Command {
    let mut c = privileged(root, "apt-get");
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// The `apt-get install` arguments for `packages`, without recommended packages.
pub fn apt_install_args<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    args
}

/// Installs the C cross compiler for the EL0 programs ([`CROSS_CC_PACKAGES`]) with apt-get.
fn install_cross_cc(problem: &str) -> Result<()> {
    println!("setup: {problem}; installing {}", CROSS_CC_PACKAGES.join(" "));
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!("{problem}; install {CROSS_CC} (a static aarch64 Linux C toolchain) with your package manager");
    }
    let root = is_root();
    if !root && Command::new("sudo").arg("--version").output().is_err() {
        bail!(
            "{problem}; not root and no sudo: install {} as root",
            CROSS_CC_PACKAGES.join(" ")
        );
    }
    sh(&mut apt_get(root, &["update", "-q"]))?;
    sh(&mut apt_get(root, &apt_install_args(&CROSS_CC_PACKAGES)))?;
    if let Some(problem) = toolchain::cross_cc_problem() {
        bail!("after installing {}: {problem}", CROSS_CC_PACKAGES.join(" "));
    }
    Ok(())
}

/// What building a C program needs: [`CROSS_CC`] with a static C library. When missing it is
/// installed when running as root without a terminal (as CI does); otherwise this stops with the
/// one command that installs it.
pub fn ensure_cross_cc() -> Result<()> {
    let Some(problem) = toolchain::cross_cc_problem() else {
        return Ok(());
    };
    if is_root() && !std::io::stdin().is_terminal() {
        install_cross_cc(&problem)
    } else {
        bail!(
            "{problem}.\nInstall it with:\n    cargo xtask setup\n\
             (installs the Debian packages {} without recommended packages{})",
            CROSS_CC_PACKAGES.join(" "),
            if is_root() { "" } else { ", through sudo" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_cc_install_command() {
        let c = apt_get(true, &apt_install_args(&CROSS_CC_PACKAGES));
        assert_eq!(
            process::render(&c),
            "apt-get install -y -q --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
        );
    }

    #[test]
    fn backports_detection() {
        assert!(mentions_backports(
            "deb http://deb.debian.org/debian bookworm-backports main\n"
        ));
        assert!(!mentions_backports(
            "# deb http://deb.debian.org/debian bookworm-backports main\n"
        ));
        assert!(!mentions_backports(
            "deb http://deb.debian.org/debian bookworm main\n"
        ));
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates bookworm-backports\nComponents: main\n";
        assert!(mentions_backports(deb822));
        assert!(!mentions_backports(&format!("{deb822}Enabled: no\n")));

        let dir = std::env::temp_dir().join(format!("xtask-apt-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(
            dir.join("sources.list"),
            "deb http://deb.debian.org/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(dir.join("d/x.list.disabled"), BACKPORTS_LINE).unwrap();
        assert!(!backports_configured(&dir.join("sources.list"), &dir.join("d")));
        std::fs::write(dir.join("d/backports.list"), BACKPORTS_LINE).unwrap();
        assert!(backports_configured(&dir.join("sources.list"), &dir.join("d")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
