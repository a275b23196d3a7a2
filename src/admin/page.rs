//! The admin page: three static files built into the binary, served at the
//! admin listener's `/` without authentication (they hold no data). The page
//! asks for the admin token, keeps it in the page's memory only (never in a
//! URL, a cookie or storage) and calls the `/admin/*` API with
//! `Authorization: Bearer`.
//!
//! The Content-Security-Policy allows nothing but this origin's own files:
//! no inline script or style, no other host, no framing. So the page works
//! offline and a value shown in it (a `sub`, a route id) can never run as
//! script even if the page's own escaping had a flaw.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::Body;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// (path, content type, body) of every file the page is made of.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/ui/admin.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/admin.js"),
    ),
    (
        "/ui/admin.css",
        "text/css; charset=utf-8",
        include_str!("assets/admin.css"),
    ),
];

/// The page file at `path`, if there is one.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_the_strict_policy() {
        for (path, _, _) in ASSETS {
            let r = asset(path).expect(path);
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii");
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
        }
        assert!(asset("/ui/other.js").is_none());
    }

    #[test]
    fn the_html_has_no_inline_script_or_style() {
        let html = include_str!("assets/index.html");
        assert!(!html.contains("<script>"), "inline script");
        assert!(!html.contains(" style="), "inline style");
        assert!(!html.contains(" on"), "inline event handler");
        assert!(!html.contains("//"), "no other origin");
    }
}
