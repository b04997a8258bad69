//! `cargo xtask`: see `cargo xtask help`.

fn main() {
    std::process::exit(xtask::cli::main());
}
