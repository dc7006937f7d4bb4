//! The credentials of a `kubernetes.io/dockerconfigjson` (or legacy `dockercfg`) Secret, and
//! which of them the kubelet would send for an image: the same matching as its keyring
//! (Docker Hub's aliases, a `*.` glob per label, an optional port, a path prefix), the most
//! specific key first.

use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;

/// One registry login. Its Debug never shows the password.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, password hidden)", self.username)
    }
}

/// The logins of a Secret's `.dockerconfigjson` (`{"auths": {...}}`) or `.dockercfg` (the
/// map alone), by registry key as written. An entry with neither `auth` nor a username is
/// left out (the kubelet sends nothing for it); one whose `auth` does not decode is an error
/// naming the key.
pub fn parse(raw: &[u8]) -> Result<BTreeMap<String, Login>, String> {
    let doc: Value = serde_json::from_slice(raw).map_err(|e| format!("is not JSON ({e})"))?;
    let entries = doc
        .get("auths")
        .unwrap_or(&doc)
        .as_object()
        .ok_or_else(|| "holds no map of registries (\"auths\")".to_owned())?;
    let mut out = BTreeMap::new();
    for (key, entry) in entries {
        let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default();
        let login = match text("auth") {
            "" if text("username").is_empty() => continue,
            "" => Login {
                username: text("username").to_owned(),
                password: text("password").to_owned(),
            },
            auth => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| format!("auths.{key}.auth is not base64 of user:password"))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("auths.{key}.auth is not of the form user:password"))?;
                Login {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            }
        };
        out.insert(key.clone(), login);
    }
    Ok(out)
}

/// Docker Hub's names, all one registry to the kubelet.
const DOCKER_HUB: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// A key as the kubelet reads it: host, port, path.
fn split(key: &str) -> (String, Option<&str>, &str) {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => (h, Some(p)),
        _ => (hostport, None),
    };
    let host = host.to_ascii_lowercase();
    let host = if DOCKER_HUB.contains(&host.as_str()) {
        "docker.io".to_owned()
    } else {
        host
    };
    // Docker Hub's legacy key is https://index.docker.io/v1/: its path is the API's.
    let path = if host == "docker.io" && path.trim_end_matches('/') == "v1" {
        ""
    } else {
        path.trim_end_matches('/')
    };
    (host, port, path)
}

/// Does `pattern` (labels, each `*` or a name) name `host`?
fn host_matches(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len() && p.iter().zip(&h).all(|(p, h)| *p == "*" || p == h)
}

/// The login the kubelet sends to `registry` (a host, with its port if any) for
/// `repository`: of the keys that match, the most specific.
pub fn login_for<'a>(
    entries: &'a BTreeMap<String, Login>,
    registry: &str,
    repository: &str,
) -> Option<&'a Login> {
    let (host, port, _) = split(registry);
    entries
        .iter()
        .filter_map(|(key, login)| {
            let (k_host, k_port, k_path) = split(key);
            let path_ok = k_path.is_empty()
                || repository == k_path
                || repository.starts_with(&format!("{k_path}/"));
            (host_matches(&k_host, &host) && k_port == port && path_ok).then_some((
                k_host.len() + k_path.len(),
                !k_host.contains('*'),
                login,
            ))
        })
        .max_by_key(|(len, exact, _)| (*len, *exact))
        .map(|(_, _, login)| login)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(u: &str, p: &str) -> Login {
        Login {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn both_secret_forms_are_read_from_auth_or_username_and_password() {
        // "robot:s3cret:x" — a password may hold a colon.
        let json = br#"{"auths":{"reg.example:5000":{"auth":"cm9ib3Q6czNjcmV0Ong="},
            "other.example":{"username":"u","password":"p"},"empty.example":{}}}"#;
        let parsed = parse(json).unwrap();
        assert_eq!(parsed["reg.example:5000"], login("robot", "s3cret:x"));
        assert_eq!(parsed["other.example"], login("u", "p"));
        assert!(!parsed.contains_key("empty.example"));
        let legacy = parse(br#"{"https://index.docker.io/v1/":{"auth":"YTpi"}}"#).unwrap();
        assert_eq!(legacy["https://index.docker.io/v1/"], login("a", "b"));
        let bad = parse(br#"{"auths":{"r.example":{"auth":"%%%"}}}"#).unwrap_err();
        assert!(bad.contains("auths.r.example.auth"), "{bad}");
        assert!(parse(b"nope").unwrap_err().contains("not JSON"));
        assert!(!format!("{:?}", login("u", "hunter2")).contains("hunter2"));
    }

    #[test]
    fn the_kubelet_s_matching_picks_the_login_for_an_image() {
        let entries: BTreeMap<String, Login> = [
            ("https://index.docker.io/v1/", login("hub", "1")),
            ("*.corp.example", login("glob", "2")),
            ("reg.corp.example:5000", login("port", "3")),
            ("reg.corp.example:5000/team", login("team", "4")),
        ]
        .into_iter()
        .map(|(k, l)| (k.to_owned(), l))
        .collect();
        let user =
            |reg: &str, repo: &str| login_for(&entries, reg, repo).map(|l| l.username.as_str());
        assert_eq!(user("docker.io", "library/busybox"), Some("hub"));
        assert_eq!(user("reg.corp.example:5000", "team/agent"), Some("team"));
        assert_eq!(user("reg.corp.example:5000", "teamx/agent"), Some("port"));
        assert_eq!(user("mirror.corp.example", "a/b"), Some("glob"));
        // `*` is one label, and a port must match.
        assert_eq!(user("a.mirror.corp.example", "a/b"), None);
        assert_eq!(user("reg.corp.example:5001", "team/agent"), None);
        assert_eq!(user("quay.io", "a/b"), None);
    }
}
