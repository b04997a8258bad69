//! Scheduling logic that needs no machine: which task a CPU runs and which wait their turn
//! ([`Cpu`]), and the processes by pid ([`PidTable`]). The kernel's task table and the context switch live in `user::system`, which
//! drives a `Cpu` per core.

mod pid_table;
mod run_queue;

pub use pid_table::{PidTable, PID_MAX};
pub use run_queue::Cpu;
