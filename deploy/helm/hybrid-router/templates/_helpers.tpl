{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "hybrid-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "hybrid-router.fullname" -}}
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

{{- define "hybrid-router.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hybrid-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hybrid-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end }}

{{- define "hybrid-router.labels" -}}
helm.sh/chart: {{ include "hybrid-router.chart" . }}
{{ include "hybrid-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hybrid-router
{{- end }}

{{- define "hybrid-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hybrid-router.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hybrid-router.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the RayService of the GPU tier and of its serve Service. */}}
{{- define "hybrid-router.rayServiceName" -}}
{{- printf "%s-gpu" (include "hybrid-router.fullname" .) | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- define "hybrid-router.rayServeServiceName" -}}
{{- printf "%s-serve" (include "hybrid-router.rayServiceName" .) }}
{{- end }}

{{- define "hybrid-router.terminationGracePeriodSeconds" -}}
{{- $d := .Values.drain }}
{{- add (int $d.preStopSleepSeconds) (int $d.streamGraceSeconds) (int $d.marginSeconds) }}
{{- end }}

{{/*
The discovery sources: config.discovery.kubernetes.sources plus, with rayService.enabled
and rayService.discovery.enabled, one for the RayService's serve Service.
Rendered as YAML (a list); read back with fromYamlArray.
*/}}
{{- define "hybrid-router.discoverySources" -}}
{{- $k8s := dig "discovery" "kubernetes" dict (.Values.config | default dict) }}
{{- $sources := list }}
{{- range (get $k8s "sources" | default list) }}
{{- $sources = append $sources . }}
{{- end }}
{{- if and .Values.rayService.enabled .Values.rayService.discovery.enabled }}
{{- $sources = append $sources (dict
    "name" "gpu-ray"
    "namespace" .Release.Namespace
    "label_selector" (printf "kubernetes.io/service-name=%s" (include "hybrid-router.rayServeServiceName" .))
    "port_name" "grpc"
    "backend_per" "service"
    "backend" (merge (deepCopy .Values.rayService.discovery.backend) (dict "tier" "gpu" "kind" "ray_serve" "serve_application" .Values.rayService.discovery.serveApplication))) }}
{{- end }}
{{- toYaml $sources }}
{{- end }}

{{/* Namespaces that discovery watches (the RBAC Roles go there), one per line. */}}
{{- define "hybrid-router.discoveryNamespaces" -}}
{{- $k8s := dig "discovery" "kubernetes" dict (.Values.config | default dict) }}
{{- $default := get $k8s "namespace" | default .Release.Namespace }}
{{- $seen := dict }}
{{- range (include "hybrid-router.discoverySources" . | fromYamlArray) }}
{{- $_ := set $seen (get . "namespace" | default $default) true }}
{{- end }}
{{- keys $seen | sortAlpha | join "\n" }}
{{- end }}

{{/* router.yaml: .Values.config with the keys the chart owns set from the other values. */}}
{{- define "hybrid-router.routerConfig" -}}
{{- $v := .Values }}
{{- $cfg := deepCopy ($v.config | default dict) }}
{{- $server := get $cfg "server" | default dict }}
{{- $_ := set $server "address" (printf "%s:%d" $v.listenHost (int $v.ports.grpc)) }}
{{- $_ := set $server "grace_period_s" (int $v.drain.streamGraceSeconds) }}
{{- if $v.tls.secretName }}
{{- $tls := dict "cert_file" "/etc/hybrid-router/tls/tls.crt" "key_file" "/etc/hybrid-router/tls/tls.key" }}
{{- if $v.tls.clientCaSecret }}
{{- $_ := set $tls "client_ca_file" "/etc/hybrid-router/client-ca/ca.crt" }}
{{- $_ := set $tls "require_client_cert" $v.tls.requireClientCert }}
{{- end }}
{{- $_ := set $server "tls" $tls }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- $auth := get $cfg "auth" | default dict }}
{{- if $v.auth.keysSecret.name }}
{{- $_ := set $auth "keys_file" (printf "/etc/hybrid-router/auth/%s" $v.auth.keysSecret.key) }}
{{- end }}
{{- if $v.auth.secretsManager.secretId }}
{{- $_ := set $auth "secrets_manager" (dict "secret_id" $v.auth.secretsManager.secretId "region" $v.auth.secretsManager.region) }}
{{- end }}
{{- $_ := set $cfg "auth" $auth }}
{{- if $v.metrics.enabled }}
{{- $telemetry := get $cfg "telemetry" | default dict }}
{{- $metrics := get $telemetry "metrics" | default dict }}
{{- $_ := set $metrics "address" (printf "%s:%d" $v.listenHost (int $v.ports.metrics)) }}
{{- $_ := set $telemetry "metrics" $metrics }}
{{- $_ := set $cfg "telemetry" $telemetry }}
{{- end }}
{{- if $v.edge.relay.enabled }}
{{- $edge := get $cfg "edge" | default dict }}
{{- $relay := get $edge "relay" | default dict }}
{{- $_ := set $relay "address" (printf "%s:%d" $v.listenHost (int $v.edge.relay.port)) }}
{{- if $v.edge.relay.tls.secretName }}
{{- $dir := "/etc/hybrid-router/relay-tls" }}
{{- $_ := set $relay "tls" (dict "cert_file" (printf "%s/tls.crt" $dir) "key_file" (printf "%s/tls.key" $dir) "ca_file" (printf "%s/ca.crt" $dir) "server_name" $v.edge.relay.tls.serverName) }}
{{- end }}
{{- $_ := set $edge "relay" $relay }}
{{- $_ := set $cfg "edge" $edge }}
{{- end }}
{{- if and $v.controls.redisUrlSecret.name (hasKey $cfg "controls") }}
{{- /* Each controls section on store: redis without a url reads the chart's Secret. */}}
{{- range $name, $section := (get $cfg "controls" | default dict) }}
{{- if and (kindIs "map" $section) (eq (get $section "store" | default "") "redis") }}
{{- $redis := get $section "redis" | default dict }}
{{- if not (get $redis "url") }}
{{- $_ := set $redis "url" "env:CONTROLS_REDIS_URL" }}
{{- $_ := set $section "redis" $redis }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $sources := include "hybrid-router.discoverySources" . | fromYamlArray }}
{{- $discovery := get $cfg "discovery" | default dict }}
{{- $k8s := get $discovery "kubernetes" | default dict }}
{{- $_ := set $k8s "sources" $sources }}
{{- $_ := set $discovery "kubernetes" $k8s }}
{{- $_ := set $cfg "discovery" $discovery }}
{{- toYaml $cfg }}
{{- end }}

{{/* true when the router watches the Kubernetes API (RBAC, token mount). */}}
{{- define "hybrid-router.discoveryEnabled" -}}
{{- if (include "hybrid-router.discoverySources" . | fromYamlArray) }}true{{- end }}
{{- end }}

{{/* Refuse values that would deploy a router that cannot start or drain. */}}
{{- define "hybrid-router.validate" -}}
{{- if and (not .Values.auth.keysSecret.name) (not .Values.auth.secretsManager.secretId) (not (dig "auth" "keys" list (.Values.config | default dict))) }}
{{- fail "auth: set auth.keysSecret.name (a Secret holding the keys file that `hybrid-router keys create` writes) or auth.secretsManager.secretId: the router refuses to serve a non-loopback address without API keys" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- $probe := mul (int .Values.probes.liveness.periodSeconds) (int .Values.probes.liveness.failureThreshold) }}
{{- if le (int $probe) (int .Values.drain.streamGraceSeconds) }}
{{- fail (printf "probes.liveness: periodSeconds x failureThreshold (%d s) must exceed drain.streamGraceSeconds (%d s), or a draining router is restarted mid-drain" (int $probe) (int .Values.drain.streamGraceSeconds)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.autoscaling.inflightStreams.enabled (not .Values.metrics.enabled) }}
{{- fail "autoscaling.inflightStreams needs metrics.enabled: the metric comes from the router's /metrics" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- $controls := dig "controls" dict (.Values.config | default dict) }}
{{- $several := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- $budgets := get $controls "budgets" | default dict }}
{{- if and $budgets $several (ne (get $budgets "store" | default "memory") "redis") }}
{{- fail "config.controls.budgets: with more than one replica set store: redis (and controls.redisUrlSecret or redis.url): budgets kept in each pod's memory would let every replica spend the whole budget" }}
{{- end }}
{{- $ledger := get $controls "ledger" | default dict }}
{{- if and (get $ledger "enabled") (eq (get $ledger "store" | default "sqlite") "sqlite") }}
{{- fail "config.controls.ledger: set store: redis or dynamodb: an SQLite ledger is a file in the pod (its root filesystem is read-only, its scratch space is lost with the pod)" }}
{{- end }}
{{- range $name, $section := $controls }}
{{- if and (kindIs "map" $section) (eq (get $section "store" | default "") "redis") (not (dig "redis" "url" "" $section)) (not $.Values.controls.redisUrlSecret.name) }}
{{- fail (printf "config.controls.%s: store redis needs redis.url, or controls.redisUrlSecret.name (a Secret holding the URL)" $name) }}
{{- end }}
{{- end }}
{{- if and .Values.edge.relay.tls.secretName (not .Values.edge.relay.enabled) }}
{{- fail "edge.relay.tls.secretName needs edge.relay.enabled: the certificates are for the relay port" }}
{{- end }}
{{- end }}
