//! The `cargo xtask` command line (parsed with `clap`) and what each command does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::builder::{self, BuildRequest, BuiltImage};
use crate::qemu::QemuRunner;
use crate::testcmd::{self, TestOptions};
use crate::{bench, process, sdcard, setup, Board};

/// Tessera's build driver: builds an app into a bootable image per board, boots it under QEMU,
/// runs the test suite and the benchmarks.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    propagate_version = true
)]
#[command(after_help = "Boards: qemu-virt (default), raspi3, raspi4.\n\
Boot arguments (--append): tests=<substr>[,<substr>...] log=<off|error|warn|info|debug|trace>")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Which app, for which board, with which extra cargo features.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct AppArgs {
    /// The app: a crate under `apps/` (hello, selftest, mmbench, forkbench, ...).
    pub app: String,
    /// The board to build for.
    #[arg(long, default_value = "qemu-virt")]
    pub board: Board,
    /// Extra cargo features of the app (comma separated, repeatable).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
}

impl AppArgs {
    fn request(&self) -> BuildRequest {
        BuildRequest::new(self.app.clone(), self.board).features(self.features.iter().cloned())
    }
}

/// A command.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Cmd {
    /// Build an app for a board; prints the paths of the ELF, image and DTB.
    Build(AppArgs),
    /// Build an app and boot it under QEMU, the serial console on this terminal; exits with the
    /// guest's status. Installs what is missing first (see `setup`).
    Run {
        #[command(flatten)]
        app: AppArgs,
        /// The kernel command line.
        #[arg(long, default_value = "")]
        append: String,
        /// Stop QEMU after this many seconds.
        #[arg(long, value_parser = parse_seconds)]
        timeout: Option<Duration>,
        /// Start halted with QEMU's gdbstub listening, and print the debugger command to attach.
        #[arg(long)]
        gdb: bool,
        /// The gdbstub's TCP port (with --gdb).
        #[arg(long, default_value_t = 1234, requires = "gdb")]
        gdb_port: u16,
        /// Boot without semihosting, as on a real board: the exit status does not reach QEMU,
        /// which ends through PSCI SYSTEM_OFF where the board has PSCI (else stop it with --timeout).
        #[arg(long)]
        no_semihosting: bool,
    },
    /// Write `kernel8.img` and `config.txt` (and `cmdline.txt`) for a real Raspberry Pi's SD card.
    Image {
        /// The app.
        app: String,
        /// raspi3 or raspi4.
        #[arg(long)]
        board: Board,
        /// Extra cargo features of the app (comma separated, repeatable).
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// The output directory (default: target/sdcard/<board>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The kernel command line (written to cmdline.txt).
        #[arg(long, default_value = "")]
        append: String,
    },
    /// Formatting and lint checks, host tests, and the boot tests on every board; ends with one line
    /// `N passed, N failed`. Installs what is missing first (see `setup`).
    Test {
        /// Only these boards (comma separated, repeatable; default: all).
        #[arg(long = "board", value_delimiter = ',')]
        boards: Vec<Board>,
        /// Only the checks and host tests.
        #[arg(long, conflicts_with = "boot_only")]
        host_only: bool,
        /// Only the boot tests.
        #[arg(long)]
        boot_only: bool,
        /// Run only tests whose name contains one of these (comma separated, repeatable).
        #[arg(long = "filter", value_delimiter = ',')]
        filters: Vec<String>,
        /// Per-board time limit for the boot tests, in seconds.
        #[arg(long, value_parser = parse_seconds, default_value = "300")]
        timeout: Duration,
    },
    /// Install what is missing (Rust target, llvm-tools, QEMU >= 9 on Debian), then boot `hello` on
    /// every board to show that QEMU works.
    Setup,
    /// Run a benchmark under QEMU in virtual time and write its table to BENCHMARKS.md.
    Bench {
        /// boot, tables or fork.
        name: String,
    },
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("a positive number of seconds, not '{s}'"))
}

/// Parses the arguments after `xtask` (errors and `--help` as clap formats them).
pub fn parse<I, T>(args: I) -> Result<Cmd, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = std::iter::once(std::ffi::OsString::from("xtask")).chain(args.into_iter().map(Into::into));
    Cli::try_parse_from(args).map(|c| c.cmd)
}

/// The debugger command that attaches to a `--gdb` boot of `image`.
pub fn gdb_command(image: &BuiltImage, port: u16) -> String {
    format!(
        "gdb-multiarch -q {} -ex 'target remote localhost:{port}'",
        image.elf.display()
    )
}

/// Runs a command; returns the process exit code.
pub fn execute(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Build(app) => {
            let image = builder::build(&app.request())?;
            println!("{}", image.elf.display());
            if image.kernel != image.elf {
                println!("{}", image.kernel.display());
            }
            if let Some(dtb) = &image.dtb {
                println!("{}", dtb.display());
            }
            Ok(0)
        }
        Cmd::Run {
            app,
            append,
            timeout,
            gdb,
            gdb_port,
            no_semihosting,
        } => {
            // Tools first: a missing QEMU is reported before time goes into the build.
            setup::ensure_ready(&[app.board])?;
            let image = builder::build(&app.request())?;
            let mut runner = QemuRunner::new(&image)
                .append(append)
                .semihosting(!no_semihosting)
                .gdb(gdb.then_some(gdb_port));
            runner.timeout = timeout;
            let cmd = runner.command()?;
            eprintln!("running {}", process::render(&cmd));
            if gdb {
                eprintln!(
                    "QEMU is halted at the first instruction, waiting for a debugger; in another terminal:\n  \
                     {}\n(Debian: apt-get install gdb-multiarch; quit QEMU with Ctrl-A X)",
                    gdb_command(&image, gdb_port)
                );
            }
            let o = runner.run_interactive()?;
            if !o.success() {
                eprintln!("xtask: QEMU: {}", o.describe());
            }
            Ok(o.exit_code())
        }
        Cmd::Image {
            app,
            board,
            features,
            out,
            append,
        } => {
            if !board.is_raspi() {
                bail!(
                    "'image' is for the Raspberry Pi boards (raspi3, raspi4); boot qemu-virt with \
                     'cargo xtask run'"
                );
            }
            sdcard::write_image(&app, board, &features, out, &append)?;
            Ok(0)
        }
        Cmd::Test {
            mut boards,
            host_only,
            boot_only,
            filters,
            timeout,
        } => {
            let mut seen = Vec::new();
            boards.retain(|b| {
                let new = !seen.contains(b);
                seen.push(*b);
                new
            });
            if !host_only {
                let wanted = if boards.is_empty() {
                    Board::ALL.to_vec()
                } else {
                    boards.clone()
                };
                setup::ensure_ready(&wanted)?;
            } else {
                setup::ensure_rust()?;
            }
            let ok = testcmd::run(&TestOptions {
                boards,
                host: !boot_only,
                boot: !host_only,
                filters,
                timeout,
            })?;
            Ok(if ok { 0 } else { 1 })
        }
        Cmd::Setup => {
            setup::run().context("setup failed")?;
            Ok(0)
        }
        Cmd::Bench { name } => {
            setup::ensure_ready(&[Board::QemuVirt])?;
            bench::run(&name)?;
            Ok(0)
        }
    }
}

/// `main` of the `xtask` binary.
pub fn main() -> i32 {
    let cmd = match parse(std::env::args_os().skip(1)) {
        Ok(cmd) => cmd,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match execute(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Cmd, clap::Error> {
        parse(s.split_whitespace())
    }

    fn err(s: &str) -> String {
        p(s).unwrap_err().to_string()
    }

    fn app(name: &str, board: Board, features: &[&str]) -> AppArgs {
        AppArgs {
            app: name.into(),
            board,
            features: features.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn build_and_run() {
        assert_eq!(
            p("build hello").unwrap(),
            Cmd::Build(app("hello", Board::QemuVirt, &[]))
        );
        assert_eq!(
            p("build selftest --board=raspi3 --features a,b --features c").unwrap(),
            Cmd::Build(app("selftest", Board::Raspi3, &["a", "b", "c"]))
        );
        let args = [
            "run",
            "selftest",
            "--board",
            "raspi4",
            "--append",
            "tests=mm log=debug",
            "--timeout",
            "30",
        ];
        assert_eq!(
            parse(args).unwrap(),
            Cmd::Run {
                app: app("selftest", Board::Raspi4, &[]),
                append: "tests=mm log=debug".into(),
                timeout: Some(Duration::from_secs(30)),
                gdb: false,
                gdb_port: 1234,
                no_semihosting: false,
            }
        );
        assert!(matches!(
            p("run hello --gdb --gdb-port 4321 --no-semihosting").unwrap(),
            Cmd::Run {
                gdb: true,
                gdb_port: 4321,
                no_semihosting: true,
                ..
            }
        ));
    }

    #[test]
    fn errors() {
        assert!(err("build hello --board pi5").contains("valid boards: qemu-virt, raspi3, raspi4"));
        assert!(err("build").contains("<APP>"));
        assert!(err("build a b").contains("unexpected argument 'b'"));
        assert!(err("build a --bogus").contains("unexpected argument '--bogus'"));
        assert!(err("run a --timeout").contains("a value is required"));
        assert!(err("run a --timeout=-3").contains("positive"));
        assert!(err("run a --timeout 0").contains("positive"));
        assert!(err("run a --gdb-port 9").contains("--gdb"));
        assert!(err("frobnicate").contains("unrecognized subcommand 'frobnicate'"));
        assert!(err("image hello").contains("--board <BOARD>"));
        assert!(err("test --host-only --boot-only").contains("cannot be used with"));
        assert!(err("test --host-only=yes").contains("--host-only"));
    }

    #[test]
    fn image_is_for_the_pi() {
        let cmd = p("image hello --board qemu-virt").unwrap();
        let e = execute(cmd).unwrap_err().to_string();
        assert!(e.contains("Raspberry Pi"), "{e}");
    }

    #[test]
    fn test_command() {
        assert_eq!(
            p("test").unwrap(),
            Cmd::Test {
                boards: vec![],
                host_only: false,
                boot_only: false,
                filters: vec![],
                timeout: Duration::from_secs(300)
            }
        );
        assert_eq!(
            p("test --board raspi3 --board qemu-virt,raspi3 --boot-only --filter mm,alloc --timeout 60")
                .unwrap(),
            Cmd::Test {
                boards: vec![Board::Raspi3, Board::QemuVirt, Board::Raspi3],
                host_only: false,
                boot_only: true,
                filters: vec!["mm".into(), "alloc".into()],
                timeout: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn help_and_misc() {
        let help = p("--help").unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let text = help.to_string();
        for cmd in ["build", "run", "image", "test", "setup", "bench"] {
            assert!(text.contains(cmd), "{cmd} missing from\n{text}");
        }
        assert!(p("run --help").unwrap_err().to_string().contains("--gdb"));
        assert_eq!(p("setup").unwrap(), Cmd::Setup);
        assert_eq!(p("bench fork").unwrap(), Cmd::Bench { name: "fork".into() });
        assert_eq!(
            p("image hello --board raspi4 --out /tmp/sd").unwrap(),
            Cmd::Image {
                app: "hello".into(),
                board: Board::Raspi4,
                features: vec![],
                out: Some("/tmp/sd".into()),
                append: String::new()
            }
        );
        Cli::command_for_debug_assert();
    }

    #[test]
    fn gdb_command_line() {
        let image = BuiltImage {
            app: "hello".into(),
            board: Board::QemuVirt,
            features: vec![],
            elf: "/w/target/hello".into(),
            kernel: "/w/target/hello".into(),
            dtb: None,
        };
        assert_eq!(
            gdb_command(&image, 1234),
            "gdb-multiarch -q /w/target/hello -ex 'target remote localhost:1234'"
        );
    }

    impl Cli {
        fn command_for_debug_assert() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
