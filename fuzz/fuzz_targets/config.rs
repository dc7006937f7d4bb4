//! Config loading: any config.yaml and mutate.yaml -> validated config or a list of problems.
//! Never a panic; a config that loads renders for a plain Pod.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecar_injector::engine::config::{Config, RawConfig};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The input is both keys, split at the first NUL (or all of it is the template).
    let (settings, template) = match text.split_once('\0') {
        Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
        None => (None, text.into_owned()),
    };
    if let Ok(config) = Config::from_raw(&RawConfig::new(settings, template), "sidecar-injector") {
        let pod = serde_json::value::to_raw_value(&serde_json::json!({
            "metadata": {"name": "p", "labels": {"app": "a"}, "annotations": {"x": "{{ 7 * 7 }}"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .expect("a pod");
        let pod = sidecar_injector::engine::pod::PodView::parse(&pod).expect("a Pod view");
        let _ = config.fragment(&config.default_templates(), &pod, "ns", None);
    }
});
