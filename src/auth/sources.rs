//! Where tokens are found on the request (CONTRACT `token_sources`), and how
//! the token is removed before the request goes upstream.
//!
//! Ambiguity is never resolved by guessing: a request with more than one
//! `Authorization` header yields no token from the `header` source (the
//! handshake then answers "missing token", or a later source may match).

use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Uri};
use percent_encoding::percent_decode_str;

use super::jwt::looks_like_jws;
use crate::config::{FirstMessage, TokenSource};

/// A first message larger than this is not even parsed.
const MAX_FIRST_MESSAGE: usize = 64 * 1024;

/// A token and the source it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    pub source: TokenSource,
}

// The token must never reach a log line through `{:?}`.
impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("token", &super::fingerprint(&self.token))
            .field("source", &self.source)
            .finish()
    }
}

/// Tries the sources in order on the request head; `FirstMessage` is skipped
/// (the caller handles it after the 101).
pub fn extract(sources: &[TokenSource], parts: &Parts) -> Option<Found> {
    sources.iter().find_map(|source| {
        let token = match source {
            TokenSource::Header => from_header(&parts.headers),
            TokenSource::Subprotocol => split_subprotocols(&parts.headers).0,
            TokenSource::Query(name) => from_query(&parts.uri, name),
            TokenSource::Cookie(name) => from_cookie(&parts.headers, name),
            TokenSource::FirstMessage(_) => None,
        }?;
        Some(Found {
            token,
            source: source.clone(),
        })
    })
}

/// Removes every token carrier that `sources` name, whether or not it held
/// the token that was verified: each `Authorization: Bearer` header, every
/// occurrence of each named query parameter and cookie. With `keep`
/// (`token: keep`), the carrier of that token stays, and only it: a second,
/// unverified token never rides along. The `bearer, <jwt>` subprotocol pair
/// is never part of the upstream's offer (see [`split_subprotocols`]).
pub fn strip_carriers(parts: &mut Parts, sources: &[TokenSource], keep: Option<&Found>) {
    for source in sources {
        let kept = keep
            .filter(|k| &k.source == source)
            .map(|k| k.token.as_str());
        match source {
            TokenSource::Header => {
                let values: Vec<HeaderValue> = parts
                    .headers
                    .get_all(AUTHORIZATION)
                    .iter()
                    .cloned()
                    .collect();
                let (bearer, other): (Vec<_>, Vec<_>) = values
                    .into_iter()
                    .partition(|v| v.to_str().is_ok_and(|v| bearer_token(v).is_some()));
                if bearer.is_empty() {
                    continue;
                }
                parts.headers.remove(AUTHORIZATION);
                let keep_bearer = bearer.into_iter().filter(|v| {
                    kept.is_some_and(|t| v.to_str().ok().and_then(bearer_token) == Some(t))
                });
                for v in other.into_iter().chain(keep_bearer) {
                    parts.headers.append(AUTHORIZATION, v);
                }
            }
            TokenSource::Query(name) => {
                if let Some(uri) = without_query_param(&parts.uri, name, kept) {
                    parts.uri = uri;
                }
            }
            TokenSource::Cookie(name) => strip_cookie(&mut parts.headers, name, kept),
            TokenSource::Subprotocol | TokenSource::FirstMessage(_) => {}
        }
    }
}

/// Splits the offered subprotocols: the token if the list has `bearer`
/// followed by a JWT, and the application protocols in order. A `bearer`
/// not followed by a JWT is kept as an ordinary protocol name.
pub fn split_subprotocols(headers: &HeaderMap) -> (Option<String>, Vec<String>) {
    let offered: Vec<&str> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut token = None;
    let mut app = Vec::with_capacity(offered.len());
    let mut i = 0;
    while i < offered.len() {
        let item = offered[i];
        let next = offered.get(i + 1).copied();
        if token.is_none() && item.eq_ignore_ascii_case("bearer") {
            if let Some(jwt) = next.filter(|n| looks_like_jws(n)) {
                token = Some(jwt.to_owned());
                i += 2;
                continue;
            }
        }
        // Once the token is taken, a second `bearer` or another copy of it
        // is never an application protocol: forwarding it would hand the
        // token upstream. Nor is any entry shaped like a JWT (a token
        // offered bare, while another source carried the one verified).
        let copy = token
            .as_deref()
            .is_some_and(|t| t == item || item.eq_ignore_ascii_case("bearer"))
            || looks_like_jws(item);
        if !copy {
            app.push(item.to_owned());
        }
        i += 1;
    }
    (token, app)
}

/// The token of a first message: the string at `spec.pointer` (a
/// `Bearer ` prefix allowed), or else the `token` or `jwt` member (`token`
/// wins when both).
pub fn parse_first_message(text: &str, spec: &FirstMessage) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Auth {
        token: Option<String>,
        jwt: Option<String>,
    }
    if text.len() > MAX_FIRST_MESSAGE {
        return None;
    }
    let Some(pointer) = &spec.pointer else {
        // An object, as documented (serde would read the struct from an
        // array too), and the token trimmed as the pointer form does.
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let auth: Auth = serde_json::from_str(text).ok()?;
        return auth
            .token
            .or(auth.jwt)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
    };
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let value = doc.pointer(pointer)?.as_str()?.trim();
    let token = match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        // Another scheme, or text that is no token.
        Some(_) => return None,
        None if value.eq_ignore_ascii_case("bearer") => return None,
        None => value,
    };
    (!token.is_empty()).then(|| token.to_owned())
}

fn from_header(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    bearer_token(value.to_str().ok()?).map(str::to_owned)
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn from_query(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key)? == name).then(|| decode(value))?
        })
        .find(|v| !v.is_empty())
}

/// The URI without any `name=...` pair (every occurrence: none may leak)
/// but those whose value is `keep`; the other pairs keep their order and
/// their original encoding.
fn without_query_param(uri: &Uri, name: &str, keep: Option<&str>) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            decode(key).as_deref() != Some(name)
                || keep.is_some_and(|k| decode(value).as_deref() == Some(k))
        })
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn cookie_pairs(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value.split(';').filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        Some((k.trim(), v.trim()))
    })
}

fn from_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie_pairs)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

fn strip_cookie(headers: &mut HeaderMap, name: &str, keep: Option<&str>) {
    let kept: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k.trim() != name || keep.is_some_and(|keep| v.trim().trim_matches('"') == keep)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn all() -> Vec<TokenSource> {
        vec![
            TokenSource::Header,
            TokenSource::Subprotocol,
            TokenSource::Query("access_token".into()),
            TokenSource::Cookie("access_token".into()),
            TokenSource::FirstMessage(FirstMessage::default()),
        ]
    }

    #[test]
    fn header_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER   abc "] {
            let found = extract(&all(), &parts("/", &[("authorization", v)])).unwrap();
            assert_eq!(
                (found.token.as_str(), found.source),
                ("abc", TokenSource::Header)
            );
        }
        assert!(extract(&all(), &parts("/", &[("authorization", "Basic abc")])).is_none());
        assert!(extract(&all(), &parts("/", &[("authorization", "Bearer ")])).is_none());
    }

    #[test]
    fn two_authorization_headers_give_no_header_token() {
        let p = parts(
            "/?access_token=q",
            &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
        );
        assert!(extract(&[TokenSource::Header], &p).is_none());
        assert_eq!(
            extract(&all(), &p).unwrap().token,
            "q",
            "a later source may still match"
        );
    }

    #[test]
    fn order_is_respected() {
        let p = parts("/?access_token=q", &[("authorization", "Bearer h")]);
        let q_first = [
            TokenSource::Query("access_token".into()),
            TokenSource::Header,
        ];
        assert_eq!(extract(&q_first, &p).unwrap().token, "q");
        assert_eq!(extract(&all(), &p).unwrap().token, "h");
        assert!(extract(&[TokenSource::FirstMessage(FirstMessage::default())], &p).is_none());
    }

    #[test]
    fn query_is_decoded_and_stripped_keeping_the_rest() {
        let mut p = parts("/ws?a=1&access_token=x%2Ey&b=2&access_token=z", &[]);
        let found = extract(&all(), &p).unwrap();
        assert_eq!(found.token, "x.y");
        strip_carriers(&mut p, &all(), None);
        assert_eq!(p.uri.to_string(), "/ws?a=1&b=2");
        let mut p = parts("/ws?access_token=x", &[]);
        strip_carriers(&mut p, &all(), None);
        assert_eq!(p.uri.to_string(), "/ws");
    }

    #[test]
    fn cookie_is_found_and_stripped_keeping_the_rest() {
        let mut p = parts(
            "/",
            &[("cookie", "a=1; access_token=\"tok\""), ("cookie", "b=2")],
        );
        let found = extract(&all(), &p).unwrap();
        assert_eq!(found.token, "tok");
        strip_carriers(&mut p, &all(), None);
        assert_eq!(p.headers.get(COOKIE).unwrap(), "a=1; b=2");
        let mut p = parts("/", &[("cookie", "access_token=tok")]);
        strip_carriers(&mut p, &all(), None);
        assert!(p.headers.get(COOKIE).is_none());
    }

    #[test]
    fn a_repeated_bearer_token_is_never_an_app_protocol() {
        let t = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
        let offer = format!("bearer, {t}, bearer, {t}, chat.v1");
        let p = parts("/", &[("sec-websocket-protocol", offer.as_str())]);
        assert_eq!(
            split_subprotocols(&p.headers),
            (Some(t.to_owned()), vec!["chat.v1".to_owned()])
        );
    }

    #[test]
    fn subprotocols_split_and_strip() {
        let offered = format!("chat.v1, bearer, {JWT}, chat.v2");
        let p = parts("/", &[("sec-websocket-protocol", offered.as_str())]);
        let (tok, app) = split_subprotocols(&p.headers);
        assert_eq!(tok.as_deref(), Some(JWT));
        assert_eq!(app, ["chat.v1", "chat.v2"]);
        let found = extract(&all(), &p).unwrap();
        assert_eq!(found.source, TokenSource::Subprotocol);

        let p = parts("/", &[("sec-websocket-protocol", "jwt, v1.jwt")]);
        assert_eq!(
            split_subprotocols(&p.headers),
            (None, vec!["jwt".into(), "v1.jwt".into()])
        );
        let p = parts("/", &[("sec-websocket-protocol", "bearer")]);
        assert_eq!(
            split_subprotocols(&p.headers),
            (None, vec!["bearer".into()])
        );

        let p = parts(
            "/",
            &[
                ("sec-websocket-protocol", "bearer"),
                ("sec-websocket-protocol", JWT),
            ],
        );
        assert_eq!(
            split_subprotocols(&p.headers),
            (Some(JWT.to_owned()), vec![])
        );
    }

    #[test]
    fn strip_removes_every_carrier_the_sources_name() {
        let mut p = parts(
            "/ws?access_token=other&a=1",
            &[
                ("authorization", "Bearer abc"),
                ("authorization", "Bearer def"),
                ("authorization", "Basic dXNlcg=="),
                ("cookie", "access_token=ghi; b=2"),
            ],
        );
        strip_carriers(&mut p, &all(), None);
        assert_eq!(p.uri.to_string(), "/ws?a=1");
        let auth: Vec<_> = p.headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(auth, ["Basic dXNlcg=="]);
        assert_eq!(p.headers.get(COOKIE).unwrap(), "b=2");
        // A source the route does not name is none of the gateway's business.
        let mut p = parts("/ws?access_token=x", &[("cookie", "access_token=y")]);
        strip_carriers(&mut p, &[TokenSource::Header], None);
        assert_eq!(p.uri.to_string(), "/ws?access_token=x");
        assert!(p.headers.get(COOKIE).is_some());
    }

    #[test]
    fn keep_forwards_only_the_verified_carrier() {
        let mut p = parts(
            "/ws?access_token=good&access_token=stale",
            &[("cookie", "access_token=other")],
        );
        let found = extract(&all(), &p).unwrap();
        assert_eq!(found.token, "good");
        strip_carriers(&mut p, &all(), Some(&found));
        assert_eq!(p.uri.to_string(), "/ws?access_token=good");
        assert!(p.headers.get(COOKIE).is_none());
        let mut p = parts(
            "/ws?access_token=stale",
            &[("authorization", "Bearer good")],
        );
        let found = extract(&all(), &p).unwrap();
        strip_carriers(&mut p, &all(), Some(&found));
        assert_eq!(p.uri.to_string(), "/ws");
        assert_eq!(p.headers.get(AUTHORIZATION).unwrap(), "Bearer good");
    }

    #[test]
    fn header_strip() {
        let mut p = parts("/", &[("authorization", "Bearer abc"), ("x-other", "1")]);
        let found = extract(&all(), &p).unwrap();
        strip_carriers(&mut p, &all(), None);
        assert!(p.headers.get(AUTHORIZATION).is_none());
        assert!(p.headers.get("x-other").is_some());
        assert!(!format!("{found:?}").contains("abc"));
    }

    #[test]
    fn first_message() {
        let plain = FirstMessage::default();
        let parse = |t: &str| parse_first_message(t, &plain);
        assert_eq!(parse(r#"{"token":"a"}"#).as_deref(), Some("a"));
        assert_eq!(parse(r#"{"jwt":"b","x":1}"#).as_deref(), Some("b"));
        assert_eq!(parse(r#"{"jwt":5}"#), None);
        assert_eq!(parse(r#"{"token":""}"#), None);
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("{}"), None);
        // Fuzz finding 7: an array is no object; padding is no token.
        assert_eq!(parse(r#"["a.b.c","x"]"#), None);
        assert_eq!(parse(r#"{"token":" x "}"#).as_deref(), Some("x"));
    }

    #[test]
    fn a_bare_jwt_is_never_an_application_protocol() {
        // Fuzz finding 6: a copy of the token offered without `bearer`
        // while the cookie (or header) carried the verified one.
        let p = parts(
            "/",
            &[("sec-websocket-protocol", &format!("{JWT}, chat.v1"))],
        );
        assert_eq!(
            split_subprotocols(&p.headers),
            (None, vec!["chat.v1".to_owned()])
        );
    }

    #[test]
    fn first_message_at_a_json_pointer() {
        let spec = FirstMessage {
            pointer: Some("/payload/Authorization".into()),
            forward: true,
        };
        let parse = |t: &str| parse_first_message(t, &spec);
        let init = |v: &str| {
            serde_json::json!({"type": "connection_init", "payload": {"Authorization": v}})
                .to_string()
        };
        assert_eq!(parse(&init("Bearer abc")).as_deref(), Some("abc"));
        assert_eq!(parse(&init("bearer  abc ")).as_deref(), Some("abc"));
        assert_eq!(parse(&init("abc")).as_deref(), Some("abc"));
        assert_eq!(parse(&init("Basic abc")), None);
        assert_eq!(parse(&init("Bearer ")), None);
        assert_eq!(parse(r#"{"type":"connection_init","payload":{}}"#), None);
        assert_eq!(
            parse(r#"{"type":"connection_init","payload":{"Authorization":1}}"#),
            None
        );
        // The `token` member is not looked at when a pointer is set.
        assert_eq!(parse(r#"{"token":"a"}"#), None);
        let escaped = FirstMessage {
            pointer: Some("/a~1b/c~0d".into()),
            forward: false,
        };
        assert_eq!(
            parse_first_message(r#"{"a/b":{"c~d":"t"}}"#, &escaped).as_deref(),
            Some("t")
        );
    }
}
