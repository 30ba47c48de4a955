{{/* Names and labels shared by the templates. */}}
{{- define "lowrank.fullname" -}}
{{- if contains "lowrank" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-lowrank" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "lowrank.labels" -}}
app.kubernetes.io/name: lowrank
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lowrank.selector" -}}
app.kubernetes.io/name: lowrank
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lowrank.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{ printf "%s/%s:%s" .root.Values.image.registry .name $tag }}
{{- end -}}

{{- define "lowrank.externalSecret" -}}{{ include "lowrank.fullname" . }}-external{{- end -}}

{{- define "lowrank.registryUrl" -}}
{{- .Values.registry.url | default (printf "http://%s-registry.%s.svc:%d" (include "lowrank.fullname" .) .Release.Namespace (int .Values.registry.port)) -}}
{{- end -}}
