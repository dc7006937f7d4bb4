//! The Secrets a configuration's templates make Pods read from their own namespace:
//! `secretKeyRef`, `envFrom.secretRef`, secret volumes and `imagePullSecrets`. A Pod whose
//! Secret is missing stops at `CreateContainerConfigError` (or cannot pull), so `doctor`
//! looks for each in every opted-in namespace.

use super::{Config, Fragment, sample_pod};
use crate::engine::pod::PodView;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// How the templates use one Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reference {
    /// Where: `containers collector: env API_TOKEN`, `imagePullSecrets`.
    pub places: Vec<String>,
    /// The keys read from it (`secretKeyRef.key`).
    pub keys: BTreeSet<String>,
    /// Named in `imagePullSecrets`: a registry credential.
    pub pull: bool,
}

impl Reference {
    /// The command that creates it in `namespace`, with the keys the templates read.
    pub fn create_command(&self, namespace: &str, name: &str) -> String {
        if self.pull {
            return pull_secret_command(namespace, name, "REGISTRY");
        }
        let mut command = format!("kubectl -n {namespace} create secret generic {name}");
        if self.keys.is_empty() {
            command.push_str(" --from-literal=KEY=VALUE");
        }
        for key in &self.keys {
            command.push_str(&format!(" --from-literal={key}=VALUE"));
        }
        command
    }
}

/// The command that makes pull secret `name` in `namespace` with a login for `server`.
pub fn pull_secret_command(namespace: &str, name: &str, server: &str) -> String {
    format!(
        "kubectl -n {namespace} create secret docker-registry {name} --docker-server={server} --docker-username=USER --docker-password=PASSWORD"
    )
}

/// Each Secret name the templates of `templates` reference, with where and how, in name
/// order. Rendered for a sample Pod when the templates read the Pod.
pub fn referenced(config: &Config, templates: &[String]) -> BTreeMap<String, Reference> {
    let mut out: BTreeMap<String, Reference> = BTreeMap::new();
    let Ok(chosen) = config.resolve(templates) else {
        return out;
    };
    let sample = sample_pod();
    let Ok(pod) = PodView::parse(&sample) else {
        return out;
    };
    if let Ok(fragment) = config.fragment(&chosen, &pod, "default", None) {
        collect(&fragment, &mut out);
    }
    out
}

fn collect(f: &Fragment, out: &mut BTreeMap<String, Reference>) {
    let mut add = |name: Option<&str>, place: String, key: Option<&str>, pull: bool| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let r = out.entry(name.to_owned()).or_default();
            r.places.push(place);
            r.keys.extend(key.map(str::to_owned));
            r.pull |= pull;
        }
    };
    let lists = [
        ("initContainers", &f.init_containers),
        ("containers", &f.containers),
    ];
    // An env entry's `secretKeyRef`: the Secret's name and the key.
    let secret_key_ref = |e: &Value| {
        let at = |field: &str| {
            e.pointer(&format!("/valueFrom/secretKeyRef/{field}"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        (at("name"), at("key"))
    };
    for (list, items) in lists {
        for c in items {
            let cname = c.value.get("name").and_then(Value::as_str).unwrap_or("?");
            for e in c
                .value
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (r, key) = secret_key_ref(e);
                let var = e.get("name").and_then(Value::as_str).unwrap_or("?");
                add(
                    r.as_deref(),
                    format!("{list} {cname}: env {var}"),
                    key.as_deref(),
                    false,
                );
            }
            for e in c
                .value
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = e.pointer("/secretRef/name").and_then(Value::as_str);
                add(r, format!("{list} {cname}: envFrom"), None, false);
            }
        }
    }
    for e in &f.app_env {
        let (r, key) = secret_key_ref(&e.value);
        let place = "the Pod's containers: env".to_owned();
        add(r.as_deref(), place, key.as_deref(), false);
    }
    for v in &f.volumes {
        let r = v
            .value
            .pointer("/secret/secretName")
            .and_then(Value::as_str);
        add(r, format!("volume {}", v.name()), None, false);
    }
    for s in &f.image_pull_secrets {
        add(
            s.value.get("name").and_then(Value::as_str),
            "imagePullSecrets".to_owned(),
            None,
            true,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::RawConfig;

    #[test]
    fn every_kind_of_reference_is_found_with_its_place() {
        let shipped = Config::embedded("injector").unwrap();
        let refs = referenced(&shipped, &shipped.settings.templates);
        assert_eq!(
            refs.keys().collect::<Vec<_>>(),
            ["bitbucket-pipelines-metrics"],
            "{refs:?}"
        );
        let template = "imagePullSecrets: [{name: regcred}]\n\
            initContainers: [{name: agent, image: 'a:1', envFrom: [{secretRef: {name: agent-env}}]}]\n\
            volumes: [{name: certs, secret: {secretName: agent-certs}}]\n";
        let config = Config::from_raw(&RawConfig::new(None, template), "injector").unwrap();
        let refs = referenced(&config, &config.settings.templates);
        assert_eq!(
            refs.keys().collect::<Vec<_>>(),
            ["agent-certs", "agent-env", "regcred"]
        );
        assert_eq!(refs["agent-env"].places, ["initContainers agent: envFrom"]);
        assert!(
            refs["regcred"]
                .create_command("ns", "regcred")
                .contains("docker-registry")
        );
        let token =
            &referenced(&shipped, &shipped.settings.templates)["bitbucket-pipelines-metrics"];
        assert_eq!(
            token.create_command("team-a", "bitbucket-pipelines-metrics"),
            "kubectl -n team-a create secret generic bitbucket-pipelines-metrics --from-literal=api-token=VALUE"
        );
        assert!(referenced(&config, &["nope".to_owned()]).is_empty());
    }
}
