//! Reading a configuration from disk: a ConfigMap manifest, or a directory holding its keys
//! as files (a ConfigMap mounted by kubelet). `serve` watches these files
//! ([`super::file_watch`]); `validate`, `preview` and `check` read them once.

use crate::engine::config::{
    Config, ConfigError, RawConfig, SETTINGS_KEY, Source, TEMPLATE_KEY, TEMPLATE_SUFFIX,
    parse_configmap, template_name,
};
use std::path::PathBuf;

/// Loads a configuration from its source, as `serve`, `preview` and `validate` all do.
pub fn load(source: &Source, own_namespace: &str) -> Result<Config, ConfigError> {
    Config::from_raw(&read(source)?, own_namespace)
}

/// The files a directory source is read from, sorted: `config.yaml` and every template.
/// A ConfigMap mounted by kubelet has each key as a symlink into `..data`; the `..`
/// entries themselves are skipped.
pub fn files(source: &Source) -> Vec<PathBuf> {
    match source {
        Source::Embedded | Source::ConfigMap { .. } => Vec::new(),
        Source::Path(p) if p.is_dir() => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_owned();
                    let wanted = name == SETTINGS_KEY
                        || (template_name(&name).is_some() && !name.starts_with('.'));
                    wanted.then(|| p.join(name))
                })
                .collect();
            files.sort();
            files
        }
        Source::Path(p) => vec![p.clone()],
    }
}

/// Reads the keys. A directory is read through its symlinks, as kubelet lays them out.
pub fn read(source: &Source) -> Result<RawConfig, ConfigError> {
    match source {
        Source::Embedded => Ok(RawConfig::embedded()),
        Source::Path(p) if p.is_dir() => {
            let mut raw = RawConfig::default();
            for file in files(source) {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| ConfigError::one(format!("{}: {e}", file.display())))?;
                let key = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                raw.add_key(key, text);
            }
            if raw.templates.is_empty() {
                return Err(ConfigError::one(format!(
                    "{}: no {TEMPLATE_KEY} or NAME{TEMPLATE_SUFFIX} in this directory",
                    p.display()
                )));
            }
            Ok(raw)
        }
        Source::Path(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError::one(format!("{}: {e}", p.display())))?;
            parse_configmap(&text).map_err(|e| ConfigError::one(format!("{}: {e}", p.display())))
        }
        Source::ConfigMap { .. } => Err(ConfigError::one(format!(
            "{source}: a ConfigMap in the cluster is read through the API (serve, check)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_source_reads_every_template_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mutate.yaml"),
            "volumes: [{name: a, emptyDir: {}}]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("apm.mutate.yaml"),
            "volumes: [{name: b, emptyDir: {}}]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let source = Source::Path(dir.path().to_owned());
        assert_eq!(files(&source).len(), 2);
        let c = load(&source, "ns").unwrap();
        assert_eq!(c.templates.keys().collect::<Vec<_>>(), ["apm", "default"]);
    }
}
