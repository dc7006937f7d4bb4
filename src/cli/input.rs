//! Where `preview` reads manifests from, as `kubectl apply -f` does: each `-f` is a file, `-`
//! (standard input) or a directory; a directory gives every `.yaml`, `.yml` and `.json` file
//! in it, sorted, and with `-R` those of its subdirectories too, in path order.

use std::path::{Path, PathBuf};

/// The extensions kubectl reads from a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// One source of manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Stdin => f.write_str("standard input"),
            Input::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Input {
    pub fn read(&self) -> Result<String, String> {
        match self {
            Input::Stdin => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| format!("reading standard input: {e}"))?;
                Ok(s)
            }
            Input::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))
            }
        }
    }
}

/// Every input the arguments name, in order. A directory with no manifest in it is an error,
/// as it is for kubectl: nothing is dropped silently.
pub fn expand(args: &[String], recursive: bool) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for arg in args {
        if arg == "-" {
            out.push(Input::Stdin);
            continue;
        }
        let path = Path::new(arg);
        let meta = std::fs::metadata(path).map_err(|e| format!("{arg}: {e}"))?;
        if !meta.is_dir() {
            out.push(Input::File(path.to_owned()));
            continue;
        }
        let mut files = Vec::new();
        walk(path, recursive, &mut files)?;
        if files.is_empty() {
            return Err(format!(
                "{arg}: no .yaml, .yml or .json file in this directory{}",
                if recursive {
                    " or below"
                } else {
                    " (-R reads subdirectories)"
                }
            ));
        }
        files.sort();
        out.extend(files.into_iter().map(Input::File));
    }
    Ok(out)
}

fn walk(dir: &Path, recursive: bool, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        // Follow symlinks, as kubectl does for the files it is given.
        let is_dir = std::fs::metadata(&path)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if is_dir {
            if recursive {
                walk(&path, recursive, files)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_expand_sorted_and_recurse_only_with_r() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "b.yaml",
            "a.json",
            "c.txt",
            "sub/z.yml",
            "sub/deeper/y.yaml",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "{}").unwrap();
        }
        let names = |inputs: Vec<Input>| -> Vec<String> {
            inputs
                .into_iter()
                .map(|i| match i {
                    Input::File(p) => p.strip_prefix(d).unwrap().display().to_string(),
                    Input::Stdin => "-".into(),
                })
                .collect()
        };
        let arg = d.display().to_string();
        assert_eq!(
            names(expand(std::slice::from_ref(&arg), false).unwrap()),
            ["a.json", "b.yaml"]
        );
        assert_eq!(
            names(expand(&[arg.clone(), "-".into()], true).unwrap()),
            ["a.json", "b.yaml", "sub/deeper/y.yaml", "sub/z.yml", "-"]
        );
        let empty = tempfile::tempdir().unwrap();
        let err = expand(&[empty.path().display().to_string()], false).unwrap_err();
        assert!(err.contains("no .yaml, .yml or .json file"), "{err}");
        assert!(expand(&["/nonexistent/x.yaml".into()], false).is_err());
    }
}
