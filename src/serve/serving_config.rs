//! The configuration `serve` answers with. Requests read it without a lock; it is replaced
//! whole, atomically, on a reload or when the nodes change how `values.mountDockerSocket:
//! auto` decides. A reload is decided for the nodes last seen, so neither path undoes the
//! other.

use crate::engine::config::docker_socket::Nodes;
use crate::engine::config::{Config, ConfigError};
use arc_swap::{ArcSwap, Guard};
use std::sync::{Arc, Mutex};

pub struct ServingConfig {
    current: ArcSwap<Config>,
    /// The nodes last seen; the lock also keeps a reload and a node change from interleaving.
    nodes: Mutex<Option<Nodes>>,
}

impl ServingConfig {
    pub fn new(config: Config) -> ServingConfig {
        ServingConfig {
            current: ArcSwap::from_pointee(config),
            nodes: Mutex::new(None),
        }
    }

    /// The configuration now, for one request.
    pub fn load(&self) -> Guard<Arc<Config>> {
        self.current.load()
    }

    /// The configuration now, to hold across awaits.
    pub fn load_full(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Serves a configuration that passed its checks, decided for the nodes last seen. The
    /// error is the rare one where the nodes' decision makes it fail; the last good one stays.
    pub fn store(&self, config: Config) -> Result<Arc<Config>, ConfigError> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let config = match nodes.as_ref().and_then(|n| config.for_nodes(n)) {
            Some(decided) => decided?,
            None => config,
        };
        let config = Arc::new(config);
        self.current.store(config.clone());
        Ok(config)
    }

    /// The nodes as the survey read them. When they change what the configuration injects,
    /// it is built again and served: the new one is returned.
    pub fn nodes_seen(&self, nodes: Nodes) -> Option<Result<Arc<Config>, ConfigError>> {
        let mut held = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let decided = self.current.load().for_nodes(&nodes);
        *held = Some(nodes);
        match decided? {
            Ok(config) => {
                let config = Arc::new(config);
                self.current.store(config.clone());
                Some(Ok(config))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::docker_socket::{DockerSocket, Node};

    fn nodes(runtime: &str) -> Nodes {
        Nodes(vec![Node {
            name: "n".into(),
            runtime: runtime.into(),
            linux: true,
            schedulable: true,
            arch: "amd64".into(),
        }])
    }

    #[test]
    fn node_changes_and_reloads_both_serve_the_decision_for_the_nodes_last_seen() {
        let serving = ServingConfig::new(Config::embedded("injector").unwrap());
        assert_eq!(serving.load().docker_socket, DockerSocket::AutoUnknown);
        let unknown_hash = serving.load().template_hash.clone();

        let changed = serving
            .nodes_seen(nodes("containerd://2.1.0"))
            .unwrap()
            .unwrap();
        assert_eq!(changed.docker_socket.mounted(), Some(false));
        assert_ne!(
            changed.template_hash, unknown_hash,
            "the hash says what is injected"
        );
        assert!(serving.nodes_seen(nodes("containerd://2.1.0")).is_none());

        // A reload comes in built without nodes: it is decided for the ones seen.
        let reloaded = serving
            .store(Config::embedded("injector").unwrap())
            .unwrap();
        assert_eq!(reloaded.docker_socket.mounted(), Some(false));
        assert_eq!(serving.load().template_hash, changed.template_hash);

        let docker = serving
            .nodes_seen(nodes("docker://24.0.7"))
            .unwrap()
            .unwrap();
        assert_eq!(docker.docker_socket.mounted(), Some(true));
        assert_eq!(docker.template_hash, unknown_hash);
    }
}
