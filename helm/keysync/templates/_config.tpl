{{/*
The configuration file of each component, built from the values. Each component gets only
the sections it reads, so that its file names only the secrets it needs (the loader reads
every `*_file` key of the file it is given, and the Deployment mounts exactly the Secret
keys its file names: see keysync.deployment). Strings are written with toJson, whose
quoting is valid TOML.

Who reads what (crates/settings):
  control plane  [bus] [control_plane] (+ [keycloak.*] [products.*] with testConnection)
  fetcher        [bus] [fetcher] [keycloak.*] with the client secrets
  planner        [bus] [control_plane] as a client, [keycloak.*] names and required groups,
                 [products.*] endpoint and policy (no credential), [planner]
  applier-<p>    [bus] [control_plane] as a client, [products.<p>] with its credential,
                 [applier]
*/}}

{{/* The path of one key of a Secret: arguments ref ({secretName, key}) and what (for the error). */}}
{{- define "keysync.secretFile" -}}
{{- if not .ref.secretName -}}
{{- fail (printf "%s: secretName is required" .what) -}}
{{- end -}}
{{- printf "/run/secrets/keysync/%s/%s" .ref.secretName (required (printf "%s: key is required" .what) .ref.key) | toJson -}}
{{- end -}}

{{/* Where the planner and the appliers call the control plane. */}}
{{- define "keysync.controlPlaneEndpoint" -}}
{{- if .Values.controlPlane.endpoint -}}
{{- .Values.controlPlane.endpoint -}}
{{- else -}}
{{- printf "%s://%s:%v" (ternary "https" "http" .Values.controlPlane.tls.enabled) (include "keysync.fullname" (dict "root" . "component" "control-plane")) .Values.controlPlane.grpcPort -}}
{{- end -}}
{{- end -}}

{{/* The top of every file: the shared TOML first, so that it may hold top-level keys. */}}
{{- define "keysync.config.header" -}}
# keysync configuration of {{ .component }} (rendered by the chart; edit the values instead).
{{- with .root.Values.commonConfig }}
{{ trim . }}
{{- end }}
{{ end -}}

{{/*
[bus] of one component. Its NATS identity is nats.users.<component>; an applier falls back
to nats.users.applier (one `applier` user for every product, as deploy/nats/accounts.conf).
*/}}
{{- define "keysync.config.bus" -}}
{{- $nats := .root.Values.nats -}}
{{- $users := $nats.users | default dict -}}
{{- range $key, $_ := $users -}}
{{- if not (has $key (list "control-plane" "fetcher" "planner" "applier" "applier-jira" "applier-confluence" "applier-bitbucket")) -}}
{{- fail (printf "nats.users.%s: not a component; use control-plane, fetcher, planner, applier or applier-<product>" $key) -}}
{{- end -}}
{{- end -}}
{{- $user := index $users .component -}}
{{- if and (not $user) (hasPrefix "applier-" .component) -}}
{{- $user = index $users "applier" -}}
{{- end -}}
{{- $user = $user | default dict -}}
{{- $what := printf "nats.users.%s" .component }}
[bus]
nats_url = {{ $nats.url | toJson }}
prefix = {{ $nats.prefix | toJson }}
replicas = {{ $nats.replicas | int }}
retention_days = {{ $nats.retentionDays | int }}
snapshot_retention_hours = {{ $nats.snapshotRetentionHours | int }}
{{- with $user.user }}
user = {{ . | toJson }}
{{- end }}
{{- with $user.password }}
password_file = {{ include "keysync.secretFile" (dict "ref" . "what" (printf "%s.password" $what)) }}
{{- end }}
{{- with $user.credentials }}
credentials_file = {{ include "keysync.secretFile" (dict "ref" . "what" (printf "%s.credentials" $what)) }}
{{- end }}
{{- with $user.nkeySeed }}
nkey_seed_file = {{ include "keysync.secretFile" (dict "ref" . "what" (printf "%s.nkeySeed" $what)) }}
{{- end }}
{{- with $user.token }}
token_file = {{ include "keysync.secretFile" (dict "ref" . "what" (printf "%s.token" $what)) }}
{{- end }}
{{- with $user.clientCert }}
tls_cert_file = {{ include "keysync.secretFile" (dict "ref" (dict "secretName" .secretName "key" (.certKey | default "tls.crt")) "what" (printf "%s.clientCert" $what)) }}
tls_key_file = {{ include "keysync.secretFile" (dict "ref" (dict "secretName" .secretName "key" (.keyKey | default "tls.key")) "what" (printf "%s.clientCert" $what)) }}
{{- end }}
{{- with $user.inboxPrefix }}
inbox_prefix = {{ . | toJson }}
{{- end }}
{{- if $nats.ca.secretName }}
tls_ca_file = {{ include "keysync.secretFile" (dict "ref" $nats.ca "what" "nats.ca") }}
{{- end }}
{{- if $nats.requireTls }}
require_tls = true
{{- end }}
{{- end -}}

{{/*
[control_plane] as the planner and the appliers read it (crates/settings/src/control_client.rs):
where to call, with the service token (never the operator's), the CA to trust, and with
mutual TLS the component's client certificate: controlPlane.tls.clientCerts.<component>, an
applier falling back to clientCerts.applier.
*/}}
{{- define "keysync.config.controlPlaneClient" -}}
{{- $values := .root.Values -}}
{{- $tls := $values.controlPlane.tls -}}
{{- $certs := $tls.clientCerts | default dict -}}
{{- $cert := index $certs .component -}}
{{- if and (not $cert) (hasPrefix "applier-" .component) -}}
{{- $cert = index $certs "applier" -}}
{{- end -}}
{{- $what := printf "controlPlane.tls.clientCerts.%s" .component }}
[control_plane]
endpoint = {{ include "keysync.controlPlaneEndpoint" .root | toJson }}
service_token_file = {{ include "keysync.secretFile" (dict "ref" $values.serviceToken "what" "serviceToken") }}
{{- if $tls.enabled }}
{{- if $tls.ca.secretName }}
ca_file = {{ include "keysync.secretFile" (dict "ref" $tls.ca "what" "controlPlane.tls.ca") }}
{{- end }}
{{- if $tls.clientCa.secretName }}
{{- if not (and $cert $cert.secretName) }}
{{- fail (printf "%s: controlPlane.tls.clientCa asks every client for a certificate; set its secretName (or clientCerts.applier for every applier)" $what) }}
{{- end }}
client_cert_file = {{ include "keysync.secretFile" (dict "ref" (dict "secretName" $cert.secretName "key" ($cert.certKey | default "tls.crt")) "what" $what) }}
client_key_file = {{ include "keysync.secretFile" (dict "ref" (dict "secretName" $cert.secretName "key" ($cert.keyKey | default "tls.key")) "what" $what) }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
[keycloak.<name>] of every connector. withSecret: the whole section with the client secret
(fetcher; control plane with testConnection); else the name and required groups only
(planner).
*/}}
{{- define "keysync.config.keycloak" -}}
{{- $withSecret := .withSecret -}}
{{- range $name, $connector := .root.Values.keycloak }}
{{- $what := printf "keycloak.%s" $name }}

[keycloak.{{ $name }}]
{{- if $withSecret }}
endpoint = {{ required (printf "%s.endpoint is required" $what) $connector.endpoint | toJson }}
realm = {{ required (printf "%s.realm is required" $what) $connector.realm | toJson }}
client_id = {{ required (printf "%s.clientId is required" $what) $connector.clientId | toJson }}
client_secret_file = {{ include "keysync.secretFile" (dict "ref" ($connector.clientSecret | default dict) "what" (printf "%s.clientSecret" $what)) }}
{{- with $connector.ca }}{{ if .secretName }}
ca_file = {{ include "keysync.secretFile" (dict "ref" . "what" (printf "%s.ca" $what)) }}
{{- end }}{{ end }}
{{- with $connector.events }}
events = { enabled = {{ .enabled | default false }}, poll_interval_ms = {{ .pollIntervalMs | default 1000 | int }}, batch_window_ms = {{ .batchWindowMs | default 500 | int }} }
{{- end }}
{{- end }}
required_groups = {{ $connector.requiredGroups | default list | toJson }}
{{- if and $withSecret $connector.settings }}
{{ trim $connector.settings }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
[products.<product>] of one product. withCredentials: the client's section with its token
or user and password, CA and other settings (its applier; control plane with
testConnection); else the endpoint and the policy only (planner).
*/}}
{{- define "keysync.config.product" -}}
{{- $settings := .settings -}}
{{- $what := printf "appliers.%s" .product }}

[products.{{ .product }}]
endpoint = {{ required (printf "%s.endpoint is required" $what) $settings.endpoint | toJson }}
{{- if .withCredentials }}
{{- if and $settings.token $settings.token.secretName }}
token_file = {{ include "keysync.secretFile" (dict "ref" $settings.token "what" (printf "%s.token" $what)) }}
{{- else if $settings.user }}
user = {{ $settings.user | toJson }}
password_file = {{ include "keysync.secretFile" (dict "ref" ($settings.password | default dict) "what" (printf "%s.password" $what)) }}
{{- else }}
{{- fail (printf "%s: set token.secretName, or user and password.secretName" $what) }}
{{- end }}
{{- with $settings.ca }}{{ if .secretName }}
ca_file = {{ include "keysync.secretFile" (dict "ref" . "what" (printf "%s.ca" $what)) }}
{{- end }}{{ end }}
{{- with $settings.productSettings }}
{{ trim . }}
{{- end }}
{{- else }}
{{- with $settings.policy }}
{{ trim . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The control plane's file. */}}
{{- define "keysync.config.control-plane" -}}
{{- $values := .root.Values -}}
{{- $cp := $values.controlPlane -}}
{{- include "keysync.config.header" . }}
{{- include "keysync.config.bus" . }}

[control_plane]
listen = {{ printf "0.0.0.0:%v" $cp.grpcPort | toJson }}
endpoint = {{ include "keysync.controlPlaneEndpoint" .root | toJson }}
token_file = {{ include "keysync.secretFile" (dict "ref" $values.operatorToken "what" "operatorToken") }}
service_token_file = {{ include "keysync.secretFile" (dict "ref" $values.serviceToken "what" "serviceToken") }}
{{- if $cp.tls.enabled }}
tls_cert_file = {{ include "keysync.secretFile" (dict "ref" (dict "secretName" $cp.tls.secretName "key" $cp.tls.certKey) "what" "controlPlane.tls") }}
tls_key_file = {{ include "keysync.secretFile" (dict "ref" (dict "secretName" $cp.tls.secretName "key" $cp.tls.keyKey) "what" "controlPlane.tls") }}
{{- if $cp.tls.clientCa.secretName }}
tls_client_ca_file = {{ include "keysync.secretFile" (dict "ref" $cp.tls.clientCa "what" "controlPlane.tls.clientCa") }}
{{- end }}
{{- else if $cp.allowPlaintext }}
# No TLS: the API serves plaintext on the pod network (controlPlane.allowPlaintext).
allow_plaintext = true
{{- else }}
{{- fail "controlPlane: set tls.enabled, or allowPlaintext (the API listens on the pod network, and the control plane refuses plaintext there unless allowed)" }}
{{- end }}
{{- with $cp.settings }}
{{ trim . }}
{{- end }}
{{- if $cp.testConnection }}
{{- include "keysync.config.keycloak" (dict "root" .root "withSecret" true) }}
{{- range $product, $settings := $values.appliers }}
{{- if $settings.enabled }}
{{- include "keysync.config.product" (dict "product" $product "settings" $settings "withCredentials" true) }}
{{- end }}
{{- end }}
{{- end }}
{{- with $cp.config }}

{{ trim . }}
{{- end }}
{{ end -}}

{{/* The fetcher's file. */}}
{{- define "keysync.config.fetcher" -}}
{{- $values := .root.Values -}}
{{- include "keysync.config.header" . }}
{{- include "keysync.config.bus" . }}
{{- with $values.fetcher.settings }}

[fetcher]
{{ trim . }}
{{- end }}
{{- include "keysync.config.keycloak" (dict "root" .root "withSecret" true) }}
{{- with $values.fetcher.config }}

{{ trim . }}
{{- end }}
{{ end -}}

{{/* The planner's file. */}}
{{- define "keysync.config.planner" -}}
{{- $values := .root.Values -}}
{{- include "keysync.config.header" . }}
{{- include "keysync.config.bus" . }}
{{ include "keysync.config.controlPlaneClient" . }}
{{- include "keysync.config.keycloak" (dict "root" .root "withSecret" false) }}
{{- range $product, $settings := $values.appliers }}
{{- if $settings.enabled }}
{{- include "keysync.config.product" (dict "product" $product "settings" $settings "withCredentials" false) }}
{{- end }}
{{- end }}
{{- with $values.planner.settings }}

[planner]
{{ trim . }}
{{- end }}
{{- with $values.planner.config }}

{{ trim . }}
{{- end }}
{{ end -}}

{{/* An applier's file: arguments root, component (applier-<product>), product. */}}
{{- define "keysync.config.applier" -}}
{{- $settings := index .root.Values.appliers .product -}}
{{- include "keysync.config.header" . }}
{{- include "keysync.config.bus" . }}
{{ include "keysync.config.controlPlaneClient" . }}
{{- include "keysync.config.product" (dict "product" .product "settings" $settings "withCredentials" true) }}
{{- with $settings.settings }}

[applier]
{{ trim . }}
{{- end }}
{{- with $settings.config }}

{{ trim . }}
{{- end }}
{{ end -}}
