//! The `cargo xtask` command line (parsed with `clap`) and what each command does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::builder::{self, BuildRequest, BuiltImage};
use crate::qemu::QemuRunner;
use crate::testcmd::{self, TestOptions};
use crate::{bench, process, profile, programs, sdcard, setup, Board};

/// The app `run` boots when `--program` is given without an app.
pub const DEFAULT_INIT_APP: &str = "init";

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
Boot arguments (--append): tests=<substr>[,<substr>...] log=<off|error|warn|info|debug|trace>\n\
EL0 programs: --program PATH[=NAME] (build, run, image; repeatable) puts a static Linux arm64 \
executable into the image's read-only program archive as NAME (default: its file name; split at \
the last '='). 'cargo xtask programs' builds the examples in programs/ and prints their paths.\n\
'run --program P [-- ARGS]' without an app boots the app 'init'; with --program the kernel command \
line ends with 'init=NAME [-- ARG...]' (NAME: the first program; see 'init_bootargs').")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Which app, for which board, with which extra cargo features and EL0 programs.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct AppArgs {
    /// The app: a crate under `apps/` (hello, selftest, mmbench, forkbench, ...).
    pub app: String,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// The board, the extra cargo features and the EL0 programs of an image.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct TargetArgs {
    /// The board to build for.
    #[arg(long, default_value = "qemu-virt")]
    pub board: Board,
    /// Extra cargo features of the app (comma separated, repeatable).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// An EL0 program for the image's archive: a static Linux arm64 executable, stored as NAME
    /// (default: its file name). Repeatable.
    #[arg(long = "program", value_name = "PATH[=NAME]", value_parser = parse_program)]
    pub programs: Vec<ProgramArg>,
}

impl TargetArgs {
    fn request(&self, app: &str) -> BuildRequest {
        BuildRequest::new(app, self.board)
            .features(self.features.iter().cloned())
            .programs(self.programs.iter().map(|p| (p.name.clone(), p.path.clone())))
    }
}

/// A `--program PATH[=NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramArg {
    /// The name in the archive.
    pub name: String,
    pub path: PathBuf,
}

/// Parses `PATH[=NAME]`, split at the last `=` (a path with `=` in it needs an explicit NAME).
/// NAME defaults to the file name of PATH; it must not contain whitespace (it goes on the kernel
/// command line as `init=NAME`).
pub fn parse_program(s: &str) -> Result<ProgramArg, String> {
    let (path, name) = match s.rsplit_once('=') {
        Some((path, name)) => (Path::new(path), name.to_string()),
        None => {
            let path = Path::new(s);
            let name = path
                .file_name()
                .ok_or_else(|| format!("'{s}' has no file name; give one with PATH=NAME"))?;
            (path, name.to_string_lossy().into_owned())
        }
    };
    if path.as_os_str().is_empty() {
        return Err(format!("'{s}': the path is empty"));
    }
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('\0') {
        return Err(format!(
            "'{s}': the name '{name}' must be non-empty and without whitespace"
        ));
    }
    Ok(ProgramArg {
        name,
        path: path.to_path_buf(),
    })
}

/// The kernel command line of a boot with EL0 programs: `<append> init=<name>`, then, if there
/// are arguments, ` -- <arg1> <arg2> ...`. The init app runs the program `name` with the words
/// after the first `--` word as its arguments (argv[1..]). Words are separated by single spaces,
/// so an argument must be non-empty and without whitespace, and `append` must not contain a `--`
/// word itself.
pub fn init_bootargs(append: &str, name: &str, args: &[String]) -> Result<String> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("the init program's name '{name}' must be non-empty and without whitespace");
    }
    if append.split_whitespace().any(|w| w == "--") {
        bail!("--append must not contain a '--' word: it starts the init program's arguments");
    }
    let mut line = append.trim().to_string();
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str("init=");
    line.push_str(name);
    if !args.is_empty() {
        line.push_str(" --");
    }
    for a in args {
        if a.is_empty() || a.contains(char::is_whitespace) {
            bail!(
                "argument {a:?} of the init program: arguments are passed on the kernel command line, \
                 separated by spaces, so they must be non-empty and contain no whitespace"
            );
        }
        line.push(' ');
        line.push_str(a);
    }
    Ok(line)
}

/// A command.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Cmd {
    /// Build an app for a board; prints the paths of the ELF, image and DTB.
    Build(AppArgs),
    /// Build an app and boot it under QEMU, the serial console on this terminal; exits with the
    /// guest's status. Installs what is missing first (see `setup`).
    ///
    /// With --program the app may be left out: it is then `init`. The kernel command line then
    /// ends with `init=NAME` (NAME: the first program) and, when arguments follow `--`,
    /// ` -- ARG1 ARG2 ...` (arguments without whitespace).
    Run {
        /// The app: a crate under `apps/` (default with --program: init).
        #[arg(required_unless_present = "programs")]
        app: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
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
        /// Run in virtual time: QEMU's `-icount shift=0,sleep=off` (deterministic timing).
        #[arg(long)]
        icount: bool,
        /// Arguments of the init program (after `--`; needs --program).
        #[arg(last = true, requires = "programs", value_name = "ARGS")]
        args: Vec<String>,
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
        /// The kernel command line (written to cmdline.txt; with --program it ends with
        /// `init=NAME`, NAME the first program).
        #[arg(long, default_value = "")]
        append: String,
        /// An EL0 program for the image's archive (see `build --help`). Repeatable.
        #[arg(long = "program", value_name = "PATH[=NAME]", value_parser = parse_program)]
        programs: Vec<ProgramArg>,
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
    /// Build the example EL0 programs in `programs/` (static Linux arm64 executables) and print
    /// their paths, one per line, for `--program`. Installs what is missing first (see `setup`).
    Programs,
    /// Profile the guest by function: boot under `-icount shift=0,sleep=off` with QEMU logging
    /// every executed block, and count the instructions (= virtual ns) of each function.
    ///
    /// Prints the top functions (self instructions, share, block executions), the total and the
    /// callers of the top entries; writes `profile.txt`, `stacks.folded` (approximate call stacks)
    /// and `flamegraph.svg` into --out. EL0 functions are named from the --program ELFs.
    Profile {
        /// The app: a crate under `apps/` (default with --program: init).
        #[arg(required_unless_present_any = ["programs", "examples"])]
        app: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        /// The kernel command line.
        #[arg(long, default_value = "")]
        append: String,
        /// Also put every example program of `programs/` into the image (as `bench proc` does).
        #[arg(long)]
        examples: bool,
        /// How many functions the table lists.
        #[arg(long, default_value_t = 30)]
        top: usize,
        /// The output directory (default: target/profile/<app>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop QEMU after this many seconds.
        #[arg(long, value_parser = parse_seconds)]
        timeout: Option<Duration>,
        /// Arguments of the init program (after `--`; needs --program).
        #[arg(last = true, requires = "programs", value_name = "ARGS")]
        args: Vec<String>,
    },
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
            let image = builder::build(&app.target.request(&app.app))?;
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
            target,
            append,
            timeout,
            gdb,
            gdb_port,
            no_semihosting,
            icount,
            args,
        } => {
            let defaulted = app.is_none();
            let app = app.unwrap_or_else(|| DEFAULT_INIT_APP.to_string());
            let bootargs = match target.programs.first() {
                Some(first) => init_bootargs(&append, &first.name, &args)?,
                None => append,
            };
            // Tools first: a missing QEMU is reported before time goes into the build.
            setup::ensure_ready()?;
            let built = builder::build(&target.request(&app));
            let image = if defaulted {
                built.with_context(|| {
                    format!("'{DEFAULT_INIT_APP}' is the app that run boots with --program and no app")
                })?
            } else {
                built?
            };
            let mut runner = QemuRunner::new(&image)
                .append(bootargs)
                .semihosting(!no_semihosting)
                .icount(icount)
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
            programs,
        } => {
            if !board.is_raspi() {
                bail!(
                    "'image' is for the Raspberry Pi boards (raspi3, raspi4); boot qemu-virt with \
                     'cargo xtask run'"
                );
            }
            let bootargs = match programs.first() {
                Some(first) => init_bootargs(&append, &first.name, &[])?,
                None => append,
            };
            let req = BuildRequest::new(app, board)
                .features(features)
                .programs(programs.into_iter().map(|p| (p.name, p.path)));
            sdcard::write_request(&req, out, &bootargs)?;
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
                setup::ensure_ready()?;
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
        Cmd::Programs => {
            setup::ensure_rust()?;
            for (_, path) in programs::build_examples(false)? {
                println!("{}", path.display());
            }
            eprintln!("(put them into an image with --program PATH[=NAME])");
            Ok(0)
        }
        Cmd::Profile {
            app,
            target,
            append,
            examples,
            top,
            out,
            timeout,
            args,
        } => {
            let app = app.unwrap_or_else(|| DEFAULT_INIT_APP.to_string());
            let bootargs = match target.programs.first() {
                Some(first) => init_bootargs(&append, &first.name, &args)?,
                None => append,
            };
            setup::ensure_ready()?;
            let mut programs: Vec<(String, PathBuf)> = target
                .programs
                .iter()
                .map(|p| (p.name.clone(), p.path.clone()))
                .collect();
            if examples {
                for (name, path) in programs::build_examples(true)? {
                    if !programs.iter().any(|(n, _)| *n == name) {
                        programs.push((name, path));
                    }
                }
            }
            let request = BuildRequest::new(app.as_str(), target.board)
                .features(target.features.iter().cloned())
                .programs(programs.iter().cloned());
            let image = builder::build(&request)?;
            let out = out.unwrap_or_else(|| crate::target_root().join("profile").join(&app));
            let ok = profile::run(&profile::ProfileRequest {
                image,
                bootargs,
                programs,
                top,
                out,
                timeout,
            })?;
            Ok(if ok { 0 } else { 1 })
        }
        Cmd::Bench { name } => {
            setup::ensure_ready()?;
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

    fn target(board: Board, features: &[&str]) -> TargetArgs {
        TargetArgs {
            board,
            features: features.iter().map(|f| f.to_string()).collect(),
            programs: vec![],
        }
    }

    fn app(name: &str, board: Board, features: &[&str]) -> AppArgs {
        AppArgs {
            app: name.into(),
            target: target(board, features),
        }
    }

    fn prog(path: &str, name: &str) -> ProgramArg {
        ProgramArg {
            name: name.into(),
            path: path.into(),
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
                app: Some("selftest".into()),
                target: target(Board::Raspi4, &[]),
                append: "tests=mm log=debug".into(),
                timeout: Some(Duration::from_secs(30)),
                gdb: false,
                gdb_port: 1234,
                no_semihosting: false,
                icount: false,
                args: vec![],
            }
        );
        assert!(matches!(
            p("run hello --gdb --gdb-port 4321 --no-semihosting").unwrap(),
            Cmd::Run {
                gdb: true,
                gdb_port: 4321,
                no_semihosting: true,
                icount: false,
                ..
            }
        ));
        assert!(matches!(
            p("run hello --icount").unwrap(),
            Cmd::Run { icount: true, .. }
        ));
    }

    #[test]
    fn programs_on_build_run_and_image() {
        let mut want = app("hello", Board::QemuVirt, &[]);
        want.target.programs = vec![prog("/p/rust-hello", "rust-hello"), prog("t/c-hello", "hello")];
        assert_eq!(
            p("build hello --program /p/rust-hello --program=t/c-hello=hello").unwrap(),
            Cmd::Build(want.clone())
        );
        // No app with --program: `init`, with the arguments after `--`.
        let Cmd::Run {
            app, target, args, ..
        } = p("run --program /p/rust-hello --icount -- a b=c -x").unwrap()
        else {
            panic!("not run")
        };
        assert_eq!(app, None);
        assert_eq!(target.programs, [prog("/p/rust-hello", "rust-hello")]);
        assert_eq!(args, ["a", "b=c", "-x"]);
        let Cmd::Run { app, target, .. } = p("run hello --program x/y=z --board raspi3").unwrap() else {
            panic!("not run")
        };
        assert_eq!((app.as_deref(), target.board), (Some("hello"), Board::Raspi3));
        assert_eq!(
            target.request("hello").programs,
            [("z".to_string(), PathBuf::from("x/y"))]
        );
        assert_eq!(
            p("image hello --board raspi4 --program a/b").unwrap(),
            Cmd::Image {
                app: "hello".into(),
                board: Board::Raspi4,
                features: vec![],
                out: None,
                append: String::new(),
                programs: vec![prog("a/b", "b")],
            }
        );
        assert_eq!(p("programs").unwrap(), Cmd::Programs);
    }

    #[test]
    fn program_errors() {
        // The app is optional only with --program; arguments need --program too.
        assert!(err("run").contains("<APP>"));
        assert!(err("run hello -- a").contains("--program"));
        assert!(err("build --program a").contains("<APP>"));
        assert!(err("run --program").contains("a value is required"));
        assert!(err("run --program a=").contains("non-empty"));
        assert!(err("run --program =x").contains("path is empty"));
        assert!(err("run --program /").contains("no file name"));
        assert!(parse(["run", "--program", "a=b c"])
            .unwrap_err()
            .to_string()
            .contains("whitespace"));
    }

    #[test]
    fn program_paths_and_names() {
        assert_eq!(parse_program("a/b/c").unwrap(), prog("a/b/c", "c"));
        assert_eq!(parse_program("a/b/c=sh").unwrap(), prog("a/b/c", "sh"));
        assert_eq!(parse_program("a=1/b=bin/x").unwrap(), prog("a=1/b", "bin/x"));
        assert_eq!(parse_program("./prog").unwrap(), prog("./prog", "prog"));
    }

    #[test]
    fn init_bootargs_encoding() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(init_bootargs("", "sh", &[]).unwrap(), "init=sh");
        assert_eq!(
            init_bootargs(" log=debug ", "rust-hello", &args(&["a", "b=c", "-x"])).unwrap(),
            "log=debug init=rust-hello -- a b=c -x"
        );
        assert_eq!(init_bootargs("", "sh", &args(&["--"])).unwrap(), "init=sh -- --");
        let e = init_bootargs("", "sh", &args(&["a b"])).unwrap_err().to_string();
        assert!(e.contains("\"a b\"") && e.contains("whitespace"), "{e}");
        assert!(init_bootargs("", "sh", &args(&[""])).is_err());
        assert!(init_bootargs("", "sh", &args(&["a\tb"])).is_err());
        assert!(init_bootargs("x -- y", "sh", &[])
            .unwrap_err()
            .to_string()
            .contains("'--'"));
        assert!(init_bootargs("", "a b", &[]).is_err());
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
        for cmd in [
            "build", "run", "image", "test", "setup", "bench", "programs", "profile",
        ] {
            assert!(text.contains(cmd), "{cmd} missing from\n{text}");
        }
        let run_help = p("run --help").unwrap_err().to_string();
        for word in ["--gdb", "--program <PATH[=NAME]>", "--icount", "[ARGS]", "init"] {
            assert!(run_help.contains(word), "{word} missing from\n{run_help}");
        }
        assert_eq!(p("setup").unwrap(), Cmd::Setup);
        assert_eq!(p("bench fork").unwrap(), Cmd::Bench { name: "fork".into() });
        assert_eq!(
            p("image hello --board raspi4 --out /tmp/sd").unwrap(),
            Cmd::Image {
                app: "hello".into(),
                board: Board::Raspi4,
                features: vec![],
                out: Some("/tmp/sd".into()),
                append: String::new(),
                programs: vec![],
            }
        );
        Cli::command_for_debug_assert();
    }

    #[test]
    fn profile_command() {
        assert_eq!(
            p("profile procbench --examples --top 15").unwrap(),
            Cmd::Profile {
                app: Some("procbench".into()),
                target: target(Board::QemuVirt, &[]),
                append: String::new(),
                examples: true,
                top: 15,
                out: None,
                timeout: None,
                args: vec![],
            }
        );
        let Cmd::Profile {
            app, target, args, ..
        } = p("profile --program /p/x=prog --out /tmp/o -- a b").unwrap()
        else {
            panic!("not a profile command");
        };
        assert_eq!(app, None);
        assert_eq!(target.programs, [prog("/p/x", "prog")]);
        assert_eq!(args, ["a", "b"]);
        assert!(err("profile").contains("required"));
        assert!(err("profile hello --top x").contains("--top"));
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
