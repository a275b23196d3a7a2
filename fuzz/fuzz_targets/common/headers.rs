//! Header maps built from fuzz input, shared by the targets that need one.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// The first `max` of `lines` read as `name: value` headers; a line that is
/// not one, or that `http` refuses, is skipped.
pub fn from_lines<'a>(lines: impl Iterator<Item = &'a [u8]>, max: usize) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines.take(max) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}
