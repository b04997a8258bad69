//! Discovery of the apps: every directory under `apps/` with a `Cargo.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// The cargo package name (what `-p` takes).
    pub package: String,
    /// `apps/<dir>`.
    pub dir: PathBuf,
}

/// All apps, sorted by package name.
pub fn list(root: &Path) -> Vec<App> {
    let mut apps = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("apps")) else {
        return apps;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let manifest = dir.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let package = package_name(&text)
            .unwrap_or_else(|| dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
        apps.push(App { package, dir });
    }
    apps.sort_by(|a, b| a.package.cmp(&b.package));
    apps
}

/// Finds an app by package name or directory name.
pub fn find(root: &Path, name: &str) -> Result<App> {
    let apps = list(root);
    if let Some(app) = apps
        .iter()
        .find(|a| a.package == name || a.dir.file_name().is_some_and(|d| d == name))
    {
        return Ok(app.clone());
    }
    let valid: Vec<&str> = apps.iter().map(|a| a.package.as_str()).collect();
    if valid.is_empty() {
        bail!("unknown app '{name}': no apps found (no apps/*/Cargo.toml)");
    }
    bail!("unknown app '{name}'; valid apps: {}", valid.join(", "))
}

/// The `name` of the `[package]` table of a manifest (tiny TOML subset).
pub fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        if let Some(rest) = line.strip_prefix("name") {
            let rest = rest.trim_start();
            if let Some(value) = rest.strip_prefix('=') {
                let value = value.trim().trim_matches('"').trim_matches('\'');
                return Some(value.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_name_is_read_from_package_table() {
        let m = "[dependencies]\nname = \"nope\"\n\n[package]\nname = \"hello\"\nversion.workspace = true\n";
        assert_eq!(package_name(m).as_deref(), Some("hello"));
        assert_eq!(package_name("[lib]\nname = \"x\"\n"), None);
    }

    #[test]
    fn unknown_app_lists_valid_ones() {
        let root = std::env::temp_dir().join(format!("xtask-apps-{}", std::process::id()));
        for (dir, name) in [("a", "alpha"), ("b", "beta")] {
            std::fs::create_dir_all(root.join("apps").join(dir)).unwrap();
            std::fs::write(
                root.join("apps").join(dir).join("Cargo.toml"),
                format!("[package]\nname = \"{name}\"\n"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(root.join("apps/not-an-app")).unwrap();
        assert_eq!(find(&root, "beta").unwrap().package, "beta");
        assert_eq!(find(&root, "a").unwrap().package, "alpha");
        let e = find(&root, "gamma").unwrap_err().to_string();
        assert!(e.contains("valid apps: alpha, beta"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
