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
A Deployment (and its PodDisruptionBudget) for one service.
Arguments: root (the chart context), component (name), args (container args),
settings (replicas, resources), command (the binary and its flags), ports (extra
container ports).
*/}}
{{- define "keysync.deployment" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
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
        checksum/config: {{ $values.config | sha256sum }}
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
            - name: KEYSYNC_BUS__NATS_URL
              value: {{ $values.natsUrl | quote }}
            - name: KEYSYNC_BUS__PREFIX
              value: {{ $values.busPrefix | quote }}
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
            {{- range $values.secretMounts }}
            - name: {{ printf "secret-%s" .name | trunc 63 | trimSuffix "-" }}
              mountPath: {{ .mountPath }}
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ printf "%s-config" $root.Release.Name | trunc 63 | trimSuffix "-" }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- range $values.secretMounts }}
        - name: {{ printf "secret-%s" .name | trunc 63 | trimSuffix "-" }}
          secret:
            secretName: {{ .name }}
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
