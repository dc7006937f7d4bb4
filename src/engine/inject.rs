//! Injecting: the chosen templates' fragment, merged into the Pod as received, as a patch.

use super::*;

pub(super) fn inject(pod: &PodView<'_>, req: &Request<'_>, config: &Config) -> Decision {
    let mut warnings = Vec::new();
    let (names, chosen_by) = template_names(pod, req, config, &mut warnings);
    let templates = match config.resolve(&names) {
        Ok(t) => t,
        Err(e) => {
            let chosen_by = if chosen_by.is_empty() {
                format!("{}'s templates", crate::engine::config::SETTINGS_KEY)
            } else {
                chosen_by
            };
            return Decision::unpatched(Reason::UnknownTemplate, format!("{chosen_by}: {e}"))
                .with_warnings(warnings);
        }
    };
    let spec = match pod.spec() {
        Ok(s) => s,
        Err(e) => return Decision::unpatched(Reason::InvalidObject, e).with_warnings(warnings),
    };
    let templates: Vec<&NamedTemplate> = match spec.windows.as_deref() {
        None => templates,
        Some(why) => {
            let (fit, linux_only): (Vec<_>, Vec<_>) =
                templates.into_iter().partition(|t| t.windows);
            let linux_only: Vec<&str> = linux_only.iter().map(|t| t.name.as_str()).collect();
            if fit.is_empty() {
                return Decision::unpatched(
                    Reason::WindowsPod,
                    format!(
                        "the Pod runs on Windows ({why}) and no template of {names:?} declares os: [linux, windows]"
                    ),
                )
                .with_warnings(warnings);
            }
            if !linux_only.is_empty() {
                warnings.push(format!(
                    "the Pod runs on Windows ({why}): templates {linux_only:?} are Linux-only and not injected"
                ));
            }
            fit
        }
    };
    let values = overridden_values(pod, req, config, &mut warnings);
    let fragment = match config.fragment(&templates, pod, req.namespace, values.as_ref()) {
        Ok(f) => f,
        Err(FragmentError::Template(e)) if values.is_some() => {
            // Overrides are the namespace's or the Pod's: they never break injection.
            match config.fragment(&templates, pod, req.namespace, None) {
                Ok(f) => {
                    warnings.push(format!(
                        "the overridden values do not render ({e}); injected with the configured values"
                    ));
                    f
                }
                Err(e) => return fragment_failure(e).with_warnings(warnings),
            }
        }
        Err(e) => return fragment_failure(e).with_warnings(warnings),
    };
    let native = native_sidecars(pod, spec.restart_policy.as_deref(), req, config);
    match plan(
        pod,
        &spec,
        &fragment,
        native,
        &templates,
        config.docker_socket.pod_note(),
    ) {
        Ok((patch, status, mut plan_warnings)) => {
            warnings.append(&mut plan_warnings);
            if let Some(w) = pod_security_problem(req, &fragment, &status) {
                match config.settings.pod_security {
                    PodSecurity::Warn => warnings.push(w),
                    PodSecurity::Ignore => {}
                    PodSecurity::Skip => {
                        warnings.push(format!("not injected: {w}"));
                        return Decision::unpatched(Reason::PodSecurity, w).with_warnings(warnings);
                    }
                }
            }
            let mut message = format!("injected containers {:?}", status.containers);
            if !status.init_containers.is_empty() {
                message.push_str(&format!(", init containers {:?}", status.init_containers));
            }
            if native {
                message.push_str(" (native sidecars)");
            }
            let default_list = templates.len() == config.settings.templates.len()
                && templates
                    .iter()
                    .zip(&config.settings.templates)
                    .all(|(t, n)| &t.name == n);
            if !default_list {
                let used: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
                message.push_str(&format!(" from templates {used:?}"));
            }
            Decision {
                reason: Reason::Injected,
                message,
                patch,
                warnings,
            }
        }
        Err(f) => Decision::unpatched(f.reason, f.message).with_warnings(warnings),
    }
}

pub(super) fn fragment_failure(e: FragmentError) -> Decision {
    match e {
        FragmentError::Template(e) => Decision::unpatched(
            Reason::TemplateError,
            format!("the template does not render for this Pod: {e}"),
        ),
        FragmentError::Conflict(e) => Decision::unpatched(Reason::Conflict, e),
    }
}

/// When the namespace's Pod Security level is known (its labels were given) and forbids
/// hostPath volumes (baseline and restricted do), the Pod will be rejected after injection:
/// say so, naming the volumes.
pub(super) fn pod_security_problem(
    req: &Request<'_>,
    f: &Fragment,
    status: &Status,
) -> Option<String> {
    let level = req.namespace_labels?.get(PSA_ENFORCE_KEY)?;
    if !matches!(level.as_str(), "baseline" | "restricted") {
        return None;
    }
    let host_paths: Vec<&str> = f
        .volumes
        .iter()
        .filter(|v| {
            v.value.get("hostPath").is_some() && status.volumes.iter().any(|n| n == v.name())
        })
        .map(Item::name)
        .collect();
    (!host_paths.is_empty()).then(|| {
        format!(
            "namespace {:?} enforces Pod Security {level:?}, which rejects the injected hostPath volumes {host_paths:?}: \
             opt it out of the socket/cgroup mounts (a `when:` on them) or use the privileged level",
            req.namespace
        )
    })
}

pub(super) struct Failure {
    reason: Reason,
    message: String,
}

pub(super) fn conflict(message: String) -> Failure {
    Failure {
        reason: Reason::Conflict,
        message,
    }
}

pub(super) fn invalid(message: String) -> Failure {
    Failure {
        reason: Reason::InvalidObject,
        message,
    }
}

/// The entries of some lists of the spec, by name.
pub(super) fn by_name<'s, 'a>(
    lists: &[&'s Option<Vec<Entry<'a>>>],
) -> HashMap<&'s str, &'s Entry<'a>> {
    lists
        .iter()
        .copied()
        .flatten()
        .flatten()
        .map(|e| (e.name.as_ref(), e))
        .collect()
}

pub(super) fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// True when `existing` already holds everything `wanted` says. The apiserver defaults fields
/// before webhooks see a Pod, so an earlier injection comes back with more, never with less.
pub(super) fn covers(existing: &Value, wanted: &Value) -> bool {
    match (existing, wanted) {
        (Value::Object(e), Value::Object(w)) => w.iter().all(|(k, wv)| match e.get(k) {
            Some(ev) => covers(ev, wv),
            None => wv.is_null(),
        }),
        (Value::Array(e), Value::Array(w)) => {
            e.len() == w.len() && e.iter().zip(w).all(|(a, b)| covers(a, b))
        }
        (e, w) => e == w,
    }
}

/// Keeps the entries of `wanted` the Pod does not have yet. One it has under the same name
/// with another definition is a conflict: injecting would break it or the Pod.
pub(super) fn missing<'w, 'a>(
    pod: &PodView<'a>,
    existing: &HashMap<&str, &Entry<'a>>,
    wanted: impl IntoIterator<Item = &'w Item>,
    what: &str,
) -> Result<Vec<&'w Item>, Failure> {
    let mut out = Vec::new();
    for w in wanted {
        match existing.get(w.name()) {
            None => out.push(w),
            Some(e) if covers(&pod.entry_value(e), &w.value) => {}
            Some(_) => {
                return Err(conflict(format!(
                    "the Pod already has a {what} named {:?} that differs from the template's",
                    w.name()
                )));
            }
        }
    }
    Ok(out)
}

type Plan = (Patch, Status, Vec<String>);

pub(super) fn shared(items: &[&Item]) -> Vec<Shared> {
    items.iter().map(|i| i.json.clone()).collect()
}

pub(super) fn names(items: &[&Item]) -> Vec<String> {
    items.iter().map(|i| i.name().to_owned()).collect()
}

pub(super) fn plan<'a>(
    pod: &PodView<'a>,
    spec: &Spec<'a>,
    f: &Fragment,
    native: bool,
    templates: &[&NamedTemplate],
    note: Option<String>,
) -> Result<Plan, Failure> {
    let mut warnings = Vec::new();
    let containers_by_name = by_name(&[
        &spec.containers,
        &spec.init_containers,
        &spec.ephemeral_containers,
    ]);
    let volumes_by_name = by_name(&[&spec.volumes]);
    let secrets = by_name(&[&spec.image_pull_secrets]);

    // As native sidecars, the template's containers carry restartPolicy: Always.
    let sidecars: Vec<&Item> = f
        .containers
        .iter()
        .map(|c| {
            if native {
                c.native.as_deref().unwrap_or(c)
            } else {
                c
            }
        })
        .collect();
    let add_init = missing(
        pod,
        &containers_by_name,
        f.init_containers.iter(),
        "container",
    )?;
    let add_sidecars = missing(pod, &containers_by_name, sidecars, "container")?;
    let add_volumes = missing(pod, &volumes_by_name, f.volumes.iter(), "volume")?;
    let add_secrets: Vec<&Item> = f
        .image_pull_secrets
        .iter()
        .filter(|s| !secrets.contains_key(s.name()))
        .collect();

    // Every mount of what is injected must name a volume the Pod will have.
    let volume_names: HashSet<&str> = volumes_by_name
        .keys()
        .copied()
        .chain(f.volumes.iter().map(Item::name))
        .collect();
    let mounts = f
        .init_containers
        .iter()
        .chain(&f.containers)
        .flat_map(|c| {
            c.value
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .chain(f.app_volume_mounts.iter().map(|m| &m.value));
    for m in mounts {
        if !volume_names.contains(name_of(m)) {
            return Err(Failure {
                reason: Reason::TemplateError,
                message: format!(
                    "the template mounts volume {:?}, which neither it nor the Pod defines",
                    name_of(m)
                ),
            });
        }
    }

    let mut b = PatchBuilder::default();
    b.extend_list(
        &["spec", "imagePullSecrets"],
        spec.image_pull_secrets.is_some(),
        shared(&add_secrets),
    );
    b.extend_list(
        &["spec", "volumes"],
        spec.volumes.is_some(),
        shared(&add_volumes),
    );
    // What the ServiceAccount plugin would add to each new container when the apiserver
    // re-runs it after our patch: added here, so its second pass changes nothing and the
    // apiserver does not call us a second time.
    let token = service_account_token(spec);
    let with_token = |items: &[&Item]| -> Vec<Shared> {
        items
            .iter()
            .map(|i| match token {
                Some(volume) => token_mounted(i, volume),
                None => i.json.clone(),
            })
            .collect()
    };
    let mut init_items = with_token(&add_init);
    if native {
        init_items.extend(with_token(&add_sidecars));
    }
    b.extend_list(
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        init_items,
    );
    merge_app_containers(&mut b, spec, f, &mut warnings)?;
    if !native {
        b.extend_list(
            &["spec", "containers"],
            spec.containers.is_some(),
            with_token(&add_sidecars),
        );
    }

    let status = Status {
        template_hash: combined_hash(templates),
        templates: templates
            .iter()
            .map(|t| (t.name.clone(), t.hash.clone()))
            .collect(),
        containers: names(&add_sidecars),
        init_containers: names(&add_init),
        volumes: names(&add_volumes),
        image_pull_secrets: names(&add_secrets),
        notes: note.into_iter().collect(),
    };
    let status_json = serde_json::to_string(&status).map_err(|e| Failure {
        reason: Reason::TemplateError,
        message: format!("cannot write the status annotation: {e}"),
    })?;
    if pod.has_metadata {
        b.set_in_map(
            &["metadata", "annotations"],
            pod.annotations_present(),
            STATUS_KEY,
            Value::String(status_json),
        );
    } else {
        // A Pod template may come without metadata (a CronJob's often does).
        let annotations = serde_json::json!({ STATUS_KEY: status_json });
        b.set_in_map(
            &[],
            true,
            "metadata",
            serde_json::json!({ "annotations": annotations }),
        );
    }
    Ok((b.into_patch(), status, warnings))
}

/// The ServiceAccount admission plugin's token volume: the first volume named
/// `kube-api-access-*`, unless the Pod turns automounting off. The plugin runs before the
/// webhooks, so a Pod that will get a token has it when we see it.
pub(super) fn service_account_token<'s>(spec: &'s Spec<'_>) -> Option<&'s str> {
    if spec.automount_token_off {
        return None;
    }
    spec.volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_ref())
        .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
}

/// The container with the token mount the ServiceAccount plugin gives every container that
/// has nothing mounted at its path, as that plugin writes it.
pub(super) fn token_mounted(item: &Item, volume: &str) -> Shared {
    match &item.token_mount {
        Some(t) => t.with_volume(volume),
        None => item.json.clone(),
    }
}

/// `appContainers`: env and volumeMounts for each of the Pod's own containers. What a
/// container already sets wins: an env var it names, a volume it mounts, a path it uses.
pub(super) fn merge_app_containers(
    b: &mut PatchBuilder,
    spec: &Spec<'_>,
    f: &Fragment,
    warnings: &mut Vec<String>,
) -> Result<(), Failure> {
    if f.app_env.is_empty() && f.app_volume_mounts.is_empty() {
        return Ok(());
    }
    let injected: HashSet<&str> = f
        .containers
        .iter()
        .chain(&f.init_containers)
        .map(Item::name)
        .collect();
    for (i, entry) in spec.containers.iter().flatten().enumerate() {
        if injected.contains(entry.name.as_ref()) {
            continue; // a container the template adds is no app container
        }
        let idx = i.to_string();
        let c = entry
            .app_container(&format!("spec.containers[{i}]"))
            .map_err(invalid)?;
        let have_env: HashSet<&str> = c.env.iter().flatten().map(AsRef::as_ref).collect();
        let env: Vec<Shared> = f
            .app_env
            .iter()
            .filter(|e| !have_env.contains(e.name()))
            .map(|e| e.json.clone())
            .collect();
        b.extend_list(&["spec", "containers", &idx, "env"], c.env.is_some(), env);

        let have_mounts: HashSet<&str> =
            c.mounts.iter().flatten().map(|(n, _)| n.as_ref()).collect();
        let have_paths: HashMap<&str, &str> = c
            .mounts
            .iter()
            .flatten()
            .map(|(n, p)| (p.as_ref(), n.as_ref()))
            .collect();
        let mut mounts = Vec::new();
        for m in f
            .app_volume_mounts
            .iter()
            .filter(|m| !have_mounts.contains(m.name()))
        {
            let path = m
                .value
                .get("mountPath")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match have_paths.get(path) {
                Some(other) => warnings.push(format!(
                    "container {:?} already mounts {other:?} at {path}; {:?} not mounted there",
                    c.name,
                    m.name()
                )),
                None => mounts.push(m.json.clone()),
            }
        }
        b.extend_list(
            &["spec", "containers", &idx, "volumeMounts"],
            c.mounts.is_some(),
            mounts,
        );
    }
    Ok(())
}

pub(super) fn gvk_string(k: &GroupVersionKind) -> String {
    if k.group.is_empty() {
        format!("{}/{}", k.version, k.kind)
    } else {
        format!("{}/{} {}", k.group, k.version, k.kind)
    }
}

/// A value for a message: at most 80 characters of its JSON.
pub(super) fn short(json: &str) -> String {
    if json.len() <= 80 {
        return json.to_owned();
    }
    let mut end = 77;
    while !json.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &json[..end])
}
