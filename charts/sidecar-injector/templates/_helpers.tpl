{{/* The labels every object carries (as manifests/ gives them). */}}
{{- define "sidecar-injector.labels" -}}
app.kubernetes.io/name: sidecar-injector
app.kubernetes.io/part-of: sidecar-injector
{{- end }}

{{/* config.yaml: the value, or the shipped default. */}}
{{- define "sidecar-injector.settings" -}}
{{- if .Values.config.settings }}{{ .Values.config.settings }}{{ else }}{{ .Files.Get "files/config.yaml" }}{{ end }}
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
