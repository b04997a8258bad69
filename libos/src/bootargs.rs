//! The kernel command line (`/chosen/bootargs`): whitespace-separated `key=value` words.
//!
//! Recognised keys: `log=<off|error|warn|info|debug|trace>` and `tests=<substr>[,<substr>...]`
//! (run only boot tests whose name contains one of the substrings). Unknown words are kept and
//! can be read by apps with [`BootArgs::get`].

use alloc::string::String;
use alloc::vec::Vec;

/// Parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootArgs {
    raw: String,
}

impl BootArgs {
    /// Wraps a command line.
    pub fn new(raw: &str) -> Self {
        BootArgs {
            raw: String::from(raw.trim_matches(char::from(0)).trim()),
        }
    }

    /// The command line as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Value of the last `key=value` word with this key (`key` alone yields `Some("")`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw
            .split_ascii_whitespace()
            .rev()
            .find_map(|w| match w.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                None if w == key => Some(""),
                _ => None,
            })
    }

    /// The log level asked for, if any. An unknown value is reported as `Err` with the value.
    pub fn log_level(&self) -> Option<Result<log::LevelFilter, &str>> {
        self.get("log")
            .map(|v| v.parse::<log::LevelFilter>().map_err(|_| v))
    }

    /// Boot-test filters (`tests=a,b`): empty when all tests run.
    pub fn test_filters(&self) -> Vec<&str> {
        self.get("tests")
            .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// True when `name` passes the filters (no filter passes everything).
pub fn filter_matches(filters: &[&str], name: &str) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_last_wins() {
        let a = BootArgs::new("  log=debug tests=alloc,heap quiet log=warn\0");
        assert_eq!(a.get("log"), Some("warn"));
        assert_eq!(a.get("quiet"), Some(""));
        assert_eq!(a.get("missing"), None);
        assert_eq!(a.log_level(), Some(Ok(log::LevelFilter::Warn)));
        assert_eq!(a.test_filters(), ["alloc", "heap"]);
    }

    #[test]
    fn bad_log_level_is_reported() {
        assert_eq!(BootArgs::new("log=loud").log_level(), Some(Err("loud")));
        assert_eq!(BootArgs::new("").log_level(), None);
    }

    #[test]
    fn filters() {
        assert!(filter_matches(&[], "anything"));
        assert!(filter_matches(&["heap"], "libos::memory::heap_grows"));
        assert!(!filter_matches(&["timer", "dt"], "libos::memory::heap_grows"));
    }
}
