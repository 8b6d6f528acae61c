{{- define "compute-ctl.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "compute-ctl.computeId" -}}
{{- default (include "compute-ctl.fullname" .) .Values.computeId -}}
{{- end -}}

{{- define "compute-ctl.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "compute-ctl.labels" -}}
{{ include "compute-ctl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "compute-ctl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "compute-ctl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "compute-ctl.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "compute-ctl.keysSecret" -}}
{{- default (printf "%s-keys" (include "compute-ctl.computeId" .)) .Values.keys.secretName -}}
{{- end -}}

{{- /* The Secrets the operator may get (JSON list): <computeId>-credentials, those the
credentials value references, and rbac.secretNames. */ -}}
{{- define "compute-ctl.credentialSecrets" -}}
{{- $names := list (printf "%s-credentials" (include "compute-ctl.computeId" .)) -}}
{{- with .Values.credentials -}}
{{- range .roles -}}
{{- $names = append $names .passwordFrom.secretKeyRef.name -}}
{{- end -}}
{{- with .storageAuthTokenFrom -}}
{{- $names = append $names .secretKeyRef.name -}}
{{- end -}}
{{- with .endpointStorageTokenFrom -}}
{{- $names = append $names .secretKeyRef.name -}}
{{- end -}}
{{- end -}}
{{- concat $names .Values.rbac.secretNames | uniq | toJson -}}
{{- end -}}
