//! Command-line parsing and the `cargo xtask` commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::builder::{self, BuildRequest};
use crate::qemu::{self, QemuRunner};
use crate::testcmd::{self, TestOptions};
use crate::{bench, process, sdcard, setup, Board};

pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build <app> [--board B] [--features F,...]
        build an app for a board (default board: qemu-virt)
  run <app> [--board B] [--features F,...] [--append BOOTARGS] [--timeout SECS]
        build and boot under QEMU with the serial console on the terminal;
        exits with the guest's status
  image <app> --board raspi3|raspi4 [--features F,...] [--out DIR] [--append BOOTARGS]
        write kernel8.img + config.txt (+ cmdline.txt) for a real Raspberry Pi
  test [--board B]... [--host-only|--boot-only] [--filter F[,F...]] [--timeout SECS]
        host tests (cargo test) and the selftest boot tests on every board
        QEMU can run; ends with a line 'N passed, N failed'
  setup
        install the Rust target, llvm-tools and QEMU (Debian bookworm)
  bench <name>
        run a benchmark under QEMU with -icount

boards: qemu-virt, raspi3, raspi4
bootargs: tests=<substr>[,<substr>...] log=<error|warn|info|debug|trace>
";

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    Help,
    Build {
        app: String,
        board: Board,
        features: Vec<String>,
    },
    Run {
        app: String,
        board: Board,
        features: Vec<String>,
        append: String,
        timeout: Option<Duration>,
    },
    Image {
        app: String,
        board: Board,
        features: Vec<String>,
        out: Option<PathBuf>,
        append: String,
    },
    Test {
        boards: Vec<Board>,
        host: bool,
        boot: bool,
        filters: Vec<String>,
        timeout: Duration,
    },
    Setup,
    Bench {
        name: String,
    },
}

/// Option/positional scanner.
struct Args {
    items: std::collections::VecDeque<String>,
    positional: Vec<String>,
    opts: Vec<(String, Option<String>)>,
}

impl Args {
    /// Splits `args` into positionals and options. `valued` lists the
    /// options that take a value (`--opt V` or `--opt=V`).
    fn scan(args: &[String], valued: &[&str], flags: &[&str]) -> Result<Args> {
        let mut a = Args {
            items: args.iter().cloned().collect(),
            positional: vec![],
            opts: vec![],
        };
        while let Some(arg) = a.items.pop_front() {
            if arg == "-h" || arg == "--help" {
                a.opts.push(("--help".into(), None));
            } else if let Some(opt) = arg.strip_prefix("--").filter(|_| arg.len() > 2) {
                let (name, inline) = match opt.split_once('=') {
                    Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
                    None => (arg.clone(), None),
                };
                if valued.contains(&name.as_str()) {
                    let value = match inline {
                        Some(v) => v,
                        None => a
                            .items
                            .pop_front()
                            .ok_or_else(|| anyhow!("option {name} needs a value"))?,
                    };
                    a.opts.push((name, Some(value)));
                } else if flags.contains(&name.as_str()) && inline.is_none() {
                    a.opts.push((name, None));
                } else {
                    bail!("unknown option '{arg}'\n\n{USAGE}");
                }
            } else if arg.starts_with('-') && arg != "-" {
                bail!("unknown option '{arg}'\n\n{USAGE}");
            } else {
                a.positional.push(arg);
            }
        }
        Ok(a)
    }

    fn help(&self) -> bool {
        self.opts.iter().any(|(n, _)| n == "--help")
    }

    fn values(&self, name: &str) -> Vec<String> {
        self.opts
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    fn last(&self, name: &str) -> Option<String> {
        self.values(name).pop()
    }

    fn flag(&self, name: &str) -> bool {
        self.opts.iter().any(|(n, _)| n == name)
    }

    fn board(&self, default: Option<Board>) -> Result<Board> {
        match self.last("--board") {
            Some(b) => b.parse(),
            None => default.ok_or_else(|| anyhow!("--board is required (one of {})", Board::valid_names())),
        }
    }

    fn features(&self) -> Vec<String> {
        comma_list(&self.values("--features"))
    }

    fn timeout(&self) -> Result<Option<Duration>> {
        self.last("--timeout")
            .map(|t| {
                t.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| anyhow!("--timeout takes a positive number of seconds, not '{t}'"))
            })
            .transpose()
    }

    /// Exactly one positional (`what` names it in errors).
    fn one_positional(&self, what: &str) -> Result<String> {
        match self.positional.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("missing <{what}>\n\n{USAGE}"),
            [_, extra, ..] => bail!("unexpected argument '{extra}'"),
        }
    }

    fn no_positional(&self) -> Result<()> {
        match self.positional.first() {
            Some(p) => bail!("unexpected argument '{p}'"),
            None => Ok(()),
        }
    }
}

fn comma_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses the arguments after `xtask`.
pub fn parse(args: &[String]) -> Result<Cmd> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Cmd::Help);
    };
    const APP_OPTS: [&str; 2] = ["--board", "--features"];
    let cmd = match cmd.as_str() {
        "help" | "-h" | "--help" => Cmd::Help,
        "build" => {
            let a = Args::scan(rest, &APP_OPTS, &[])?;
            if a.help() {
                return Ok(Cmd::Help);
            }
            Cmd::Build {
                app: a.one_positional("app")?,
                board: a.board(Some(Board::QemuVirt))?,
                features: a.features(),
            }
        }
        "run" => {
            let a = Args::scan(rest, &["--board", "--features", "--append", "--timeout"], &[])?;
            if a.help() {
                return Ok(Cmd::Help);
            }
            Cmd::Run {
                app: a.one_positional("app")?,
                board: a.board(Some(Board::QemuVirt))?,
                features: a.features(),
                append: a.last("--append").unwrap_or_default(),
                timeout: a.timeout()?,
            }
        }
        "image" => {
            let a = Args::scan(rest, &["--board", "--features", "--out", "--append"], &[])?;
            if a.help() {
                return Ok(Cmd::Help);
            }
            let board = a.board(None)?;
            if !board.is_raspi() {
                bail!("'image' is for the Raspberry Pi boards (raspi3, raspi4); boot qemu-virt with 'cargo xtask run'");
            }
            Cmd::Image {
                app: a.one_positional("app")?,
                board,
                features: a.features(),
                out: a.last("--out").map(PathBuf::from),
                append: a.last("--append").unwrap_or_default(),
            }
        }
        "test" => {
            let a = Args::scan(
                rest,
                &["--board", "--filter", "--timeout"],
                &["--host-only", "--boot-only"],
            )?;
            if a.help() {
                return Ok(Cmd::Help);
            }
            a.no_positional()?;
            let (host_only, boot_only) = (a.flag("--host-only"), a.flag("--boot-only"));
            if host_only && boot_only {
                bail!("--host-only and --boot-only exclude each other");
            }
            let mut boards = Vec::new();
            for b in comma_list(&a.values("--board")) {
                let b: Board = b.parse()?;
                if !boards.contains(&b) {
                    boards.push(b);
                }
            }
            Cmd::Test {
                boards,
                host: !boot_only,
                boot: !host_only,
                filters: comma_list(&a.values("--filter")),
                timeout: a.timeout()?.unwrap_or(testcmd::DEFAULT_BOOT_TIMEOUT),
            }
        }
        "setup" => {
            let a = Args::scan(rest, &[], &[])?;
            if a.help() {
                return Ok(Cmd::Help);
            }
            a.no_positional()?;
            Cmd::Setup
        }
        "bench" => {
            let a = Args::scan(rest, &[], &[])?;
            if a.help() {
                return Ok(Cmd::Help);
            }
            Cmd::Bench {
                name: a.one_positional("name")?,
            }
        }
        other => bail!("unknown command '{other}'\n\n{USAGE}"),
    };
    Ok(cmd)
}

/// Runs a command; returns the process exit code.
pub fn execute(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Help => {
            print!("{USAGE}");
            Ok(0)
        }
        Cmd::Build { app, board, features } => {
            let image = builder::build(&BuildRequest::new(app, board).features(features))?;
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
            board,
            features,
            append,
            timeout,
        } => {
            // Check QEMU before spending time on the build.
            qemu::require_board(board)?;
            let image = builder::build(&BuildRequest::new(app, board).features(features))?;
            let mut runner = QemuRunner::new(&image).append(append);
            runner.timeout = timeout;
            let cmd = runner.command()?;
            eprintln!("running {}", process::render(&cmd));
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
            sdcard::write_image(&app, board, &features, out, &append)?;
            Ok(0)
        }
        Cmd::Test {
            boards,
            host,
            boot,
            filters,
            timeout,
        } => {
            let ok = testcmd::run(&TestOptions {
                boards,
                host,
                boot,
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
            bench::run(&name)?;
            Ok(0)
        }
    }
}

/// `main` of the `xtask` binary.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(execute) {
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

    fn p(s: &str) -> Result<Cmd> {
        parse(&s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn build_and_run() {
        assert_eq!(
            p("build hello").unwrap(),
            Cmd::Build {
                app: "hello".into(),
                board: Board::QemuVirt,
                features: vec![]
            }
        );
        assert_eq!(
            p("build selftest --board=raspi3 --features a,b --features c").unwrap(),
            Cmd::Build {
                app: "selftest".into(),
                board: Board::Raspi3,
                features: vec!["a".into(), "b".into(), "c".into()]
            }
        );
        let mut args: Vec<String> = ["run", "selftest", "--board", "raspi4", "--append"]
            .map(String::from)
            .to_vec();
        args.push("tests=mm log=debug".into());
        args.extend(["--timeout", "30"].map(String::from));
        assert_eq!(
            parse(&args).unwrap(),
            Cmd::Run {
                app: "selftest".into(),
                board: Board::Raspi4,
                features: vec![],
                append: "tests=mm log=debug".into(),
                timeout: Some(Duration::from_secs(30)),
            }
        );
    }

    #[test]
    fn errors() {
        let e = p("build hello --board pi5").unwrap_err().to_string();
        assert!(e.contains("valid boards: qemu-virt, raspi3, raspi4"), "{e}");
        assert!(p("build").unwrap_err().to_string().contains("missing <app>"));
        assert!(p("build a b")
            .unwrap_err()
            .to_string()
            .contains("unexpected argument 'b'"));
        assert!(p("build a --bogus")
            .unwrap_err()
            .to_string()
            .contains("unknown option '--bogus'"));
        assert!(p("run a --timeout")
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(p("run a --timeout -3")
            .unwrap_err()
            .to_string()
            .contains("positive"));
        assert!(p("frobnicate")
            .unwrap_err()
            .to_string()
            .contains("unknown command 'frobnicate'"));
        assert!(p("image hello")
            .unwrap_err()
            .to_string()
            .contains("--board is required"));
        assert!(p("image hello --board qemu-virt")
            .unwrap_err()
            .to_string()
            .contains("Raspberry Pi"));
        assert!(p("test --host-only --boot-only").is_err());
        assert!(p("test --host-only=yes").is_err());
    }

    #[test]
    fn test_command() {
        assert_eq!(
            p("test").unwrap(),
            Cmd::Test {
                boards: vec![],
                host: true,
                boot: true,
                filters: vec![],
                timeout: Duration::from_secs(300)
            }
        );
        assert_eq!(
            p("test --board raspi3 --board qemu-virt,raspi3 --boot-only --filter mm,alloc --timeout 60")
                .unwrap(),
            Cmd::Test {
                boards: vec![Board::Raspi3, Board::QemuVirt],
                host: false,
                boot: true,
                filters: vec!["mm".into(), "alloc".into()],
                timeout: Duration::from_secs(60),
            }
        );
        assert!(matches!(
            p("test --host-only").unwrap(),
            Cmd::Test {
                host: true,
                boot: false,
                ..
            }
        ));
    }

    #[test]
    fn misc() {
        assert_eq!(p("").unwrap(), Cmd::Help);
        assert_eq!(p("build --help").unwrap(), Cmd::Help);
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
    }
}
