{{- if .Values.redis.enabled }}
# Redis for revocations (and the cluster features): one pod, AOF on. Every
# wsgate replica keeps the revocations in memory as well and writes back
# entries Redis lacks after a reconnect, so a Redis restart loses nothing
# while any replica runs; redis.persistence.enabled keeps them across a
# restart of everything.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "wsgate.redis.fullname" . }}
  labels:
    {{- include "wsgate.redis.labels" . | nindent 4 }}
spec:
  replicas: 1
  strategy: { type: Recreate }
  selector:
    matchLabels:
      {{- include "wsgate.redis.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "wsgate.redis.selectorLabels" . | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 999
        runAsGroup: 999
        fsGroup: 999
        seccompProfile: { type: RuntimeDefault }
      containers:
        - name: redis
          image: {{ printf "%s:%s" .Values.redis.image.repository (toString .Values.redis.image.tag) | quote }}
          imagePullPolicy: {{ .Values.redis.image.pullPolicy }}
          args:
            - --requirepass
            - $(REDIS_PASSWORD)
            - --appendonly
            - "yes"
            - --dir
            - /data
          env:
            - name: REDIS_PASSWORD
              valueFrom: { secretKeyRef: { name: {{ include "wsgate.secretName" . }}, key: REDIS_PASSWORD } }
          ports:
            - { name: redis, containerPort: 6379 }
          readinessProbe:
            tcpSocket: { port: redis }
            periodSeconds: 5
          livenessProbe:
            tcpSocket: { port: redis }
            periodSeconds: 10
          volumeMounts:
            - { name: data, mountPath: /data }
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: { drop: [ALL] }
          {{- with .Values.redis.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      volumes:
        - name: data
          {{- if .Values.redis.persistence.enabled }}
          persistentVolumeClaim: { claimName: {{ include "wsgate.redis.fullname" . }} }
          {{- else }}
          emptyDir: {}
          {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "wsgate.redis.fullname" . }}
  labels:
    {{- include "wsgate.redis.labels" . | nindent 4 }}
spec:
  selector:
    {{- include "wsgate.redis.selectorLabels" . | nindent 4 }}
  ports:
    - { name: redis, port: 6379, targetPort: redis }
{{- if .Values.redis.persistence.enabled }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "wsgate.redis.fullname" . }}
  labels:
    {{- include "wsgate.redis.labels" . | nindent 4 }}
spec:
  accessModes: [ReadWriteOnce]
  {{- with .Values.redis.persistence.storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ .Values.redis.persistence.size }}
{{- end }}
{{- end }}
