{{- include "wsgate.validate" . -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "wsgate.fullname" . }}
  labels:
    {{- include "wsgate.labels" . | nindent 4 }}
data:
  gateway.yaml: |
{{ include "wsgate.configText" . | indent 4 | replace "\n    \n" "\n\n" }}
