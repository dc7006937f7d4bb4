use super::*;

fn raw(settings: &str, template: &str) -> RawConfig {
    RawConfig::new(Some(settings.to_owned()), template)
}

#[test]
fn the_embedded_default_loads_and_is_prerendered() {
    let c = Config::embedded(DEFAULT_OWN_NAMESPACE).expect("default loads");
    let f = c
        .fragment(
            &c.default_templates(),
            &PodView::parse(&sample_pod()).unwrap(),
            "x",
            None,
        )
        .unwrap();
    assert!(
        matches!(f, Cow::Borrowed(_)),
        "a values-only template renders once, at load"
    );
    let names: Vec<_> = f.containers.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["bitbucket-pipelines-metrics-collector"]);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let err = Config::from_raw(
        &raw(
            "policy: sometimes\n",
            "containers:\n- name: c\n  image: x\n  imagePullPolicy: Sometimes\n",
        ),
        "ns",
    )
    .unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.problems[0].starts_with("config.yaml: policy: unknown variant `sometimes`"),
        "{err}"
    );

    let err = Config::from_raw(
        &raw(
            "values: {n: 30}\n",
            "containers:\n- name: c\n  image: x\n  imagePullPolicy: Sometimes\n  env:\n  - name: N\n    value: '{{ values.n }}'\nvolume:\n- name: v\n",
        ),
        "ns",
    )
    .unwrap_err();
    let all = err.to_string();
    assert!(all.contains("mutate.yaml: volume: unknown key"), "{all}");
    // typed checks run once the keys are right
    let err = Config::from_raw(
        &raw(
            "values: {n: 30}\n",
            "containers:\n- name: c\n  image: x\n  imagePullPolicy: Sometimes\n  env:\n  - name: N\n    value: '{{ values.n }}'\n",
        ),
        "ns",
    )
    .unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("mutate.yaml: containers[0].env[0].value: invalid type: integer `30`"),
        "{all}"
    );
}

#[test]
fn enum_and_name_checks() {
    let err = Config::from_raw(
        &raw(
            "",
            "containers:\n- name: Bad_Name\n  image: x\n  imagePullPolicy: Sometimes\n",
        ),
        "ns",
    )
    .unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("containers[0].imagePullPolicy: \"Sometimes\" is not one of"),
        "{all}"
    );
    assert!(
        all.contains("containers[0].name: \"Bad_Name\" is not a DNS-1123 label"),
        "{all}"
    );
}

#[test]
fn images_move_under_the_repository_at_load() {
    let c = Config::from_raw(
        &raw(
            "imageRepository: registry.corp/mirror\n",
            "initContainers:\n- {name: i, image: 'busybox:1.36'}\ncontainers:\n- {name: c, image: 'quay.io/a/b:1'}\n",
        ),
        "ns",
    )
    .unwrap();
    let f = c
        .fragment(
            &c.default_templates(),
            &PodView::parse(&sample_pod()).unwrap(),
            "ns",
            None,
        )
        .unwrap();
    assert_eq!(
        f.init_containers[0].value["image"],
        "registry.corp/mirror/library/busybox:1.36"
    );
    assert_eq!(f.containers[0].value["image"], "registry.corp/mirror/a/b:1");
}

#[test]
fn unknown_container_fields_are_warned_about() {
    let c = Config::from_raw(
        &raw(
            "",
            "containers:\n- {name: c, image: x, imagePullPolicyy: Always}\n",
        ),
        "ns",
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("containers[0].imagePullPolicyy"));
}

#[test]
fn a_configmap_manifest_is_read() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  mutate.yaml: |\n    volumes:\n    - {name: v, emptyDir: {}}\n";
    let raw = parse_configmap(text).unwrap();
    assert_eq!(raw.settings, None);
    assert!(raw.templates["default"].contains("emptyDir"));
    assert!(
        parse_configmap("kind: Secret\n")
            .unwrap_err()
            .contains("want a ConfigMap")
    );
}

#[test]
fn named_templates_load_and_their_problems_name_their_key() {
    let ok = RawConfig::new(
        Some("templates: [default, apm]\n".into()),
        "containers: [{name: c, image: 'c:1'}]\n",
    )
    .with_template(
        "apm",
        "os: [linux, windows]\ninitContainers: [{name: a, image: 'a:1'}]\n",
    );
    let c = Config::from_raw(&ok, "ns").unwrap();
    assert_eq!(c.templates.keys().collect::<Vec<_>>(), ["apm", "default"]);
    assert!(c.templates["apm"].windows && !c.templates["default"].windows);
    assert_ne!(
        c.template_hash, c.templates["default"].hash,
        "two templates, one combined hash"
    );
    let f = c
        .fragment(
            &c.default_templates(),
            &PodView::parse(&sample_pod()).unwrap(),
            "ns",
            None,
        )
        .unwrap();
    assert!(
        matches!(f, Cow::Borrowed(_)),
        "static templates merge once, at load"
    );
    assert_eq!(f.containers.len() + f.init_containers.len(), 2);

    let bad = RawConfig::new(
        Some("templates: [default, nope, Bad]\n".into()),
        "containers: [{name: c, image: 'c:1'}]\n",
    )
    .with_template("apm", "os: [linux, mac]\ninitContainers: [{name: a}]\n");
    let all = Config::from_raw(&bad, "ns").unwrap_err().to_string();
    for want in [
        "apm.mutate.yaml: os[1]: \"mac\" is not linux or windows",
        "apm.mutate.yaml: initContainers[0].image: required",
        "config.yaml: templates[1]: no template \"nope\" (want a key nope.mutate.yaml)",
        "config.yaml: templates[2]: \"Bad\" is not a template name",
    ] {
        assert!(all.contains(want), "{want} in:\n{all}");
    }
}

#[test]
fn templates_listed_together_must_not_disagree() {
    let raw = RawConfig::new(
        Some("templates: [default, b]\n".into()),
        "volumes: [{name: v, emptyDir: {}}]\n",
    )
    .with_template("b", "volumes: [{name: v, emptyDir: {medium: Memory}}]\n");
    let err = Config::from_raw(&raw, "ns").unwrap_err().to_string();
    assert!(
        err.contains("config.yaml: templates: templates \"default\" and \"b\" both add a volume named \"v\", with different definitions"),
        "{err}"
    );
    // Not listed together by default: loads; the same definition twice is fine.
    let apart = RawConfig::new(None, "volumes: [{name: v, emptyDir: {}}]\n")
        .with_template("b", "volumes: [{name: v, emptyDir: {medium: Memory}}]\n")
        .with_template("c", "volumes: [{name: v, emptyDir: {}}]\n");
    let c = Config::from_raw(&apart, "ns").unwrap();
    let pick = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let t = c.resolve(&names).unwrap();
        c.fragment(&t, &PodView::parse(&sample_pod()).unwrap(), "ns", None)
            .map(|f| f.volumes.len())
    };
    assert_eq!(pick(&["default", "c"]), Ok(1));
    assert!(matches!(
        pick(&["default", "b"]),
        Err(FragmentError::Conflict(_))
    ));
    assert!(
        c.resolve(&["nope".to_owned()])
            .unwrap_err()
            .contains("no template \"nope\"")
    );
}

#[test]
fn a_configmap_with_named_templates_and_a_bad_key() {
    let text = "kind: ConfigMap\ndata:\n  apm.mutate.yaml: 'volumes: []'\n  default.mutate.yaml: 'volumes: []'\n  Bad_Name.mutate.yaml: 'volumes: []'\n  README: hello\n";
    let raw = parse_configmap(text).unwrap();
    assert_eq!(raw.templates.keys().collect::<Vec<_>>(), ["apm"]);
    assert_eq!(raw.key_problems.len(), 2, "{:?}", raw.key_problems);
    let err = Config::from_raw(&raw, "ns").unwrap_err().to_string();
    assert!(
        err.contains("default.mutate.yaml: the default template is the key mutate.yaml"),
        "{err}"
    );
    assert!(
        err.contains("config.yaml: templates[0]: no template \"default\""),
        "{err}"
    );
}

#[test]
fn an_undefined_value_names_its_expression_and_the_way_out() {
    let text = "containers:\n- name: c\n  image: busybox\n  env:\n  - {name: A, value: '{{ values.typo }}'}\n";
    let err = Config::from_raw(&raw("values: {tipo: x}\n", text), "ns")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mutate.yaml: containers[0].env[0].value: `{{ values.typo }}` is undefined"),
        "{err}"
    );
    assert!(err.contains("config.yaml's values"), "{err}");
}
