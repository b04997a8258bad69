//! `cargo xtask profile`: a guest instruction profile by function.
//!
//! The image boots under `-icount shift=0,sleep=off` with `-d in_asm,exec,nochain`: QEMU logs
//! every block it translates (`IN:` and one line per guest instruction) and, with chaining off,
//! every execution of a translated block (`Trace N: HOST [CS_BASE/PC/FLAGS/CFLAGS]`). The log is
//! read through a FIFO while QEMU writes it, one line at a time ([`LogParser`]), so it never sits
//! on disk or in memory. Each execution is weighted by its block's instruction count, and the
//! instructions are attributed to the function containing the block's first instruction
//! ([`Symbolizer`]: the kernel ELF, and for EL0 blocks the `--program` ELFs, static ones at their
//! link addresses and static-pie ones at [`PIE_BIAS`]).
//!
//! Under icount one instruction is one virtual nanosecond, so the instruction counts are virtual
//! time. A block cut short by an exception (a data abort in its middle) counts whole.
//!
//! Call stacks are reconstructed, approximately, from the stream of blocks ([`Profiler`]): a
//! block ending in `bl`/`blr` pushes a frame with its return address, and a block reached by a
//! `ret` pops back to the frame with that return address. EL0 and EL1 have a stack each; kernel
//! code entered by an exception from EL0 sits on the user stack below a `[exception from EL0]`
//! frame; a program's entry point starts a new user stack. Tail calls replace their caller, and
//! context switches that do not return through `ret` leave stale frames, so the stacks are a
//! heuristic.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind, SymbolSection};

use crate::builder::BuiltImage;
use crate::process::{self, Echo};
use crate::qemu::QemuRunner;

/// Where the kernel loads a static-pie EL0 program (its load bias).
pub const PIE_BIAS: u64 = 0x4000_0000;
/// The name of addresses no symbol covers.
pub const UNKNOWN: &str = "[unknown]";
/// The frame between a user stack and the kernel code an exception from EL0 entered.
pub const EXCEPTION_FRAME: &str = "[exception from EL0]";
/// Frames per shadow stack; a call beyond that empties the stack (the stack restarts at its base).
const MAX_DEPTH: usize = 256;
/// How many frames below the top a return address is looked for.
const RETURN_SEARCH: usize = 32;
/// Instruction words of a block kept to tell programs with overlapping addresses apart.
const WORDS_KEPT: usize = 4;

/// A function symbol: `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub start: u64,
    pub end: u64,
    pub name: String,
}

/// The functions of one ELF file, sorted by address and without overlaps, and its code (to match
/// logged instruction words against).
#[derive(Clone, Debug, Default)]
pub struct SymbolTable {
    symbols: Vec<Symbol>,
    /// Executable sections: (address, bytes).
    code: Vec<(u64, Vec<u8>)>,
    /// Loaded segments whose physical address differs from their virtual one: (physical,
    /// virtual, size). Code that runs before the MMU is on (the kernel's boot path) runs at the
    /// physical address.
    aliases: Vec<(u64, u64, u64)>,
    /// The entry point (of a program: where a new process starts).
    pub entry: Option<u64>,
}

impl SymbolTable {
    /// A table from `(address, size, name)` triples and executable sections. A symbol of size 0
    /// reaches to the next symbol, but not past the end of the section it is in. Of symbols at
    /// the same address, the first one with a size wins, else the first one not named `__...`
    /// (linker-script markers such as `__image_start`).
    pub fn new(mut raw: Vec<(u64, u64, String)>, code: Vec<(u64, Vec<u8>)>) -> Self {
        raw.sort_by_key(|(addr, size, name)| (*addr, *size == 0, name.starts_with("__")));
        raw.dedup_by_key(|s| s.0);
        let section_end = |addr: u64| {
            code.iter()
                .find(|(start, bytes)| (*start..*start + bytes.len() as u64).contains(&addr))
                .map(|(start, bytes)| start + bytes.len() as u64)
        };
        let mut symbols = Vec::with_capacity(raw.len());
        for i in 0..raw.len() {
            let (start, size, ref name) = raw[i];
            let next = raw.get(i + 1).map_or(u64::MAX, |s| s.0);
            let end = if size > 0 {
                start.saturating_add(size).min(next)
            } else {
                next.min(section_end(start).unwrap_or(u64::MAX))
            };
            if end > start {
                symbols.push(Symbol {
                    start,
                    end,
                    name: name.clone(),
                });
            }
        }
        SymbolTable {
            symbols,
            code,
            aliases: Vec::new(),
            entry: None,
        }
    }

    /// Adds physical aliases: (physical, virtual, size).
    pub fn with_aliases(mut self, aliases: Vec<(u64, u64, u64)>) -> Self {
        self.aliases = aliases;
        self
    }

    /// The functions of an ELF file: `STT_FUNC` symbols, and untyped ones in executable sections
    /// (assembly labels; not the `$x`/`$d` mapping symbols), demangled, addresses plus `bias`.
    pub fn from_elf(data: &[u8], bias: u64) -> Result<Self> {
        let file = object::File::parse(data).context("not an ELF file")?;
        let mut code = Vec::new();
        let mut exec_sections = Vec::new();
        for s in file.sections() {
            if s.kind() == SectionKind::Text {
                exec_sections.push(s.index());
                if let Ok(bytes) = s.data() {
                    code.push((s.address() + bias, bytes.to_vec()));
                }
            }
        }
        let mut raw = Vec::new();
        for sym in file.symbols() {
            let SymbolSection::Section(index) = sym.section() else {
                continue;
            };
            let text = match sym.kind() {
                SymbolKind::Text => true,
                SymbolKind::Unknown => exec_sections.contains(&index),
                _ => false,
            };
            let Ok(name) = sym.name() else { continue };
            if !text || name.is_empty() || name.starts_with('$') || name.starts_with(".L") {
                continue;
            }
            raw.push((sym.address() + bias, sym.size(), demangle(name)));
        }
        let mut table = SymbolTable::new(raw, code).with_aliases(physical_aliases(data));
        table.entry = Some(file.entry() + bias);
        Ok(table)
    }

    /// The ELF file at `path`, with its load bias: [`PIE_BIAS`] for a static-pie (`ET_DYN`)
    /// program when `user`, else none.
    pub fn load(path: &Path, user: bool) -> Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let pie = data.len() > 18 && u16::from_le_bytes([data[16], data[17]]) == 3;
        let bias = if user && pie { PIE_BIAS } else { 0 };
        Self::from_elf(&data, bias).with_context(|| format!("reading the symbols of {}", path.display()))
    }

    /// The function containing `addr`, or else containing the virtual address of `addr` taken
    /// as a physical address.
    pub fn lookup(&self, addr: u64) -> Option<&Symbol> {
        self.lookup_exact(addr).or_else(|| {
            self.aliases
                .iter()
                .find(|(phys, _, size)| (*phys..phys + size).contains(&addr))
                .and_then(|(phys, virt, _)| self.lookup_exact(addr - phys + virt))
        })
    }

    fn lookup_exact(&self, addr: u64) -> Option<&Symbol> {
        let i = self.symbols.partition_point(|s| s.start <= addr);
        self.symbols[..i].last().filter(|s| addr < s.end)
    }

    /// Whether `addr` is code of this file (with no sections known: whether a symbol covers it).
    pub fn covers(&self, addr: u64) -> bool {
        if self.code.is_empty() {
            return self.lookup(addr).is_some();
        }
        self.code
            .iter()
            .any(|(start, bytes)| (*start..*start + bytes.len() as u64).contains(&addr))
    }

    /// Whether the instruction words at `addr` are `words` (true when the code is unknown).
    pub fn code_matches(&self, addr: u64, words: &[u32]) -> bool {
        let Some((start, bytes)) = self
            .code
            .iter()
            .find(|(start, bytes)| (*start..*start + bytes.len() as u64).contains(&addr))
        else {
            return self.code.is_empty();
        };
        let off = (addr - start) as usize;
        words.iter().enumerate().all(|(i, w)| {
            bytes
                .get(off + 4 * i..off + 4 * i + 4)
                .is_some_and(|b| u32::from_le_bytes(b.try_into().unwrap()) == *w)
        })
    }
}

/// The `PT_LOAD` segments of an ELF64 little-endian file whose physical address (`p_paddr`)
/// differs from the virtual one: (physical, virtual, memory size).
pub fn physical_aliases(elf: &[u8]) -> Vec<(u64, u64, u64)> {
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phoff as usize + i * phentsize;
        let is_load = elf.get(ph..ph + 4) == Some(&1u32.to_le_bytes()[..]);
        if let (true, Some(virt), Some(phys), Some(size)) =
            (is_load, u64_at(ph + 16), u64_at(ph + 24), u64_at(ph + 40))
        {
            if phys != virt && size > 0 {
                out.push((phys, virt, size));
            }
        }
    }
    out
}

/// A Rust symbol demangled without its hash; other names as they are.
pub fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Names the function of a block: the kernel's symbols at EL1, the programs' at EL0.
#[derive(Clone, Debug, Default)]
pub struct Symbolizer {
    pub kernel: SymbolTable,
    /// (program name, its table).
    pub programs: Vec<(String, SymbolTable)>,
}

impl Symbolizer {
    /// The function containing `pc` (`words`: the block's first instruction words, to pick among
    /// programs whose code overlaps) and its start address. EL0 functions are named
    /// `function [program]`.
    pub fn resolve(&self, el0: bool, pc: u64, words: &[u32]) -> (String, Option<u64>) {
        if !el0 {
            return match self.kernel.lookup(pc) {
                Some(s) => (s.name.clone(), Some(s.start)),
                None => (UNKNOWN.to_string(), None),
            };
        }
        let mut candidates = self.programs.iter().filter(|(_, t)| t.covers(pc));
        let Some(first) = candidates.next() else {
            return (UNKNOWN.to_string(), None);
        };
        let chosen = std::iter::once(first)
            .chain(candidates)
            .find(|(_, t)| t.code_matches(pc, words))
            .unwrap_or(first);
        match chosen.1.lookup(pc) {
            Some(s) => (format!("{} [{}]", s.name, chosen.0), Some(s.start)),
            None => (UNKNOWN.to_string(), None),
        }
    }

    /// Whether an EL0 block at `pc` starting with `words` is a program's entry point: the first
    /// block of a new process.
    pub fn is_program_entry(&self, pc: u64, words: &[u32]) -> bool {
        self.programs
            .iter()
            .any(|(_, t)| t.entry == Some(pc) && t.code_matches(pc, words))
    }
}

/// How a block ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// `bl`, `blr` (and their pointer-authenticating forms).
    Call,
    /// `ret` (and `retaa`, `retab`).
    Return,
    Other,
}

impl Flow {
    pub fn of(mnemonic: &str) -> Flow {
        match mnemonic {
            "bl" | "blr" | "blraa" | "blraaz" | "blrab" | "blrabz" => Flow::Call,
            "ret" | "retaa" | "retab" => Flow::Return,
            _ => Flow::Other,
        }
    }
}

/// A translated block, from its `IN:` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub pc: u64,
    pub insns: u32,
    pub flow: Flow,
    /// The address after its last instruction (a call's return address).
    pub next: u64,
    /// Its first instruction words.
    pub words: Vec<u32>,
}

/// Counts from a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub translations: u64,
    pub executions: u64,
    /// Executions QEMU logged but then did not start (`Stopped execution of TB chain before`).
    pub not_started: u64,
    /// Executions of blocks whose translation was not in the log (counted as 1 instruction).
    pub untranslated: u64,
}

/// Reads QEMU's `-d in_asm,exec,nochain` log a line at a time and reports each block execution.
///
/// A translation is logged just before its first execution, whose `Trace` line names the host
/// address of the translated code; later executions are matched by that host address (and by
/// the guest address when a host address is reused). The last execution is held back one line:
/// QEMU follows an execution it did not start (its instruction budget ran out) with a
/// `Stopped execution` line, and such an execution is dropped.
#[derive(Debug, Default)]
pub struct LogParser {
    blocks: Vec<Block>,
    by_host: HashMap<u64, u32>,
    by_pc: HashMap<u64, u32>,
    /// The `IN:` listing being read.
    building: Option<Block>,
    /// The last translation, not yet matched to a `Trace` line.
    translated: Option<u32>,
    /// The last execution: (block, EL0, host address).
    held: Option<(u32, bool, u64)>,
    pub stats: LogStats,
}

/// Whether the `FLAGS` of a `Trace` line are EL0's: their MMU index field (bits 4..8 of QEMU's
/// `TBFLAG_ANY`) is `E10_0` or `E20_0`.
pub fn flags_el0(flags: u32) -> bool {
    matches!((flags >> 4) & 0xf, 0 | 1)
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// `HOST [CS_BASE/PC/FLAGS/...]` → (host, pc, flags).
fn parse_exec(rest: &str) -> Option<(u64, u64, u32)> {
    let mut words = rest.split_whitespace();
    let host = hex(words.next()?)?;
    let inner = words.next()?.strip_prefix('[')?;
    let inner = inner.split(']').next()?;
    let mut fields = inner.split('/');
    let _cs_base = fields.next()?;
    let pc = hex(fields.next()?)?;
    let flags = fields.next().and_then(hex).unwrap_or(0) as u32;
    Some((host, pc, flags))
}

/// `HOST [PC] ...` → (host, pc).
fn parse_stopped(rest: &str) -> Option<(u64, u64)> {
    let mut words = rest.split_whitespace();
    let host = hex(words.next()?)?;
    let pc = hex(words.next()?.strip_prefix('[')?.strip_suffix(']')?)?;
    Some((host, pc))
}

impl LogParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn block(&self, id: u32) -> &Block {
        &self.blocks[id as usize]
    }

    /// Reads one line (without its newline); `sink(block id, block, el0)` gets each execution.
    pub fn line(&mut self, line: &str, sink: &mut impl FnMut(u32, &Block, bool)) {
        if let Some(b) = self.building.as_mut() {
            if let Some((addr, rest)) = line.split_once(':').filter(|(a, _)| a.starts_with("0x")) {
                let mut words = rest.split_whitespace();
                if let Some(addr) = hex(addr) {
                    let word = words.next().and_then(|w| u32::from_str_radix(w, 16).ok());
                    if b.insns == 0 {
                        b.pc = addr;
                    }
                    b.insns += 1;
                    b.next = addr + 4;
                    b.flow = Flow::of(words.next().unwrap_or(""));
                    if let Some(w) = word.filter(|_| b.words.len() < WORDS_KEPT) {
                        b.words.push(w);
                    }
                    return;
                }
            }
            let b = self.building.take().unwrap();
            if b.insns > 0 {
                let id = self.blocks.len() as u32;
                self.by_pc.insert(b.pc, id);
                self.blocks.push(b);
                self.translated = Some(id);
                self.stats.translations += 1;
            }
        }
        if line.starts_with("IN:") {
            self.building = Some(Block {
                pc: 0,
                insns: 0,
                flow: Flow::Other,
                next: 0,
                words: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("Trace ") {
            let Some((host, pc, flags)) = rest.split_once(": ").and_then(|(_, r)| parse_exec(r)) else {
                return;
            };
            self.flush(sink);
            let id = self.block_for(host, pc);
            self.held = Some((id, flags_el0(flags), host));
        } else if let Some(rest) = line.strip_prefix("Stopped execution of TB chain before ") {
            if let (Some((host, pc)), Some((id, _, held_host))) = (parse_stopped(rest), self.held) {
                if host == held_host && self.blocks[id as usize].pc == pc {
                    self.held = None;
                    self.stats.not_started += 1;
                }
            }
        }
    }

    fn block_for(&mut self, host: u64, pc: u64) -> u32 {
        if let Some(id) = self
            .translated
            .take()
            .filter(|&t| self.blocks[t as usize].pc == pc)
        {
            self.by_host.insert(host, id);
            return id;
        }
        if let Some(&id) = self.by_host.get(&host) {
            if self.blocks[id as usize].pc == pc {
                return id;
            }
        }
        if let Some(&id) = self.by_pc.get(&pc) {
            self.by_host.insert(host, id);
            return id;
        }
        self.stats.untranslated += 1;
        let id = self.blocks.len() as u32;
        self.blocks.push(Block {
            pc,
            insns: 1,
            flow: Flow::Other,
            next: pc + 4,
            words: Vec::new(),
        });
        self.by_pc.insert(pc, id);
        self.by_host.insert(host, id);
        id
    }

    fn flush(&mut self, sink: &mut impl FnMut(u32, &Block, bool)) {
        if let Some((id, el0, _)) = self.held.take() {
            self.stats.executions += 1;
            sink(id, &self.blocks[id as usize], el0);
        }
    }

    /// Ends the log: reports the held execution.
    pub fn finish(&mut self, sink: &mut impl FnMut(u32, &Block, bool)) {
        self.line("", sink);
        self.flush(sink);
    }
}

/// Feeds a whole log to `sink` (see [`LogParser::line`]), a line at a time.
pub fn parse_log(mut reader: impl BufRead, mut sink: impl FnMut(u32, &Block, bool)) -> Result<LogStats> {
    let mut parser = LogParser::new();
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .context("reading the QEMU log")?
            == 0
        {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        parser.line(line.trim_end_matches(['\n', '\r']), &mut sink);
    }
    parser.finish(&mut sink);
    Ok(parser.stats)
}

/// A call-stack frame of a shadow stack: the return address and the stack node of the caller.
#[derive(Clone, Copy, Debug)]
struct Frame {
    ret: u64,
    node: u32,
}

const ROOT: u32 = 0;
const NO_FUNC: u32 = u32::MAX;

/// Turns block executions into per-function counts and approximate call stacks.
#[derive(Debug)]
pub struct Profiler {
    symbolizer: Symbolizer,
    /// Per block id: (function, whether the block starts at the function's first instruction,
    /// whether it is a program's entry point).
    block_func: Vec<(u32, bool, bool)>,
    names: Vec<String>,
    ids: HashMap<String, u32>,
    insns: Vec<u64>,
    execs: Vec<u64>,
    /// (callee, caller) → entries.
    callers: HashMap<(u32, u32), u64>,
    /// Stack nodes: (parent, function); node 0 is the root.
    nodes: Vec<(u32, u32)>,
    node_ids: HashMap<(u32, u32), u32>,
    node_insns: Vec<u64>,
    user: Vec<Frame>,
    kernel: Vec<Frame>,
    /// The node kernel frames grow from: the root, or the exception frame above the user stack.
    kernel_base: u32,
    user_leaf: u32,
    prev_el0: Option<bool>,
    prev_flow: Flow,
    prev_func: u32,
}

impl Profiler {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Profiler {
            symbolizer,
            block_func: Vec::new(),
            names: Vec::new(),
            ids: HashMap::new(),
            insns: Vec::new(),
            execs: Vec::new(),
            callers: HashMap::new(),
            nodes: vec![(ROOT, NO_FUNC)],
            node_ids: HashMap::new(),
            node_insns: vec![0],
            user: Vec::new(),
            kernel: Vec::new(),
            kernel_base: ROOT,
            user_leaf: ROOT,
            prev_el0: None,
            prev_flow: Flow::Other,
            prev_func: NO_FUNC,
        }
    }

    fn func(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        self.insns.push(0);
        self.execs.push(0);
        id
    }

    fn node(&mut self, parent: u32, func: u32) -> u32 {
        if let Some(&n) = self.node_ids.get(&(parent, func)) {
            return n;
        }
        let n = self.nodes.len() as u32;
        self.nodes.push((parent, func));
        self.node_insns.push(0);
        self.node_ids.insert((parent, func), n);
        n
    }

    /// One execution of block `id` (from [`LogParser`]).
    pub fn exec(&mut self, id: u32, block: &Block, el0: bool) {
        let i = id as usize;
        if self.block_func.len() <= i {
            self.block_func.resize(i + 1, (NO_FUNC, false, false));
        }
        if self.block_func[i].0 == NO_FUNC {
            let (name, start) = self.symbolizer.resolve(el0, block.pc, &block.words);
            let f = self.func(&name);
            let new_process = el0 && self.symbolizer.is_program_entry(block.pc, &block.words);
            self.block_func[i] = (f, start == Some(block.pc), new_process);
        }
        let (func, entry, new_process) = self.block_func[i];
        if new_process {
            self.user.clear();
        }
        let mut flow = self.prev_flow;
        if self.prev_el0.is_some_and(|p| p != el0) {
            if !el0 {
                let exc = self.func(EXCEPTION_FRAME);
                self.kernel.clear();
                self.kernel_base = self.node(self.user_leaf, exc);
            }
            flow = Flow::Other;
        }
        let frames = if el0 { &mut self.user } else { &mut self.kernel };
        if flow == Flow::Return {
            let lowest = frames.len().saturating_sub(RETURN_SEARCH);
            match frames[lowest..].iter().rposition(|f| f.ret == block.pc) {
                Some(k) => frames.truncate(lowest + k),
                None if !el0 && frames.is_empty() => self.kernel_base = ROOT,
                None => {}
            }
        }
        let base = match frames.last() {
            Some(f) => f.node,
            None if el0 => ROOT,
            None => self.kernel_base,
        };
        let leaf = self.node(base, func);
        self.node_insns[leaf as usize] += block.insns as u64;
        if block.flow == Flow::Call {
            let frames = if el0 { &mut self.user } else { &mut self.kernel };
            if frames.len() < MAX_DEPTH {
                frames.push(Frame {
                    ret: block.next,
                    node: leaf,
                });
            } else {
                frames.clear();
            }
        }
        if el0 {
            self.user_leaf = leaf;
        }
        if entry && self.prev_func != func && self.prev_func != NO_FUNC {
            *self.callers.entry((func, self.prev_func)).or_default() += 1;
        }
        self.insns[func as usize] += block.insns as u64;
        self.execs[func as usize] += 1;
        self.prev_func = func;
        self.prev_flow = block.flow;
        self.prev_el0 = Some(el0);
    }

    /// The result.
    pub fn finish(self, stats: LogStats) -> Profile {
        let mut functions: Vec<FunctionStat> = (0..self.names.len())
            .map(|f| {
                let mut callers: Vec<(String, u64)> = self
                    .callers
                    .iter()
                    .filter(|((callee, _), _)| *callee == f as u32)
                    .map(|((_, caller), n)| (self.names[*caller as usize].clone(), *n))
                    .collect();
                callers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                FunctionStat {
                    name: self.names[f].clone(),
                    insns: self.insns[f],
                    execs: self.execs[f],
                    callers,
                }
            })
            .filter(|f| f.execs > 0)
            .collect();
        functions.sort_by(|a, b| b.insns.cmp(&a.insns).then_with(|| a.name.cmp(&b.name)));
        let mut folded = Vec::new();
        for (n, &count) in self.node_insns.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let mut path = Vec::new();
            let mut node = n as u32;
            while node != ROOT {
                let (parent, func) = self.nodes[node as usize];
                path.push(self.names[func as usize].replace(';', ":"));
                node = parent;
            }
            path.reverse();
            folded.push((path.join(";"), count));
        }
        folded.sort();
        Profile {
            total_insns: self.insns.iter().sum(),
            total_execs: self.execs.iter().sum(),
            functions,
            folded,
            stats,
        }
    }
}

/// One function's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionStat {
    pub name: String,
    /// Instructions in blocks that start in it (self, not including callees).
    pub insns: u64,
    /// Executions of its blocks.
    pub execs: u64,
    /// (function, entries): the function whose block ran just before a block at this function's
    /// first instruction, most entries first.
    pub callers: Vec<(String, u64)>,
}

/// A finished profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Sorted by instructions, most first.
    pub functions: Vec<FunctionStat>,
    pub total_insns: u64,
    pub total_execs: u64,
    /// Folded stacks (`a;b;c`, instructions), sorted.
    pub folded: Vec<(String, u64)>,
    pub stats: LogStats,
}

/// How many of the top functions get their callers listed, and how many callers each.
const CALLER_ENTRIES: usize = 10;
const CALLERS_EACH: usize = 3;

impl Profile {
    /// The table of the `top` functions with the most instructions, the total and the callers of
    /// the first of them.
    pub fn table(&self, top: usize) -> String {
        let shown = &self.functions[..top.min(self.functions.len())];
        let width = shown
            .iter()
            .map(|f| f.name.chars().count())
            .max()
            .unwrap_or(8)
            .clamp(8, 90);
        let share = |n: u64| n as f64 * 100.0 / self.total_insns.max(1) as f64;
        let mut s = format!(
            "{:<width$}  {:>14}  {:>7}  {:>12}\n",
            "function", "self instrs", "share", "block execs"
        );
        for f in shown {
            let _ = writeln!(
                s,
                "{:<width$}  {:>14}  {:>6.2}%  {:>12}",
                truncate(&f.name, width),
                f.insns,
                share(f.insns),
                f.execs
            );
        }
        let _ = writeln!(
            s,
            "{:<width$}  {:>14}  {:>6.2}%  {:>12}",
            "total", self.total_insns, 100.0, self.total_execs
        );
        let _ = writeln!(
            s,
            "\n{} functions; {} instructions = {:.3} virtual ms under icount; {} translations{}{}",
            self.functions.len(),
            self.total_insns,
            self.total_insns as f64 / 1e6,
            self.stats.translations,
            if self.stats.not_started > 0 {
                format!(
                    "; {} logged executions not started (dropped)",
                    self.stats.not_started
                )
            } else {
                String::new()
            },
            if self.stats.untranslated > 0 {
                format!(
                    "; {} executions of blocks without a logged translation (1 instruction each)",
                    self.stats.untranslated
                )
            } else {
                String::new()
            }
        );
        let with_callers: Vec<_> = shown
            .iter()
            .filter(|f| !f.callers.is_empty())
            .take(CALLER_ENTRIES)
            .collect();
        if !with_callers.is_empty() {
            s += "\ncallers (heuristic: the function whose block ran just before the function's first \
                  instruction, calls and tail calls alike; entries):\n";
            for f in with_callers {
                let list: Vec<String> = f
                    .callers
                    .iter()
                    .take(CALLERS_EACH)
                    .map(|(name, n)| format!("{} ({n})", truncate(name, 60)))
                    .collect();
                let _ = writeln!(s, "  {} <- {}", truncate(&f.name, 60), list.join(", "));
            }
        }
        s
    }

    /// The folded stacks, one `frame;frame;... count` line each (inferno's input).
    pub fn folded_text(&self) -> String {
        self.folded
            .iter()
            .map(|(stack, n)| format!("{stack} {n}\n"))
            .collect()
    }

    /// Writes `stacks.folded`, `flamegraph.svg` and `profile.txt` into `dir`.
    pub fn write(&self, dir: &Path, title: &str, top: usize) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let folded = dir.join("stacks.folded");
        process::write_atomic(&folded, self.folded_text().as_bytes())?;
        let svg = dir.join("flamegraph.svg");
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = title.to_string();
        opts.subtitle = Some(
            "instructions (= virtual ns under icount); stacks reconstructed from bl/ret, approximate"
                .to_string(),
        );
        opts.count_name = "instructions".to_string();
        let lines: Vec<String> = self.folded.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let mut out = Vec::new();
        inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut out)
            .context("drawing the flame graph")?;
        process::write_atomic(&svg, &out)?;
        let table = dir.join("profile.txt");
        process::write_atomic(&table, self.table(top).as_bytes())?;
        Ok(vec![table, folded, svg])
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// What to profile.
#[derive(Clone, Debug)]
pub struct ProfileRequest {
    pub image: BuiltImage,
    pub bootargs: String,
    /// EL0 programs of the image: (name, ELF).
    pub programs: Vec<(String, PathBuf)>,
    pub top: usize,
    pub out: PathBuf,
    pub timeout: Option<Duration>,
}

/// Boots the image with the trace log going into a FIFO that a thread parses as QEMU writes it;
/// prints the table and writes the files. Returns whether the guest run succeeded.
#[cfg(unix)]
pub fn run(req: &ProfileRequest) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;

    let mut symbolizer = Symbolizer {
        kernel: SymbolTable::load(&req.image.elf, false)?,
        programs: Vec::new(),
    };
    for (name, path) in &req.programs {
        symbolizer
            .programs
            .push((name.clone(), SymbolTable::load(path, true)?));
    }
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let fifo = req.out.join("qemu-log.fifo");
    let _ = std::fs::remove_file(&fifo);
    make_fifo(&fifo)?;

    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || -> Result<Profile> {
        let file = std::fs::File::open(&reader_path)
            .with_context(|| format!("opening {}", reader_path.display()))?;
        let mut profiler = Profiler::new(symbolizer);
        let stats = parse_log(std::io::BufReader::with_capacity(1 << 20, file), |id, b, el0| {
            profiler.exec(id, b, el0)
        })?;
        Ok(profiler.finish(stats))
    });

    let mut runner = QemuRunner::new(&req.image)
        .append(req.bootargs.clone())
        .icount(true);
    runner.timeout = req.timeout;
    runner.extra_args.extend([
        "-d".into(),
        "in_asm,exec,nochain".into(),
        "-D".into(),
        fifo.clone().into(),
    ]);
    let mut cmd = runner.command()?;
    eprintln!("running {}", process::render(&cmd));
    let outcome = process::run_captured(&mut cmd, runner.timeout, Echo::Stderr, Echo::Stderr);
    // If QEMU never opened the log, the reader is still waiting in open(): a writer that comes
    // and goes releases it with an empty log. With no reader any more, this open fails (ENXIO).
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo),
    );
    let profile = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the log reader panicked"))?;
    let _ = std::fs::remove_file(&fifo);
    let outcome = outcome?;
    let profile = profile?;
    if profile.total_execs == 0 {
        bail!("QEMU logged no block execution ({})", outcome.describe());
    }
    println!("{}", profile.table(req.top));
    let title = format!("{} on {}", req.image.app, req.image.board);
    for path in profile.write(&req.out, &title, req.top)? {
        println!("wrote {}", path.display());
    }
    if !outcome.success() {
        eprintln!("xtask: the guest run did not succeed: {}", outcome.describe());
    }
    Ok(outcome.success())
}

#[cfg(not(unix))]
pub fn run(_req: &ProfileRequest) -> Result<bool> {
    bail!("profile reads QEMU's log through a FIFO, which needs a Unix host")
}

#[cfg(unix)]
fn make_fifo(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("mkfifo {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
----------------
IN: 
0x40200000:  d53800a1  mrs      x1, mpidr_el1
0x40200004:  94000003  bl       #0x40200010

Trace 0: 0x7f0000000100 [00104004/0000000040200000/00000021/ff022200] 
----------------
IN: 
0x40200010:  d503201f  nop      
0x40200014:  d503201f  nop      
0x40200018:  d65f03c0  ret      

Trace 0: 0x7f0000000200 [00104004/0000000040200010/00000021/ff022200] 
----------------
IN: 
0x40200008:  17fffffe  b        #0x40200000

Trace 0: 0x7f0000000300 [00104004/0000000040200008/00000021/ff022200] 
Trace 0: 0x7f0000000100 [00104004/0000000040200000/00000021/ff022200] 
Trace 0: 0x7f0000000200 [00104004/0000000040200010/00000021/ff022200] 
Stopped execution of TB chain before 0x7f0000000200 [0000000040200010] 
Trace 0: 0x7f0000000200 [00104004/0000000040200010/00000021/ff022200] 
----------------
IN: 
0x00400100:  d4000001  svc      #0

Trace 0: 0x7f0000000400 [00104004/0000000000400100/00000001/ff022200] 
Trace 0: 0x7f0000000500 [00104004/0000000040200020/00000021/ff022200] 
";

    fn execs(log: &str) -> (Vec<(u64, u32, Flow, bool)>, LogStats) {
        let mut out = Vec::new();
        let stats = parse_log(log.as_bytes(), |_, b, el0| out.push((b.pc, b.insns, b.flow, el0))).unwrap();
        (out, stats)
    }

    #[test]
    fn log_parser_weights_blocks_by_their_listing() {
        let (e, stats) = execs(LOG);
        assert_eq!(
            e,
            [
                (0x40200000, 2, Flow::Call, false),
                (0x40200010, 3, Flow::Return, false),
                (0x40200008, 1, Flow::Other, false),
                (0x40200000, 2, Flow::Call, false),
                (0x40200010, 3, Flow::Return, false),
                (0x400100, 1, Flow::Other, true),
                (0x40200020, 1, Flow::Other, false),
            ]
        );
        assert_eq!(
            stats,
            LogStats {
                translations: 4,
                executions: 7,
                not_started: 1,
                untranslated: 1
            }
        );
    }

    #[test]
    fn a_reused_host_address_is_matched_by_guest_address() {
        let log = "IN: \n0x1000:  d503201f  nop\n0x1004:  d503201f  nop\n\n\
                   Trace 0: 0xaa [0/0000000000001000/00000000/0] \n\
                   IN: \n0x2000:  d503201f  nop\n\n\
                   Trace 0: 0xaa [0/0000000000002000/00000000/0] \n\
                   Trace 0: 0xbb [0/0000000000001000/00000000/0] \n\
                   Trace 0: 0xaa [0/0000000000002000/00000000/0] \n";
        let (e, stats) = execs(log);
        let insns: Vec<(u64, u32)> = e.iter().map(|x| (x.0, x.1)).collect();
        assert_eq!(insns, [(0x1000, 2), (0x2000, 1), (0x1000, 2), (0x2000, 1)]);
        assert_eq!(stats.untranslated, 0);
    }

    #[test]
    fn el0_from_flags() {
        assert!(!flags_el0(0x21) && !flags_el0(0x421) && !flags_el0(0x41));
        assert!(flags_el0(0x1) && flags_el0(0x11));
    }

    fn table(syms: &[(u64, u64, &str)]) -> SymbolTable {
        SymbolTable::new(
            syms.iter().map(|&(a, s, n)| (a, s, n.to_string())).collect(),
            Vec::new(),
        )
    }

    #[test]
    fn symbol_lookup() {
        let t = SymbolTable::new(
            vec![
                (0x100, 0x10, "a".into()),
                (0x100, 0, "a_alias".into()),
                (0x120, 0, "__b_start".into()),
                (0x120, 0, "b".into()),
                (0x140, 8, "c".into()),
                (0x150, 0, "d".into()),
            ],
            vec![(0x100, vec![0; 0x58])],
        );
        let name = |addr| t.lookup(addr).map(|s| s.name.as_str());
        assert_eq!(name(0xff), None);
        assert_eq!(name(0x100), Some("a"));
        assert_eq!(name(0x10f), Some("a"));
        assert_eq!(name(0x110), None);
        assert_eq!(name(0x13c), Some("b"));
        assert_eq!(name(0x147), Some("c"));
        assert_eq!(name(0x148), None);
        assert_eq!(name(0x157), Some("d"));
        assert_eq!(name(0x158), None, "a size-0 symbol ends with its section");
        assert!(t.covers(0x157) && !t.covers(0x158));
        let t = t.with_aliases(vec![(0x40_0100, 0x100, 0x58)]);
        assert_eq!(t.lookup(0x40_0144).map(|s| s.name.as_str()), Some("c"));
        assert_eq!(t.lookup(0x40_0158), None);
    }

    #[test]
    fn symbolizer_picks_the_program_whose_code_matches() {
        let word = |w: u32| w.to_le_bytes().to_vec();
        let prog = |name: &str, w: u32| {
            (
                name.to_string(),
                SymbolTable::new(
                    vec![(0x400000, 8, format!("main_{name}"))],
                    vec![(0x400000, word(w))],
                ),
            )
        };
        let s = Symbolizer {
            kernel: table(&[(0x40200000, 0x100, "kmain")]),
            programs: vec![prog("one", 0x11), prog("two", 0x22)],
        };
        assert_eq!(
            s.resolve(false, 0x40200004, &[]),
            ("kmain".into(), Some(0x40200000))
        );
        assert_eq!(s.resolve(false, 0x40300000, &[]), (UNKNOWN.into(), None));
        assert_eq!(
            s.resolve(true, 0x400000, &[0x22]),
            ("main_two [two]".into(), Some(0x400000))
        );
        assert_eq!(
            s.resolve(true, 0x400000, &[0x11]),
            ("main_one [one]".into(), Some(0x400000))
        );
        assert_eq!(s.resolve(true, 0x400000, &[0x33]).0, "main_one [one]");
        assert_eq!(s.resolve(true, 0x500000, &[]).0, UNKNOWN);
    }

    #[test]
    fn a_program_entry_starts_a_new_user_stack() {
        let log = "\
IN: \n0x400000:  94000000  bl #0x400100\n\n\
Trace 0: 0x1 [0/0000000000400000/00000001/0] \n\
IN: \n0x400100:  d503201f  nop\n\n\
Trace 0: 0x2 [0/0000000000400100/00000001/0] \n\
Trace 0: 0x1 [0/0000000000400000/00000001/0] \n\
Trace 0: 0x2 [0/0000000000400100/00000001/0] \n";
        let mut prog = SymbolTable::new(
            vec![
                (0x400000, 0x100, "_start".into()),
                (0x400100, 0x100, "exit".into()),
            ],
            vec![(
                0x400000,
                [0x94000000u32.to_le_bytes().to_vec(), vec![0; 0x1fc]].concat(),
            )],
        );
        prog.entry = Some(0x400000);
        let s = Symbolizer {
            kernel: table(&[]),
            programs: vec![("p".into(), prog)],
        };
        assert!(s.is_program_entry(0x400000, &[0x94000000]));
        assert!(!s.is_program_entry(0x400000, &[0x1]));
        let p = profile(log, s);
        assert_eq!(p.folded_text(), "_start [p] 2\n_start [p];exit [p] 2\n");
    }

    #[test]
    fn demangles_rust_names() {
        assert_eq!(
            demangle("_ZN5libos4user3run17h0123456789abcdefE"),
            "libos::user::run"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
    }

    fn profile(log: &str, symbolizer: Symbolizer) -> Profile {
        let mut p = Profiler::new(symbolizer);
        let stats = parse_log(log.as_bytes(), |id, b, el0| p.exec(id, b, el0)).unwrap();
        p.finish(stats)
    }

    #[test]
    fn profile_counts_stacks_and_callers() {
        let s = Symbolizer {
            kernel: table(&[(0x40200000, 0x10, "outer"), (0x40200010, 0x10, "leaf")]),
            programs: vec![("p".into(), table(&[(0x400000, 0x200, "user_main")]))],
        };
        let p = profile(LOG, s);
        let rows: Vec<(&str, u64, u64)> = p
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.insns, f.execs))
            .collect();
        assert_eq!(
            rows,
            [
                ("leaf", 6, 2),
                ("outer", 5, 3),
                ("[unknown]", 1, 1),
                ("user_main [p]", 1, 1)
            ]
        );
        assert_eq!((p.total_insns, p.total_execs), (13, 7));
        let leaf = &p.functions[0];
        assert_eq!(leaf.callers, [("outer".to_string(), 2)]);
        assert_eq!(
            p.folded_text(),
            "outer 5\nouter;leaf 6\nuser_main [p] 1\nuser_main [p];[exception from EL0];[unknown] 1\n"
        );
        let t = p.table(2);
        assert!(t.starts_with("function  "), "{t}");
        let words = t.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains("leaf 6 46.15% 2 outer 5 38.46% 3 total 13 100.00% 7"),
            "{t}"
        );
        assert!(!t.contains("user_main"), "{t}");
        assert!(t.contains("leaf <- outer (2)"), "{t}");
        assert!(t.contains("1 logged executions not started"), "{t}");
    }

    #[test]
    fn returns_pop_to_the_matching_frame_and_depth_is_bounded() {
        // f calls g, g calls h, h returns straight to f's return site (a tail call in g).
        let log = "\
IN: \n0x100:  94000000  bl #0x200\n\n\
Trace 0: 0x1 [0/0000000000000100/00000021/0] \n\
IN: \n0x200:  94000000  bl #0x300\n\n\
Trace 0: 0x2 [0/0000000000000200/00000021/0] \n\
IN: \n0x300:  d65f03c0  ret\n\n\
Trace 0: 0x3 [0/0000000000000300/00000021/0] \n\
IN: \n0x104:  d503201f  nop\n\n\
Trace 0: 0x4 [0/0000000000000104/00000021/0] \n";
        let s = Symbolizer {
            kernel: table(&[(0x100, 0x100, "f"), (0x200, 0x100, "g"), (0x300, 0x100, "h")]),
            programs: vec![],
        };
        let p = profile(log, s);
        assert_eq!(p.folded_text(), "f 2\nf;g 1\nf;g;h 1\n");

        let mut deep = String::from("IN: \n0x100:  94000000  bl #0x100\n\n");
        for _ in 0..(MAX_DEPTH + 10) {
            deep += "Trace 0: 0x1 [0/0000000000000100/00000021/0] \n";
        }
        let s = Symbolizer {
            kernel: table(&[(0x100, 0x100, "r")]),
            programs: vec![],
        };
        let p = profile(&deep, s);
        let max = p.folded.iter().map(|(s, _)| s.split(';').count()).max().unwrap();
        assert_eq!(max, MAX_DEPTH + 1);
        assert_eq!(p.total_insns, MAX_DEPTH as u64 + 10);
    }

    #[test]
    fn writes_the_folded_stacks_and_a_flame_graph() {
        let s = Symbolizer {
            kernel: table(&[(0x40200000, 0x10, "outer"), (0x40200010, 0x10, "leaf")]),
            programs: vec![],
        };
        let p = profile(LOG, s);
        let dir = std::env::temp_dir().join(format!("tessera-profile-{}", std::process::id()));
        let files = p.write(&dir, "test", 10).unwrap();
        assert_eq!(files.len(), 3);
        let svg = std::fs::read_to_string(dir.join("flamegraph.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("leaf"), "{svg}");
        let folded = std::fs::read_to_string(dir.join("stacks.folded")).unwrap();
        assert!(folded.contains("outer;leaf 6"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
