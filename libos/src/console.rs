//! The console: the board's PL011 UART (through Arm's `arm-pl011-uart` driver), `print!`/`println!`,
//! and the `log` facade.
//!
//! [`init`] configures the UART itself rather than trusting what the firmware left: on a Pi it
//! first gives GPIO14/15 to the UART (ALT0, pulls off), then waits for the UART to finish sending,
//! disables it, programs the baud-rate divisors for [`BAUD`] from the board's UART clock, 8N1 with
//! the FIFOs on, masks and clears its interrupts, and enables it (PL011 TRM, DDI 0183G, 3.3.6
//! "Integer and fractional baud rate registers" and 3.3.8 "Control register": disable, wait while
//! BUSY, reprogram, enable). A full TX FIFO never hangs the kernel: a byte waits at most
//! [`TX_WAIT_NS`], then it is dropped and counted ([`dropped_bytes`]), and while the UART stays
//! stuck further bytes are dropped without waiting. Output can instead be captured into a buffer,
//! which the boot-time tests use to check formatting end to end.
//!
//! Input is polled: [`input_ready`] says whether received bytes wait in the UART's RX FIFO and
//! [`read_available`] takes them, never waiting for more. Both may be called from an exception
//! handler (a system call, an interrupt): they take the console's lock only if it is free, and
//! otherwise read the receive side through a driver of their own (see [`read_available`]).

use alloc::string::String;
use arm_pl011_uart::{DataBits, LineConfig, PL011Registers, Parity, StopBits, Uart};
use core::fmt::{self, Write};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;

/// The console's baud rate (8N1).
pub const BAUD: u32 = 115_200;
/// How long one byte may wait for room in the TX FIFO: about 40 characters' time at [`BAUD`], more
/// than a draining 32-byte FIFO needs.
pub const TX_WAIT_NS: u64 = 4_000_000;

static DROPPED: AtomicU64 = AtomicU64::new(0);
static TX_STUCK: AtomicBool = AtomicBool::new(false);

/// Bytes dropped because the UART's TX FIFO stayed full.
pub fn dropped_bytes() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Waits until `full` says the TX FIFO has room, for at most `budget_ns` by the clock `now_ns`;
/// returns whether the byte may be written. A byte that times out is dropped and counted in
/// `dropped`, and `stuck` is set: until `full` clears again, later bytes are dropped at once
/// instead of each waiting out the budget.
pub fn wait_for_room(
    full: impl Fn() -> bool,
    now_ns: impl Fn() -> u64,
    budget_ns: u64,
    stuck: &AtomicBool,
    dropped: &AtomicU64,
) -> bool {
    if full() {
        if stuck.load(Ordering::Relaxed) {
            dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let start = now_ns();
        while full() {
            if now_ns().wrapping_sub(start) >= budget_ns {
                stuck.store(true, Ordering::Relaxed);
                dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            core::hint::spin_loop();
        }
    }
    stuck.store(false, Ordering::Relaxed);
    true
}

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
    // image, and only the console owns it: one `Uart` behind `CONSOLE`'s lock; the panic path and
    // the input path, when that lock is held by the code they interrupted (which cannot run until
    // they return, on this single core), use a short-lived second one instead of waiting.
    let regs = unsafe { UniqueMmioPointer::new(NonNull::new(va as *mut PL011Registers).unwrap()) };
    Uart::new(regs)
}

/// Brings the console up: pins, then the UART (see the module docs). Called first thing by the
/// runtime, before anything can fail.
pub fn init() {
    if let Some((base, kind)) = arch::BOARD.gpio {
        // SAFETY: the board's GPIO block, mapped Device by the boot map for the image's life; only
        // the console touches it, once, here.
        let gpio = unsafe { &*(arch::board::phys_to_virt(base) as *const arch::gpio::Registers) };
        // 150 cycles of the slowest core clock the Pi runs at are well under a microsecond.
        arch::gpio::route_uart0(gpio, kind, || arch::timer::spin_ns(1_000));
    }
    let mut uart = make_uart();
    // Let whatever the firmware was sending go out before the line is reprogrammed.
    wait_idle(&uart);
    let line = LineConfig {
        data_bits: DataBits::Bits8,
        parity: Parity::None,
        stop_bits: StopBits::One,
    };
    // Only fails for a clock too slow for the baud rate, which no board has: keep the firmware's
    // settings then.
    if uart.enable(line, BAUD, arch::BOARD.uart_clock_hz).is_ok() {
        uart.set_interrupt_masks(arm_pl011_uart::Interrupts::empty());
        uart.clear_interrupts(arm_pl011_uart::Interrupts::all());
    }
    CONSOLE.lock().uart = Some(uart);
}

/// Waits (at most a few milliseconds) until the UART has sent everything queued.
pub fn flush() {
    wait_idle(&make_uart());
}

fn wait_idle(uart: &Uart<'static>) {
    let start = arch::timer::now_ns();
    while uart.is_busy() && arch::timer::now_ns() - start < 10 * TX_WAIT_NS {}
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
                    send(uart, b'\r');
                }
                send(uart, b);
            }
        }
        Ok(())
    }
}

fn send(uart: &mut Uart<'static>, b: u8) {
    if wait_for_room(
        || uart.is_tx_fifo_full(),
        arch::timer::now_ns,
        TX_WAIT_NS,
        &TX_STUCK,
        &DROPPED,
    ) {
        uart.write_word(b);
    }
}

/// Writes raw bytes to the console (a user program's output): `\n` becomes `\r\n` on the UART as
/// for text; bytes that are not UTF-8 are written as they are (a capture keeps them lossily).
pub fn write_bytes(bytes: &[u8]) {
    let mut c = CONSOLE.lock();
    if let Some(buf) = c.capture.as_mut() {
        buf.push_str(&String::from_utf8_lossy(bytes));
        return;
    }
    if let Some(uart) = c.uart.as_mut() {
        for &b in bytes {
            if b == b'\n' {
                send(uart, b'\r');
            }
            send(uart, b);
        }
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

static RX_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Received bytes dropped because the UART flagged them (break, parity or framing error, or an
/// overrun: the RX FIFO was full and input was lost).
pub fn input_errors() -> u64 {
    RX_ERRORS.load(Ordering::Relaxed)
}

/// Runs `f` on the console's UART for input: through `CONSOLE` when its lock is free, else (the
/// lock's holder is the code an exception interrupted, suspended until the handler returns) through
/// a second driver that only reads the receive side, `UARTFR` and `UARTDR`, which the holder's
/// transmit path never reads, so it finds the UART as it left it.
fn with_input<R>(f: impl FnOnce(&mut Uart<'static>) -> R) -> R {
    if let Some(mut c) = CONSOLE.try_lock() {
        if let Some(uart) = c.uart.as_mut() {
            return f(uart);
        }
    }
    f(&mut make_uart())
}

/// Whether received bytes wait in the UART's RX FIFO. Never waits; safe in an exception handler.
pub fn input_ready() -> bool {
    with_input(|uart| !uart.is_rx_fifo_empty())
}

/// Moves the bytes the UART has already received into `buf` (at most `buf.len()`); returns how
/// many. Never waits for input: 0 when none is there. Bytes the UART flagged as damaged are
/// dropped and counted ([`input_errors`]). Safe in an exception handler: it never waits for the
/// console's lock.
pub fn read_available(buf: &mut [u8]) -> usize {
    if buf.is_empty() {
        return 0;
    }
    with_input(|uart| {
        let mut n = 0;
        while n < buf.len() {
            match uart.read_word() {
                Ok(Some(b)) => {
                    buf[n] = b;
                    n += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    RX_ERRORS.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        n
    })
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
        /// The console programmed the PL011 itself: baud divisors for 115200 from the board's
        /// UART clock (IBRD/FBRD, computed by hand here), 8N1 with FIFOs (LCR_H 0x70), UART, TX
        /// and RX enabled, interrupts masked.
        fn uart_is_programmed_for_115200_8n1() {
            let base = arch::board::phys_to_virt(arch::BOARD.uart_base);
            // SAFETY: reads of the PL011's registers, mapped Device; reading has no side effect.
            let reg = |off: usize| unsafe { core::ptr::read_volatile((base + off) as *const u32) };
            let (ibrd, fbrd) = match arch::BOARD.uart_clock_hz {
                // 48 MHz / (16 * 115200) = 26.0417: 26 and round(0.0417 * 64) = 3.
                48_000_000 => (26, 3),
                // 24 MHz / (16 * 115200) = 13.0208: 13 and round(0.0208 * 64) = 1.
                24_000_000 => (13, 1),
                other => panic!("no hand-computed divisors for a {other} Hz UART clock"),
            };
            assert_eq!((reg(0x24), reg(0x28)), (ibrd, fbrd), "UARTIBRD, UARTFBRD");
            assert_eq!(reg(0x2C), 0x70, "UARTLCR_H: WLEN 8 bits, FIFOs enabled, no parity, 1 stop bit");
            assert_eq!(reg(0x30) & 0x301, 0x301, "UARTCR: UARTEN, TXE, RXE");
            assert_eq!(reg(0x38), 0, "UARTIMSC: all interrupts masked");
        }
    }

    crate::boot_test! {
        /// On a Pi the UART's pins carry the UART: GPIO14/15 on function ALT0.
        fn uart_pins_are_routed_to_the_pl011() {
            let Some((base, _)) = arch::BOARD.gpio else {
                return;
            };
            // SAFETY: the board's GPIO block, mapped Device; only read here.
            let gpio = unsafe { &*(arch::board::phys_to_virt(base) as *const arch::gpio::Registers) };
            for pin in arch::gpio::UART0_PINS {
                assert_eq!(arch::gpio::function(gpio, pin), arch::gpio::Function::Alt0 as u32, "GPIO{pin}");
            }
        }
    }

    crate::boot_test! {
        /// A TX FIFO that stays full costs one bounded wait, then bytes are dropped at once and
        /// counted; once there is room again bytes go out and the stuck state ends.
        fn a_full_tx_fifo_drops_bytes_instead_of_hanging() {
            use super::wait_for_room;
            use core::sync::atomic::{AtomicBool, AtomicU64};
            let (stuck, dropped) = (AtomicBool::new(false), AtomicU64::new(0));
            let now = arch::timer::now_ns;
            let budget = 2_000_000;
            let t0 = now();
            assert!(!wait_for_room(|| true, now, budget, &stuck, &dropped));
            let waited = now() - t0;
            assert!(waited >= budget, "gave up after {waited} ns, before the budget");
            assert_eq!(dropped.load(core::sync::atomic::Ordering::Relaxed), 1);
            // While stuck, each byte looks at the FIFO once and is dropped: no waiting (counted in
            // polls, not time, so a loaded host cannot make the check flaky).
            let polls = core::cell::Cell::new(0u32);
            let full_and_counted = || {
                polls.set(polls.get() + 1);
                true
            };
            for _ in 0..100 {
                assert!(!wait_for_room(full_and_counted, now, budget, &stuck, &dropped));
            }
            assert_eq!(polls.get(), 100, "a stuck UART must not make every byte wait");
            assert_eq!(dropped.load(core::sync::atomic::Ordering::Relaxed), 101);
            assert!(wait_for_room(|| false, now, budget, &stuck, &dropped));
            assert!(!stuck.load(core::sync::atomic::Ordering::Relaxed));
            // A FIFO that drains (here after 49 polls) within the budget loses nothing; the budget
            // is generous so that a loaded host cannot make it run out.
            let calls = core::cell::Cell::new(0);
            let full = || {
                calls.set(calls.get() + 1);
                calls.get() < 50
            };
            assert!(wait_for_room(full, now, 1_000_000_000, &stuck, &dropped));
            assert_eq!(dropped.load(core::sync::atomic::Ordering::Relaxed), 101);
            assert_eq!(super::dropped_bytes(), 0, "the real console dropped nothing");
        }
    }

    crate::boot_test! {
        /// Reading input never waits: with nothing sent (boot tests run with no input unless
        /// `console_input=` is on the command line) there is nothing ready and a read returns 0,
        /// also while the console's lock is held, as by a writer an exception interrupted.
        fn console_input_never_waits() {
            if crate::runtime::boot_config().bootargs.get("console_input").is_some() {
                return;
            }
            let mut buf = [0u8; 64];
            assert!(!super::input_ready());
            assert_eq!(super::read_available(&mut buf), 0);
            assert_eq!(super::read_available(&mut []), 0);
            let held = super::CONSOLE.lock();
            assert!(!super::input_ready());
            assert_eq!(super::read_available(&mut buf), 0);
            drop(held);
        }
    }

    crate::boot_test! {
        /// With `console_input=N` on the command line (the host test `console_input` sends N bytes
        /// on the serial line once this test says it is ready), the bytes arrive in order through
        /// `read_available`, more than the RX FIFO holds at once, and are echoed back. Without it
        /// there is nothing to receive and the test does nothing.
        #[timeout_ms = 60000]
        fn console_input_arrives() {
            let Some(n) = crate::runtime::boot_config().bootargs.get("console_input") else {
                return;
            };
            let n: usize = n.parse().expect("console_input=<number of bytes>");
            crate::println!("console input: ready for {n} bytes");
            let deadline = arch::timer::now_ns() + 30_000_000_000;
            while !super::input_ready() {
                assert!(arch::timer::now_ns() < deadline, "no input arrived");
                core::hint::spin_loop();
            }
            let mut got = alloc::vec![0u8; n];
            let mut len = 0;
            while len < n && arch::timer::now_ns() < deadline {
                len += super::read_available(&mut got[len..]);
            }
            let text = alloc::string::String::from_utf8_lossy(&got[..len]);
            crate::println!("console input: received {len} bytes: {text}");
            assert_eq!(len, n, "all bytes arrived");
            assert_eq!(super::input_errors(), 0);
            assert!(!super::input_ready(), "nothing more than was sent");
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
