//! `imageRepository`: every injected image moves under one repository, with no exception.
//!
//! The registry host of the reference is replaced; path, tag and digest stay. A Docker Hub
//! reference gets its implicit `library/` (`busybox:1.36` -> `REPO/library/busybox:1.36`).

/// Docker Hub's names for itself; an image under them has no registry of its own to keep.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Checks the repository a config names: a host (with optional port) and optional path.
pub fn validate_repository(repo: &str) -> Result<(), String> {
    let trimmed = repo.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(format!(
            "{repo:?} is not a repository (want HOST[:PORT][/PATH])"
        ));
    }
    if trimmed.contains("://") {
        return Err(format!(
            "{repo:?} has a URL scheme; write the registry host without it"
        ));
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(format!(
            "{repo:?} is not a repository (want HOST[:PORT][/PATH])"
        ));
    }
    let mut parts = trimmed.split('/');
    let host = parts.next().unwrap_or_default();
    let port_is_tag = host
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.is_empty() || port.contains(|c: char| !c.is_ascii_digit()));
    if port_is_tag || parts.any(|p| p.is_empty() || p.contains(':')) {
        return Err(format!(
            "{repo:?} is not a repository (want HOST[:PORT][/PATH], with no tag)"
        ));
    }
    Ok(())
}

/// Moves `image` under `repo`. An image already under `repo` is left as it is, so rewriting
/// is idempotent.
pub fn rewrite(image: &str, repo: &str) -> String {
    let repo = repo.trim_end_matches('/');
    if image.starts_with(repo) && image[repo.len()..].starts_with('/') {
        return image.to_owned();
    }
    let path = match image.split_once('/') {
        Some((first, rest)) if is_registry_host(first) => {
            if DOCKER_HUB.contains(&first) && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_owned()
            }
        }
        Some(_) => image.to_owned(),
        None => format!("library/{image}"),
    };
    format!("{repo}/{path}")
}

/// The first component of a reference names a registry when it looks like a host:
/// it has a dot or a port, or is `localhost` (the rule of the distribution reference grammar).
fn is_registry_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_from_the_interface() {
        assert_eq!(rewrite("busybox:1.36", "REPO"), "REPO/library/busybox:1.36");
        assert_eq!(
            rewrite("quay.io/prometheus/pushgateway:v1.9.0", "REPO"),
            "REPO/prometheus/pushgateway:v1.9.0"
        );
    }

    #[test]
    fn hosts_ports_digests_and_hub_names() {
        let r = "registry.corp:5000/mirror/";
        assert_eq!(
            rewrite("atlassian/collector:2.1.0", r),
            "registry.corp:5000/mirror/atlassian/collector:2.1.0"
        );
        assert_eq!(
            rewrite("docker.io/busybox@sha256:abc", r),
            "registry.corp:5000/mirror/library/busybox@sha256:abc"
        );
        assert_eq!(
            rewrite("docker.io/atlassian/x:1", r),
            "registry.corp:5000/mirror/atlassian/x:1"
        );
        assert_eq!(
            rewrite("localhost/agent:1", r),
            "registry.corp:5000/mirror/agent:1"
        );
        assert_eq!(
            rewrite("ghcr.io:443/org/app:1@sha256:abc", r),
            "registry.corp:5000/mirror/org/app:1@sha256:abc"
        );
    }

    #[test]
    fn rewriting_twice_changes_nothing() {
        let once = rewrite("busybox:1.36", "registry.corp/mirror");
        assert_eq!(rewrite(&once, "registry.corp/mirror"), once);
    }

    #[test]
    fn repositories_are_checked() {
        assert!(validate_repository("registry.corp:5000/mirror").is_ok());
        assert!(validate_repository("https://registry.corp").is_err());
        assert!(validate_repository("registry.corp/x:latest").is_err());
        assert!(validate_repository("registry.corp:latest").is_err());
        assert!(validate_repository("/").is_err());
    }
}
