apiVersion: v1
kind: Service
metadata:
  name: {{ include "wsgate.fullname" . }}
  labels:
    {{- include "wsgate.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  selector:
    {{- include "wsgate.selectorLabels" . | nindent 4 }}
  ports:
    # wsgate only{{ if eq .Values.mode "sidecar" }}; the application's port is not exposed{{ end }}.
    - { name: ws, port: {{ .Values.service.port }}, targetPort: ws }
{{- if .Values.adminService.enabled }}
---
# The admin API (revocations, sessions, reload) and metrics, inside the
# cluster.
apiVersion: v1
kind: Service
metadata:
  name: {{ include "wsgate.fullname" . }}-admin
  labels:
    {{- include "wsgate.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "wsgate.selectorLabels" . | nindent 4 }}
  ports:
    - { name: admin, port: {{ .Values.adminService.port }}, targetPort: admin }
{{- end }}
