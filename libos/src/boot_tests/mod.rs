//! Boot tests that exercise a layer below `libos` on the real machine (registered with
//! `boot_test!`, run by the `selftest` image). Tests of `libos`'s own modules sit beside them in
//! child modules.

mod folio;
mod mem;
mod platform;
mod privilege;
mod processes;
mod programs;
mod vm;
