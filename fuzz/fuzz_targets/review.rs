//! The /mutate body path: any bytes -> decode -> engine -> answer. Never a panic; an answer
//! echoes the uid, and its patch applies to the object that was sent.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sidecar_injector::serve::admission::{self, Decoded};
use sidecar_injector::engine::config::{Config, RawConfig};
use std::sync::OnceLock;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let raw = RawConfig::new(Some("values: {interval: '15'}\n".into()), "imagePullSecrets: [{name: reg}]\ninitContainers:\n- {name: agent-init, image: 'busybox:1.36', volumeMounts: [{name: agent, mountPath: /opt/agent}]}\ncontainers:\n- name: collector\n  image: collector:1\n  env:\n  - {name: APP, value: \"{{ pod.metadata.labels.app | default('none') }}\"}\n  - {name: I, value: \"{{ values.interval }}\"}\nvolumes:\n- {name: agent, emptyDir: {}}\nappContainers:\n  env: [{name: AGENT, value: /opt/agent}]\n  volumeMounts: [{name: agent, mountPath: /opt/agent}]\n");
        Config::from_raw(&raw, "sidecar-injector").expect("the fuzz config loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let review = match admission::decode(data) {
        Ok(Decoded::Review(r)) => r,
        Ok(Decoded::Unreadable(u)) => {
            let out = u
                .respond(config.settings.failure_policy)
                .expect("an unreadable review is answered");
            let out: Value = serde_json::from_slice(&out).expect("the answer is JSON");
            assert_eq!(out["response"]["uid"].as_str(), Some(u.uid.as_str()));
            return;
        }
        Err(_) => return,
    };
    let decision = review.decide(config, None);
    let out = review
        .respond(&decision, config.settings.failure_policy)
        .expect("a review is answered");
    let out: Value = serde_json::from_slice(&out).expect("the answer is JSON");
    assert_eq!(out["response"]["uid"].as_str(), Some(review.uid()));
    if let Some(patch) = out["response"].get("patch") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("a string"))
            .expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        let raw = review.object().expect("a patch needs an object");
        // Objects too deep for a Value are skipped by the engine but cannot be checked here.
        if let Ok(mut object) = serde_json::from_str::<Value>(raw.get()) {
            json_patch::patch(&mut object, &patch).expect("the patch applies to what was sent");
        }
    }
});
