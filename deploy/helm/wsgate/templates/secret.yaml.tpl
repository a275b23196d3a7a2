{{- if not .Values.secret.existingSecret }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "wsgate.fullname" . }}
  labels:
    {{- include "wsgate.labels" . | nindent 4 }}
type: Opaque
data:
  {{- $env := .Values.secret.env | default dict }}
  {{- range $key := include "wsgate.envKeys" . | fromJsonArray }}
  {{ $key }}: {{ include "wsgate.secretValue" (dict "root" $ "key" $key "value" (index $env $key | default "" | toString)) | b64enc | quote }}
  {{- end }}
  {{- range $name, $content := .Values.secret.files }}
  {{ $name | quote }}: {{ $content | toString | b64enc | quote }}
  {{- end }}
  {{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
  tls.crt: {{ .Values.tls.cert | b64enc | quote }}
  tls.key: {{ .Values.tls.key | b64enc | quote }}
  {{- end }}
{{- end }}
