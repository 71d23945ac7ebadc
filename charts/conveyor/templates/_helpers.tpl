{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "conveyor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects; component objects append "-api", "-worker-<pool>", ...
*/}}
{{- define "conveyor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "conveyor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conveyor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "conveyor.labels" -}}
helm.sh/chart: {{ include "conveyor.chart" . }}
{{ include "conveyor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: conveyor
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "api") and, for a worker
pool, "pool" "<name>".
*/}}
{{- define "conveyor.componentSelectorLabels" -}}
{{ include "conveyor.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if .pool }}
conveyor.io/worker-pool: {{ .pool }}
{{- end }}
{{- end }}

{{- define "conveyor.componentLabels" -}}
{{ include "conveyor.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if .pool }}
conveyor.io/worker-pool: {{ .pool }}
{{- end }}
{{- end }}

{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conveyor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "conveyor.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end }}

{{/*
One setting value as a string: lists and maps as JSON, whole numbers without Go's exponent notation.
*/}}
{{- define "conveyor.settingValue" -}}
{{- if or (kindIs "slice" .) (kindIs "map" .) -}}
{{- toJson . -}}
{{- else if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end }}

{{/*
Pod template annotations shared by every component: a checksum of the ConfigMap so that a settings
change rolls every Deployment.
*/}}
{{- define "conveyor.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod spec fields shared by every component (rendered at the level of spec.template.spec).
*/}}
{{- define "conveyor.podSpecCommon" -}}
serviceAccountName: {{ include "conveyor.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
  - name: state
    emptyDir:
      sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
{{- end }}

{{/*
Scheduling constraints of a component: its own nodeSelector/tolerations when given, else the
chart-wide ones; topologySpreadConstraints when given, else a spread of the component's own pods.
Call with (dict "root" $ "own" <component values> "component" <componentSelectorLabels dict>).
*/}}
{{- define "conveyor.scheduling" -}}
{{- $spread := .root.Values.topologySpread }}
{{- if .root.Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .root.Values.topologySpreadConstraints | nindent 2 }}
{{- else if $spread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ $spread.maxSkew }}
    topologyKey: {{ $spread.topologyKey }}
    whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "conveyor.componentSelectorLabels" .component | nindent 8 }}
{{- end }}
{{- $nodeSelector := .root.Values.nodeSelector }}
{{- $tolerations := .root.Values.tolerations }}
{{- if .own.nodeSelector }}{{ $nodeSelector = .own.nodeSelector }}{{ end }}
{{- if .own.tolerations }}{{ $tolerations = .own.tolerations }}{{ end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Container fields shared by every Conveyor container (rendered at the level of a container).
Call with (dict "root" $ "env" <extra EnvVar list, optional> "envFrom" <extra EnvFromSource list, optional>
"configMap" false <optional: leave out the release's ConfigMap, for hooks that run before it exists>).
*/}}
{{- define "conveyor.containerCommon" -}}
{{- $root := .root }}
{{- $extraEnv := .env }}
{{- $extraEnvFrom := .envFrom }}
{{- $withConfigMap := true }}
{{- if hasKey . "configMap" }}{{ $withConfigMap = .configMap }}{{ end }}
{{- with $root -}}
image: {{ include "conveyor.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
envFrom:
  {{- if $withConfigMap }}
  - configMapRef:
      name: {{ include "conveyor.fullname" . }}
  {{- end }}
  {{- with .Values.auth.existingSecret }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- with .Values.envFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  {{- if .Values.redis.existingSecret }}
  - name: CONVEYOR_BROKER_URL
    valueFrom:
      secretKeyRef:
        name: {{ .Values.redis.existingSecret }}
        key: {{ .Values.redis.brokerUrlKey }}
  - name: CONVEYOR_REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ .Values.redis.existingSecret }}
        key: {{ .Values.redis.urlKey }}
  {{- end }}
  {{- with .Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: state
    mountPath: /var/lib/conveyor
{{- end }}
{{- end }}

{{/*
PodDisruptionBudget spec body. Call with the component's podDisruptionBudget values.
*/}}
{{- define "conveyor.pdbBudget" -}}
{{- if not (kindIs "invalid" .minAvailable) -}}
minAvailable: {{ .minAvailable }}
{{- else -}}
maxUnavailable: {{ default 1 .maxUnavailable }}
{{- end -}}
{{- end }}

{{/*
HorizontalPodAutoscaler metrics. Call with the component's autoscaling values.
*/}}
{{- define "conveyor.hpaMetrics" -}}
{{- if not (or .targetCPUUtilizationPercentage .targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end -}}
metrics:
  {{- with .targetCPUUtilizationPercentage }}
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ . }}
  {{- end }}
  {{- with .targetMemoryUtilizationPercentage }}
  - type: Resource
    resource:
      name: memory
      target:
        type: Utilization
        averageUtilization: {{ . }}
  {{- end }}
{{- end }}

{{/*
A worker pool's values: worker.poolDefaults deep-merged under the pool's own keys.
Call with (dict "root" $ "pool" <pool>); returns YAML, read back with fromYaml.
*/}}
{{- define "conveyor.workerPool" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.worker.poolDefaults) (deepCopy .pool)) }}
{{- end }}

{{/*
Liveness and startup probes from a heartbeat file (workers and beat). Call with the component's
liveness values; the probe is a shell test of the file's age, so it answers in milliseconds.
*/}}
{{- define "conveyor.heartbeatProbe" -}}
exec:
  command:
    - sh
    - -c
    - {{ printf "test $(( $(date +%%s) - $(stat -c %%Y %s) )) -lt %d" .file (int .maxAgeSeconds) | quote }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: 5
failureThreshold: {{ .failureThreshold }}
{{- end }}

{{/*
The CONVEYOR_* settings every container loads (the ConfigMap's data): dedicated values first, then
each key of `settings`. Used by the release's ConfigMap and by the migration hook's own copy.
*/}}
{{- define "conveyor.configData" -}}
{{- $reserved := list "store" "state_dir" "sqlite_path" "api_host" "api_port" "firestore_project" "firestore_database" "broker_url" "redis_url" "auth_enabled" "oidc_jwks_url" "oidc_issuer" "oidc_audience" "oidc_algorithms" "approval_link_secret" "sentry_dsn" }}
CONVEYOR_STORE: "firestore"
CONVEYOR_STATE_DIR: "/var/lib/conveyor"
CONVEYOR_API_HOST: "0.0.0.0"
CONVEYOR_API_PORT: {{ include "conveyor.settingValue" .Values.api.port | quote }}
CONVEYOR_FIRESTORE_PROJECT: {{ required "firestore.project is required" .Values.firestore.project | quote }}
CONVEYOR_FIRESTORE_DATABASE: {{ default "(default)" .Values.firestore.database | quote }}
GOOGLE_CLOUD_PROJECT: {{ default .Values.firestore.project .Values.pubsub.project | quote }}
{{- with .Values.firestore.emulatorHost }}
FIRESTORE_EMULATOR_HOST: {{ . | quote }}
{{- end }}
{{- with .Values.pubsub.emulatorHost }}
PUBSUB_EMULATOR_HOST: {{ . | quote }}
{{- end }}
{{- if not .Values.redis.existingSecret }}
CONVEYOR_BROKER_URL: {{ required "redis.brokerUrl (or redis.existingSecret) is required" .Values.redis.brokerUrl | quote }}
CONVEYOR_REDIS_URL: {{ required "redis.url (or redis.existingSecret) is required" .Values.redis.url | quote }}
{{- end }}
CONVEYOR_AUTH_ENABLED: {{ .Values.auth.enabled | toString | quote }}
{{- with .Values.auth.oidc }}
{{- if .jwksUrl }}
CONVEYOR_OIDC_JWKS_URL: {{ .jwksUrl | quote }}
CONVEYOR_OIDC_ISSUER: {{ required "auth.oidc.issuer is required with auth.oidc.jwksUrl" .issuer | quote }}
CONVEYOR_OIDC_AUDIENCE: {{ required "auth.oidc.audience is required with auth.oidc.jwksUrl" .audience | quote }}
CONVEYOR_OIDC_ALGORITHMS: {{ toJson (default (list "RS256") .algorithms) | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := .Values.settings }}
{{- if has $key $reserved }}
{{- fail (printf "settings.%s has a dedicated value in values.yaml; set that instead" $key) }}
{{- end }}
{{- if not (kindIs "invalid" $value) }}
{{ printf "CONVEYOR_%s" (upper $key) }}: {{ include "conveyor.settingValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}
