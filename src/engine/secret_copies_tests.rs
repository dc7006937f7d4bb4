//! The plan of [`super::plan`], the uses of a Pod and the judgements, one state at a time.

use super::*;

const OWN: &str = "sidecar-injector";

fn source(name: &str, token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(OWN.into()),
            labels: Some(BTreeMap::from([("team".into(), "platform".into())])),
            annotations: Some(BTreeMap::from([(
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                format!("{{\"data\":{{\"api-token\":\"{token}\"}}}}"),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "api-token".into(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

fn stored(mut s: Secret, rv: &str) -> Secret {
    s.metadata.resource_version = Some(rv.into());
    s.metadata.uid = Some(format!("uid-{rv}"));
    s
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn set(n: &[&str]) -> BTreeSet<String> {
    n.iter().map(|s| s.to_string()).collect()
}

struct Case {
    names: Vec<String>,
    sources: BTreeMap<String, Secret>,
    namespaces: BTreeSet<String>,
    copies: Vec<Secret>,
    foreign: BTreeSet<(String, String)>,
    in_use: BTreeSet<(String, String)>,
    existing: BTreeSet<String>,
}

impl Case {
    fn new(namespaces: &[&str]) -> Case {
        Case {
            names: names(&["token"]),
            sources: BTreeMap::from([("token".to_owned(), source("token", "t1"))]),
            namespaces: set(namespaces),
            copies: vec![],
            foreign: BTreeSet::new(),
            in_use: BTreeSet::new(),
            existing: BTreeSet::new(),
        }
    }
    fn plan(&self) -> Plan {
        plan(&Observed {
            names: &self.names,
            own_namespace: OWN,
            sources: &self.sources,
            namespaces: &self.namespaces,
            copies: &self.copies,
            foreign: &self.foreign,
            in_use: &self.in_use,
            existing: &self.existing,
        })
    }
}

#[test]
fn a_copy_carries_name_type_data_and_our_marks_and_nothing_else_of_the_source() {
    let copy = copy_of(&source("token", "t1"), OWN, "team-a");
    assert_eq!(copy.metadata.name.as_deref(), Some("token"));
    assert_eq!(copy.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(copy.type_.as_deref(), Some("Opaque"));
    assert_eq!(copy.data, source("token", "t1").data);
    assert_eq!(
        copy.metadata.labels,
        Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".into(),
            "sidecar-injector".into()
        )]))
    );
    assert_eq!(
        copy.metadata.annotations,
        Some(BTreeMap::from([(
            "sidecar-injector.io/copied-from".into(),
            "sidecar-injector/token".into()
        )])),
        "the source's last-applied annotation (which holds the data) is not copied"
    );
    assert!(is_ours(&copy.metadata, OWN));
    assert!(!is_ours(&copy.metadata, "another-install"));
}

#[test]
fn every_injected_namespace_without_its_copy_gets_one() {
    let case = Case::new(&["team-a", "team-b"]);
    let p = case.plan();
    let created: Vec<String> = p.actions.iter().map(Action::target).collect();
    assert_eq!(created, ["team-a/token", "team-b/token"]);
    assert!(p.actions.iter().all(|a| a.verb() == "create"));
    assert_eq!(p.in_sync, 0);
}

#[test]
fn a_copy_equal_to_its_source_is_left_alone_and_counted_in_sync() {
    let mut case = Case::new(&["team-a"]);
    case.copies = vec![stored(copy_of(&case.sources["token"], OWN, "team-a"), "7")];
    assert_eq!(
        case.plan(),
        Plan {
            in_sync: 1,
            ..Plan::default()
        }
    );
}

#[test]
fn a_changed_source_or_an_edited_copy_is_updated_at_the_copy_s_resource_version() {
    let mut case = Case::new(&["team-a"]);
    case.copies = vec![stored(copy_of(&case.sources["token"], OWN, "team-a"), "7")];
    case.sources
        .insert("token".into(), source("token", "rotated"));
    let p = case.plan();
    let [Action::Update(s)] = p.actions.as_slice() else {
        panic!("one update: {p:?}");
    };
    assert_eq!(s.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(s.data, source("token", "rotated").data);

    assert!(p.uncopyable.is_empty());
}

/// A Secret's `type` cannot be changed by an update (the API refuses it), so when the
/// source's owner recreates it with another type, the copies are replaced: deleted (this
/// very object, by uid) and created anew. Before, the update failed every 30 s forever.
#[test]
fn a_source_recreated_with_another_type_has_its_copies_replaced() {
    let mut case = Case::new(&["team-a"]);
    case.copies = vec![stored(copy_of(&case.sources["token"], OWN, "team-a"), "8")];
    let mut recreated = source("token", "t1");
    recreated.type_ = Some("kubernetes.io/dockerconfigjson".into());
    case.sources.insert("token".into(), recreated.clone());
    let p = case.plan();
    let [Action::Replace { copy, uid }] = p.actions.as_slice() else {
        panic!("one replace: {p:?}");
    };
    assert_eq!(uid.as_deref(), Some("uid-8"));
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(
        copy.metadata.resource_version, None,
        "a create, not an update"
    );
    assert!(in_sync(copy, &recreated));
}

/// A service-account-token (or bootstrap token) source would hand its power to every
/// opted-in namespace: nothing is copied, and existing copies are not touched.
#[test]
fn a_source_of_a_type_that_means_something_to_kubernetes_is_never_copied() {
    for kind in [
        "kubernetes.io/service-account-token",
        "bootstrap.kubernetes.io/token",
        "example.com/anything-else",
    ] {
        let mut case = Case::new(&["team-a", "team-b"]);
        let old = stored(copy_of(&case.sources["token"], OWN, "team-a"), "1");
        case.copies = vec![old];
        let mut token = source("token", "t1");
        token.type_ = Some(kind.into());
        case.sources.insert("token".into(), token);
        let p = case.plan();
        assert_eq!(p.actions, [], "{kind}");
        assert_eq!(p.uncopyable, [("token".to_owned(), kind.to_owned())]);
    }
    for kind in COPYABLE_TYPES {
        let mut case = Case::new(&["team-a"]);
        let mut token = source("token", "t1");
        token.type_ = Some(kind.into());
        case.sources.insert("token".into(), token);
        assert_eq!(case.plan().actions.len(), 1, "{kind}");
    }
}

#[test]
fn copies_are_deleted_when_the_namespace_opts_out_or_the_name_leaves_the_list() {
    let mut case = Case::new(&["team-a"]);
    case.copies = vec![
        stored(copy_of(&case.sources["token"], OWN, "team-a"), "1"),
        stored(copy_of(&case.sources["token"], OWN, "opted-out"), "2"),
        stored(copy_of(&source("pull", "p"), OWN, "team-a"), "3"),
    ];
    let p = case.plan();
    assert_eq!(
        p.actions,
        [
            Action::Delete {
                namespace: "opted-out".into(),
                name: "token".into(),
                uid: Some("uid-2".into())
            },
            Action::Delete {
                namespace: "team-a".into(),
                name: "pull".into(),
                uid: Some("uid-3".into())
            },
        ]
    );
    assert_eq!(p.in_sync, 1);
}

/// Issue 33, finding 2: opting a namespace out (or renaming a listed Secret) deleted
/// the copies under running Pods, whose next restart then failed with
/// CreateContainerConfigError. A copy a Pod uses is kept, and goes with the last one.
#[test]
fn a_copy_a_pod_still_uses_is_kept_until_no_pod_does() {
    let mut case = Case::new(&["team-a"]);
    case.copies = vec![
        stored(copy_of(&case.sources["token"], OWN, "opted-out"), "2"),
        stored(copy_of(&source("renamed", "r"), OWN, "team-a"), "3"),
    ];
    case.in_use = BTreeSet::from([
        ("opted-out".to_owned(), "token".to_owned()),
        ("team-a".to_owned(), "renamed".to_owned()),
    ]);
    let p = case.plan();
    assert_eq!(
        p.kept,
        [
            ("opted-out".to_owned(), "token".to_owned()),
            ("team-a".to_owned(), "renamed".to_owned())
        ]
    );
    // The one copy still wanted is created; nothing is deleted.
    assert!(
        p.actions.iter().all(|a| a.verb() == "create"),
        "{:?}",
        p.actions
    );
    // The last Pod gone: both go.
    case.in_use.clear();
    let p = case.plan();
    assert!(p.kept.is_empty());
    assert_eq!(p.actions.iter().filter(|a| a.verb() == "delete").count(), 2);
    // A Pod using a Secret of that name in another namespace keeps nothing here.
    case.in_use = BTreeSet::from([("team-b".to_owned(), "token".to_owned())]);
    assert!(case.plan().kept.is_empty());
}

#[test]
fn every_way_a_pod_names_a_secret_is_a_use() {
    let spec: PodSpec = serde_json::from_value(serde_json::json!({
        "containers": [{"name": "app",
            "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "env-key", "key": "k"}}},
                    {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "not-a-secret", "key": "k"}}}],
            "envFrom": [{"secretRef": {"name": "env-from"}}]}],
        "initContainers": [{"name": "init",
            "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "init-key", "key": "k"}}}]}],
        "ephemeralContainers": [{"name": "debug", "envFrom": [{"secretRef": {"name": "debug-from"}}]}],
        "volumes": [{"name": "v", "secret": {"secretName": "volume"}},
                    {"name": "p", "projected": {"sources": [{"secret": {"name": "projected"}}]}}],
        "imagePullSecrets": [{"name": "pull"}]
    }))
    .unwrap();
    let used: Vec<String> = used_by(&spec).into_iter().collect();
    assert_eq!(
        used,
        [
            "debug-from",
            "env-from",
            "env-key",
            "init-key",
            "projected",
            "pull",
            "volume"
        ]
    );
}

/// Issue 33, findings 3 and 9: the foreign message said "not labelled managed-by" of
/// Secrets that were labelled (another install's copies); a Secret made by hand with the
/// keys the templates read serves the Pods as a copy would.
#[test]
fn a_secret_that_is_not_ours_says_why_and_what_it_lacks() {
    let mut theirs = copy_of(&source("token", "t"), "old-install", "team-a");
    let why = not_ours_because(&theirs.metadata, OWN);
    assert_eq!(
        why,
        "labelled app.kubernetes.io/managed-by=sidecar-injector, but its sidecar-injector.io/copied-from is old-install/token, not sidecar-injector/token (another install's copy)"
    );
    theirs.metadata.annotations = None;
    assert!(not_ours_because(&theirs.metadata, OWN).contains("without the annotation"));
    theirs.metadata.labels = None;
    assert_eq!(
        not_ours_because(&theirs.metadata, OWN),
        "not labelled app.kubernetes.io/managed-by=sidecar-injector"
    );
    let keys = BTreeSet::from(["api-token".to_owned(), "other".to_owned()]);
    let hand_made = source("token", "t");
    assert_eq!(lacks(&hand_made, &keys), ["other"]);
    assert!(lacks(&hand_made, &BTreeSet::from(["api-token".to_owned()])).is_empty());
}

/// Issue 33, finding 3: after a reinstall in another namespace, the first install's
/// copies (labelled ours, copied from `old/NAME`) were "foreign" forever. Once `old/NAME`
/// is gone they are taken over; while it exists, another live install owns them, and two
/// installs never rewrite the same copy in turn.
#[test]
fn a_gone_install_s_copies_are_adopted_and_a_live_one_s_never() {
    let mut case = Case::new(&["team-a"]);
    let mut old = stored(copy_of(&source("token", "old"), "old", "team-a"), "7");
    old.metadata.resource_version = Some("42".into());
    case.copies = vec![old];
    let p = case.plan();
    assert_eq!(
        p.adopted,
        [("team-a/token".to_owned(), "old/token".to_owned())]
    );
    let [Action::Update(want)] = p.actions.as_slice() else {
        panic!("one update: {:?}", p.actions);
    };
    assert!(is_ours(&want.metadata, OWN), "rewritten as ours");
    assert_eq!(want.metadata.resource_version.as_deref(), Some("42"));
    assert_eq!(
        want.data, case.sources["token"].data,
        "with this install's data"
    );

    // The other install still has its source: its copy, someone else's (the sync's
    // metadata watch says so), never ours to write.
    case.existing.insert("old/token".into());
    case.foreign.insert(("team-a".into(), "token".into()));
    let p = case.plan();
    assert!(p.adopted.is_empty() && p.actions.is_empty(), "{p:?}");
    assert_eq!(p.foreign, 1);
    // And adopting it must not make the other install adopt it back: from its side, our
    // source exists.
    let ours_now = stored(copy_of(&source("token", "t1"), OWN, "team-a"), "8");
    let theirs_view = BTreeSet::from([source_ref(OWN, "token")]);
    assert!(!adoptable(&ours_now.metadata, "old", &theirs_view));
}

#[test]
fn other_people_s_secrets_are_never_written() {
    let mut case = Case::new(&["team-a", "team-b"]);
    // Labelled like ours, but copied by another install: not ours, not deleted.
    let mut other_install = copy_of(&case.sources["token"], "elsewhere", "gone");
    other_install.metadata.resource_version = Some("4".into());
    case.copies = vec![other_install];
    case.foreign.insert(("team-b".into(), "token".into()));
    let p = case.plan();
    assert_eq!(
        p.actions.iter().map(Action::target).collect::<Vec<_>>(),
        ["team-a/token"]
    );
    assert_eq!(p.foreign, 1);
}

#[test]
fn without_its_source_nothing_is_created_and_existing_copies_stay() {
    let mut case = Case::new(&["team-a", "team-b"]);
    case.copies = vec![stored(copy_of(&case.sources["token"], OWN, "team-a"), "1")];
    case.sources.clear();
    let p = case.plan();
    assert_eq!(p.actions, []);
    assert_eq!(p.missing_sources, ["token"]);
}

#[test]
fn the_injector_s_own_namespace_never_gets_a_copy_of_its_source() {
    let case = Case::new(&[OWN, "team-a"]);
    let p = case.plan();
    assert_eq!(
        p.actions.iter().map(Action::target).collect::<Vec<_>>(),
        ["team-a/token"]
    );
}

#[test]
fn doctor_judges_missing_stale_foreign_and_in_sync() {
    let src = source("token", "t1");
    let copy = copy_of(&src, OWN, "team-a");
    assert_eq!(judge(None, &src, OWN), Standing::Missing);
    assert_eq!(judge(Some(&copy), &src, OWN), Standing::InSync);
    assert_eq!(
        judge(Some(&copy), &source("token", "t2"), OWN),
        Standing::Stale
    );
    let mut theirs = src.clone();
    theirs.metadata.namespace = Some("team-a".into());
    assert_eq!(judge(Some(&theirs), &src, OWN), Standing::Foreign);
}
