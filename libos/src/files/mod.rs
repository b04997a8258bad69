//! Open files and the descriptors that name them, without a machine: the per-process
//! descriptor table ([`FdTable`]) and pipes ([`Pipe`]). The system calls over them are in
//! `user::syscall`, which adds the console and blocking.

mod fd_table;
mod pipe;

pub use fd_table::{FdError, FdTable, MAX_FDS};
pub use pipe::{Pipe, PipeRead, PipeWrite, PIPE_BUF, PIPE_CAPACITY};
