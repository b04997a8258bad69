//! Relinks images when a board's linker script changes (cargo does not track `-T` scripts).

fn main() {
    println!("cargo:rerun-if-changed=../linker");
}
