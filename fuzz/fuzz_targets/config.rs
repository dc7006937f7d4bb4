//! Config loading: any config.yaml and mutate.yaml -> validated config or a list of problems.
//! Never a panic; a config that loads renders for the sample Pod it was checked against
//! (asserted).
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
        // Loading rendered the default templates against this Pod in this namespace and
        // refused the config if they failed: so rendering them again cannot fail.
        let sample = sidecar_injector::engine::config::sample_pod();
        let pod = sidecar_injector::engine::pod::PodView::parse(&sample).expect("a Pod view");
        if let Err(e) = config.fragment(&config.default_templates(), &pod, "default", None) {
            panic!("a config that loaded does not render for the sample Pod: {e}");
        }
    }
});
