//! QEMU: detection of the binary and its machines, and the runner that
//! builds the command line for a board and boots an image.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::builder::BuiltImage;
use crate::process::{self, Echo, Outcome};
use crate::{Board, SETUP_HINT};

/// Default QEMU binary; `TESSERA_QEMU` overrides it.
pub const QEMU_BIN: &str = "qemu-system-aarch64";

/// What we know about the installed QEMU.
#[derive(Clone, Debug)]
pub struct QemuInfo {
    pub binary: PathBuf,
    /// First line of `--version`.
    pub version: String,
    /// Machine names from `-M help`.
    pub machines: Vec<String>,
}

impl QemuInfo {
    pub fn has_machine(&self, machine: &str) -> bool {
        self.machines.iter().any(|m| m == machine)
    }

    /// `Ok` if `board` can be booted; otherwise the reason it cannot.
    pub fn check_board(&self, board: Board) -> std::result::Result<(), String> {
        if self.has_machine(board.qemu_machine()) {
            Ok(())
        } else {
            Err(format!(
                "{} ({}) has no machine '{}'; {SETUP_HINT}",
                self.binary.display(),
                self.version,
                board.qemu_machine()
            ))
        }
    }
}

pub fn qemu_binary() -> PathBuf {
    std::env::var_os("TESSERA_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| QEMU_BIN.into())
}

/// Detects QEMU (cached per process). The error is a one-line message.
pub fn detect() -> std::result::Result<QemuInfo, String> {
    static CELL: OnceLock<std::result::Result<QemuInfo, String>> = OnceLock::new();
    CELL.get_or_init(|| detect_uncached(&qemu_binary())).clone()
}

fn detect_uncached(binary: &Path) -> std::result::Result<QemuInfo, String> {
    let missing = || format!("{} not found; {SETUP_HINT}", binary.display());
    let version = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|_| missing())?;
    if !version.status.success() {
        return Err(missing());
    }
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let help = Command::new(binary)
        .args(["-M", "help"])
        .output()
        .map_err(|_| missing())?;
    let machines = parse_machine_list(&String::from_utf8_lossy(&help.stdout));
    Ok(QemuInfo {
        binary: binary.to_path_buf(),
        version,
        machines,
    })
}

/// Machine names from the output of `qemu-system-aarch64 -M help`.
pub fn parse_machine_list(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Supported machines"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Like [`detect`] + [`QemuInfo::check_board`], as an `anyhow` error.
pub fn require_board(board: Board) -> Result<QemuInfo> {
    let info = detect().map_err(anyhow::Error::msg)?;
    info.check_board(board).map_err(anyhow::Error::msg)?;
    Ok(info)
}

/// `qemu-virt`'s RAM unless a runner says otherwise.
pub const DEFAULT_VIRT_MEMORY_MIB: u32 = 1024;

/// One QEMU invocation booting an image on a board.
#[derive(Clone, Debug)]
pub struct QemuRunner {
    pub qemu: PathBuf,
    pub board: Board,
    /// The ELF (qemu-virt) or `kernel8.img` (raspi).
    pub kernel: PathBuf,
    /// The generated DTB (raspi boards).
    pub dtb: Option<PathBuf>,
    /// Kernel command line (`-append`); empty means none.
    pub append: String,
    /// RAM for `qemu-virt` in MiB (`-m`; the raspi machines have a fixed size).
    pub memory_mib: u32,
    /// Deterministic instruction counting for benchmarks:
    /// `-icount shift=0,sleep=off`.
    pub icount: bool,
    /// Attach QEMU's semihosting (the exit status reaches the host). Without it the guest runs as
    /// on a real board: it finds no semihosting host and halts through PSCI or by parking.
    pub semihosting: bool,
    /// Start halted with QEMU's gdbstub listening on this TCP port (`-S -gdb tcp::PORT`).
    pub gdb_port: Option<u16>,
    /// Kill QEMU after this long.
    pub timeout: Option<Duration>,
    /// Anything else to pass to QEMU (appended last).
    pub extra_args: Vec<OsString>,
}

impl QemuRunner {
    pub fn new(image: &BuiltImage) -> Self {
        QemuRunner {
            qemu: qemu_binary(),
            board: image.board,
            kernel: image.kernel.clone(),
            dtb: image.dtb.clone(),
            append: String::new(),
            memory_mib: DEFAULT_VIRT_MEMORY_MIB,
            icount: false,
            semihosting: true,
            gdb_port: None,
            timeout: None,
            extra_args: Vec::new(),
        }
    }

    pub fn semihosting(mut self, on: bool) -> Self {
        self.semihosting = on;
        self
    }

    pub fn gdb(mut self, port: Option<u16>) -> Self {
        self.gdb_port = port;
        self
    }

    pub fn append(mut self, bootargs: impl Into<String>) -> Self {
        self.append = bootargs.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn icount(mut self, on: bool) -> Self {
        self.icount = on;
        self
    }

    /// The QEMU arguments (without the binary).
    pub fn args(&self) -> Result<Vec<OsString>> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-M");
        push(self.board.qemu_machine());
        if self.board == Board::QemuVirt {
            for s in ["-cpu", "max,pauth-impdef=on", "-smp", "1", "-m"] {
                push(s);
            }
            push(&format!("{}M", self.memory_mib));
        }
        // No display; serial0 (the PL011) on stdio; no monitor, so stdin is
        // not multiplexed with it (with `-nographic` alone, stdio would be
        // `mon:stdio`). A guest reset (watchdog, PSCI reset) ends QEMU. No
        // network device: `virt` would otherwise add a virtio NIC whose boot
        // ROM (`efi-virtio.rom`, Debian's `ipxe-qemu`) is only a recommended
        // package, and QEMU refuses to start without it.
        for s in [
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-nic",
            "none",
        ] {
            push(s);
        }
        if self.semihosting {
            push("-semihosting-config");
            push("enable=on,target=native");
        }
        if let Some(port) = self.gdb_port {
            push("-S");
            push("-gdb");
            push(&format!("tcp::{port}"));
        }
        if self.icount {
            push("-icount");
            push("shift=0,sleep=off");
        }
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        if self.board.is_raspi() {
            let Some(dtb) = &self.dtb else {
                bail!("board {} needs a DTB (-dtb) but none was given", self.board);
            };
            a.push("-dtb".into());
            a.push(dtb.clone().into());
        }
        if !self.append.is_empty() {
            a.push("-append".into());
            a.push(self.append.clone().into());
        }
        a.extend(self.extra_args.iter().cloned());
        Ok(a)
    }

    pub fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(&self.qemu);
        cmd.args(self.args()?);
        Ok(cmd)
    }

    /// Boots with stdin from /dev/null, capturing the serial output
    /// (`echo`: also stream it to our stdout, QEMU's stderr to ours).
    pub fn run_captured(&self, echo: bool) -> Result<Outcome> {
        let (o, e) = if echo {
            (Echo::Stdout, Echo::Stderr)
        } else {
            (Echo::None, Echo::None)
        };
        process::run_captured(&mut self.command()?, self.timeout, o, e)
    }

    /// Boots attached to the terminal.
    pub fn run_interactive(&self) -> Result<Outcome> {
        process::run_interactive(&mut self.command()?, self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(board: Board) -> QemuRunner {
        QemuRunner {
            qemu: "qemu-system-aarch64".into(),
            board,
            kernel: if board.is_raspi() {
                "/t/kernel8.img".into()
            } else {
                "/t/hello".into()
            },
            dtb: board.is_raspi().then(|| PathBuf::from(format!("/t/{board}.dtb"))),
            append: String::new(),
            memory_mib: DEFAULT_VIRT_MEMORY_MIB,
            icount: false,
            semihosting: true,
            gdb_port: None,
            timeout: None,
            extra_args: vec![],
        }
    }

    fn args(r: &QemuRunner) -> String {
        r.args()
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    const COMMON: &str = "-nographic -monitor none -serial stdio -no-reboot -nic none \
         -semihosting-config enable=on,target=native";

    #[test]
    fn qemu_virt_command_line() {
        let r = runner(Board::QemuVirt).append("tests=mm log=debug");
        assert_eq!(
            args(&r),
            format!("-M virt -cpu max,pauth-impdef=on -smp 1 -m 1024M {COMMON} -kernel /t/hello -append tests=mm log=debug")
        );
        // -append is a single argument
        let a = r.args().unwrap();
        assert_eq!(a.last().unwrap(), "tests=mm log=debug");
    }

    #[test]
    fn raspi3_command_line() {
        assert_eq!(
            args(&runner(Board::Raspi3)),
            format!("-M raspi3b {COMMON} -kernel /t/kernel8.img -dtb /t/raspi3.dtb")
        );
    }

    #[test]
    fn raspi4_command_line_with_icount() {
        let r = runner(Board::Raspi4).append("log=info").icount(true);
        assert_eq!(
            args(&r),
            format!("-M raspi4b {COMMON} -icount shift=0,sleep=off -kernel /t/kernel8.img -dtb /t/raspi4.dtb -append log=info")
        );
    }

    #[test]
    fn without_semihosting_and_with_gdb() {
        let r = runner(Board::Raspi3).semihosting(false).gdb(Some(1234));
        assert_eq!(
            args(&r),
            "-M raspi3b -nographic -monitor none -serial stdio -no-reboot -nic none -S -gdb tcp::1234 \
             -kernel /t/kernel8.img -dtb /t/raspi3.dtb"
        );
    }

    #[test]
    fn raspi_without_dtb_is_an_error() {
        let mut r = runner(Board::Raspi3);
        r.dtb = None;
        assert!(r.args().unwrap_err().to_string().contains("needs a DTB"));
    }

    #[test]
    fn machine_list() {
        let help = "\
Supported machines are:
akita                Sharp SL-C1000 (Akita) PDA (PXA270) (deprecated)
raspi3b              Raspberry Pi 3B (revision 1.2)
virt                 QEMU 10.0 ARM Virtual Machine (alias of virt-10.0)
virt-10.0            QEMU 10.0 ARM Virtual Machine (default)
";
        let m = parse_machine_list(help);
        assert_eq!(m, ["akita", "raspi3b", "virt", "virt-10.0"]);
        let info = QemuInfo {
            binary: "q".into(),
            version: "QEMU emulator version 7.2.0".into(),
            machines: m,
        };
        assert!(info.check_board(Board::Raspi3).is_ok());
        let why = info.check_board(Board::Raspi4).unwrap_err();
        assert!(
            why.contains("raspi4b") && why.contains("cargo xtask setup"),
            "{why}"
        );
    }
}
