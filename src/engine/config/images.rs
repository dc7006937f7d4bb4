//! Every image a configuration's templates inject, as a node would pull it (after
//! `imageRepository`) and as it was written (where a mirror copies it from). `images` prints
//! them, the private-registry recipe mirrors them, and `doctor` asks the registry for each.

use super::{Config, sample_pod};
use crate::engine::image;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Where one image is used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Use {
    /// The template's name (`default`, `apm`), or `injector` for the injector's own.
    pub template: String,
    /// `initContainers`, `containers`, or for the injector the workload it runs in.
    pub list: String,
    pub container: String,
}

/// One image, with every place that uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// As a node pulls it: under `imageRepository` when the configuration sets one.
    pub image: String,
    /// As the template (or the injector's workload) writes it.
    pub source: String,
    pub used_by: Vec<Use>,
    /// The `imagePullSecrets` the templates that inject it add to the Pod: the credentials a
    /// node pulls it with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

/// Every image of every template of `config` (not only the default ones: a namespace or a
/// Pod may choose any), in image order. A template that reads the Pod is rendered for a
/// sample Pod with the configured values: an allow-listed override of a value an image is
/// made of can make a Pod pull another one.
pub fn injected(config: &Config) -> Vec<Image> {
    let sample = sample_pod();
    let mut found: BTreeMap<String, Image> = BTreeMap::new();
    for t in config.templates.values() {
        let rendered = match t.template.static_value() {
            Some(v) => Ok(v.clone()),
            None => t.template.render(&sample, "default"),
        };
        // A template that loaded renders for the sample Pod: it did so at load.
        let Ok(doc) = rendered else { continue };
        let secrets: Vec<String> = doc
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect();
        for list in ["initContainers", "containers"] {
            for c in doc
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(source) = c.get("image").and_then(Value::as_str) else {
                    continue;
                };
                let pulled = match config.settings.image_repository() {
                    Some(repo) => image::rewrite(source, repo),
                    None => source.to_owned(),
                };
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                add(
                    &mut found,
                    &pulled,
                    source,
                    &secrets,
                    Use {
                        template: t.name.clone(),
                        list: list.to_owned(),
                        container: name.to_owned(),
                    },
                );
            }
        }
    }
    found.into_values().collect()
}

/// `images` with the injector's own image (`image`, run by `container` of `workload`) added.
pub fn with_injector(
    mut images: Vec<Image>,
    image: &str,
    workload: &str,
    container: &str,
) -> Vec<Image> {
    let mut found: BTreeMap<String, Image> =
        images.drain(..).map(|i| (i.image.clone(), i)).collect();
    add(
        &mut found,
        image,
        image,
        &[],
        Use {
            template: "injector".to_owned(),
            list: workload.to_owned(),
            container: container.to_owned(),
        },
    );
    found.into_values().collect()
}

fn add(
    found: &mut BTreeMap<String, Image>,
    pulled: &str,
    source: &str,
    secrets: &[String],
    used: Use,
) {
    let entry = found.entry(pulled.to_owned()).or_insert_with(|| Image {
        image: pulled.to_owned(),
        source: source.to_owned(),
        used_by: Vec::new(),
        pull_secrets: Vec::new(),
    });
    for s in secrets {
        if !entry.pull_secrets.contains(s) {
            entry.pull_secrets.push(s.clone());
        }
    }
    if !entry.used_by.contains(&used) {
        entry.used_by.push(used);
        entry.used_by.sort();
    }
}

/// Where `mirror` keeps `image` (`image` written as its template writes it): the name the
/// injector pulls once the configuration says `imageRepository: MIRROR`. The same rule as the
/// injection's, so a mirror made from this list is what the Pods will ask for.
pub fn mirrored(image: &str, mirror: &str) -> String {
    image::rewrite(image, mirror)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::{Config, RawConfig};

    /// Settings, the `default` template, and other templates by name.
    fn config(settings: &str, templates: &[(&str, &str)]) -> Config {
        let mut raw = RawConfig::new(Some(settings.to_owned()), templates[0].1);
        for (name, text) in &templates[1..] {
            raw = raw.with_template(name, *text);
        }
        Config::from_raw(&raw, "platform").unwrap()
    }

    const APM: &str = "imagePullSecrets: [{name: apm-registry}]\ninitContainers:\n- name: agent-init\n  image: busybox:1.36\n  command: [cp]\ncontainers:\n- name: collector\n  image: quay.io/prometheus/pushgateway:v1.9.0\n";

    #[test]
    fn every_template_s_images_are_listed_under_the_repository_with_where_they_come_from() {
        let c = config(
            "imageRepository: registry.corp.example:5000/mirror\n",
            &[
                (
                    "default",
                    "containers:\n- name: c\n  image: atlassian/collector:2.1.0\n",
                ),
                ("apm", APM),
            ],
        );
        let images = injected(&c);
        let pairs: Vec<(&str, &str)> = images
            .iter()
            .map(|i| (i.image.as_str(), i.source.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "registry.corp.example:5000/mirror/atlassian/collector:2.1.0",
                    "atlassian/collector:2.1.0"
                ),
                (
                    "registry.corp.example:5000/mirror/library/busybox:1.36",
                    "busybox:1.36"
                ),
                (
                    "registry.corp.example:5000/mirror/prometheus/pushgateway:v1.9.0",
                    "quay.io/prometheus/pushgateway:v1.9.0"
                ),
            ]
        );
        assert_eq!(
            images[1].used_by,
            [Use {
                template: "apm".into(),
                list: "initContainers".into(),
                container: "agent-init".into()
            }]
        );
        assert_eq!(images[1].pull_secrets, ["apm-registry"]);
        assert!(images[0].pull_secrets.is_empty());
    }

    #[test]
    fn an_image_two_templates_share_is_one_line_with_both_uses() {
        let c = config(
            "",
            &[
                ("default", "containers:\n- name: a\n  image: busybox:1.36\n"),
                ("b", "initContainers:\n- name: b\n  image: busybox:1.36\n"),
            ],
        );
        let images = injected(&c);
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].image, "busybox:1.36");
        assert_eq!(images[0].used_by.len(), 2);
    }

    #[test]
    fn a_template_that_reads_the_pod_is_listed_as_the_configured_values_make_it() {
        let c = config(
            "values:\n  tag: \"3.1\"\n",
            &[(
                "mutate.yaml",
                "containers:\n- name: c\n  image: \"agent:{{ values.tag }}\"\n  env:\n  - {name: P, value: \"{{ pod.metadata.name }}\"}\n",
            )],
        );
        assert_eq!(injected(&c)[0].image, "agent:3.1");
    }

    #[test]
    fn the_injector_s_own_image_joins_the_list_unrewritten() {
        let c = config(
            "imageRepository: mirror.example/m\n",
            &[("default", "containers:\n- name: c\n  image: busybox:1.36\n")],
        );
        let all = with_injector(
            injected(&c),
            "ghcr.io/acme/sidecar-injector:0.1.0",
            "deployment platform/sidecar-injector",
            "webhook",
        );
        let names: Vec<&str> = all.iter().map(|i| i.image.as_str()).collect();
        assert_eq!(
            names,
            [
                "ghcr.io/acme/sidecar-injector:0.1.0",
                "mirror.example/m/library/busybox:1.36"
            ]
        );
        assert_eq!(all[0].used_by[0].template, "injector");
    }

    #[test]
    fn a_mirror_holds_each_image_where_image_repository_will_look_for_it() {
        let c = config("", &[("default", "containers: []\n"), ("apm", APM)]);
        let mirror = "127.0.0.1:5000/mirror";
        let with_repo = config(
            &format!("imageRepository: {mirror}\n"),
            &[("default", "containers: []\n"), ("apm", APM)],
        );
        let copied: Vec<String> = injected(&c)
            .iter()
            .map(|i| mirrored(&i.source, mirror))
            .collect();
        let pulled: Vec<String> = injected(&with_repo).into_iter().map(|i| i.image).collect();
        assert_eq!(copied, pulled);
    }
}
