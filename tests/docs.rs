//! The user's manual cannot go stale: the command examples in README.md and docs/*.md run
//! against the real binary (trycmd: a ```console block's `$ command` lines and the output
//! under them), and every relative link between the documents points at a file that exists.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, SECURITY.md, BENCHMARKS.md and every docs/*.md.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = ["README.md", "SECURITY.md", "BENCHMARKS.md"]
        .iter()
        .map(|f| root().join(f))
        .collect();
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ lists").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

#[test]
fn command_examples_in_the_docs_run_as_shown() {
    let cases = trycmd::TestCases::new();
    cases.register_bin(
        "sidecar-injector",
        trycmd::cargo::cargo_bin!("sidecar-injector"),
    );
    for doc in documents() {
        cases.case(doc);
    }
    cases.run();
}

/// The targets of `[text](target)` links that are neither URLs nor in-page anchors, outside
/// code blocks and code spans.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans, so `[a](b)` written as code is not a link.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if !target.contains("://") && !target.starts_with('#') && !target.starts_with("mailto:")
            {
                links.push(target.to_owned());
            }
            rest = &rest[end..];
        }
    }
    links
}

/// The `#anchor`s GitHub makes of a document's headings.
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        out.push(slug);
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("document reads");
        let dir = doc.parent().expect("a document has a folder");
        for link in relative_links(&text) {
            checked += 1;
            let (path, anchor) = match link.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.as_str(), None),
            };
            let target = dir.join(path);
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", doc.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    broken.push(format!("{}: {link}: no such heading", doc.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 20,
        "only {checked} links found: is the parser right?"
    );
}

#[test]
fn the_link_parser_finds_links_and_skips_code() {
    let text = "see [a](docs/a.md) and [b](https://x.io) and `[c](nope.md)`\n```\n[d](nope.md)\n```\n[e](b.md#part)\n";
    assert_eq!(relative_links(text), ["docs/a.md", "b.md#part"]);
    assert_eq!(
        anchors("# Pods that are not injected: Windows, Pod Security\n"),
        ["pods-that-are-not-injected-windows-pod-security"]
    );
}

/// The shell lines of the ```sh blocks of a document.
fn shell_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        match line.trim() {
            "```sh" => inside = true,
            "```" => inside = false,
            l if inside => out.push(l.to_owned()),
            _ => {}
        }
    }
    out
}

/// Issue 33: the README's `--from-literal=api-token=...` made a token `...`. Every token the
/// docs create is a placeholder a shell refuses as is (`<...>` unquoted is a redirection
/// with no file), never one it would store.
#[test]
fn the_token_in_the_docs_is_a_placeholder_no_shell_stores() {
    let mut seen = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for line in shell_lines(&text) {
            let Some((_, value)) = line.split_once("--from-literal=api-token=") else {
                continue;
            };
            seen += 1;
            let value = value.split_whitespace().next().unwrap_or_default();
            assert!(
                value.starts_with('<') && value.ends_with('>') && value.len() > 2,
                "{}: {line}: the token must be a <placeholder>",
                doc.display()
            );
        }
    }
    assert!(
        seen >= 2,
        "the README and docs/install.md create the token Secret"
    );
}

/// Issue 33: the README says how to get the CLI. `cargo install --locked --path .` installs
/// this package's binary `sidecar-injector` from the committed Cargo.lock.
#[test]
fn the_readme_installs_the_cli_from_this_package() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = shell_lines(&readme);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cargo install --locked --path . ")),
        "{lines:?}"
    );
    assert!(
        root().join("Cargo.lock").is_file(),
        "--locked needs Cargo.lock"
    );
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("name = \"sidecar-injector\""),
        "the package (and so its binary) is sidecar-injector"
    );
    assert!(
        readme.contains("$ sidecar-injector --version"),
        "and shows the installed binary answering (run by trycmd above)"
    );
}
