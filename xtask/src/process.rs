//! Child processes with a timeout, optionally capturing (and teeing) output.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How a child process ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `None` if it was killed because of the timeout.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// Captured stdout/stderr (empty when not captured).
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Exit code, if the process exited normally.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// A short human description of how it ended.
    pub fn describe(&self) -> String {
        if self.timed_out {
            return format!("timed out after {:.1} s", self.elapsed.as_secs_f64());
        }
        match self.status {
            Some(s) => match s.code() {
                Some(c) => format!("exit status {c}"),
                None => describe_signal(s),
            },
            None => "did not finish".into(),
        }
    }

    /// The exit code this process should map to for our own exit.
    pub fn exit_code(&self) -> i32 {
        if self.timed_out {
            return 124;
        }
        match self.status {
            Some(s) => s.code().unwrap_or_else(|| 128 + signal_of(s).unwrap_or(0)),
            None => 1,
        }
    }
}

#[cfg(unix)]
fn signal_of(s: ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    s.signal()
}
#[cfg(not(unix))]
fn signal_of(_: ExitStatus) -> Option<i32> {
    None
}

fn describe_signal(s: ExitStatus) -> String {
    match signal_of(s) {
        Some(sig) => format!("killed by signal {sig}"),
        None => format!("{s}"),
    }
}

/// Where a captured stream is echoed to while it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    None,
    Stdout,
    Stderr,
}

fn pump(mut from: impl Read + Send + 'static, echo: Echo) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    // Echo errors (closed terminal) must not stop the capture.
                    let _ = match echo {
                        Echo::None => Ok(()),
                        Echo::Stdout => {
                            let mut o = std::io::stdout().lock();
                            o.write_all(&buf[..n]).and_then(|_| o.flush())
                        }
                        Echo::Stderr => std::io::stderr().write_all(&buf[..n]),
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        all
    })
}

/// Waits for `child`, killing it after `timeout`.
fn wait(child: &mut Child, timeout: Option<Duration>, start: Instant) -> Result<(Option<ExitStatus>, bool)> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for child process")? {
            return Ok((Some(status), false));
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            // Only the child we spawned is killed.
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, true));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a build command: `quiet`, with its output captured (shown by the caller on failure);
/// otherwise attached to the terminal, with nothing captured.
pub fn run_build(cmd: &mut Command, quiet: bool) -> Result<std::process::Output> {
    if quiet {
        cmd.stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", program_name(cmd)))
    } else {
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", program_name(cmd)))?;
        Ok(std::process::Output {
            status,
            stdout: Vec::new(),
            stderr: Vec::new(),
        })
    }
}

/// Runs `cmd` with stdin from /dev/null, capturing stdout and stderr and
/// echoing them as requested, killing it after `timeout`.
pub fn run_captured(
    cmd: &mut Command,
    timeout: Option<Duration>,
    echo_out: Echo,
    echo_err: Echo,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", program_name(cmd)))?;
    let out = pump(child.stdout.take().expect("piped"), echo_out);
    let err = pump(child.stderr.take().expect("piped"), echo_err);
    let (status, timed_out) = wait(&mut child, timeout, start)?;
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(Outcome {
        status,
        timed_out,
        elapsed: start.elapsed(),
        stdout,
        stderr,
    })
}

/// Runs `cmd` with the terminal's stdio (interactive), killing it after
/// `timeout`.
pub fn run_interactive(cmd: &mut Command, timeout: Option<Duration>) -> Result<Outcome> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", program_name(cmd)))?;
    let (status, timed_out) = wait(&mut child, timeout, start)?;
    Ok(Outcome {
        status,
        timed_out,
        elapsed: start.elapsed(),
        stdout: String::new(),
        stderr: String::new(),
    })
}

pub fn program_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// A shell-like rendering of a command, for logs.
pub fn render(cmd: &Command) -> String {
    let mut parts = vec![quote(&cmd.get_program().to_string_lossy())];
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./,:+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Writes `path` via a unique temporary file and a rename, so concurrent
/// writers (parallel tests) never observe a partial file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = temp_sibling(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A unique temporary path next to `path`.
pub fn temp_sibling(path: &Path) -> std::path::PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let mut c = Command::new("qemu-system-aarch64");
        c.args(["-append", "tests=a,b log=info", "-kernel", "/x/y"]);
        assert_eq!(
            render(&c),
            "qemu-system-aarch64 -append 'tests=a,b log=info' -kernel /x/y"
        );
    }

    #[cfg(unix)]
    #[test]
    fn capture_and_timeout() {
        let o = run_captured(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Some(Duration::from_secs(20)),
            Echo::None,
            Echo::None,
        )
        .unwrap();
        assert_eq!(
            (o.stdout.as_str(), o.stderr.as_str(), o.code(), o.timed_out),
            ("out\n", "err\n", Some(3), false)
        );
        assert_eq!(o.describe(), "exit status 3");

        let o = run_captured(
            Command::new("sh").args(["-c", "echo before; exec sleep 30"]),
            Some(Duration::from_millis(300)),
            Echo::None,
            Echo::None,
        )
        .unwrap();
        assert!(o.timed_out && o.status.is_none() && !o.success());
        assert_eq!(o.stdout, "before\n");
        assert_eq!(o.exit_code(), 124);
        assert!(o.describe().starts_with("timed out"), "{}", o.describe());
    }
}
