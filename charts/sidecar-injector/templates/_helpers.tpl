{{/* The labels every object carries (as manifests/ gives them). `doctor`, `check` and
     `preview` find an install by app.kubernetes.io/name, whatever the release is called;
     instance tells two installs apart. Never in a selector: selectors are immutable. */}}
{{- define "sidecar-injector.labels" -}}
app.kubernetes.io/name: sidecar-injector
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: sidecar-injector
{{- end }}

{{/* config.yaml: the value, or the shipped default. */}}
{{- define "sidecar-injector.settings" -}}
{{- if .Values.config.settings }}{{ .Values.config.settings }}{{ else }}{{ .Files.Get "files/config.yaml" }}{{ end }}
{{- end }}

{{/* The names the deployed release granted and this one drops, as JSON: the injector
     deletes their copies once it reads the new config, and may still do so (delete only)
     until the next upgrade. Read from the live grant itself (helm lookup of the ClusterRole
     this chart wrote; its rule with `update`), not from the ConfigMap: whoever may edit the
     ConfigMap must not widen the grant at the next upgrade. `helm template` and a first
     install have none. */}}
{{- define "sidecar-injector.retiringSecrets" -}}
{{- $now := (include "sidecar-injector.settings" . | fromYaml).propagateSecrets | default list }}
{{- $was := list }}
{{- with lookup "rbac.authorization.k8s.io/v1" "ClusterRole" "" (printf "%s-secrets" .Release.Name) }}
{{- range .rules }}
{{- if has "update" .verbs }}{{ $was = concat $was .resourceNames }}{{ end }}
{{- end }}
{{- end }}
{{- $out := list }}
{{- range $was }}
{{- if not (has . $now) }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "sidecar-injector.subject" -}}
subjects:
- kind: ServiceAccount
  name: sidecar-injector
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* Checks the values a schema cannot. */}}
{{- define "sidecar-injector.check" -}}
{{- if and .Values.webhook.caBundle (ne .Values.certificates.mode "existingSecret") }}
{{- fail (printf "webhook.caBundle is only for certificates.mode existingSecret; with %s the caBundle is set in the cluster (by the injector or cert-manager): remove webhook.caBundle" .Values.certificates.mode) }}
{{- end }}
{{- if and .Values.webhook.url (eq .Values.certificates.mode "certManager") }}
{{- fail "certificates.mode certManager issues for the in-cluster Service: with webhook.url, use selfManaged or existingSecret" }}
{{- end }}
{{- $settings := include "sidecar-injector.settings" . | fromYaml }}
{{- if hasKey $settings "Error" }}
{{- fail (printf "config.settings is not YAML: %s" (get $settings "Error")) }}
{{- end }}
{{- end }}

{{/* The injector's image: repository:tag, pinned to the index by image.digest when given. */}}
{{- define "sidecar-injector.image" -}}
{{- if .Values.image.digest -}}
{{ printf "%s:%s@%s" .Values.image.repository .Values.image.tag .Values.image.digest }}
{{- else -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end -}}
{{- end }}

{{/* imagePullSecrets of the injector's Pods (the Deployment's and the hooks'), at the
     indentation of a Pod spec's fields. */}}
{{- define "sidecar-injector.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
- name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The pod spec of a hook: the injector's image running one command as its own
     ServiceAccount, as locked down as the Deployment. Called with (list $ NAME ARGS). */}}
{{- define "sidecar-injector.hookPod" -}}
{{- $ := index . 0 }}
restartPolicy: Never
serviceAccountName: {{ index . 1 }}
{{- include "sidecar-injector.pullSecrets" $ }}
{{- with $.Values.hooks.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile: {type: RuntimeDefault}
containers:
- name: {{ index . 1 }}
  image: {{ include "sidecar-injector.image" $ | quote }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
  {{- toYaml (index . 2) | nindent 2 }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 200m, memory: 64Mi}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    capabilities:
      drop: [ALL]
{{- end }}
