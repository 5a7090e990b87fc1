{{/* The release-qualified name of a component, e.g. keysync-fetcher. */}}
{{- define "keysync.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "keysync.labels" -}}
app.kubernetes.io/name: keysync
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "keysync.selectorLabels" -}}
app.kubernetes.io/name: keysync
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "keysync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Every component in this release that runs a Deployment, as a list of names: control-plane,
fetcher, planner and applier-<product> for each enabled product. The NetworkPolicies use it.
*/}}
{{- define "keysync.components" -}}
{{- $components := list "control-plane" "fetcher" "planner" -}}
{{- range $product, $settings := .Values.appliers -}}
{{- if $settings.enabled -}}
{{- $components = append $components (printf "applier-%s" $product) -}}
{{- end -}}
{{- end -}}
{{- toJson $components -}}
{{- end -}}

{{/*
A Deployment, its ConfigMap (the component's own configuration file) and its
PodDisruptionBudget. Arguments: root (the chart context), component (name), settings
(replicas, resources), command (the binary and its flags), config (the TOML file), ports
(extra container ports).

The Secret files mounted are exactly those the configuration names: every path
/run/secrets/keysync/<secretName>/<key> in a non-comment line of `config` mounts that one
key of that Secret (a volume per Secret, with `items`, so other keys of the same Secret stay
out). The file and the mounts cannot disagree, and a pod mounts no secret it does not use.
*/}}
{{- define "keysync.deployment" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- if not $values.podSecurityContext.fsGroup -}}
{{- fail "podSecurityContext.fsGroup is required: the Secret files (mode secretDefaultMode, 0400) are readable by the container user through that group only (see values.yaml)" -}}
{{- end -}}
{{- if not (has (int $values.secretDefaultMode) (list 256 288)) -}}
{{- fail (printf "secretDefaultMode must be 0400 (256) or 0440 (288), not %v: secret files are read by their owner's group only (with --set, write 256: --set parses decimal)" $values.secretDefaultMode) -}}
{{- end -}}
{{- $configName := printf "%s-config" (include "keysync.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- $secrets := dict -}}
{{- range $line := splitList "\n" .config -}}
{{- if not (hasPrefix "#" (trim $line)) -}}
{{- range $path := regexFindAll "/run/secrets/keysync/[a-z0-9][-a-z0-9.]*/[-._a-zA-Z0-9]+" $line -1 -}}
{{- $parts := splitList "/" (trimPrefix "/run/secrets/keysync/" $path) -}}
{{- $name := index $parts 0 -}}
{{- $keys := get $secrets $name | default list -}}
{{- $_ := set $secrets $name (append $keys (index $parts 1) | uniq | sortAlpha) -}}
{{- end -}}
{{- end -}}
{{- end -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $configName }}
  labels:
    {{- include "keysync.labels" . | nindent 4 }}
data:
  keysync.toml: |
    {{- .config | nindent 4 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "keysync.fullname" . }}
  labels:
    {{- include "keysync.labels" . | nindent 4 }}
spec:
  replicas: {{ .settings.replicas }}
  selector:
    matchLabels:
      {{- include "keysync.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "keysync.selectorLabels" . | nindent 8 }}
      annotations:
        # This component's own file: a change elsewhere does not restart it.
        checksum/config: {{ .config | sha256sum }}
    spec:
      {{- with $values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: 60
      containers:
        - name: {{ .component }}
          image: {{ include "keysync.image" $root }}
          imagePullPolicy: {{ $values.image.pullPolicy }}
          command:
            {{- toYaml .command | nindent 12 }}
          env:
            - name: KEYSYNC_HEALTH__LISTEN
              value: {{ printf "0.0.0.0:%v" $values.healthPort | quote }}
            - name: RUST_LOG
              value: {{ $values.logLevel | quote }}
            - name: OTEL_SERVICE_NAME
              value: {{ printf "keysync-%s" .component | quote }}
            {{- with $values.otel.endpoint }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ . | quote }}
            {{- end }}
            {{- with $values.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: health
              containerPort: {{ $values.healthPort }}
              protocol: TCP
            {{- with .ports }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: health
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: health
            periodSeconds: 5
            failureThreshold: 2
          startupProbe:
            httpGet:
              path: /healthz
              port: health
            periodSeconds: 2
            failureThreshold: 30
          resources:
            {{- toYaml .settings.resources | nindent 12 }}
          securityContext:
            {{- toYaml $values.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/keysync
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- range $name, $keys := $secrets }}
            - name: {{ printf "secret-%s" ($name | replace "." "-") | trunc 63 | trimSuffix "-" }}
              mountPath: {{ printf "/run/secrets/keysync/%s" $name }}
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ $configName }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- range $name, $keys := $secrets }}
        - name: {{ printf "secret-%s" ($name | replace "." "-") | trunc 63 | trimSuffix "-" }}
          secret:
            secretName: {{ $name }}
            defaultMode: {{ int $values.secretDefaultMode }}  # {{ printf "%#o" (int $values.secretDefaultMode) }}: see secretDefaultMode in values.yaml
            items:
              {{- range $keys }}
              - key: {{ . }}
                path: {{ . }}
              {{- end }}
        {{- end }}
      {{- with $values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if and $values.podDisruptionBudget.enabled (gt (int .settings.replicas) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "keysync.fullname" . }}
  labels:
    {{- include "keysync.labels" . | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "keysync.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}
