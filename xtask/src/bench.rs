//! `cargo xtask bench <name>`: benchmarks boot an image under QEMU with
//! `-icount shift=0,sleep=off` (deterministic virtual time: one instruction
//! per virtual nanosecond, no sleeping), read the figures the image prints,
//! print a table and write it into `BENCHMARKS.md` (between
//! `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, with the command that
//! produced it). Re-running a benchmark replaces its section.
//!
//! Benchmark apps print result lines `bench <key>=<value> <key>=<value> ...`;
//! [`parse_bench_lines`] reads them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::builder::{self, BuildRequest, BuiltImage};
use crate::qemu::{self, QemuRunner};
use crate::{plot, workspace_root, Board};

/// The registered benchmarks and what they measure.
pub const BENCHMARKS: &[(&str, &str)] = &[
    ("boot", "boot-to-main virtual time and image size of `hello` on every board"),
    ("tables", "translation-table costs of mapping/unmapping 1..256 MiB with pages and blocks (qemu-virt)"),
    ("contpte", "map / touch / unmap 256 MiB of 64 KiB folios with CONTPTE on and off (qemu-virt)"),
    ("fork", "first touch, fork (median of 5), child COW writes and munmap of 1..1024 MiB, Copy (64 KiB / 4 KiB folios) vs ShareTables fork (qemu-virt)"),
    ("proc", "a null system call, exec to exit, fork + exit/exec + wait, fork of 256 MiB touched, and kvsnap's snapshot (qemu-virt)"),
];

/// A result table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// GitHub-flavoured Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!("| {} |\n", self.headers.join(" | "));
        s += &format!("|{}\n", " --- |".repeat(self.headers.len()));
        for r in &self.rows {
            s += &format!("| {} |\n", r.join(" | "));
        }
        s
    }
}

/// What a benchmark produced: its table, a summary printed (and written) below it (may be
/// empty), and notes on the method.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub table: Table,
    pub summary: String,
    pub notes: String,
}

impl Report {
    fn new(table: Table, notes: String) -> Self {
        Report {
            table,
            summary: String::new(),
            notes,
        }
    }

    /// The section body below its title: command, table, summary, notes.
    pub fn body(&self, title: &str, name: &str) -> String {
        let mut body = format!(
            "## {title}\n\nCommand: `cargo xtask bench {name}`\n\n{}\n",
            self.table.markdown()
        );
        if !self.summary.is_empty() {
            body += &format!("{}\n\n", self.summary);
        }
        body + &self.notes + "\n"
    }
}

/// Reads `bench k=v k=v ...` lines into key/value maps, in order.
pub fn parse_bench_lines(output: &str) -> Vec<BTreeMap<String, String>> {
    output
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix("bench "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// One `bench k=v ...` result line.
type Row = BTreeMap<String, String>;

fn field(r: &Row, k: &str) -> Result<String> {
    r.get(k).cloned().with_context(|| format!("missing {k} in {r:?}"))
}

fn num(r: &Row, k: &str) -> Result<u64> {
    field(r, k)?
        .parse::<u64>()
        .with_context(|| format!("bad {k} in {r:?}"))
}

/// A nanosecond field as microseconds with one decimal.
fn micros(r: &Row, k: &str) -> Result<String> {
    Ok(format!("{:.1}", num(r, k)? as f64 / 1000.0))
}

/// Builds `app` for qemu-virt, boots it with icount and `bootargs`, and returns its result lines
/// (exactly `expected` of them when given).
fn virt_rows(app: &str, bootargs: &str, timeout: Duration, expected: Option<usize>) -> Result<Vec<Row>> {
    virt_rows_with(app, bootargs, &[], timeout, expected)
}

/// [`virt_rows`] with extra QEMU arguments (e.g. `-m 3G`: QEMU takes the last `-m`).
fn virt_rows_with(
    app: &str,
    bootargs: &str,
    qemu_args: &[&str],
    timeout: Duration,
    expected: Option<usize>,
) -> Result<Vec<Row>> {
    let board = Board::QemuVirt;
    qemu::require_board(board)?;
    let image = builder::build(&BuildRequest::new(app, board).quiet(true))?;
    let out = run_icount_with(&image, bootargs, qemu_args, timeout)?;
    let rows = parse_bench_lines(&out);
    if rows.is_empty() || expected.is_some_and(|n| rows.len() != n) {
        bail!(
            "{app} printed {} result lines (expected {expected:?}):\n{}",
            rows.len(),
            builder::tail(&out, 30)
        );
    }
    Ok(rows)
}

/// Boots `image` with icount and returns its serial output (the run must exit 0).
pub fn run_icount(image: &BuiltImage, bootargs: &str, timeout: Duration) -> Result<String> {
    run_icount_with(image, bootargs, &[], timeout)
}

/// [`run_icount`] with extra QEMU arguments, passed after the standard ones.
pub fn run_icount_with(
    image: &BuiltImage,
    bootargs: &str,
    qemu_args: &[&str],
    timeout: Duration,
) -> Result<String> {
    let mut runner = QemuRunner::new(image)
        .append(bootargs)
        .icount(true)
        .timeout(timeout);
    runner.extra_args.extend(qemu_args.iter().map(Into::into));
    let o = runner.run_captured(false)?;
    if !o.success() {
        bail!(
            "benchmark run of {} on {} failed: {}\n{}",
            image.app,
            image.board,
            o.describe(),
            builder::tail(&o.stdout, 30)
        );
    }
    Ok(o.stdout)
}

/// Bytes a loader places in memory (PT_LOAD file sizes) and the memory the image occupies
/// (PT_LOAD memory sizes, i.e. including `.bss`), from an ELF64 little-endian file.
pub fn elf_load_sizes(elf: &[u8]) -> Result<(u64, u64)> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not an ELF64 little-endian file");
    }
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54), u16_at(56));
    let (mut file, mut mem) = (0, 0);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if ph + 56 > elf.len() {
            bail!("truncated program header table");
        }
        if u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1 {
            file += u64_at(ph + 32);
            mem += u64_at(ph + 40);
        }
    }
    Ok((file, mem))
}

fn boot_bench() -> Result<Report> {
    let mut table = Table {
        headers: [
            "board",
            "boot to main (virtual µs)",
            "image file",
            "loaded bytes",
            "memory incl. .bss + stacks + boot heap",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    for board in Board::ALL {
        if let Err(e) = qemu::require_board(board) {
            println!("skipping {board}: {e}");
            continue;
        }
        let image = builder::build(&BuildRequest::new("hello", board).quiet(true))?;
        let out = run_icount(&image, "", Duration::from_secs(120))?;
        let ns: u64 = out
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("boot to main: ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no 'boot to main: N ns' line from hello on {board}:\n{out}"))?;
        let elf = std::fs::read(&image.elf)?;
        let (loaded, mem) = elf_load_sizes(&elf)?;
        let file = std::fs::metadata(&image.kernel)?.len();
        let file_name = image.kernel.file_name().unwrap().to_string_lossy().to_string();
        let kib = |b: u64| format!("{:.1} KiB", b as f64 / 1024.0);
        table.rows.push(vec![
            board.to_string(),
            format!("{:.1}", ns as f64 / 1000.0),
            format!("{} ({})", kib(file), file_name),
            kib(loaded),
            kib(mem),
        ]);
    }
    let notes =
        "Boot to main is counter time from reset to the app's `main` under `-icount shift=0,sleep=off` \
                 (one instruction per virtual ns): QEMU's boot stub, the EL2→EL1 drop, `.bss` clearing \
                 and cache maintenance (the 8 MiB static heap is in `.noinit`, untouched), the boot map, \
                 device-tree parsing, zeroing the page metadata with `DC ZVA`, and frame-allocator set-up \
                 over all RAM. Release build."
            .to_string();
    Ok(Report::new(table, notes))
}

fn tables_bench() -> Result<Report> {
    let rows = virt_rows("mmbench", "bench=tables", Duration::from_secs(600), None)?;
    let mut table = Table {
        headers: [
            "MiB",
            "mapping",
            "step",
            "descriptor writes",
            "per MiB",
            "TLBIs (VA / range / ASID)",
            "tables alloc / freed",
            "virtual µs",
            "µs per MiB",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    for r in &rows {
        let mib = num(r, "mib")?;
        let ns = num(r, "ns")?;
        table.rows.push(vec![
            mib.to_string(),
            field(r, "mapping")?,
            field(r, "step")?,
            num(r, "desc_writes")?.to_string(),
            format!("{:.1}", num(r, "desc_writes")? as f64 / mib as f64),
            format!(
                "{} ({} / {} / {})",
                num(r, "tlbi")?,
                num(r, "tlbi_va")?,
                num(r, "tlbi_range")?,
                num(r, "tlbi_asid")?
            ),
            format!("{} / {}", num(r, "tables_alloc")?, num(r, "tables_freed")?),
            micros(r, "ns")?,
            format!("{:.1}", ns as f64 / 1000.0 / mib as f64),
        ]);
    }
    let notes = "A user address space, active in TTBR0, maps N MiB of RAM in one call per 2 MiB (4 KiB pages, \
                 or one 2 MiB block each), then unmaps it in one call. qemu-virt, `-cpu max` (FEAT_TLBIRANGE), \
                 `-icount shift=0,sleep=off`. Map needs no TLBI (invalid → valid); unmap gathers the stale range \
                 and issues one by-ASID TLBI above 64 entries. Descriptor writes include the writes into \
                 not-yet-linked tables and the unlinking of whole tables. The 1 MiB `2M-blocks` row maps with \
                 pages: 1 MiB cannot hold a 2 MiB block."
        .to_string();
    Ok(Report::new(table, notes))
}

fn contpte_bench() -> Result<Report> {
    let rows = virt_rows("mmbench", "bench=contpte", Duration::from_secs(900), Some(2))?;
    let mut table = Table {
        headers: [
            "CONTPTE",
            "folded blocks",
            "map: descriptor writes",
            "map: TLBIs",
            "map µs",
            "touch every page µs",
            "unmap: descriptor writes",
            "unmap: TLBIs",
            "unmap µs",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    for r in &rows {
        table.rows.push(vec![
            field(r, "contpte")?,
            format!("{} of {}", field(r, "folded")?, field(r, "folios")?),
            field(r, "map_desc_writes")?,
            field(r, "map_tlbi")?,
            micros(r, "map_ns")?,
            micros(r, "touch_ns")?,
            field(r, "unmap_desc_writes")?,
            field(r, "unmap_tlbi")?,
            micros(r, "unmap_ns")?,
        ]);
    }
    let notes = "256 MiB = 4096 anonymous 64 KiB folios from the frame allocator, in an active user address \
                 space; map = one batched `set_ptes` per folio (what the fault path does), touch = one byte \
                 written per 4 KiB page through the MMU, unmap = one `unmap_leaves` over the range (as munmap). \
                 qemu-virt, `-cpu max`, `-icount shift=0,sleep=off`. QEMU honours the Contiguous bit in its \
                 software TLB (a folded block is one 64 KiB TLB entry), so the touch column shows the TLB-reach \
                 effect as QEMU models it, not a hardware measurement."
        .to_string();
    Ok(Report::new(table, notes))
}

/// Sizes of the fork benchmark (MiB).
const FORK_SIZES: [u64; 5] = [1, 16, 64, 256, 1024];
/// Its configurations, as `forkbench` names them (`modes=`): fork mode and folio size.
const FORK_CONFIGS: [&str; 3] = ["copy-64k", "copy-4k", "share-64k"];
/// Guest RAM for the fork benchmark: 1024 MiB of parent memory plus the child's copy of all of
/// it need more than 2 GiB; 3 GiB is all qemu-virt RAM below the board's 4 GiB RAM limit
/// (RAM starts at 1 GiB).
const FORK_RAM: &str = "3G";
/// The size the summary compares at (the size the headline figure is quoted at).
const FORK_RATIO_MIB: u64 = 256;

/// The row of `rows` for `mib`, `mode` and `folios`.
fn fork_row<'a>(rows: &'a [Row], mib: u64, mode: &str, folios: &str) -> Result<&'a Row> {
    let want = mib.to_string();
    rows.iter()
        .find(|r| {
            r.get("mib") == Some(&want)
                && r.get("mode").map(String::as_str) == Some(mode)
                && r.get("folios").map(String::as_str) == Some(folios)
        })
        .with_context(|| format!("no fork result for {mib} MiB, {mode}, {folios} folios"))
}

/// `a / b` in percent, two significant decimals.
fn percent(a: u64, b: u64) -> String {
    let p = a as f64 * 100.0 / b as f64;
    if p < 10.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

/// The ratios printed below the fork table: ShareTables fork vs Copy fork with 4 KiB folios
/// (Linux-style per-page copying) at [`FORK_RATIO_MIB`], and the cost of the child's writes
/// after a ShareTables fork vs after a Copy fork (64 KiB folios), per size.
pub fn fork_summary(rows: &[Row], sizes: &[u64]) -> Result<String> {
    let share = fork_row(rows, FORK_RATIO_MIB, "ShareTables", "64K")?;
    let copy4k = fork_row(rows, FORK_RATIO_MIB, "Copy", "4K")?;
    let copy64k = fork_row(rows, FORK_RATIO_MIB, "Copy", "64K")?;
    let (s, c4, c64) = (
        num(share, "fork_ns")?,
        num(copy4k, "fork_ns")?,
        num(copy64k, "fork_ns")?,
    );
    let verdict = if s * 100 < c4 { "meets" } else { "misses" };
    let mut out = format!(
        "Fork of {FORK_RATIO_MIB} MiB in ShareTables mode costs **{}** of Linux-style per-page copying \
         (Copy mode, 4 KiB folios) of the same memory ({:.1} µs vs {:.1} µs, median of 5; {verdict} the \
         target of < 1 %), and {} of a Copy-mode fork with 64 KiB folios ({:.1} µs).",
        percent(s, c4),
        s as f64 / 1000.0,
        c4 as f64 / 1000.0,
        percent(s, c64),
        c64 as f64 / 1000.0,
    );
    let mut parts = Vec::new();
    for &mib in sizes {
        let share = fork_row(rows, mib, "ShareTables", "64K")?;
        let copy = fork_row(rows, mib, "Copy", "64K")?;
        let copied = num(share, "child_table_breaks")?;
        parts.push(format!(
            "{mib} MiB {} ({copied} table{} copied)",
            percent(num(share, "child_write_ns")?, num(copy, "child_write_ns")?),
            if copied == 1 { "" } else { "s" }
        ));
    }
    out += &format!(
        "\n\nThe child writing every page after a ShareTables fork costs, relative to the same writes \
         after a Copy-mode fork (64 KiB folios): {}.",
        parts.join(", ")
    );
    Ok(out)
}

/// Linux 6.12 on the same QEMU and CPU model (`-cpu max`, icount), 256 MiB, for the fork plots.
pub const FORK_LINUX_LABEL: &str = "Linux 6.12, same QEMU and CPU model, 2026-12-06";
/// The phases of the fork benchmark that get a plot: (result key, title, file name, Linux with
/// 64 KiB mTHP in ms, Linux with 4 KiB pages in ms), Linux at [`FORK_RATIO_MIB`].
pub const FORK_PHASES: [(&str, &str, &str, f64, f64); 4] = [
    ("touch_ns", "first touch", "fork-first-touch.svg", 114.1, 326.4),
    ("fork_ns", "fork (median of 5)", "fork-fork.svg", 10.9, 13.6),
    (
        "child_write_ns",
        "child writes every page",
        "fork-child-writes.svg",
        399.2,
        286.8,
    ),
    ("munmap_ns", "munmap", "fork-munmap.svg", 13.1, 92.8),
];
/// Where the fork plots go, relative to the workspace root (next to BENCHMARKS.md).
pub const FORK_PLOT_DIR: &str = "docs/bench";

/// Draws one log-log plot per phase of [`FORK_PHASES`] into `dir`: the phase's virtual time
/// against the region size for each configuration, with Linux's figures at
/// [`FORK_RATIO_MIB`] as markers. Returns the files written.
pub fn fork_plots(rows: &[Row], sizes: &[u64], dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let configs = [
        ("Copy", "64K", "Copy, 64 KiB folios"),
        ("Copy", "4K", "Copy, 4 KiB folios"),
        ("ShareTables", "64K", "ShareTables, 64 KiB folios"),
    ];
    let mut written = Vec::new();
    for (key, phase, file, linux_64k, linux_4k) in FORK_PHASES {
        let mut series = Vec::new();
        for (mode, folios, name) in configs {
            let mut points = Vec::new();
            for &mib in sizes {
                let ns = num(fork_row(rows, mib, mode, folios)?, key)?;
                points.push((mib as f64, ns as f64 / 1e6));
            }
            series.push(plot::Series::new(name, points));
        }
        let at = FORK_RATIO_MIB as f64;
        let markers = [
            plot::Series::new(format!("{FORK_LINUX_LABEL}: 64 KiB mTHP"), vec![(at, linux_64k)]),
            plot::Series::new(format!("{FORK_LINUX_LABEL}: 4 KiB pages"), vec![(at, linux_4k)]),
        ];
        let title = format!("Fork benchmark: {phase}");
        let path = dir.join(file);
        plot::lines(
            &path,
            &plot::LineChart {
                title: &title,
                x_label: "region size (MiB)",
                y_label: "virtual ms (instructions / 10^6)",
                log_log: true,
                series: &series,
                markers: &markers,
            },
        )?;
        written.push(path);
    }
    Ok(written)
}

/// The Markdown line that links the fork plots (paths relative to BENCHMARKS.md).
pub fn fork_plot_links() -> String {
    let links: Vec<String> = FORK_PHASES
        .iter()
        .map(|(_, phase, file, _, _)| format!("[{phase}]({FORK_PLOT_DIR}/{file})"))
        .collect();
    format!(
        "Plots (log-log, virtual time against region size, {FORK_LINUX_LABEL} at {FORK_RATIO_MIB} MiB \
         as markers): {}.",
        links.join(", ")
    )
}

fn fork_bench() -> Result<Report> {
    let sizes: Vec<String> = FORK_SIZES.iter().map(u64::to_string).collect();
    let bootargs = format!("sizes={} modes={}", sizes.join(","), FORK_CONFIGS.join(","));
    let expected = FORK_SIZES.len() * FORK_CONFIGS.len();
    let rows = virt_rows_with(
        "forkbench",
        &bootargs,
        &["-m", FORK_RAM],
        Duration::from_secs(1800),
        Some(expected),
    )?;
    let mut table = Table {
        headers: [
            "MiB",
            "mode",
            "folios",
            "first touch µs",
            "fork µs (median of 5)",
            "first fork µs",
            "fork: folio runs dup'd / tables shared",
            "child writes every page µs",
            "child: tables copied",
            "munmap µs",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    for r in &rows {
        table.rows.push(vec![
            field(r, "mib")?,
            field(r, "mode")?,
            field(r, "folios")?,
            micros(r, "touch_ns")?,
            micros(r, "fork_ns")?,
            micros(r, "fork_first_ns")?,
            format!(
                "{} / {}",
                num(r, "fork_dup_batches")?,
                num(r, "fork_tables_shared")?
            ),
            micros(r, "child_write_ns")?,
            num(r, "child_table_breaks")?.to_string(),
            micros(r, "munmap_ns")?,
        ]);
    }
    let mut summary = fork_summary(&rows, &FORK_SIZES)?;
    for path in fork_plots(&rows, &FORK_SIZES, &workspace_root().join(FORK_PLOT_DIR))? {
        println!("wrote {}", path.display());
    }
    summary += "\n\n";
    summary += &fork_plot_links();
    let notes = format!(
        "Workload per size and configuration: mmap the size 2 MiB-aligned (anonymous private; 64K = a \
         region whose faults may use 64 KiB folios, 4K = one that may not), write one byte per 4 KiB page, \
         fork with the child exiting at once (5 times, median reported; the first of them also \
         write-protects the parent, so it is shown apart), fork again with the child writing one byte per \
         4 KiB page (copy-on-write faults), munmap. `Copy` = `ForkMode::Copy`, the entries copied per folio \
         run; `ShareTables` = `ForkMode::ShareTables`, the level-3 tables linked into the child \
         write-protected, each copied by the first write under it (\"tables copied\"). Copy with 4K \
         folios is the Linux-style per-page copying baseline. qemu-virt with `-m {FORK_RAM}` (1024 MiB \
         needs the parent's memory and the child's copy), `-cpu max`, `-icount shift=0,sleep=off`: \
         virtual ns = instructions. The image checks that every frame is back at the end."
    );
    Ok(Report {
        table,
        summary,
        notes,
    })
}

/// Replaces (or appends) the section `name` of `BENCHMARKS.md`.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let start = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\nFigures produced by `cargo xtask bench <name>`; each section is rewritten by its command.\n".into());
    let section = format!("{start}\n{body}{end}");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(s), Some(e)) if e > s => format!("{}{}{}", &old[..s], section, &old[e + end.len()..]),
        _ => format!("{}\n\n{}\n", old.trim_end(), section),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// Linux 6.12 on the same QEMU and CPU model (`-cpu max`, icount), for the `proc` table.
const LINUX_NULL_SYSCALL_NS: u64 = 506;
const LINUX_FORK_EXIT_NS: u64 = 152_000;
const LINUX_FORK_EXEC_NS: u64 = 494_000;
/// Fork of a process with 256 MiB touched: Linux with 64 KiB mTHP, and with 4 KiB pages.
const LINUX_FORK_TOUCHED_64K_NS: u64 = 10_900_000;
const LINUX_FORK_TOUCHED_4K_NS: u64 = 13_600_000;

/// The `proc` plots, beside BENCHMARKS.md.
const PROC_PLOT: &str = "docs/bench/proc.svg";
const PROC_FORK_PLOT: &str = "docs/bench/proc-fork-256m.svg";

fn proc_bench() -> Result<Report> {
    let programs = crate::programs::build_examples(true)?;
    qemu::require_board(Board::QemuVirt)?;
    let request = BuildRequest::new("procbench", Board::QemuVirt)
        .programs(programs)
        .quiet(true);
    let image = builder::build(&request)?;
    let out = run_icount(&image, "", Duration::from_secs(1800))?;
    let rows = parse_bench_lines(&out);
    let find = |op: &str, mode: Option<(&str, &str)>| {
        rows.iter()
            .find(|r| {
                r.get("op").is_some_and(|o| o == op)
                    && mode.is_none_or(|(m, f)| {
                        r.get("mode").is_some_and(|x| x == m) && r.get("folio").is_some_and(|x| x == f)
                    })
            })
            .with_context(|| format!("procbench printed no '{op}' line:\n{}", builder::tail(&out, 20)))
    };
    let goal = |v: u64, g: u64| format!("< {g}{}", if v < g { " (met)" } else { " (missed)" });
    let null = num(find("null-syscall", None)?, "ns")?;
    let exec = num(find("exec-exit", None)?, "ns")?;
    let fork_exit = num(find("fork-exit", None)?, "ns")?;
    let fork_exec = num(find("fork-exec", None)?, "ns")?;
    let mut table = Table {
        headers: [
            "operation",
            "Tessera (virtual ns)",
            "Linux 6.12, same QEMU (virtual ns)",
            "goal",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![
            vec![
                "null system call (`getppid`, EL0 → EL1 → EL0)".into(),
                null.to_string(),
                LINUX_NULL_SYSCALL_NS.to_string(),
                goal(null, 150),
            ],
            vec![
                "exec of a static glibc program to its exit (load, run, teardown)".into(),
                exec.to_string(),
                "not measured".into(),
                "".into(),
            ],
            vec![
                "fork + `_exit` + `waitpid` (`forkbench-exit`, median of 200)".into(),
                fork_exit.to_string(),
                LINUX_FORK_EXIT_NS.to_string(),
                goal(fork_exit, 50_000),
            ],
            vec![
                "fork + `execve` of `exit0` + `waitpid` (`forkbench-exec`, median of 100)".into(),
                fork_exec.to_string(),
                LINUX_FORK_EXEC_NS.to_string(),
                goal(fork_exec, 150_000),
            ],
        ],
    };
    let mut bars = Vec::new();
    for (mode, folio, linux) in [
        ("share", "64k", LINUX_FORK_TOUCHED_64K_NS),
        ("copy", "64k", LINUX_FORK_TOUCHED_64K_NS),
        ("share", "4k", LINUX_FORK_TOUCHED_4K_NS),
        ("copy", "4k", LINUX_FORK_TOUCHED_4K_NS),
    ] {
        let ns = num(find("fork-touched", Some((mode, folio)))?, "ns")?;
        let g = if mode == "share" {
            500_000
        } else if folio == "64k" {
            2_700_000
        } else {
            6_800_000
        };
        table.rows.push(vec![
            format!("fork of a process with 256 MiB touched, {mode} tables, {folio} folios (`forkbench-touch`, median of 5)"),
            ns.to_string(),
            linux.to_string(),
            goal(ns, g),
        ]);
        bars.push((format!("fork 256 MiB {mode} {folio}"), ns, linux));
    }
    let mut kv = Table {
        headers: [
            "kvsnap, 64 MiB store",
            "fork latency (virtual ns)",
            "copy-on-write faults",
            "bytes copied",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    for (mode, folio) in [("share", "64k"), ("copy", "64k"), ("share", "4k"), ("copy", "4k")] {
        let r = find("kvsnap", Some((mode, folio)))?;
        kv.rows.push(vec![
            format!("{mode} tables, {folio} folios"),
            num(r, "ns")?.to_string(),
            num(r, "cow_faults")?.to_string(),
            num(r, "bytes_copied")?.to_string(),
        ]);
    }
    let notes = format!(
        "{}\nThe null system call is the program's own measurement (`clock_gettime` around 20,000 \
         `svc #0` with `x8 = getppid`) from EL0; exec-to-exit is measured by the kernel around \
         `libos::user::run` of the `exit0` program (median of 11): parse the ELF, map its segments, \
         build the stack, run it at EL0 through glibc's start-up to `exit_group`, and free every \
         frame. The fork figures are the programs' own `clock_gettime` measurements in the parent \
         (`programs/forkbench-*`, `programs/kvsnap`); kvsnap's counters come from Tessera's \
         `prctl(0x54455304)` (docs/processes.md), read before the fork and after the child is \
         reaped. Linux figures: Linux 6.12 on the same QEMU and CPU model, measured 2026-12-06 \
         (fork of 256 MiB with 64 KiB mTHP for the 64k rows, 4 KiB pages for the 4k rows). \
         qemu-virt, `-cpu max`, `-icount shift=0,sleep=off`: virtual ns = instructions.",
        kv.markdown()
    );
    let plot = workspace_root().join(PROC_PLOT);
    let rows: Vec<(&str, f64, Option<f64>)> = [
        ("null system call", null, Some(LINUX_NULL_SYSCALL_NS)),
        ("fork + exit + wait", fork_exit, Some(LINUX_FORK_EXIT_NS)),
        ("fork + execve + wait", fork_exec, Some(LINUX_FORK_EXEC_NS)),
    ]
    .iter()
    .map(|(l, t, r)| (*l, *t as f64 / 1000.0, r.map(|r| r as f64 / 1000.0)))
    .chain(
        bars.iter()
            .map(|(l, t, r)| (l.as_str(), *t as f64 / 1e6, Some(*r as f64 / 1e6))),
    )
    .collect();
    let (small, large): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| !r.0.starts_with("fork 256"));
    plot::bars(
        &plot,
        "Processes (virtual µs)",
        "virtual µs",
        FORK_LINUX_LABEL,
        &small,
    )?;
    plot::bars(
        &workspace_root().join(PROC_FORK_PLOT),
        "Fork of a process with 256 MiB touched (virtual ms)",
        "virtual ms",
        FORK_LINUX_LABEL,
        &large,
    )?;
    let mut report = Report::new(table, notes);
    report.summary = format!("![processes]({PROC_PLOT}) ![fork of 256 MiB]({PROC_FORK_PLOT})");
    Ok(report)
}

pub fn run(name: &str) -> Result<()> {
    let (title, report) = match name {
        "boot" => ("Boot to main and image size (`hello`)", boot_bench()?),
        "tables" => ("Translation tables: map / unmap cost per MiB", tables_bench()?),
        "contpte" => ("CONTPTE: 256 MiB of 64 KiB folios, on vs off", contpte_bench()?),
        "fork" => (
            "Fork: 1..1024 MiB of anonymous memory, Copy vs ShareTables",
            fork_bench()?,
        ),
        "proc" => ("Processes: system calls, exec, fork, and kvsnap", proc_bench()?),
        _ => {
            let valid: Vec<&str> = BENCHMARKS.iter().map(|b| b.0).collect();
            bail!(
                "unknown benchmark '{name}'; valid benchmarks: {}",
                valid.join(", ")
            );
        }
    };
    println!("\n{}", report.table.markdown());
    if !report.summary.is_empty() {
        println!("{}\n", report.summary);
    }
    let path = workspace_root().join("BENCHMARKS.md");
    write_section(&path, name, &report.body(title, name))?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_benchmark_lists_valid_ones() {
        assert_eq!(
            run("nope").unwrap_err().to_string(),
            "unknown benchmark 'nope'; valid benchmarks: boot, tables, contpte, fork, proc"
        );
    }

    #[test]
    fn parses_bench_lines() {
        let rows = parse_bench_lines("noise\nbench size=1 fork_ns=20\r\nbench size=16 fork_ns=300\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["fork_ns"], "300");
        assert_eq!(rows[0]["size"], "1");
    }

    #[test]
    fn markdown_table() {
        let t = Table {
            headers: vec!["a".into(), "b".into()],
            rows: vec![vec!["1".into(), "2".into()]],
        };
        assert_eq!(t.markdown(), "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
    }

    #[test]
    fn sections_are_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("tessera-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("B.md");
        std::fs::write(&p, "# Benchmarks\n\nintro\n").unwrap();
        write_section(&p, "boot", "one\n").unwrap();
        write_section(&p, "fork", "two\n").unwrap();
        write_section(&p, "boot", "three\n").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(s, "# Benchmarks\n\nintro\n\n<!-- bench:boot -->\nthree\n<!-- /bench:boot -->\n\n<!-- bench:fork -->\ntwo\n<!-- /bench:fork -->\n");
    }

    fn fork_line(
        mib: u64,
        mode: &str,
        folios: &str,
        fork_ns: u64,
        child_write_ns: u64,
        breaks: u64,
    ) -> String {
        format!("bench mib={mib} mode={mode} folios={folios} fork_ns={fork_ns} child_write_ns={child_write_ns} child_table_breaks={breaks}\n")
    }

    #[test]
    fn fork_summary_ratios() {
        let mut out = String::new();
        for mib in [1, 256] {
            out += &fork_line(mib, "Copy", "64K", 20_000 * mib, 100_000 * mib, 0);
            out += &fork_line(mib, "Copy", "4K", 200_000 * mib, 400_000 * mib, 0);
            out += &fork_line(
                mib,
                "ShareTables",
                "64K",
                1_000 + 10 * mib,
                105_000 * mib,
                mib / 2,
            );
        }
        let rows = parse_bench_lines(&out);
        let s = fork_summary(&rows, &[1, 256]).unwrap();
        // 3560 / 51_200_000 = 0.00695 %.
        assert!(
            s.starts_with(
                "Fork of 256 MiB in ShareTables mode costs **0.01 %** of Linux-style per-page copying"
            ),
            "{s}"
        );
        assert!(
            s.contains("(3.6 µs vs 51200.0 µs, median of 5; meets the target of < 1 %)"),
            "{s}"
        );
        assert!(
            s.contains("and 0.07 % of a Copy-mode fork with 64 KiB folios (5120.0 µs)"),
            "{s}"
        );
        assert!(
            s.ends_with(
                "(64 KiB folios): 1 MiB 105.0 % (0 tables copied), 256 MiB 105.0 % (128 tables copied)."
            ),
            "{s}"
        );
        let missing = parse_bench_lines(&fork_line(256, "Copy", "4K", 1, 1, 0));
        assert!(fork_summary(&missing, &[256])
            .unwrap_err()
            .to_string()
            .contains("ShareTables"));
    }

    /// The fork table of BENCHMARKS.md back as result rows (µs → ns).
    fn fork_rows_from_markdown(md: &str) -> Vec<Row> {
        let section = md
            .split("<!-- bench:fork -->")
            .nth(1)
            .and_then(|s| s.split("<!-- /bench:fork -->").next())
            .expect("a fork section");
        let keys = [
            "mib",
            "mode",
            "folios",
            "touch_ns",
            "fork_ns",
            "fork_first_ns",
            "",
            "child_write_ns",
            "child_table_breaks",
            "munmap_ns",
        ];
        section
            .lines()
            .filter(|l| l.starts_with("| ") && l.as_bytes()[2].is_ascii_digit())
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .zip(keys)
                    .filter(|(_, k)| !k.is_empty())
                    .map(|(v, k)| {
                        let v = match k.strip_suffix("_ns") {
                            Some(_) => format!("{:.0}", v.parse::<f64>().unwrap() * 1000.0),
                            None => v.to_string(),
                        };
                        (k.to_string(), v)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn fork_plots_from_the_recorded_table() {
        let md = std::fs::read_to_string(workspace_root().join("BENCHMARKS.md")).unwrap();
        let rows = fork_rows_from_markdown(&md);
        assert_eq!(rows.len(), FORK_SIZES.len() * FORK_CONFIGS.len());
        let dir = std::env::temp_dir().join(format!("tessera-fork-plots-{}", std::process::id()));
        let files = fork_plots(&rows, &FORK_SIZES, &dir).unwrap();
        assert_eq!(files.len(), FORK_PHASES.len());
        for f in &files {
            let svg = std::fs::read_to_string(f).unwrap();
            for text in [
                "Copy, 64 KiB folios",
                "Copy, 4 KiB folios",
                "ShareTables, 64 KiB folios",
                "Linux 6.12, same QEMU and CPU model, 2026-12-06: 64 KiB mTHP",
                "Linux 6.12, same QEMU and CPU model, 2026-12-06: 4 KiB pages",
            ] {
                assert!(svg.contains(text), "{text} missing from {}", f.display());
            }
        }
        let links = fork_plot_links();
        assert!(links.contains("[munmap](docs/bench/fork-munmap.svg)"), "{links}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn report_body_places_the_summary_between_table_and_notes() {
        let table = Table {
            headers: vec!["a".into()],
            rows: vec![vec!["1".into()]],
        };
        let mut r = Report::new(table, "notes".into());
        assert_eq!(
            r.body("T", "x"),
            "## T\n\nCommand: `cargo xtask bench x`\n\n| a |\n| --- |\n| 1 |\n\nnotes\n"
        );
        r.summary = "ratio".into();
        assert_eq!(
            r.body("T", "x"),
            "## T\n\nCommand: `cargo xtask bench x`\n\n| a |\n| --- |\n| 1 |\n\nratio\n\nnotes\n"
        );
    }

    #[test]
    fn elf_sizes_reject_garbage() {
        assert!(elf_load_sizes(b"not an elf").is_err());
    }
}
