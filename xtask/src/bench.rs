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
use crate::{workspace_root, Board};

/// The registered benchmarks and what they measure.
pub const BENCHMARKS: &[(&str, &str)] = &[
    ("boot", "boot-to-main virtual time and image size of `hello` on every board"),
    ("tables", "translation-table costs of mapping/unmapping 1..256 MiB with pages and blocks (qemu-virt)"),
    ("contpte", "map / touch / unmap 256 MiB of 64 KiB folios with CONTPTE on and off (qemu-virt)"),
    ("fork", "first touch, fork (median of 5), child COW writes and munmap of 1..256 MiB, 64 KiB folios on/off (qemu-virt)"),
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
    field(r, k)?.parse::<u64>().with_context(|| format!("bad {k} in {r:?}"))
}

/// A nanosecond field as microseconds with one decimal.
fn micros(r: &Row, k: &str) -> Result<String> {
    Ok(format!("{:.1}", num(r, k)? as f64 / 1000.0))
}

/// Builds `app` for qemu-virt, boots it with icount and `bootargs`, and returns its result lines
/// (exactly `expected` of them when given).
fn virt_rows(app: &str, bootargs: &str, timeout: Duration, expected: Option<usize>) -> Result<Vec<Row>> {
    let board = Board::QemuVirt;
    qemu::require_board(board)?;
    let image = builder::build(&BuildRequest::new(app, board).quiet(true))?;
    let out = run_icount(&image, bootargs, timeout)?;
    let rows = parse_bench_lines(&out);
    if rows.is_empty() || expected.is_some_and(|n| rows.len() != n) {
        bail!("{app} printed {} result lines (expected {expected:?}):\n{}", rows.len(), builder::tail(&out, 30));
    }
    Ok(rows)
}

/// Boots `image` with icount and returns its serial output (the run must exit 0).
pub fn run_icount(image: &BuiltImage, bootargs: &str, timeout: Duration) -> Result<String> {
    let runner = QemuRunner::new(image).append(bootargs).icount(true).timeout(timeout);
    let o = runner.run_captured(false)?;
    if !o.success() {
        bail!("benchmark run of {} on {} failed: {}\n{}", image.app, image.board, o.describe(), builder::tail(&o.stdout, 30));
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

fn boot_bench() -> Result<(Table, String)> {
    let mut table = Table {
        headers: ["board", "boot to main (virtual µs)", "image file", "loaded bytes", "memory incl. .bss + stacks + boot heap"]
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
            .find_map(|l| l.trim().strip_prefix("boot to main: ")?.split_whitespace().next()?.parse().ok())
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
    let notes = "Boot to main is counter time from reset to the app's `main` under `-icount shift=0,sleep=off` \
                 (one instruction per virtual ns): QEMU's boot stub, the EL2→EL1 drop, `.bss` clearing \
                 (it holds the 8 MiB static heap) and cache maintenance, the boot map, device-tree parsing, \
                 and frame-allocator set-up over all RAM. Release build."
        .to_string();
    Ok((table, notes))
}

fn tables_bench() -> Result<(Table, String)> {
    let rows = virt_rows("mmbench", "bench=tables", Duration::from_secs(600), None)?;
    let mut table = Table {
        headers: [
            "MiB", "mapping", "step", "descriptor writes", "per MiB", "TLBIs (VA / range / ASID)", "tables alloc / freed", "virtual µs",
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
            format!("{} ({} / {} / {})", num(r, "tlbi")?, num(r, "tlbi_va")?, num(r, "tlbi_range")?, num(r, "tlbi_asid")?),
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
    Ok((table, notes))
}

fn contpte_bench() -> Result<(Table, String)> {
    let rows = virt_rows("mmbench", "bench=contpte", Duration::from_secs(900), Some(2))?;
    let mut table = Table {
        headers: [
            "CONTPTE", "folded blocks", "map: descriptor writes", "map: TLBIs", "map µs", "touch every page µs",
            "unmap: descriptor writes", "unmap: TLBIs", "unmap µs",
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
    Ok((table, notes))
}

fn fork_bench() -> Result<(Table, String)> {
    let rows = virt_rows("forkbench", "", Duration::from_secs(1800), Some(8))?;
    let mut table = Table {
        headers: ["MiB", "folios", "first touch µs", "fork µs (median of 5)", "child writes every page µs", "munmap µs"]
            .map(String::from)
            .to_vec(),
        rows: vec![],
    };
    for r in &rows {
        table.rows.push(vec![
            field(r, "mib")?,
            field(r, "folios")?,
            micros(r, "touch_ns")?,
            micros(r, "fork_ns")?,
            micros(r, "child_write_ns")?,
            micros(r, "munmap_ns")?,
        ]);
    }
    let notes = "Workload per size: mmap the size 2 MiB-aligned (anonymous private; 64K = a region whose \
                 faults may use 64 KiB folios, 4K = one that may not), write one byte per 4 KiB page, fork \
                 with the child exiting at once (5 times, median reported), fork again with the child \
                 writing one byte per 4 KiB page (copy-on-write faults), munmap. qemu-virt, `-cpu max`, \
                 `-icount shift=0,sleep=off`: virtual ns = instructions. The image checks that every frame \
                 is back at the end."
        .to_string();
    Ok((table, notes))
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

pub fn run(name: &str) -> Result<()> {
    let (title, (table, notes)) = match name {
        "boot" => ("Boot to main and image size (`hello`)", boot_bench()?),
        "tables" => ("Translation tables: map / unmap cost per MiB (issue 3)", tables_bench()?),
        "contpte" => ("CONTPTE: 256 MiB of 64 KiB folios, on vs off (issue 4)", contpte_bench()?),
        "fork" => ("Fork: 1..256 MiB of anonymous memory, 64 KiB folios on and off (issue 5)", fork_bench()?),
        _ => {
            let valid: Vec<&str> = BENCHMARKS.iter().map(|b| b.0).collect();
            bail!("unknown benchmark '{name}'; valid benchmarks: {}", valid.join(", "));
        }
    };
    let md = table.markdown();
    println!("\n{md}");
    let body = format!("## {title}\n\nCommand: `cargo xtask bench {name}`\n\n{md}\n{notes}\n");
    let path = workspace_root().join("BENCHMARKS.md");
    write_section(&path, name, &body)?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_benchmark_lists_valid_ones() {
        assert_eq!(run("nope").unwrap_err().to_string(), "unknown benchmark 'nope'; valid benchmarks: boot, tables, contpte, fork");
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
        let t = Table { headers: vec!["a".into(), "b".into()], rows: vec![vec!["1".into(), "2".into()]] };
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

    #[test]
    fn elf_sizes_reject_garbage() {
        assert!(elf_load_sizes(b"not an elf").is_err());
    }
}
