//! Building an app for a board: `cargo build` into a per-board (and
//! per-feature-set) target directory, then the raw `kernel8.img` and the DTB
//! for the raspi boards.
//!
//! With EL0 programs ([`BuildRequest::programs`]) the builder first writes their newc cpio archive
//! to `<target dir>/programs/<hash of the archive>.cpio` and names it in `TESSERA_PROGRAMS`, which
//! `libos/build.rs` embeds (and tracks: the variable names a new file for a new archive, so no
//! stale build is reused). Such builds get a target directory of their own (`...+programs`), so
//! switching between an image with programs and one without does not rebuild every time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{apps, cpio, dtb, process, target_root, toolchain, workspace_root, Board, TARGET};

/// The variable that names the program archive for `libos/build.rs`.
pub const PROGRAMS_ENV: &str = "TESSERA_PROGRAMS";
/// The mode of the programs in the archive (a regular file, `r-xr-xr-x`).
pub const PROGRAM_MODE: u32 = 0o100555;

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRequest {
    /// App package name (or its directory name under `apps/`).
    pub app: String,
    pub board: Board,
    /// Extra cargo features (on top of the board feature), e.g.
    /// `deliberate-failure`.
    pub features: Vec<String>,
    /// Capture cargo's output and show it only on failure (tests).
    pub quiet: bool,
    /// The EL0 programs of the image's archive: (name in the archive, file). Empty: the image
    /// carries the empty archive.
    pub programs: Vec<(String, PathBuf)>,
}

impl BuildRequest {
    pub fn new(app: impl Into<String>, board: Board) -> Self {
        BuildRequest {
            app: app.into(),
            board,
            features: Vec::new(),
            quiet: false,
            programs: Vec::new(),
        }
    }

    pub fn features<I, S>(mut self, features: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.features.extend(features.into_iter().map(Into::into));
        self
    }

    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Adds EL0 programs: (name in the archive, file).
    pub fn programs<I, S, P>(mut self, programs: I) -> Self
    where
        I: IntoIterator<Item = (S, P)>,
        S: Into<String>,
        P: Into<PathBuf>,
    {
        self.programs
            .extend(programs.into_iter().map(|(n, p)| (n.into(), p.into())));
        self
    }

    /// The program archive: the files of [`Self::programs`] in order, each with [`PROGRAM_MODE`].
    pub fn archive(&self) -> Result<Vec<u8>> {
        let mut entries = Vec::new();
        for (name, path) in &self.programs {
            let data = std::fs::read(path)
                .with_context(|| format!("reading program '{name}' from {}", path.display()))?;
            entries.push((name.as_str(), PROGRAM_MODE, data));
        }
        cpio::write(&entries)
    }

    /// Where the builder puts `archive`: named by a hash of its bytes, so a different archive is
    /// a different file (and value of [`PROGRAMS_ENV`]), the same archive the same file.
    pub fn archive_path(&self, target_root: &Path, archive: &[u8]) -> PathBuf {
        self.target_dir(target_root)
            .join("programs")
            .join(format!("{:016x}.cpio", fnv1a(archive)))
    }

    /// The extra features, split on commas, sorted and deduplicated.
    pub fn normalized_features(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .features
            .iter()
            .flat_map(|s| s.split([',', ' ']))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        f.sort();
        f.dedup();
        f
    }

    /// `target/boards/<board>` or `target/boards/<board>-<features>`: feature
    /// sets get their own directory so they do not rebuild each other.
    pub fn target_dir(&self, target_root: &Path) -> PathBuf {
        let features = self.normalized_features();
        let mut name = self.board.name().to_string();
        for f in &features {
            name.push('-');
            name.extend(f.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            }));
        }
        if !self.programs.is_empty() {
            // '+' is never part of a sanitized feature name.
            name.push_str("+programs");
        }
        target_root.join("boards").join(name)
    }

    /// The `--features` argument.
    pub fn feature_arg(&self) -> String {
        let mut all = vec![self.board.feature()];
        all.extend(self.normalized_features());
        all.join(",")
    }

    /// The `cargo build` command (without running it); `archive` is the program archive's file
    /// (none: libos embeds the empty archive).
    pub fn cargo_command(
        &self,
        package: &str,
        root: &Path,
        target_root: &Path,
        archive: Option<&Path>,
    ) -> Command {
        let mut cmd = Command::new(toolchain::cargo());
        cmd.current_dir(root)
            .args([
                "build",
                "-p",
                package,
                "--release",
                "--target",
                TARGET,
                "--features",
            ])
            .arg(self.feature_arg())
            .env("CARGO_TARGET_DIR", self.target_dir(target_root))
            // Encoded form: robust to spaces in the path; takes precedence
            // over RUSTFLAGS and build.rustflags.
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!("-Clink-arg=-T{}", self.board.linker_script(root).display()),
            )
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_BUILD_RUSTFLAGS");
        match archive {
            Some(path) => cmd.env(PROGRAMS_ENV, path),
            None => cmd.env_remove(PROGRAMS_ENV),
        };
        if self.quiet {
            cmd.arg("--quiet");
        }
        cmd
    }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    pub app: String,
    pub board: Board,
    pub features: Vec<String>,
    /// The linked ELF.
    pub elf: PathBuf,
    /// What QEMU's `-kernel` gets: the ELF (qemu-virt) or `kernel8.img`.
    pub kernel: PathBuf,
    /// The generated DTB (raspi boards).
    pub dtb: Option<PathBuf>,
}

/// Builds `req`, printing cargo's progress unless `req.quiet`.
pub fn build(req: &BuildRequest) -> Result<BuiltImage> {
    let root = workspace_root();
    let troot = target_root();
    let app = apps::find(&root, &req.app)?;
    if let Some(f) = req
        .normalized_features()
        .iter()
        .find(|f| f.starts_with("libos/board-"))
    {
        bail!("feature '{f}' selects a board; use --board instead");
    }
    toolchain::require_target()?;
    let script = req.board.linker_script(&root);
    if !script.is_file() {
        bail!("linker script {} does not exist", script.display());
    }

    let archive = if req.programs.is_empty() {
        None
    } else {
        let bytes = req.archive()?;
        let path = req.archive_path(&troot, &bytes);
        // Written once per content: rewriting it would make cargo rerun libos's build script.
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            process::write_atomic(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Some(path)
    };
    let mut cmd = req.cargo_command(&app.package, &root, &troot, archive.as_deref());
    if !req.quiet {
        eprintln!(
            "building {} for {} ({})",
            app.package,
            req.board,
            process::render(&cmd)
        );
    }
    let out = process::run_build(&mut cmd, req.quiet)?;
    if !out.status.success() {
        let mut msg = format!(
            "building {} for {} failed ({})",
            app.package, req.board, out.status
        );
        if req.quiet {
            msg.push_str(&format!(
                "\n{}\n{}",
                process::render(&cmd),
                tail(&String::from_utf8_lossy(&out.stderr), 60)
            ));
        }
        bail!(msg);
    }

    let elf = req
        .target_dir(&troot)
        .join(TARGET)
        .join("release")
        .join(&app.package);
    if !elf.is_file() {
        bail!(
            "cargo succeeded but {} does not exist (is '{}' a binary?)",
            elf.display(),
            app.package
        );
    }
    let (kernel, dtb) = if req.board.is_raspi() {
        let img = req.target_dir(&troot).join(&app.package).join("kernel8.img");
        objcopy_binary(&elf, &img)?;
        let dtb_path = dtb::path(&troot, req.board);
        dtb::write(req.board, &dtb_path)?;
        (img, Some(dtb_path))
    } else {
        (elf.clone(), None)
    };
    Ok(BuiltImage {
        app: app.package,
        board: req.board,
        features: req.normalized_features(),
        elf,
        kernel,
        dtb,
    })
}

/// `llvm-objcopy -O binary <elf> <out>` (atomically replacing `out`).
pub fn objcopy_binary(elf: &Path, out: &Path) -> Result<()> {
    let objcopy = toolchain::require_llvm_objcopy()?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = process::temp_sibling(out);
    let o = Command::new(&objcopy)
        .args(["-O", "binary"])
        .arg(elf)
        .arg(&tmp)
        .output()
        .with_context(|| format!("cannot run {}", objcopy.display()))?;
    if !o.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "llvm-objcopy failed on {}: {}",
            elf.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dirs_per_feature_set() {
        let t = Path::new("/w/target");
        let r = BuildRequest::new("selftest", Board::Raspi3);
        assert_eq!(r.target_dir(t), Path::new("/w/target/boards/raspi3"));
        assert_eq!(r.feature_arg(), "libos/board-raspi3");
        let r = r.features(["deliberate-failure,zeta", "alpha"]);
        assert_eq!(r.normalized_features(), ["alpha", "deliberate-failure", "zeta"]);
        assert_eq!(
            r.target_dir(t),
            Path::new("/w/target/boards/raspi3-alpha-deliberate-failure-zeta")
        );
        assert_eq!(
            r.feature_arg(),
            "libos/board-raspi3,alpha,deliberate-failure,zeta"
        );
        let r = BuildRequest::new("hello", Board::QemuVirt).features(["libos/trace"]);
        assert_eq!(
            r.target_dir(t),
            Path::new("/w/target/boards/qemu-virt-libos_trace")
        );
    }

    #[test]
    fn cargo_command() {
        let r = BuildRequest::new("hello", Board::Raspi4).features(["x"]);
        let cmd = r.cargo_command("hello", Path::new("/w"), Path::new("/w/target"), None);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "build",
                "-p",
                "hello",
                "--release",
                "--target",
                "aarch64-unknown-none-softfloat",
                "--features",
                "libos/board-raspi4,x"
            ]
        );
        let env: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(env.contains(&(
            "CARGO_TARGET_DIR".into(),
            Some("/w/target/boards/raspi4-x".into())
        )));
        assert!(env.contains(&(
            "CARGO_ENCODED_RUSTFLAGS".into(),
            Some("-Clink-arg=-T/w/linker/raspi4.ld".into())
        )));
        assert!(env.contains(&("RUSTFLAGS".into(), None)));
        assert!(env.contains(&("TESSERA_PROGRAMS".into(), None)));
    }

    #[test]
    fn programs_make_an_archive() {
        let dir = std::env::temp_dir().join(format!("xtask-programs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), b"first").unwrap();
        std::fs::write(dir.join("b"), b"second!").unwrap();
        let t = Path::new("/w/target");
        let r = BuildRequest::new("init", Board::QemuVirt)
            .programs([("x", dir.join("a")), ("bin/y", dir.join("b"))]);
        assert_eq!(r.target_dir(t), Path::new("/w/target/boards/qemu-virt+programs"));
        let archive = r.archive().unwrap();
        let entries = cpio::read(&archive).unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.mode, &e.data[..]))
            .collect();
        assert_eq!(
            got,
            [
                ("x", 0o100555, &b"first"[..]),
                ("bin/y", 0o100555, &b"second!"[..])
            ]
        );
        let path = r.archive_path(t, &archive);
        assert!(path.starts_with("/w/target/boards/qemu-virt+programs/programs"));
        assert_ne!(path, r.archive_path(t, &cpio::empty()));
        assert_eq!(path, r.archive_path(t, &archive.clone()));
        let cmd = r.cargo_command("init", Path::new("/w"), t, Some(&path));
        let env: Vec<_> = cmd
            .get_envs()
            .filter(|(k, _)| *k == "TESSERA_PROGRAMS")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(env, [Some(path.as_os_str())]);

        let missing = BuildRequest::new("init", Board::QemuVirt).programs([("z", dir.join("nope"))]);
        assert!(format!("{:#}", missing.archive().unwrap_err()).contains("reading program 'z'"));
        let twice =
            BuildRequest::new("init", Board::QemuVirt).programs([("x", dir.join("a")), ("x", dir.join("b"))]);
        assert!(twice.archive().unwrap_err().to_string().contains("two members"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
