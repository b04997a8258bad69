//! What Tessera reads from the flattened device tree: RAM, reserved memory, the command line, the
//! PSCI conduit and the model name. Parsing uses the `fdt` crate; this module turns the tree into a
//! plain [`DtInfo`] so that nothing else depends on the DT format.

use alloc::string::String;
use alloc::vec::Vec;

pub use crate::mm::PhysRange;

/// The PSCI conduit named by `/psci` `method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    Hvc,
    Smc,
}

/// Facts read from a device tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DtInfo {
    /// `memory` nodes' `reg` ranges, in tree order.
    pub memory: Vec<PhysRange>,
    /// `/memreserve/` entries and static `/reserved-memory` children with a `reg`.
    pub reserved: Vec<PhysRange>,
    /// The `/reserved-memory` children marked `no-map` (also in `reserved`): memory the kernel must
    /// not map at all, so not even cacheable speculation reaches it.
    pub no_map: Vec<PhysRange>,
    /// `/chosen/bootargs` (empty when absent).
    pub bootargs: String,
    /// `/psci` or `arm,psci*` node's method.
    pub psci: Option<PsciMethod>,
    /// Root `model` property.
    pub model: String,
    /// `/chosen/rng-seed` and `/chosen/kaslr-seed`: entropy the firmware or loader passed.
    pub rng_seed: Vec<u8>,
    /// A hardware random number generator the tree lists (its `compatible`).
    pub rng: Option<&'static str>,
    /// Size of the blob itself (to reserve it).
    pub total_size: usize,
}

/// Why a blob was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtError {
    /// Not a flattened device tree (bad magic or header).
    Invalid(String),
}

/// Reads the `totalsize` field of an FDT header if `header` starts with the FDT magic.
pub fn fdt_total_size(header: &[u8]) -> Option<usize> {
    const FDT_MAGIC: u32 = 0xd00d_feed;
    if header.len() < 8 || u32::from_be_bytes(header[0..4].try_into().ok()?) != FDT_MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(header[4..8].try_into().ok()?) as usize)
}

/// Whether `node` is named `name` (with or without a unit address).
fn named(node: &fdt::node::FdtNode<'_, '_>, name: &str) -> bool {
    node.name == name || node.name.split('@').next() == Some(name)
}

/// Parses a blob, reading every node once (the tree is walked a single time: `fdt`'s
/// `find_node` stops at an `FDT_NOP` token, which QEMU leaves behind when it replaces the
/// `/memory` node of a DTB given with `-dtb`, and each lookup would walk the tree again).
pub fn parse(blob: &[u8]) -> Result<DtInfo, DtError> {
    const RNGS: [&str; 3] = ["brcm,bcm2835-rng", "brcm,bcm2711-rng200", "brcm,iproc-rng200"];
    const PSCIS: [&str; 3] = ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];
    let fdt = fdt::Fdt::new(blob).map_err(|e| DtError::Invalid(alloc::format!("{e:?}")))?;
    let mut info = DtInfo {
        total_size: fdt.total_size(),
        ..Default::default()
    };
    let mut chosen = None;
    let mut reserved_memory = None;
    let mut psci_by_name = None;
    let mut psci_by_compatible = None;
    for node in fdt.all_nodes() {
        let mut device_type = None;
        let mut compatible: Option<&[u8]> = None;
        for p in node.properties() {
            match p.name {
                "device_type" => device_type = p.as_str(),
                "compatible" => compatible = Some(p.value),
                _ => {}
            }
        }
        if device_type == Some("memory") {
            for r in node.reg().into_iter().flatten() {
                if let Some(size) = r.size.filter(|&s| s > 0) {
                    info.memory.push(PhysRange {
                        base: r.starting_address as u64,
                        size: size as u64,
                    });
                }
            }
        }
        if chosen.is_none() && named(&node, "chosen") {
            chosen = Some(node);
        } else if reserved_memory.is_none() && named(&node, "reserved-memory") {
            reserved_memory = Some(node);
        } else if psci_by_name.is_none() && named(&node, "psci") {
            psci_by_name = Some(node);
        }
        if let Some(list) = compatible {
            // A `compatible` value is a list of NUL-terminated strings.
            let mut names = list
                .split(|&b| b == 0)
                .filter_map(|n| core::str::from_utf8(n).ok());
            let matches = |set: &[&'static str], n: &str| set.iter().copied().find(|c| *c == n);
            for n in &mut names {
                if info.rng.is_none() {
                    info.rng = matches(&RNGS, n);
                }
                if psci_by_compatible.is_none() && matches(&PSCIS, n).is_some() {
                    psci_by_compatible = Some(node);
                }
            }
        }
    }
    for r in fdt.memory_reservations() {
        info.reserved.push(PhysRange {
            base: r.address() as u64,
            size: r.size() as u64,
        });
    }
    if let Some(rm) = reserved_memory {
        for child in rm.children() {
            let no_map = child.property("no-map").is_some();
            for r in child.reg().into_iter().flatten() {
                if let Some(size) = r.size {
                    let range = PhysRange {
                        base: r.starting_address as u64,
                        size: size as u64,
                    };
                    info.reserved.push(range);
                    if no_map {
                        info.no_map.push(range);
                    }
                }
            }
        }
    }
    if let Some(chosen) = chosen {
        if let Some(args) = chosen.property("bootargs").and_then(|p| p.as_str()) {
            info.bootargs = String::from(args);
        }
        for name in ["rng-seed", "kaslr-seed"] {
            if let Some(p) = chosen.property(name) {
                info.rng_seed.extend_from_slice(p.value);
            }
        }
    }
    info.psci = psci_by_name
        .or(psci_by_compatible)
        .and_then(|n| n.property("method"))
        .and_then(|p| p.as_str())
        .and_then(|m| match m {
            "hvc" => Some(PsciMethod::Hvc),
            "smc" => Some(PsciMethod::Smc),
            _ => None,
        });
    if let Some(model) = fdt.root().property("model").and_then(|p| p.as_str()) {
        info.model = String::from(model);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_fdt::FdtWriter;

    fn blob(with_psci: bool, bootargs: Option<&str>) -> Vec<u8> {
        let mut w =
            FdtWriter::new_with_mem_reserv(&[vm_fdt::FdtReserveEntry::new(0x4000_0000, 0x1000).unwrap()])
                .unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_string("model", "test-board").unwrap();
        let mem = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u64("reg", &[0x4000_0000, 0x4000_0000, 0x1_0000_0000, 0x2000_0000])
            .unwrap();
        w.end_node(mem).unwrap();
        let rm = w.begin_node("reserved-memory").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_null("ranges").unwrap();
        let fw = w.begin_node("firmware@7f000000").unwrap();
        w.property_array_u64("reg", &[0x7f00_0000, 0x10_0000]).unwrap();
        w.property_null("no-map").unwrap();
        w.end_node(fw).unwrap();
        let cma = w.begin_node("linux,cma").unwrap();
        w.property_array_u64("reg", &[0x6000_0000, 0x400_0000]).unwrap();
        w.property_null("reusable").unwrap();
        w.end_node(cma).unwrap();
        w.end_node(rm).unwrap();
        if let Some(args) = bootargs {
            let chosen = w.begin_node("chosen").unwrap();
            w.property_string("bootargs", args).unwrap();
            w.property("rng-seed", &[1, 2, 3, 4]).unwrap();
            w.end_node(chosen).unwrap();
            let rng = w.begin_node("rng@7e104000").unwrap();
            w.property_string_list("compatible", vec!["brcm,bcm2711-rng200".into()])
                .unwrap();
            w.end_node(rng).unwrap();
        }
        if with_psci {
            let psci = w.begin_node("psci").unwrap();
            w.property_string_list("compatible", vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()])
                .unwrap();
            w.property_string("method", "hvc").unwrap();
            w.end_node(psci).unwrap();
        }
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn reads_memory_bootargs_psci() {
        let b = blob(true, Some("log=debug tests=heap"));
        assert_eq!(fdt_total_size(&b), Some(b.len()));
        let info = parse(&b).unwrap();
        assert_eq!(
            info.memory,
            [
                PhysRange {
                    base: 0x4000_0000,
                    size: 0x4000_0000
                },
                PhysRange {
                    base: 0x1_0000_0000,
                    size: 0x2000_0000
                }
            ]
        );
        let range = |base, size| PhysRange { base, size };
        assert_eq!(
            info.reserved,
            [
                range(0x4000_0000, 0x1000),
                range(0x7f00_0000, 0x10_0000),
                range(0x6000_0000, 0x400_0000)
            ]
        );
        assert_eq!(
            info.no_map,
            [range(0x7f00_0000, 0x10_0000)],
            "only the no-map child"
        );
        assert_eq!(info.bootargs, "log=debug tests=heap");
        assert_eq!(info.rng_seed, [1, 2, 3, 4]);
        assert_eq!(info.rng, Some("brcm,bcm2711-rng200"));
        assert_eq!(info.psci, Some(PsciMethod::Hvc));
        assert_eq!(info.model, "test-board");
        assert_eq!(info.total_size, b.len());
    }

    #[test]
    fn tolerates_missing_chosen_and_psci() {
        let info = parse(&blob(false, None)).unwrap();
        assert_eq!(info.bootargs, "");
        assert_eq!(info.psci, None);
        assert!(info.rng_seed.is_empty() && info.rng.is_none());
        assert_eq!(info.memory.len(), 2);
    }

    /// Overwrites the node whose FDT_BEGIN_NODE carries `name` with FDT_NOP tokens, as QEMU does
    /// to a `-dtb` blob's `/memory` node.
    fn nop_out_node(blob: &mut [u8], name: &str) {
        let be = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
        let off_struct = be(blob, 8) as usize;
        let mut needle = alloc::vec![0, 0, 0, 1];
        needle.extend_from_slice(name.as_bytes());
        let start = (off_struct..blob.len() - needle.len())
            .step_by(4)
            .find(|&i| blob[i..].starts_with(&needle))
            .unwrap();
        // Walk tokens to the matching FDT_END_NODE (no nested nodes in the test blob).
        let mut i = start + 4 + (name.len() + 1).div_ceil(4) * 4;
        loop {
            match be(blob, i) {
                3 => i += 12 + (be(blob, i + 4) as usize).div_ceil(4) * 4, // FDT_PROP
                2 => break,                                                // FDT_END_NODE
                t => panic!("unexpected token {t}"),
            }
        }
        for w in (start..=i).step_by(4) {
            blob[w..w + 4].copy_from_slice(&4u32.to_be_bytes());
        }
    }

    #[test]
    fn finds_chosen_and_psci_after_a_nopped_node() {
        let mut b = blob(true, Some("log=info"));
        nop_out_node(&mut b, "memory@40000000");
        let info = parse(&b).unwrap();
        assert!(info.memory.is_empty());
        assert_eq!(info.bootargs, "log=info");
        assert_eq!(info.psci, Some(PsciMethod::Hvc));
    }

    /// A board RNG and a PSCI node found by `compatible` alone (no `/psci` name), in the one
    /// pass over the tree.
    #[test]
    fn finds_rng_and_psci_by_compatible() {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        let soc = w.begin_node("soc").unwrap();
        let rng = w.begin_node("rng@7e104000").unwrap();
        w.property_string_list(
            "compatible",
            vec!["brcm,bcm2711-rng200".into(), "brcm,iproc-rng200".into()],
        )
        .unwrap();
        w.end_node(rng).unwrap();
        w.end_node(soc).unwrap();
        let fw = w.begin_node("firmware").unwrap();
        let psci = w.begin_node("power-controller").unwrap();
        w.property_string_list("compatible", vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()])
            .unwrap();
        w.property_string("method", "smc").unwrap();
        w.end_node(psci).unwrap();
        w.end_node(fw).unwrap();
        w.end_node(root).unwrap();
        let info = parse(&w.finish().unwrap()).unwrap();
        assert_eq!(info.rng, Some("brcm,bcm2711-rng200"));
        assert_eq!(info.psci, Some(PsciMethod::Smc));
        assert!(info.memory.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(fdt_total_size(&[0u8; 16]), None);
        assert!(matches!(parse(&[0u8; 64]), Err(DtError::Invalid(_))));
    }
}
