//! Building EL0 programs: unmodified static Linux arm64 executables that an image carries in its
//! program archive (see [`crate::cpio`] and `--program`).
//!
//! - A Rust program is a Cargo project of its own (not a workspace member), built with
//!   `cargo build --release --target aarch64-unknown-linux-musl`, linked by `rust-lld` with a
//!   static C runtime (`-C linker=rust-lld -C target-feature=+crt-static`).
//! - A C program is one or more `.c` files, built with `aarch64-linux-gnu-gcc -static -O2`.
//!
//! Outputs go under `target/programs/<program>/`. The examples live in `programs/` at the
//! workspace root: every folder with a `Cargo.toml` is a Rust program (named after its package),
//! every other folder with `.c` files is a C program named after the folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::toolchain::{self, musl_target_installed, CROSS_CC, MUSL_TARGET};
use crate::{apps, builder, process, target_root, workspace_root, SETUP_HINT};

/// The rustc flags of a Rust program, one per element (`CARGO_ENCODED_RUSTFLAGS`).
pub const RUST_FLAGS: [&str; 2] = ["-Clinker=rust-lld", "-Ctarget-feature=+crt-static"];
/// The C compiler flags (before `-o`).
pub const C_FLAGS: [&str; 3] = ["-static", "-O2", "-Wall"];
/// What a program is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The folder of a Cargo project.
    Rust(PathBuf),
    /// C source files.
    C(Vec<PathBuf>),
}

/// A program to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The executable's name (Rust: the package name; C: the folder name).
    pub name: String,
    pub source: Source,
}

impl Program {
    /// A Rust program from the Cargo project in `dir`.
    pub fn rust(dir: &Path) -> Result<Program> {
        let manifest = dir.join("Cargo.toml");
        let text =
            std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        let name = apps::package_name(&text)
            .with_context(|| format!("{} has no [package] name", manifest.display()))?;
        Ok(Program {
            name,
            source: Source::Rust(dir.to_path_buf()),
        })
    }

    /// A C program `name` from `sources`.
    pub fn c(name: impl Into<String>, sources: Vec<PathBuf>) -> Program {
        Program {
            name: name.into(),
            source: Source::C(sources),
        }
    }

    /// `<target root>/programs/<name>`: the program's own output folder.
    pub fn out_dir(&self, target_root: &Path) -> PathBuf {
        target_root.join("programs").join(&self.name)
    }

    /// Where the built executable is.
    pub fn output(&self, target_root: &Path) -> PathBuf {
        let dir = self.out_dir(target_root);
        match self.source {
            Source::Rust(_) => dir.join(MUSL_TARGET).join("release").join(&self.name),
            Source::C(_) => dir.join(&self.name),
        }
    }

    /// The build command (without running it).
    pub fn command(&self, target_root: &Path, quiet: bool) -> Command {
        match &self.source {
            Source::Rust(dir) => {
                let mut cmd = Command::new(toolchain::cargo());
                cmd.current_dir(dir)
                    .args(["build", "--release", "--target", MUSL_TARGET])
                    .env("CARGO_TARGET_DIR", self.out_dir(target_root))
                    // The encoded form takes precedence over RUSTFLAGS and build.rustflags.
                    .env("CARGO_ENCODED_RUSTFLAGS", RUST_FLAGS.join("\x1f"))
                    .env_remove("RUSTFLAGS")
                    .env_remove("CARGO_BUILD_TARGET")
                    .env_remove("CARGO_BUILD_RUSTFLAGS");
                if quiet {
                    cmd.arg("--quiet");
                }
                cmd
            }
            Source::C(sources) => {
                let mut cmd = Command::new(CROSS_CC);
                cmd.args(C_FLAGS)
                    .arg("-o")
                    .arg(self.output(target_root))
                    .args(sources);
                cmd
            }
        }
    }
}

/// The example programs in `<root>/programs`, sorted by name.
pub fn examples(root: &Path) -> Result<Vec<Program>> {
    let dir = root.join("programs");
    let mut programs = Vec::new();
    let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.join("Cargo.toml").is_file() {
            programs.push(Program::rust(&path)?);
            continue;
        }
        let mut sources: Vec<PathBuf> = std::fs::read_dir(&path)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "c"))
            .collect();
        sources.sort();
        if !sources.is_empty() {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            programs.push(Program::c(name, sources));
        }
    }
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(programs)
}

/// Builds `program` (cargo's or gcc's output shown only on failure when `quiet`); returns the
/// executable. A missing C compiler is installed first where [`crate::setup::ensure_cross_cc`]
/// may.
pub fn build(program: &Program, quiet: bool) -> Result<PathBuf> {
    let troot = target_root();
    match &program.source {
        Source::Rust(_) => {
            if !musl_target_installed() {
                bail!("the Rust target {MUSL_TARGET} is not installed; {SETUP_HINT}");
            }
        }
        Source::C(_) => crate::setup::ensure_cross_cc()?,
    }
    let out = program.output(&troot);
    std::fs::create_dir_all(program.out_dir(&troot))
        .with_context(|| format!("creating {}", program.out_dir(&troot).display()))?;
    let mut cmd = program.command(&troot, quiet);
    if !quiet {
        eprintln!("building program {} ({})", program.name, process::render(&cmd));
    }
    let o = process::run_build(&mut cmd, quiet)?;
    if !o.status.success() {
        let mut msg = format!("building program {} failed ({})", program.name, o.status);
        if quiet {
            msg.push_str(&format!(
                "\n{}\n{}",
                process::render(&cmd),
                builder::tail(&String::from_utf8_lossy(&o.stderr), 60)
            ));
        }
        bail!(msg);
    }
    if !out.is_file() {
        bail!("building program {} left no {}", program.name, out.display());
    }
    Ok(out)
}

/// Builds every example in `programs/`; returns (name, executable) pairs.
pub fn build_examples(quiet: bool) -> Result<Vec<(String, PathBuf)>> {
    examples(&workspace_root())?
        .iter()
        .map(|p| Ok((p.name.clone(), build(p, quiet)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    fn env(cmd: &Command, key: &str) -> Option<Option<String>> {
        cmd.get_envs()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn rust_command_line() {
        let p = Program {
            name: "rust-hello".into(),
            source: Source::Rust("/w/programs/rust-hello".into()),
        };
        let t = Path::new("/w/target");
        let cmd = p.command(t, false);
        assert_eq!(
            args(&cmd),
            ["build", "--release", "--target", "aarch64-unknown-linux-musl"]
        );
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/w/programs/rust-hello")));
        assert_eq!(
            env(&cmd, "CARGO_TARGET_DIR"),
            Some(Some("/w/target/programs/rust-hello".into()))
        );
        assert_eq!(
            env(&cmd, "CARGO_ENCODED_RUSTFLAGS"),
            Some(Some("-Clinker=rust-lld\x1f-Ctarget-feature=+crt-static".into()))
        );
        assert_eq!(env(&cmd, "RUSTFLAGS"), Some(None));
        assert_eq!(
            p.output(t),
            Path::new("/w/target/programs/rust-hello/aarch64-unknown-linux-musl/release/rust-hello")
        );
        assert_eq!(args(&p.command(t, true)).last().unwrap(), "--quiet");
    }

    #[test]
    fn c_command_line() {
        let p = Program::c("c-hello", vec!["/w/programs/c-hello/hello.c".into()]);
        let t = Path::new("/w/target");
        let cmd = p.command(t, true);
        assert_eq!(
            process::render(&cmd),
            "aarch64-linux-gnu-gcc -static -O2 -Wall -o /w/target/programs/c-hello/c-hello \
             /w/programs/c-hello/hello.c"
        );
        assert_eq!(p.output(t), Path::new("/w/target/programs/c-hello/c-hello"));
    }

    #[test]
    fn the_examples() {
        let root = workspace_root();
        let ex = examples(&root).unwrap();
        let names: Vec<&str> = ex.iter().map(|p| p.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "found once each, in name order");
        let find = |n: &str| {
            ex.iter()
                .find(|p| p.name == n)
                .unwrap_or_else(|| panic!("no {n}"))
        };
        assert_eq!(
            *find("c-hello"),
            Program::c("c-hello", vec![root.join("programs/c-hello/hello.c")])
        );
        assert_eq!(
            *find("pipes"),
            Program::c("pipes", vec![root.join("programs/pipes/pipes.c")])
        );
        for rust in ["rust-hello", "rust-threads", "kvsnap"] {
            assert_eq!(find(rust).source, Source::Rust(root.join("programs").join(rust)));
        }
        // Every folder of `programs/` is a program (the README is not).
        let folders = std::fs::read_dir(root.join("programs"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count();
        assert_eq!(ex.len(), folders);
    }
}
