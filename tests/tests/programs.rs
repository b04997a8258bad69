//! The EL0 program archive in the image: `--program` files reach the `.tessera_programs` section
//! byte for byte, page aligned and read-only; without programs the section holds the empty archive.

use std::path::Path;
use std::process::Command;

use tessera_tests::{scratch_dir, Board};
use xtask::builder::{self, BuildRequest};
use xtask::cpio;

/// The bytes of `section` of `elf` (llvm-objcopy --dump-section).
fn dump_section(elf: &Path, section: &str, out: &Path) -> Vec<u8> {
    let objcopy =
        xtask::toolchain::llvm_tool("llvm-objcopy").expect("llvm-objcopy (rustup component llvm-tools)");
    let o = Command::new(objcopy)
        .arg(format!("--dump-section={section}={}", out.display()))
        .arg(elf)
        .arg(out.with_extension("elf"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "llvm-objcopy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(out).unwrap()
}

/// The `.tessera_programs` section header: (flags, address, size), from `llvm-readobj -S`.
fn section_header(elf: &Path) -> (String, u64, u64) {
    let readobj =
        xtask::toolchain::llvm_tool("llvm-readobj").expect("llvm-readobj (rustup component llvm-tools)");
    let o = Command::new(readobj).arg("-S").arg(elf).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let block = text
        .split("Section {")
        .find(|b| b.contains("Name: .tessera_programs "))
        .unwrap_or_else(|| panic!("no .tessera_programs section in {}", elf.display()));
    let field = |name: &str| {
        let v = block
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {block}"))
            .trim();
        // Addresses in hex, sizes in decimal.
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
            None => v.parse().unwrap(),
        }
    };
    let flags = block
        .split("Flags")
        .nth(1)
        .unwrap_or("")
        .split(']')
        .next()
        .unwrap_or("")
        .to_string();
    (flags, field("Address:"), field("Size:"))
}

/// Checks that the section holds `archive`, zero padded to whole pages, read-only.
fn check(elf: &Path, archive: &[u8], scratch: &Path, tag: &str) {
    let section = dump_section(elf, ".tessera_programs", &scratch.join(format!("{tag}.bin")));
    assert!(
        section.len() >= archive.len() && section.len().is_multiple_of(4096),
        "{tag}: {} bytes",
        section.len()
    );
    assert_eq!(
        &section[..archive.len()],
        archive,
        "{tag}: the section does not start with the archive"
    );
    assert!(
        section[archive.len()..].iter().all(|&b| b == 0),
        "{tag}: padding is not zero"
    );
    let (flags, address, size) = section_header(elf);
    assert_eq!(address % 4096, 0, "{tag}: section at {address:#x}");
    assert_eq!(size, section.len() as u64);
    assert!(
        flags.contains("SHF_ALLOC") && !flags.contains("SHF_WRITE") && !flags.contains("SHF_EXECINSTR"),
        "{tag}: flags {flags}"
    );
}

#[test]
fn program_archive_is_in_the_image() {
    let scratch = scratch_dir("programs");
    let text = scratch.join("motd.txt");
    let motd = b"Hello, EL0!\nThis file is an archive member.\n";
    std::fs::write(&text, motd).unwrap();
    std::fs::write(scratch.join("x"), b"\x7fELF not really").unwrap();

    let req = BuildRequest::new("hello", Board::QemuVirt)
        .programs([("etc/motd", text.clone()), ("x", scratch.join("x"))])
        .quiet(true);
    let image = builder::build(&req).unwrap_or_else(|e| panic!("{e:#}"));
    let archive = req.archive().unwrap();
    let members = cpio::read(&archive).unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(
        (members[0].name.as_str(), &members[0].data[..]),
        ("etc/motd", &motd[..])
    );
    check(&image.elf, &archive, &scratch, "with");

    // Another archive: no stale build is reused.
    std::fs::write(&text, b"changed\n").unwrap();
    let image = builder::build(&req).unwrap_or_else(|e| panic!("{e:#}"));
    let changed = req.archive().unwrap();
    assert_ne!(changed, archive);
    check(&image.elf, &changed, &scratch, "changed");

    // Without programs: the empty archive.
    let plain = tessera_tests::build("hello", Board::QemuVirt, &[]);
    check(&plain.elf, &cpio::empty(), &scratch, "without");
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// The README's kvsnap commands run as written (their arguments after `--`), through the `init`
/// app: the snapshot is consistent and every process ends cleanly.
#[test]
fn the_readme_kvsnap_commands_run() {
    let root = xtask::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("cargo xtask run --program target/programs/kvsnap/"))
        .collect();
    assert!(commands.len() >= 2, "the README shows kvsnap in both fork modes");
    let test = "the_readme_kvsnap_commands_run";
    if !tessera_tests::board_available(test, Board::QemuVirt) {
        return;
    }
    let program = xtask::programs::examples(&root)
        .unwrap()
        .into_iter()
        .find(|p| p.name == "kvsnap")
        .expect("the kvsnap example");
    let path = xtask::programs::build(&program, true).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        commands[0].contains(&*path.strip_prefix(&root).unwrap().to_string_lossy()),
        "README path"
    );
    let req = BuildRequest::new("init", Board::QemuVirt)
        .programs([("kvsnap", path)])
        .quiet(true);
    let image = builder::build(&req).unwrap_or_else(|e| panic!("{e:#}"));
    for command in commands {
        let args = command.split(" -- ").nth(1).expect("arguments after --");
        let run = tessera_tests::boot(&image, &format!("init=kvsnap -- {args}"));
        let log = run.log();
        assert_eq!(run.code(), Some(0), "{command}\n{log}");
        assert!(log.contains("kvsnap: snapshot checksum ok"), "{command}\n{log}");
        assert!(log.contains("kvsnap: ok"), "{command}\n{log}");
    }
}
