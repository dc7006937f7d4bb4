//! `values.mountDockerSocket`: whether the templates mount the host's Docker socket.
//!
//! `true` and `false` are read by the templates as they are. `auto` (the default) is decided
//! here, from the nodes the cluster layer hands in: the socket is mounted only when every
//! schedulable Linux node runs Docker. Until the nodes are known (`preview` without a
//! cluster, `serve` without API access), `auto` mounts it, as the seed template shows. The
//! decision is made when the configuration is built, so the template hash says which way it
//! went, and `check` (which reads the same nodes) judges Pods the way `serve` injected them.

use super::Config;
use serde_json::Value;

/// The host path of the Docker socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The key under `values`.
pub const KEY: &str = "mountDockerSocket";
/// The setting decided from the nodes.
pub const AUTO: &str = "auto";

/// One node as the API reports it: plain data, read by the cluster layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `status.nodeInfo.containerRuntimeVersion`: `docker://24.0.7`, `containerd://2.1.0`.
    pub runtime: String,
    /// `kubernetes.io/os` is `linux` (or absent).
    pub linux: bool,
    /// `spec.unschedulable` is not set.
    pub schedulable: bool,
    /// `status.nodeInfo.architecture`: `amd64`, `arm64`; empty when not reported.
    pub arch: String,
}

impl Node {
    pub fn runs_docker(&self) -> bool {
        self.runtime.starts_with("docker://")
    }
}

/// The cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nodes(pub Vec<Node>);

impl Nodes {
    /// The nodes injected Pods can land on: schedulable Linux nodes.
    pub fn considered(&self) -> impl Iterator<Item = &Node> {
        self.0.iter().filter(|n| n.linux && n.schedulable)
    }

    /// The architectures of the considered nodes, each once: those an injected image must
    /// offer.
    pub fn architectures(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .considered()
            .map(|n| n.arch.clone())
            .filter(|a| !a.is_empty())
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// The considered nodes that run no Docker.
    pub fn without_docker(&self) -> Vec<&Node> {
        self.considered().filter(|n| !n.runs_docker()).collect()
    }
}

/// How `values.mountDockerSocket` was decided for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerSocket {
    /// `true`, `false`, absent, or anything but `auto`: the templates read it as it is.
    Fixed,
    /// `auto`, with the nodes not known: mounted, as the seed template shows.
    AutoUnknown,
    /// `auto`, decided by the nodes.
    Auto {
        mounted: bool,
        /// How many nodes were considered (schedulable, Linux).
        considered: usize,
        /// Those without Docker: `name (runtime)`.
        without: Vec<String>,
    },
}

impl DockerSocket {
    /// The decision for `values`, given the nodes when they are known.
    pub fn decide(values: &Value, nodes: Option<&Nodes>) -> DockerSocket {
        if values.get(KEY).and_then(Value::as_str) != Some(AUTO) {
            return DockerSocket::Fixed;
        }
        DockerSocket::auto(nodes)
    }

    /// The decision for `auto`, given the nodes when they are known.
    pub fn auto(nodes: Option<&Nodes>) -> DockerSocket {
        let Some(nodes) = nodes else {
            return DockerSocket::AutoUnknown;
        };
        let considered = nodes.considered().count();
        let without: Vec<String> = nodes
            .without_docker()
            .iter()
            .map(|n| format!("{} ({})", n.name, n.runtime))
            .collect();
        DockerSocket::Auto {
            mounted: considered > 0 && without.is_empty(),
            considered,
            without,
        }
    }

    /// What the templates see for `auto`: `true` or `false`. `None` when fixed.
    pub fn mounted(&self) -> Option<bool> {
        match self {
            DockerSocket::Fixed => None,
            DockerSocket::AutoUnknown => Some(true),
            DockerSocket::Auto { mounted, .. } => Some(*mounted),
        }
    }

    /// Replaces `auto` in `values` by the decision.
    pub fn apply(&self, values: &mut Value) {
        if let (Some(mounted), Some(v)) = (self.mounted(), values.get_mut(KEY))
            && v.as_str() == Some(AUTO)
        {
            *v = Value::Bool(mounted);
        }
    }

    /// One sentence on the decision, for logs, `preview`'s stderr and `doctor`.
    pub fn explain(&self) -> Option<String> {
        match self {
            DockerSocket::Fixed => None,
            DockerSocket::AutoUnknown => Some(format!(
                "values.{KEY}: {AUTO}: the nodes are not known, so {DOCKER_SOCKET} is mounted as the default template shows (--kubeconfig decides from the cluster's nodes)"
            )),
            DockerSocket::Auto {
                mounted: true,
                considered,
                ..
            } => Some(format!(
                "values.{KEY}: {AUTO}: every schedulable Linux node ({considered}) runs Docker, so {DOCKER_SOCKET} is mounted"
            )),
            DockerSocket::Auto {
                mounted: false,
                considered: 0,
                ..
            } => Some(format!(
                "values.{KEY}: {AUTO}: no schedulable Linux node, so {DOCKER_SOCKET} is not mounted"
            )),
            DockerSocket::Auto {
                mounted: false,
                considered,
                without,
            } => Some(format!(
                "values.{KEY}: {AUTO}: {} of {considered} schedulable Linux nodes run no Docker ({}), so {DOCKER_SOCKET} is not mounted (a hostPath of type Socket that does not exist keeps a Pod in ContainerCreating); set {KEY}: true to mount it anyway",
                without.len(),
                names(without),
            )),
        }
    }

    /// The note an injected Pod's status annotation carries: why the socket is not there.
    pub fn pod_note(&self) -> Option<String> {
        match self {
            DockerSocket::Auto {
                mounted: false,
                considered,
                without,
            } => Some(format!(
                "{DOCKER_SOCKET} not mounted: values.{KEY} is {AUTO} and {} of {considered} schedulable Linux nodes run no Docker",
                without.len()
            )),
            _ => None,
        }
    }
}

/// At most 5 names, then how many more.
fn names(all: &[String]) -> String {
    let mut out = all.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if all.len() > 5 {
        out.push_str(&format!(" and {} more", all.len() - 5));
    }
    out
}

/// The volume of the default templates that mounts the Docker socket from the host, if any
/// (rendered for a sample Pod when the templates read the Pod).
pub fn socket_volume(config: &Config) -> Option<String> {
    let sample = super::sample_pod();
    let pod = crate::engine::pod::PodView::parse(&sample).ok()?;
    let fragment = config
        .fragment(&config.default_templates(), &pod, "default", None)
        .ok()?;
    fragment
        .volumes
        .iter()
        .find(|v| v.value.pointer("/hostPath/path").and_then(Value::as_str) == Some(DOCKER_SOCKET))
        .map(|v| v.name().to_owned())
}

/// What to say when the templates mount the Docker socket and some nodes run no Docker
/// (`mountDockerSocket: true`, or a template of one's own).
pub fn advice(volume: &str, nodes: &Nodes) -> Option<String> {
    let without = nodes.without_docker();
    if without.is_empty() {
        return None;
    }
    let listed: Vec<String> = without
        .iter()
        .map(|n| format!("{} ({})", n.name, n.runtime))
        .collect();
    Some(format!(
        "{} of {} schedulable Linux nodes run no Docker: {}. The templates mount {DOCKER_SOCKET} (volume {volume:?}, a hostPath of type Socket), which does not exist there: injected Pods scheduled on them stay in ContainerCreating (FailedMount). Set values.{KEY}: {AUTO} (or false) in config.yaml.",
        without.len(),
        nodes.considered().count(),
        names(&listed)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, runtime: &str) -> Node {
        Node {
            name: name.into(),
            runtime: runtime.into(),
            linux: true,
            schedulable: true,
            arch: "amd64".into(),
        }
    }

    #[test]
    fn the_architectures_asked_for_are_those_of_schedulable_linux_nodes_each_once() {
        let mut nodes = Nodes(vec![
            node("a", "containerd://2.1.0"),
            node("b", "containerd://2.1.0"),
        ]);
        nodes.0.push(Node {
            arch: "arm64".into(),
            ..node("c", "containerd://2.1.0")
        });
        nodes.0.push(Node {
            arch: "s390x".into(),
            schedulable: false,
            ..node("cordoned", "containerd://2.1.0")
        });
        nodes.0.push(Node {
            arch: "ppc64le".into(),
            linux: false,
            ..node("w", "containerd://2.1.0")
        });
        nodes.0.push(Node {
            arch: String::new(),
            ..node("silent", "containerd://2.1.0")
        });
        assert_eq!(nodes.architectures(), ["amd64", "arm64"]);
    }

    #[test]
    fn auto_mounts_only_when_every_schedulable_linux_node_runs_docker() {
        let auto = json!({KEY: AUTO});
        assert_eq!(DockerSocket::decide(&auto, None).mounted(), Some(true));
        let docker = Nodes(vec![node("a", "docker://24.0.7")]);
        assert_eq!(
            DockerSocket::decide(&auto, Some(&docker)).mounted(),
            Some(true)
        );
        let mut mixed = docker.clone();
        mixed.0.push(node("b", "containerd://2.1.0"));
        let d = DockerSocket::decide(&auto, Some(&mixed));
        assert_eq!(d.mounted(), Some(false));
        let why = d.explain().unwrap();
        assert!(
            why.contains("1 of 2 schedulable Linux nodes run no Docker (b (containerd://2.1.0))"),
            "{why}"
        );
        assert!(why.contains("set mountDockerSocket: true"), "{why}");
        assert!(d.pod_note().unwrap().contains("not mounted"));
        // A cordoned containerd node and a Windows node do not count.
        let mut cordoned = docker.clone();
        cordoned.0.push(Node {
            schedulable: false,
            ..node("c", "containerd://2.1.0")
        });
        cordoned.0.push(Node {
            linux: false,
            ..node("w", "containerd://1.7.0")
        });
        assert_eq!(
            DockerSocket::decide(&auto, Some(&cordoned)).mounted(),
            Some(true)
        );
        // No node at all: nothing to mount on.
        assert_eq!(
            DockerSocket::decide(&auto, Some(&Nodes::default())).mounted(),
            Some(false)
        );
    }

    #[test]
    fn true_and_false_keep_their_meaning_and_apply_replaces_only_auto() {
        let containerd = Nodes(vec![node("b", "containerd://2.1.0")]);
        for fixed in [json!({KEY: true}), json!({KEY: false}), json!({})] {
            let d = DockerSocket::decide(&fixed, Some(&containerd));
            assert_eq!(d, DockerSocket::Fixed);
            let mut v = fixed.clone();
            d.apply(&mut v);
            assert_eq!(v, fixed);
        }
        let mut v = json!({KEY: AUTO, "other": AUTO});
        DockerSocket::decide(&v, Some(&containerd)).apply(&mut v);
        assert_eq!(v, json!({KEY: false, "other": AUTO}));
    }

    #[test]
    fn the_advice_names_the_nodes_and_the_setting() {
        let nodes = Nodes(vec![
            node("a", "docker://24.0.7"),
            node("kwok-node-1", "containerd://2.1.0"),
        ]);
        let said = advice("docker-sock", &nodes).unwrap();
        assert!(
            said.starts_with(
                "1 of 2 schedulable Linux nodes run no Docker: kwok-node-1 (containerd://2.1.0)"
            ),
            "{said}"
        );
        assert!(said.contains("values.mountDockerSocket: auto"), "{said}");
        assert_eq!(
            advice("docker-sock", &Nodes(vec![node("a", "docker://1")])),
            None
        );
    }
}
