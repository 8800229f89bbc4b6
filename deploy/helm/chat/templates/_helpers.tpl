{{/* Chart name. */}}
{{- define "chat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "chat.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "chat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "chat.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "chat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "chat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chat.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "chat.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Validated storage backend. */}}
{{- define "chat.backend" -}}
{{- $b := .Values.storage.backend }}
{{- if not (has $b (list "sqlite" "postgres")) }}
{{- fail (printf "storage.backend must be sqlite or postgres, got %q" $b) }}
{{- end }}
{{- if and (eq $b "postgres") (not .Values.storage.postgres.url) (not .Values.storage.postgres.existingSecret) }}
{{- fail "storage.backend=postgres needs storage.postgres.url or storage.postgres.existingSecret" }}
{{- end }}
{{- $b }}
{{- end }}

{{/* SQLite allows exactly one replica; PostgreSQL allows many. */}}
{{- define "chat.replicas" -}}
{{- if eq (include "chat.backend" .) "sqlite" }}1{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{- define "chat.postgresSecretName" -}}
{{- default (printf "%s-postgres" (include "chat.fullname" .)) .Values.storage.postgres.existingSecret }}
{{- end }}

{{/* Validated cache kind. */}}
{{- define "chat.cacheKind" -}}
{{- $kind := .Values.cache.kind }}
{{- if not (has $kind (list "none" "memory" "redis")) }}
{{- fail (printf "cache.kind must be none, memory or redis, got %q" $kind) }}
{{- end }}
{{- if and (eq $kind "redis") (not .Values.cache.redis.existingSecret) }}
{{- fail "cache.kind=redis needs cache.redis.existingSecret, a Secret holding the redis:// URL" }}
{{- end }}
{{- $kind }}
{{- end }}

{{- define "chat.pvcName" -}}
{{- default (printf "%s-data" (include "chat.fullname" .)) .Values.storage.sqlite.persistence.existingClaim }}
{{- end }}
