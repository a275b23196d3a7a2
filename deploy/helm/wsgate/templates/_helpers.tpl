{{/*
Names and labels.
*/}}
{{- define "wsgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wsgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wsgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wsgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wsgate.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
{{ include "wsgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Redis pods carry another name, so that wsgate's selector never matches them. */}}
{{- define "wsgate.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsgate.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wsgate.redis.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
{{ include "wsgate.redis.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "wsgate.redis.fullname" -}}
{{- printf "%s-redis" (include "wsgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wsgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/*
The Secret the pods read (the chart's, or secret.existingSecret), and the one
holding tls.crt/tls.key.
*/}}
{{- define "wsgate.secretName" -}}
{{- .Values.secret.existingSecret | default (include "wsgate.fullname" .) -}}
{{- end -}}

{{- define "wsgate.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (include "wsgate.secretName" .) -}}
{{- end -}}

{{/*
The Secret's keys passed to wsgate as environment variables, sorted, as a
JSON array: secret.env's keys, and REDIS_PASSWORD with redis.enabled.
*/}}
{{- define "wsgate.envKeys" -}}
{{- $keys := keys (.Values.secret.env | default dict) -}}
{{- if and .Values.redis.enabled (not (has "REDIS_PASSWORD" $keys)) -}}
{{- $keys = append $keys "REDIS_PASSWORD" -}}
{{- end -}}
{{- $keys | sortAlpha | toJson -}}
{{- end -}}

{{/*
The value of one key of the chart's Secret: the given one; else the one
already in the cluster (so that upgrades keep it); else 48 random letters and
digits. Called with (dict "root" $ "key" KEY "value" VALUE).
*/}}
{{- define "wsgate.secretValue" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (include "wsgate.fullname" .root) -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A duration of gateway.yaml (500ms, 25s, 10m, 1h, 1m30s, 0) in milliseconds.
Called with (dict "name" KEY "value" TEXT).
*/}}
{{- define "wsgate.durationMs" -}}
{{- $d := toString .value | trim -}}
{{- if eq $d "0" -}}
0
{{- else if not (regexMatch "^([0-9]+(ms|s|m|h))+$" $d) -}}
{{- fail (printf "%s: %q is not a duration the chart can read (like 500ms, 25s, 10m, 1m30s; no ${VAR}): terminationGracePeriodSeconds is checked against it" .name $d) -}}
{{- else -}}
{{- $unit := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" $d -1 -}}
{{- $n := regexFind "^[0-9]+" . | int64 -}}
{{- $u := regexFind "[a-z]+$" . -}}
{{- $total = add $total (mul $n (get $unit $u)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}
{{- end -}}

{{/*
The config the chart writes from `wsgate` (when `config` is empty).
*/}}
{{- define "wsgate.generatedConfig" -}}
{{- $v := .Values -}}
{{- $w := deepCopy ($v.wsgate | default dict) -}}
{{- range $k := list "listeners" "admin" -}}
{{- if hasKey $w $k -}}
{{- fail (printf "wsgate.%s: the chart writes `%s` itself (from ports, tls and secret.env.WSGATE_ADMIN_TOKEN); set those, or give a whole gateway.yaml in `config`" $k $k) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.mode "sidecar") (not (hasKey $w "workers")) -}}
{{- $_ := set $w "workers" 1 -}}
{{- end -}}
{{- $routes := list -}}
{{- range $i, $r := $w.routes | default list -}}
{{- if not (kindIs "map" $r) -}}
{{- fail (printf "wsgate.routes[%d]: a route is a mapping (id, path, upstream...)" $i) -}}
{{- end -}}
{{- if not (hasKey $r "upstream") -}}
{{- if eq $v.mode "sidecar" -}}
{{- $_ := set $r "upstream" (printf "ws://127.0.0.1:%d" (int $v.app.port)) -}}
{{- else -}}
{{- fail (printf "wsgate.routes[%d] (id %v): no upstream; only in sidecar mode does a route default to the application on 127.0.0.1" $i ($r.id | default "?")) -}}
{{- end -}}
{{- end -}}
{{- $routes = append $routes $r -}}
{{- end -}}
{{- $_ := set $w "routes" $routes -}}
{{- if not $w.revocation -}}
{{- $_ := set $w "revocation" (dict "store" "file" "path" "${WSGATE_STATE_DIR}/revocations.jsonl") -}}
{{- end -}}
{{- if not $w.limits -}}
{{- $_ := unset $w "limits" -}}
{{- end -}}
{{- if $v.redis.enabled -}}
{{- $_ := set $w "revocation" (dict "store" "redis" "redis_url" (printf "redis://:${REDIS_PASSWORD}@%s:6379/0" (include "wsgate.redis.fullname" .))) -}}
{{- else if $v.externalRedis.url -}}
{{- $_ := set $w "revocation" (dict "store" "redis" "redis_url" $v.externalRedis.url) -}}
{{- end -}}
{{- $listener := dict "bind" (printf "0.0.0.0:%d" (int $v.ports.ws)) -}}
{{- if $v.tls.enabled -}}
{{- $_ := set $listener "tls" (dict "cert" "tls/tls.crt" "key" "tls/tls.key") -}}
{{- end -}}
{{- $_ := set $w "listeners" (list $listener) -}}
{{- $_ := set $w "admin" (dict "bind" (printf "0.0.0.0:%d" (int $v.ports.admin)) "token" "${WSGATE_ADMIN_TOKEN}") -}}
# gateway.yaml, written by the wsgate Helm chart from its values
# (mode: {{ $v.mode }}). Reload after a change: POST /admin/reload on each pod,
# or let the config checksum roll the pods (helm upgrade).
{{- $order := list "log" "workers" "node_id" "listeners" "admin" "issuers" "token_sources" "routes" "revocation" "limits" }}
{{- range $k := $order }}
{{- if hasKey $w $k }}

{{ dict $k (get $w $k) | toYaml }}
{{- end }}
{{- end }}
{{- range $k := keys $w | sortAlpha }}
{{- if not (has $k $order) }}

{{ dict $k (get $w $k) | toYaml }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The gateway.yaml of the ConfigMap. */}}
{{- define "wsgate.configText" -}}
{{- if .Values.config -}}
{{- .Values.config -}}
{{- else -}}
{{- include "wsgate.generatedConfig" . -}}
{{- end -}}
{{- end -}}

{{/*
Checks across values that the schema cannot express; each fails with the
values' names. Included by the ConfigMap (rendered in every mode).
*/}}
{{- define "wsgate.validate" -}}
{{- $v := .Values -}}
{{- if eq $v.mode "sidecar" -}}
{{- if not $v.app.image.repository -}}
{{- fail "mode: sidecar needs app.image.repository (the application wsgate sits in front of)" -}}
{{- end -}}
{{- if eq (int $v.app.port) (int $v.ports.ws) -}}
{{- fail (printf "app.port and ports.ws are both %d: the application and wsgate share the pod's network" (int $v.ports.ws)) -}}
{{- end -}}
{{- end -}}
{{- if eq (int $v.ports.ws) (int $v.ports.admin) -}}
{{- fail (printf "ports.ws and ports.admin are both %d" (int $v.ports.ws)) -}}
{{- end -}}
{{- if and $v.redis.enabled $v.externalRedis.url -}}
{{- fail "redis.enabled and externalRedis.url are both set: choose one Redis" -}}
{{- end -}}
{{- $envKeys := include "wsgate.envKeys" . | fromJsonArray -}}
{{- if not $v.config -}}
{{- if not (has "WSGATE_ADMIN_TOKEN" $envKeys) -}}
{{- fail "secret.env.WSGATE_ADMIN_TOKEN: missing; the admin listener's token is read from it (give \"\" to have one generated)" -}}
{{- end -}}
{{- end -}}
{{- if not $v.secret.existingSecret -}}
{{- $token := index ($v.secret.env | default dict) "WSGATE_ADMIN_TOKEN" | default "" | toString -}}
{{- if and $token (lt (len $token) 16) -}}
{{- fail (printf "secret.env.WSGATE_ADMIN_TOKEN: %d characters; wsgate needs 16 or more (openssl rand -hex 32)" (len $token)) -}}
{{- end -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- if not (or $v.tls.existingSecret $v.secret.existingSecret (and $v.tls.cert $v.tls.key)) -}}
{{- fail "tls.enabled: give tls.cert and tls.key (PEM), or tls.existingSecret (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- end -}}
{{- /* The config in force: limits and the ports it binds. */ -}}
{{- $limits := dict -}}
{{- if $v.config -}}
{{- $cfg := fromYaml $v.config -}}
{{- if hasKey $cfg "Error" -}}
{{- fail (printf "config: not valid YAML: %s" $cfg.Error) -}}
{{- end -}}
{{- if not $cfg.admin -}}
{{- fail "config: no `admin` listener; the probes use its /healthz and /readyz" -}}
{{- end -}}
{{- if not (hasSuffix (printf ":%d" (int $v.ports.admin)) (toString $cfg.admin.bind)) -}}
{{- fail (printf "config: admin.bind %q is not on ports.admin (%d), which the probes and the Service use" (toString $cfg.admin.bind) (int $v.ports.admin)) -}}
{{- end -}}
{{- $binds := list -}}
{{- range $cfg.listeners | default list -}}
{{- $binds = append $binds (toString .bind) -}}
{{- end -}}
{{- $found := false -}}
{{- range $binds -}}
{{- if hasSuffix (printf ":%d" (int $v.ports.ws)) . -}}
{{- $found = true -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "config: no listener binds ports.ws (%d), which the Service sends clients to (binds: %s)" (int $v.ports.ws) (join ", " $binds)) -}}
{{- end -}}
{{- $limits = $cfg.limits | default dict -}}
{{- else -}}
{{- $limits = $v.wsgate.limits | default dict -}}
{{- end -}}
{{- /* Shutdown: the preStop pause, drain_delay and shutdown_grace fit in the grace period. */ -}}
{{- $drain := include "wsgate.durationMs" (dict "name" "limits.drain_delay" "value" ($limits.drain_delay | default "0")) | int64 -}}
{{- $grace := include "wsgate.durationMs" (dict "name" "limits.shutdown_grace" "value" ($limits.shutdown_grace | default "10s")) | int64 -}}
{{- $pause := mul (int64 $v.preStopSleepSeconds) 1000 -}}
{{- $needed := add $pause $drain $grace -}}
{{- $period := mul (int64 $v.terminationGracePeriodSeconds) 1000 -}}
{{- if le $period $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds (%d s) + limits.drain_delay (%d ms) + limits.shutdown_grace (%d ms) = %d ms, or the kubelet kills wsgate before its sessions are closed" (int64 $v.terminationGracePeriodSeconds) (int64 $v.preStopSleepSeconds) $drain $grace $needed) -}}
{{- end -}}
{{- if and (eq $v.mode "sidecar") (le (int64 $v.terminationGracePeriodSeconds) (int64 $v.app.preStopSleepSeconds)) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed app.preStopSleepSeconds (%d)" (int64 $v.terminationGracePeriodSeconds) (int64 $v.app.preStopSleepSeconds)) -}}
{{- end -}}
{{- /* Availability. */ -}}
{{- if and $v.podDisruptionBudget.enabled (not (hasKey $v.podDisruptionBudget "maxUnavailable")) (not (kindIs "string" $v.podDisruptionBudget.minAvailable)) -}}
{{- $what := "replicaCount" -}}
{{- $pods := int64 $v.replicaCount -}}
{{- if $v.autoscaling.enabled -}}
{{- $what = "autoscaling.minReplicas" -}}
{{- $pods = int64 $v.autoscaling.minReplicas -}}
{{- end -}}
{{- if ge (int64 $v.podDisruptionBudget.minAvailable) $pods -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below %s (%d), or no node could ever be drained; lower it, or set podDisruptionBudget.enabled: false" (int64 $v.podDisruptionBudget.minAvailable) $what $pods) -}}
{{- end -}}
{{- end -}}
{{- if $v.autoscaling.enabled -}}
{{- if gt (int64 $v.autoscaling.minReplicas) (int64 $v.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int64 $v.autoscaling.minReplicas) (int64 $v.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and $v.autoscaling.targetCPUUtilizationPercentage (not (($v.resources | default dict).requests | default dict).cpu) -}}
{{- fail "autoscaling.targetCPUUtilizationPercentage needs resources.requests.cpu (utilization is a share of the request)" -}}
{{- end -}}
{{- if and $v.autoscaling.targetMemoryUtilizationPercentage (not (($v.resources | default dict).requests | default dict).memory) -}}
{{- fail "autoscaling.targetMemoryUtilizationPercentage needs resources.requests.memory" -}}
{{- end -}}
{{- if not (or $v.autoscaling.targetCPUUtilizationPercentage $v.autoscaling.targetMemoryUtilizationPercentage $v.autoscaling.metrics) -}}
{{- fail "autoscaling.enabled: give targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or metrics" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The config volume: the ConfigMap alone, or (with TLS or secret.files) a
projected volume that adds tls/tls.crt, tls/tls.key and secrets/<name>.
*/}}
{{- define "wsgate.configVolume" -}}
- name: config
{{- if or .Values.tls.enabled .Values.secret.files }}
  projected:
    sources:
      - configMap:
          name: {{ include "wsgate.fullname" . }}
{{- if .Values.tls.enabled }}
      - secret:
          name: {{ include "wsgate.tlsSecretName" . }}
          items:
            - { key: tls.crt, path: tls/tls.crt }
            - { key: tls.key, path: tls/tls.key }
{{- end }}
{{- if .Values.secret.files }}
      - secret:
          name: {{ include "wsgate.secretName" . }}
          items:
{{- range $name := keys .Values.secret.files | sortAlpha }}
            - { key: {{ $name | quote }}, path: {{ printf "secrets/%s" $name | quote }} }
{{- end }}
{{- end }}
{{- else }}
  configMap:
    name: {{ include "wsgate.fullname" . }}
{{- end }}
{{- end -}}

{{/* The wsgate container, the same in both modes. */}}
{{- define "wsgate.container" -}}
- name: wsgate
  image: {{ include "wsgate.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  # The image's entrypoint: wsgate run -c /etc/wsgate/gateway.yaml
  ports:
    - { name: ws, containerPort: {{ .Values.ports.ws }} }
    - { name: admin, containerPort: {{ .Values.ports.admin }} }
  env:
{{- $secret := include "wsgate.secretName" . }}
{{- range $key := include "wsgate.envKeys" . | fromJsonArray }}
    - name: {{ $key }}
      valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ $key }} } }
{{- end }}
    - { name: WSGATE_STATE_DIR, value: /var/lib/wsgate }
{{- with .Values.extraEnv }}
{{ toYaml . | indent 4 }}
{{- end }}
  volumeMounts:
    - { name: config, mountPath: /etc/wsgate, readOnly: true }
    - { name: state, mountPath: /var/lib/wsgate }
{{- with .Values.extraVolumeMounts }}
{{ toYaml . | indent 4 }}
{{- end }}
  livenessProbe:
{{ merge (dict "httpGet" (dict "path" "/healthz" "port" "admin")) (deepCopy (.Values.livenessProbe | default dict)) | toYaml | indent 4 }}
  readinessProbe:
{{ merge (dict "httpGet" (dict "path" "/readyz" "port" "admin")) (deepCopy (.Values.readinessProbe | default dict)) | toYaml | indent 4 }}
{{- if gt (int .Values.preStopSleepSeconds) 0 }}
  lifecycle:
    # The pod leaves the Service's endpoints while wsgate still serves;
    # SIGTERM comes after.
    preStop:
      sleep: { seconds: {{ .Values.preStopSleepSeconds }} }
{{- end }}
{{- with .Values.securityContext }}
  securityContext:
{{ toYaml . | indent 4 }}
{{- end }}
{{- with .Values.resources }}
  resources:
{{ toYaml . | indent 4 }}
{{- end }}
{{- end -}}
