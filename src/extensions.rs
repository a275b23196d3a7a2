//! WebSocket extensions the gateway lets through: `permessage-deflate`
//! (RFC 7692) and nothing else.
//!
//! Compression is end to end: the client's offer goes to the upstream, the
//! upstream's answer back to the client, and compressed frames (RSV1 set on
//! a message's first frame) pass the relay unchanged; the gateway never
//! inflates them. That is only sound where the gateway does not read
//! messages: routes with `first_message` or `session.refresh` decline every
//! offer. Any other extension could use RSV2/RSV3 or change the framing in
//! ways the relay cannot check, so it is never offered upstream.

use http::header::SEC_WEBSOCKET_EXTENSIONS;
use http::HeaderMap;

const DEFLATE: &str = "permessage-deflate";

/// The `permessage-deflate` offers among the client's extension offers, in
/// its order and as written, or `None` when it made none.
pub fn deflate_offers(headers: &HeaderMap) -> Option<String> {
    let offers: Vec<&str> = headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|offer| is_deflate(offer) && well_formed(offer))
        .collect();
    (!offers.is_empty()).then(|| offers.join(", "))
}

/// Whether an upstream's `Sec-WebSocket-Extensions` answer accepts exactly
/// one `permessage-deflate` (RFC 7692 §5: the server picks one offer).
pub fn is_deflate_answer(answer: &str) -> bool {
    let mut parts = answer.split(',').map(str::trim);
    matches!((parts.next(), parts.next()), (Some(one), None) if is_deflate(one) && well_formed(one))
}

fn is_deflate(element: &str) -> bool {
    element
        .split(';')
        .next()
        .is_some_and(|name| name.trim().eq_ignore_ascii_case(DEFLATE))
}

/// Parameters are `name` or `name=value` tokens (RFC 7692 §7 defines four,
/// all with token or integer values): anything else (quotes, controls) is
/// not passed on.
fn well_formed(element: &str) -> bool {
    element.split(';').skip(1).all(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let token = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        let name = name.trim();
        !name.is_empty() && token(name) && token(value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(values: &[&str]) -> Option<String> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(SEC_WEBSOCKET_EXTENSIONS, v.parse().unwrap());
        }
        deflate_offers(&h)
    }

    #[test]
    fn only_permessage_deflate_is_offered_upstream() {
        assert_eq!(
            offers(&["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some("permessage-deflate; client_max_window_bits")
        );
        assert_eq!(
            offers(&[
                "x-webkit-deflate-frame",
                "permessage-deflate; server_no_context_takeover, permessage-deflate"
            ])
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover, permessage-deflate")
        );
        assert_eq!(offers(&["x-custom; a=1"]), None);
        assert_eq!(offers(&[]), None);
        assert_eq!(offers(&["permessage-deflate; a=\"x\""]), None);
    }

    #[test]
    fn the_answer_must_be_one_permessage_deflate() {
        assert!(is_deflate_answer("permessage-deflate"));
        assert!(is_deflate_answer(
            "permessage-deflate; server_max_window_bits=10; client_no_context_takeover"
        ));
        assert!(!is_deflate_answer("permessage-deflate, permessage-deflate"));
        assert!(!is_deflate_answer("x-webkit-deflate-frame"));
        assert!(!is_deflate_answer(""));
    }
}
