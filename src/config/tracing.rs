//! `tracing:`: OpenTelemetry traces over OTLP/HTTP (JSON), off when absent.
//!
//! ```yaml
//! tracing:
//!   otlp_endpoint: http://127.0.0.1:4318   # the collector; /v1/traces is added
//!   sample_ratio: 0.1                      # default 1.0
//!   trust_traceparent: false               # continue a client's trace (default false)
//!   service_name: wsgate                   # default wsgate
//! ```

use super::error::FieldPath;
use super::model::TracingConfig;
use super::raw::RawTracing;
use super::validate::Ctx;

pub(crate) fn tracing(cx: &mut Ctx, raw: &RawTracing, path: FieldPath) -> Option<TracingConfig> {
    let endpoint = match raw.otlp_endpoint.as_deref().map(str::trim) {
        None | Some("") => {
            cx.err(
                path.key("otlp_endpoint"),
                "required: the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318",
            );
            return None;
        }
        Some(e) => e.trim_end_matches('/').to_owned(),
    };
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
        Ok(uri) if uri.scheme_str() == Some("https") => cx.err(
            path.key("otlp_endpoint"),
            "https is not supported for the export: run the collector (or an agent) beside the gateway and give its http:// address",
        ),
        _ => cx.err(
            path.key("otlp_endpoint"),
            "not an http:// URL with a host, e.g. http://127.0.0.1:4318",
        ),
    }
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        cx.err(
            path.key("sample_ratio"),
            "must be between 0 and 1 (the share of handshakes traced)",
        );
    }
    let service_name = raw
        .service_name
        .clone()
        .unwrap_or_else(|| "wsgate".to_owned());
    Some(TracingConfig {
        otlp_endpoint: endpoint,
        sample_ratio,
        trust_traceparent: raw.trust_traceparent.unwrap_or(false),
        service_name,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::Fixture;

    const ROUTES: &str = "listeners: [{bind: \"127.0.0.1:8080\"}]\nroutes:\n  - { id: pub, path: /echo, upstream: ws://127.0.0.1:9001, auth: none }\n";

    #[test]
    fn tracing_is_off_by_default_and_read_with_its_defaults() {
        let fx = Fixture::new();
        let c = fx.load(ROUTES).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.tracing, None);
        let c = fx
            .load(&format!(
                "{ROUTES}tracing: {{otlp_endpoint: \"http://127.0.0.1:4318/\"}}\n"
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = c.tracing.expect("tracing");
        assert_eq!(t.otlp_endpoint, "http://127.0.0.1:4318");
        assert_eq!((t.sample_ratio, t.trust_traceparent), (1.0, false));
        assert_eq!(t.service_name, "wsgate");
    }

    #[test]
    fn bad_tracing_settings_name_their_field() {
        let fx = Fixture::new();
        for (section, field, text) in [
            ("{sample_ratio: 0.5}", "tracing.otlp_endpoint", "required"),
            (
                "{otlp_endpoint: \"https://c:4318\"}",
                "tracing.otlp_endpoint",
                "https",
            ),
            (
                "{otlp_endpoint: \"collector:4318\"}",
                "tracing.otlp_endpoint",
                "http://",
            ),
            (
                "{otlp_endpoint: \"http://c:4318\", sample_ratio: 2}",
                "tracing.sample_ratio",
                "between 0 and 1",
            ),
            (
                "{otlp_endpoint: \"http://c:4318\", sampling: 1}",
                "tracing.sampling",
                "unknown key",
            ),
        ] {
            let err = fx
                .load(&format!("{ROUTES}tracing: {section}\n"))
                .expect_err(section)
                .to_string();
            assert!(
                err.contains(field) && err.contains(text),
                "{section}: {err}"
            );
        }
    }
}
