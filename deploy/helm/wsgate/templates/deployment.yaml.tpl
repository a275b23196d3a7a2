apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "wsgate.fullname" . }}
  labels:
    {{- include "wsgate.labels" . | nindent 4 }}
    app.kubernetes.io/component: {{ .Values.mode }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "wsgate.selectorLabels" . | nindent 6 }}
  {{- with .Values.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "wsgate.selectorLabels" . | nindent 8 }}
        app.kubernetes.io/component: {{ .Values.mode }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # A change of the config or of the Secret's values rolls the pods.
        checksum/config: {{ include "wsgate.configText" . | sha256sum }}
        checksum/secret: {{ list .Values.secret .Values.tls | toJson | sha256sum }}
        {{- if .Values.prometheusAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .Values.ports.admin | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      # wsgate needs no access to the Kubernetes API.
      automountServiceAccountToken: false
      # Longer than the preStop pause + drain_delay + shutdown_grace (the
      # chart checks it): wsgate closes every session with 1001 before the
      # kubelet kills it.
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- if .Values.topologySpread }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "wsgate.selectorLabels" . | nindent 14 }}
      {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        {{- if eq .Values.mode "sidecar" }}
        {{- with .Values.app }}
        - name: {{ .name }}
          image: {{ printf "%s:%s" .image.repository (toString .image.tag) | quote }}
          imagePullPolicy: {{ .image.pullPolicy }}
          {{- with .command }}
          command:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .livenessProbe }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .readinessProbe }}
          readinessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if gt (int .preStopSleepSeconds) 0 }}
          lifecycle:
            # Outlive wsgate's drain, so sessions end with wsgate's 1001
            # rather than with the application going away under them.
            preStop:
              sleep: { seconds: {{ .preStopSleepSeconds }} }
          {{- end }}
          {{- with .securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .volumeMounts }}
          volumeMounts:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        {{- end }}
        {{- end }}
        {{- include "wsgate.container" . | nindent 8 }}
      volumes:
        {{- include "wsgate.configVolume" . | nindent 8 }}
        # WSGATE_STATE_DIR: the file revocation store, if used.
        - name: state
          emptyDir: {}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
