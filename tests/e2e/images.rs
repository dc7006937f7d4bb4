//! Issue 35: `sidecar-injector images` names exactly what the nodes will pull.

use super::*;

/// With the collector-and-APM example (both templates chosen, `imageRepository` set), the
/// images `images` lists are the images of a server-side dry-run Pod's injected containers,
/// plus the injector's own.
#[tokio::test]
#[ignore = "needs a cluster: tests/e2e/run"]
async fn images_lists_every_injected_image() {
    let env = env();
    let c = client(&env).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The example as shipped, but for namespaces labelled e2e-images=enabled only, so the
    // suite's own injector stays out of them.
    let example =
        std::fs::read_to_string(root.join("examples/configmaps/collector-and-apm.yaml")).unwrap();
    let mine = example.replacen(
        "  config.yaml: |\n",
        "  config.yaml: |\n    namespaceLabel: e2e-images\n",
        1,
    );
    assert_ne!(example, mine);
    assert!(example.contains("imageRepository: registry.corp.example/mirror"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector-and-apm.yaml");
    std::fs::write(&config, mine).unwrap();
    let log = dir.path().join("serve.log");
    let args = vec![
        "--config".to_owned(),
        config.display().to_string(),
        "--kubeconfig".to_owned(),
        env.kubeconfig.display().to_string(),
    ];
    let (_server, port, _) = serve_beside(&env, &log, &args, &[]);
    let _hook = register_for(
        &env,
        "e2e-images",
        ("e2e-images", "enabled"),
        &format!("https://127.0.0.1:{port}/mutate"),
        &ca_bundle(&env),
        "Fail",
    );
    let ns = annotated_namespace(
        &c,
        "e2e-images",
        json!({"e2e-images": "enabled"}),
        json!({"sidecar-injector.io/templates": "default,apm"}),
    )
    .await;
    let both = |p: &Pod| injected(p) && !init_containers(p).is_empty();
    let pod = dry_run_until(&c, &ns, "the collector-and-APM webhook", both).await;
    let spec = pod.spec.as_ref().unwrap();
    let mut in_pod: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| c.name != "app")
        .filter_map(|c| c.image.clone())
        .collect();
    let injector = "registry.corp.example/mirror/acme/sidecar-injector:0.1.0";
    in_pod.push(injector.to_owned());
    in_pod.sort();
    in_pod.dedup();

    let out = common::run(
        common::bin(),
        &[
            "images",
            "--config",
            config.to_str().unwrap(),
            "--injector-image",
            injector,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        listed, in_pod,
        "images lists what the Pod pulls, and the injector"
    );
    assert!(
        listed
            .iter()
            .all(|i| i.starts_with("registry.corp.example/mirror/")),
        "{listed:?}"
    );
    println!(
        "images: {} listed, the same as the dry-run Pod's: {listed:?}",
        listed.len()
    );
}
