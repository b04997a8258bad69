//! Scheduling logic that needs no machine: which task a CPU runs and which wait their turn
//! ([`Cpu`]). The kernel's task table and the context switch live in `user::system`, which
//! drives a `Cpu` per core.

mod run_queue;

pub use run_queue::Cpu;
