//! The console: the board's PL011 UART (through Arm's `arm-pl011-uart` driver), `print!`/`println!`,
//! and the `log` facade.
//!
//! The UART is used as the firmware (or QEMU) left it configured; Tessera does not reprogram the
//! baud rate, so a real Pi keeps `config.txt`'s settings. Output can instead be captured into a
//! buffer, which the boot-time tests use to check formatting end to end.

use alloc::string::String;
use arm_pl011_uart::{PL011Registers, Uart};
use core::fmt::{self, Write};
use core::ptr::NonNull;
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;

struct Console {
    uart: Option<Uart<'static>>,
    capture: Option<String>,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    uart: None,
    capture: None,
});

fn make_uart() -> Uart<'static> {
    let va = arch::board::phys_to_virt(arch::BOARD.uart_base);
    // SAFETY: the board's PL011 is mapped as Device memory by the boot map for the whole life of the
    // image, and only the console owns it (one `Uart`, behind `CONSOLE`'s lock; the panic path
    // replaces it rather than aliasing it).
    let regs = unsafe { UniqueMmioPointer::new(NonNull::new(va as *mut PL011Registers).unwrap()) };
    Uart::new(regs)
}

/// Brings the console up. Called first thing by the runtime, before anything can fail.
pub fn init() {
    CONSOLE.lock().uart = Some(make_uart());
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(buf) = self.capture.as_mut() {
            buf.push_str(s);
            return Ok(());
        }
        if let Some(uart) = self.uart.as_mut() {
            for b in s.bytes() {
                if b == b'\n' {
                    uart.write_char('\r')?;
                }
                while uart.is_tx_fifo_full() {}
                uart.write_word(b);
            }
        }
        Ok(())
    }
}

/// Writes formatted text to the console (used by the macros).
pub fn write_fmt(args: fmt::Arguments) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Last-resort writer for panics and fatal exceptions: if the console lock is held (the failure
/// happened while printing), take the UART over with a fresh driver instead of deadlocking.
pub fn emergency_write_fmt(args: fmt::Arguments) {
    if let Some(mut c) = CONSOLE.try_lock() {
        let _ = c.write_fmt(args);
        return;
    }
    let mut c = Console {
        uart: Some(make_uart()),
        capture: None,
    };
    let _ = c.write_fmt(args);
}

/// Runs `f` with console output diverted into a buffer; returns what was printed.
pub fn capture<F: FnOnce()>(f: F) -> String {
    CONSOLE.lock().capture = Some(String::new());
    f();
    CONSOLE.lock().capture.take().unwrap_or_default()
}

/// True when the PL011 answers with a valid PrimeCell identification.
pub fn uart_identified() -> bool {
    make_uart().read_identification().is_valid()
}

/// `print!` to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let us = arch::timer::now_ns() / 1000;
            write_fmt(format_args!(
                "[{:>6}.{:03}] {:<5} {}: {}\n",
                us / 1000,
                us % 1000,
                record.level(),
                record.target(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Default log level: `TESSERA_LOG` at build time, else `info`.
pub fn default_level() -> log::LevelFilter {
    option_env!("TESSERA_LOG")
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Info)
}

/// Installs the logger at `level`.
pub fn init_logging(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[cfg(feature = "boot-tests")]
mod boot_tests {
    crate::boot_test! {
        /// The console's UART is a PL011: its PrimeCell identification registers read back valid.
        fn uart_is_a_pl011() {
            assert!(super::uart_identified());
        }
    }

    crate::boot_test! {
        /// `println!` and the `log` facade format through the console (captured).
        fn println_and_log_reach_the_console() {
            let out = super::capture(|| {
                crate::println!("value={} hex={:#x}", 42, 255);
                let level = log::max_level();
                log::set_max_level(log::LevelFilter::Info);
                log::info!(target: "probe", "logged {}", "line");
                log::debug!(target: "probe", "filtered out");
                log::set_max_level(level);
            });
            assert!(out.contains("value=42 hex=0xff\n"), "{out:?}");
            assert!(out.contains("INFO  probe: logged line\n"), "{out:?}");
            assert!(!out.contains("filtered out"), "{out:?}");
        }
    }
}
