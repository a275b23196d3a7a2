//! OpenTelemetry traces, exported over OTLP/HTTP (JSON) when the config has
//! `tracing:`; nothing is set up otherwise, and every call here is then a
//! no-op on `None`.
//!
//! Two spans per session, in one trace:
//!
//! - `wsgate.handshake` (server span) from the request to the 101 or the
//!   refusal, with the route, the outcome, the issuer, the admission time
//!   (verify, revocation, rules) and the upstream connect time. Its
//!   `traceparent` goes to the upstream request, so the upstream's own span
//!   is its child. A client's `traceparent` is continued only with
//!   `trust_traceparent: true`: otherwise any client could choose trace ids
//!   (and the sampling decision) of the gateway's traces.
//! - `wsgate.session`, from the 101 to the session's end, child of the
//!   handshake span, with the close reason, codes and traffic.
//!
//! Spans are exported in batches on the control runtime; a span never waits
//! for the collector, and a collector that is down costs dropped spans only.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::TracingConfig;

/// How often finished spans are sent to the collector.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("tracing: cannot set up the OTLP export to {endpoint}: {source}")]
pub struct TraceSetupError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// The tracer of a gateway with `tracing:` configured.
pub struct Tracer {
    /// Kept so the export keeps running as long as the gateway.
    _provider: SdkTracerProvider,
    tracer: SdkTracer,
    trust_traceparent: bool,
}

/// A handshake span in progress.
pub struct HandshakeSpan {
    span: opentelemetry_sdk::trace::Span,
}

/// What the handshake span records when it ends.
#[derive(Debug, Default)]
pub struct HandshakeOutcome<'a> {
    pub route: &'a str,
    pub outcome: &'a str,
    pub status: u16,
    pub issuer: Option<&'a str>,
    pub admission_seconds: Option<f64>,
    pub upstream_connect_seconds: Option<f64>,
    /// The refusal, for the span's error status.
    pub error: Option<String>,
}

/// What the session span records.
#[derive(Debug, Default)]
pub struct SessionEnd<'a> {
    pub route: &'a str,
    pub session: u64,
    pub reason: &'a str,
    pub client_code: Option<u16>,
    pub upstream_code: Option<u16>,
    /// Messages and bytes to the upstream, then to the client.
    pub traffic: [u64; 4],
}

/// Reads `traceparent`/`tracestate` from request headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A `traceparent` header value alone, as an extractor.
struct Parent<'a>(&'a str);

impl Extractor for Parent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The W3C `traceparent` value of a span context.
pub fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

impl Tracer {
    /// Sets up the exporter and its batch task; call on the runtime that
    /// should run the export (the control runtime).
    pub fn start(cfg: &TracingConfig) -> Result<Self, TraceSetupError> {
        let endpoint = format!("{}/v1/traces", cfg.otlp_endpoint);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| TraceSetupError { endpoint, source })?;
        let batch = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_EVERY)
                    .build(),
            )
            .build();
        // A trusted parent's sampling decision wins; new traces are sampled
        // at the configured ratio.
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(sampler)
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("wsgate");
        Ok(Self {
            _provider: provider,
            tracer,
            trust_traceparent: cfg.trust_traceparent,
        })
    }

    /// Starts the handshake span of a request.
    pub fn handshake(&self, headers: &HeaderMap, started: SystemTime) -> HandshakeSpan {
        let parent = if self.trust_traceparent {
            TraceContextPropagator::new().extract(&Headers(headers))
        } else {
            Context::new()
        };
        let span = self
            .tracer
            .span_builder("wsgate.handshake")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .start_with_context(&self.tracer, &parent);
        HandshakeSpan { span }
    }

    /// Records a session's end as a span under its handshake's.
    pub fn session_ended(&self, handshake: &str, started: SystemTime, end: &SessionEnd<'_>) {
        let parent = TraceContextPropagator::new().extract(&Parent(handshake));
        if !parent.span().span_context().is_sampled() {
            return;
        }
        let mut attrs = vec![
            KeyValue::new("wsgate.route", end.route.to_owned()),
            KeyValue::new("wsgate.session", end.session as i64),
            KeyValue::new("wsgate.close_reason", end.reason.to_owned()),
            KeyValue::new("wsgate.messages_to_upstream", end.traffic[0] as i64),
            KeyValue::new("wsgate.bytes_to_upstream", end.traffic[1] as i64),
            KeyValue::new("wsgate.messages_to_client", end.traffic[2] as i64),
            KeyValue::new("wsgate.bytes_to_client", end.traffic[3] as i64),
        ];
        if let Some(c) = end.client_code {
            attrs.push(KeyValue::new("wsgate.client_close_code", i64::from(c)));
        }
        if let Some(c) = end.upstream_code {
            attrs.push(KeyValue::new("wsgate.upstream_close_code", i64::from(c)));
        }
        let mut span = self
            .tracer
            .span_builder("wsgate.session")
            .with_kind(SpanKind::Internal)
            .with_start_time(started)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        span.end();
    }
}

impl HandshakeSpan {
    /// The `traceparent` to send upstream (and to keep with the session).
    pub fn traceparent(&self) -> String {
        traceparent(self.span.span_context())
    }

    /// The same, as a header value.
    pub fn header(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.traceparent()).ok()
    }

    /// Ends the span with the handshake's outcome.
    pub fn end(mut self, o: &HandshakeOutcome<'_>) {
        let s = &mut self.span;
        s.set_attribute(KeyValue::new("wsgate.route", o.route.to_owned()));
        s.set_attribute(KeyValue::new("wsgate.outcome", o.outcome.to_owned()));
        s.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(o.status),
        ));
        if let Some(i) = o.issuer {
            s.set_attribute(KeyValue::new("wsgate.issuer", i.to_owned()));
        }
        if let Some(t) = o.admission_seconds {
            s.set_attribute(KeyValue::new("wsgate.admission_ms", t * 1000.0));
        }
        if let Some(t) = o.upstream_connect_seconds {
            s.set_attribute(KeyValue::new("wsgate.upstream_connect_ms", t * 1000.0));
        }
        if let Some(e) = &o.error {
            s.set_status(Status::error(e.clone()));
        }
        s.end();
    }
}
