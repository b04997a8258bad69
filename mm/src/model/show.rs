//! How descriptors and table positions are described in the model's panic messages.

use crate::{Descriptor, DescriptorKind, Level};

pub(super) fn describe_parent(parent: Option<(u64, usize)>) -> String {
    match parent {
        Some((t, i)) => format!("at {t:#x}[{i}]"),
        None => "(root)".to_string(),
    }
}

fn kind_str(level: Level, d: Descriptor) -> String {
    match d.kind(level) {
        DescriptorKind::Invalid => "invalid".into(),
        DescriptorKind::Table { next } => format!("table -> {next:?}"),
        DescriptorKind::Block { oa } => format!("block {oa:?}"),
        DescriptorKind::Page { oa } => format!("page {oa:?}"),
    }
}

/// `0x… (kind)` for messages.
pub(crate) fn show(level: Level, d: Descriptor) -> String {
    format!("{:#018x} ({})", d.0, kind_str(level, d))
}
