{{- if .Values.networkPolicy.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "wsgate.fullname" . }}
  labels:
    {{- include "wsgate.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "wsgate.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress]
  ingress:
    # Clients reach wsgate only.
    - ports: [{ port: {{ .Values.ports.ws }}, protocol: TCP }]
    {{- with .Values.networkPolicy.adminFrom }}
    # Metrics and the admin API from these peers only.
    - from:
        {{- toYaml . | nindent 8 }}
      ports: [{ port: {{ $.Values.ports.admin }}, protocol: TCP }]
    {{- end }}
{{- if .Values.redis.enabled }}
---
# Only the gateway talks to Redis.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "wsgate.redis.fullname" . }}
  labels:
    {{- include "wsgate.redis.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "wsgate.redis.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              {{- include "wsgate.selectorLabels" . | nindent 14 }}
      ports: [{ port: 6379, protocol: TCP }]
{{- end }}
{{- end }}
