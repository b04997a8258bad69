//! Building an app for a board: `cargo build` into a per-board (and
//! per-feature-set) target directory, then the raw `kernel8.img` and the DTB
//! for the raspi boards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{apps, dtb, process, target_root, toolchain, workspace_root, Board, TARGET};

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
}

impl BuildRequest {
    pub fn new(app: impl Into<String>, board: Board) -> Self {
        BuildRequest {
            app: app.into(),
            board,
            features: Vec::new(),
            quiet: false,
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
        target_root.join("boards").join(name)
    }

    /// The `--features` argument.
    pub fn feature_arg(&self) -> String {
        let mut all = vec![self.board.feature()];
        all.extend(self.normalized_features());
        all.join(",")
    }

    /// The `cargo build` command (without running it).
    pub fn cargo_command(&self, package: &str, root: &Path, target_root: &Path) -> Command {
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
        if self.quiet {
            cmd.arg("--quiet");
        }
        cmd
    }
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

    let mut cmd = req.cargo_command(&app.package, &root, &troot);
    if !req.quiet {
        eprintln!(
            "building {} for {} ({})",
            app.package,
            req.board,
            process::render(&cmd)
        );
    }
    let out = if req.quiet {
        cmd.stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", process::program_name(&cmd)))?
    } else {
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", process::program_name(&cmd)))?;
        std::process::Output {
            status,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    };
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
        let cmd = r.cargo_command("hello", Path::new("/w"), Path::new("/w/target"));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "build",
                "-p",
                "hello",
                "--release",
                "--target",
                "aarch64-unknown-none",
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
    }
}
