//! The adapter engine: reads an adapter folder (data, see adapters/README.md), validates it, and
//! maps legacy rows to FHIR resources.
//!
//! Architecture invariant: onboarding a PMS is writing files in `adapters/`; nothing here knows a
//! particular PMS.

pub mod format;
pub mod map;
pub mod model;
pub mod tree;
pub mod validate;

use std::path::{Path, PathBuf};

pub use self::model::Adapter;
pub use self::validate::AdapterIssue;
use self::validate::ParsedMapping;

const MANIFEST: &str = "adapter.toml";
/// The optional file of subscription topics beside the manifest.
const TOPICS: &str = "topics.toml";
/// The optional file of data-quality rules beside the manifest.
const QUALITY: &str = "quality.toml";

/// Reads, parses and validates the adapter in `dir`. Errors list every problem found.
pub fn load(dir: &Path) -> Result<Adapter, Vec<AdapterIssue>> {
    let manifest_path = dir.join(MANIFEST);
    let mut issues = Vec::new();
    let manifest = read_toml::<format::ManifestFile>(&manifest_path, &mut issues);
    let mut mappings = Vec::new();
    match mapping_files(dir) {
        Ok(files) => {
            for file in files {
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_owned();
                if let Some(spec) = read_toml::<format::MappingFile>(&file, &mut issues) {
                    mappings.push(ParsedMapping { file, name, spec });
                }
            }
        }
        Err(error) => issues.push(AdapterIssue {
            file: dir.to_owned(),
            path: String::new(),
            message: format!("cannot list the adapter folder: {error}"),
        }),
    }
    if mappings.is_empty() && issues.is_empty() {
        issues.push(AdapterIssue {
            file: dir.to_owned(),
            path: String::new(),
            message: "no mapping files (<ResourceType>.toml) found".into(),
        });
    }
    let Some(manifest) = manifest else {
        return Err(issues);
    };
    let topics_path = dir.join(TOPICS);
    let topics = if topics_path.exists() {
        read_toml::<format::TopicsFile>(&topics_path, &mut issues)
    } else {
        None
    };
    let quality_path = dir.join(QUALITY);
    let quality = if quality_path.exists() {
        read_toml::<format::QualityFile>(&quality_path, &mut issues)
    } else {
        None
    };
    match validate::validate(dir, &manifest_path, manifest, mappings) {
        Ok(mut adapter) if issues.is_empty() => {
            if let Some(topics) = topics {
                adapter.topics = validate::validate_topics(&adapter, &topics_path, topics)?;
            }
            if let Some(quality) = quality {
                adapter.quality = validate::validate_quality(&adapter, &quality_path, quality)?;
            }
            Ok(adapter)
        }
        Ok(_) => Err(issues),
        Err(more) => {
            issues.extend(more);
            Err(issues)
        }
    }
}

/// Mapping files are the `*.toml` files beside the manifest whose name starts with a capital
/// letter (a FHIR resource type), in name order so that branch order is stable.
fn mapping_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "toml")
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_uppercase()))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    issues: &mut Vec<AdapterIssue>,
) -> Option<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            issues.push(AdapterIssue {
                file: path.to_owned(),
                path: String::new(),
                message: format!("cannot read: {error}"),
            });
            return None;
        }
    };
    match toml::from_str(&text) {
        Ok(value) => Some(value),
        Err(error) => {
            let location = error
                .span()
                .map(|span| {
                    let line = text[..span.start].lines().count().max(1);
                    format!("line {line}")
                })
                .unwrap_or_default();
            issues.push(AdapterIssue {
                file: path.to_owned(),
                path: location,
                message: error.message().trim().to_owned(),
            });
            None
        }
    }
}
