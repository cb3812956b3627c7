//! Repository hygiene that reviews would otherwise catch: module docs and profile definitions.

use std::path::{Path, PathBuf};

fn files(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, extension, out);
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut sources = Vec::new();
    for dir in ["src", "tests", "benches"] {
        if root().join(dir).is_dir() {
            files(&root().join(dir), "rs", &mut sources);
        }
    }
    let missing: Vec<String> = sources
        .iter()
        .filter(|path| !std::fs::read_to_string(path).unwrap().starts_with("//!"))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:?}"
    );
}

/// Every Portico extension an adapter emits is defined by a StructureDefinition in profiles/.
#[test]
fn every_extension_used_by_an_adapter_is_defined_in_profiles() {
    let mut definitions = Vec::new();
    files(&root().join("profiles"), "json", &mut definitions);
    let urls: Vec<String> = definitions
        .iter()
        .map(|path| {
            let definition: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            assert_eq!(
                definition["resourceType"],
                "StructureDefinition",
                "{}",
                path.display()
            );
            assert_eq!(definition["fhirVersion"], "4.0.1", "{}", path.display());
            definition["url"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut mappings = Vec::new();
    files(&root().join("adapters"), "toml", &mut mappings);
    let prefix = "https://portico.health/fhir/StructureDefinition/";
    let mut used = 0;
    for mapping in mappings {
        let text = std::fs::read_to_string(&mapping).unwrap();
        for (position, _) in text.match_indices(prefix) {
            let url: String = text[position..].chars().take_while(|c| *c != '"').collect();
            assert!(
                urls.contains(&url),
                "{} uses {url}, which profiles/ does not define",
                mapping.display()
            );
            used += 1;
        }
    }
    assert!(
        used >= 3,
        "the openemr adapter shows custom fields as extensions"
    );
}
