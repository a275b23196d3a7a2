//! `issuers:` validation: algorithms, the key source that fits them, and the
//! URLs keys are fetched from.

use std::collections::HashSet;
use std::net::IpAddr;

use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::error::FieldPath;
use super::files;
use super::model::*;
use super::raw::{RawIssuer, RawKeys};
use super::validate::Ctx;

const ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

pub(crate) fn issuers(cx: &mut Ctx, raw: &[RawIssuer], path: FieldPath) -> Vec<IssuerConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let p = path.index(i);
        if let Some(id) = &r.id {
            if !seen.insert(id.clone()) {
                cx.err(
                    p.key("id"),
                    format!("issuer id `{id}` is used twice; ids must be unique"),
                );
            }
        }
        if let Some(issuer) = issuer(cx, r, p) {
            out.push(issuer);
        }
    }
    out
}

fn issuer(cx: &mut Ctx, raw: &RawIssuer, path: FieldPath) -> Option<IssuerConfig> {
    let id = cx.required(
        &raw.id,
        path.key("id"),
        "add `id: main` (routes refer to issuers by id)",
    );
    if id.is_some_and(|id| id.trim().is_empty()) {
        cx.err(
            path.key("id"),
            "empty; give the issuer a name such as `main`",
        );
    }
    let algorithms = algorithms(cx, raw.algorithms.as_deref(), path.key("algorithms"));
    let keys = match &raw.keys {
        Some(keys) => key_source(cx, raw, keys, algorithms.as_deref(), path.key("keys")),
        None => {
            cx.err(
                path.key("keys"),
                "missing; add `keys:` with one of secret, public_key, jwks_file, jwks_url or discovery",
            );
            None
        }
    };
    let ca = raw
        .ca
        .as_ref()
        .map(|ca| cx.file(ca, path.key("ca"), files::check_trust_anchors));
    let leeway = cx.duration(&raw.leeway, path.key("leeway"), DEFAULT_LEEWAY);
    let refetch_interval = cx.duration(
        &raw.refetch_interval,
        path.key("refetch_interval"),
        DEFAULT_REFETCH_INTERVAL,
    );
    let audiences = raw.audiences.clone().unwrap_or_default();
    // Without an audience check, a token the same identity provider issued
    // for any other service (another app, another API) is accepted here.
    if raw.audiences.is_none() {
        cx.err(path.key("audiences"), "missing; list the `aud` values of tokens meant for this gateway, e.g. `audiences: [\"chat\"]` (without it, a token the issuer made for any other service is accepted)");
    } else if audiences.is_empty() {
        cx.err(
            path.key("audiences"),
            "empty; list the `aud` values of tokens meant for this gateway, e.g. [\"chat\"]",
        );
    }
    for (i, a) in audiences.iter().enumerate() {
        if a.is_empty() {
            cx.err(path.key("audiences").index(i), "empty audience");
        }
    }
    let required_claims = raw
        .required_claims
        .clone()
        .unwrap_or_else(|| vec!["exp".to_owned()]);
    for (i, c) in required_claims.iter().enumerate() {
        if c.trim().is_empty() {
            cx.err(path.key("required_claims").index(i), "empty claim name");
        }
    }
    let keys = keys.and_then(|k| load_keys(cx, k, path.key("keys")));
    Some(IssuerConfig {
        id: id?.clone(),
        issuer: raw.issuer.clone(),
        audiences,
        algorithms: algorithms?,
        keys: keys?,
        ca: match ca {
            Some(ca) => Some(ca?),
            None => None,
        },
        leeway,
        required_claims,
        refetch_interval,
    })
}

/// Decodes the issuer's local keys as the authenticator does at startup, so
/// a key file that parses but holds nothing usable (a JWKS whose keys are all
/// for encryption, an EC curve the verifier lacks) fails here too. Remote
/// sources are fetched by `run` only; `check` does not reach the network.
fn load_keys(cx: &mut Ctx, keys: KeySource, path: FieldPath) -> Option<KeySource> {
    use crate::auth::keys::{load_local, KeyError, LocalKeyError};
    let (key, message) = match load_local(&keys) {
        Ok(_) => return Some(keys),
        // serde_json's message may quote the file; its reader already passed.
        Err(LocalKeyError::Key {
            source: KeyError::NotJwks(_),
            ..
        }) => ("jwks_file", "is not a JWKS document".to_owned()),
        Err(e @ LocalKeyError::Secret(_)) => ("secret", e.to_string()),
        Err(e) => match &keys {
            KeySource::JwksFile(_) => ("jwks_file", e.to_string()),
            _ => ("public_key", e.to_string()),
        },
    };
    cx.err(path.key(key), message);
    None
}

fn algorithms(cx: &mut Ctx, raw: Option<&[String]>, path: FieldPath) -> Option<Vec<Algorithm>> {
    let Some(raw) = raw else {
        cx.err(
            path,
            "missing; list the algorithms your issuer signs with, e.g. `algorithms: [RS256]`",
        );
        return None;
    };
    if raw.is_empty() {
        cx.err(
            path,
            "empty; list the algorithms your issuer signs with, e.g. [RS256]",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, name) in raw.iter().enumerate() {
        match name.parse::<Algorithm>() {
            Ok(alg) if !out.contains(&alg) => out.push(alg),
            Ok(_) => {}
            Err(_) => {
                ok = false;
                let msg = if name.eq_ignore_ascii_case("none") {
                    "`none` is never accepted: an unsigned token proves nothing; list the algorithm your issuer signs with, e.g. RS256".to_owned()
                } else if let Some(known) = ALGORITHMS
                    .split(", ")
                    .find(|k| k.eq_ignore_ascii_case(name))
                {
                    format!("algorithm names are case-sensitive; write `{known}`")
                } else {
                    format!("unknown algorithm; expected one of {ALGORITHMS}")
                };
                cx.err(path.index(i), msg);
            }
        }
    }
    ok.then_some(out)
}

/// The shortest HMAC key RFC 7518 allows for `alg`: the hash's output size.
fn hmac_key_bytes(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "HS*",
        AlgorithmFamily::Rsa => "RS*/PS*",
        AlgorithmFamily::Ec => "ES*",
        AlgorithmFamily::Ed => "EdDSA",
    }
}

fn key_source(
    cx: &mut Ctx,
    issuer: &RawIssuer,
    keys: &RawKeys,
    algorithms: Option<&[Algorithm]>,
    path: FieldPath,
) -> Option<KeySource> {
    // `discovery: false` means "not this source".
    let discovery = keys.discovery == Some(true);
    let present: Vec<&str> = [
        ("secret", keys.secret.is_some()),
        ("public_key", keys.public_key.is_some()),
        ("jwks_file", keys.jwks_file.is_some()),
        ("jwks_url", keys.jwks_url.is_some()),
        ("discovery", discovery),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if present.len() != 1 {
        let found = if present.is_empty() {
            "none is set".to_owned()
        } else {
            format!("found {}", present.join(", "))
        };
        cx.err(path, format!("expected exactly one of secret, public_key, jwks_file, jwks_url or discovery: true; {found}"));
        return None;
    }
    let families: Vec<AlgorithmFamily> = {
        let mut f = Vec::new();
        for alg in algorithms.unwrap_or(&[]) {
            if !f.contains(&alg.family()) {
                f.push(alg.family());
            }
        }
        f
    };
    let has_hmac = families.contains(&AlgorithmFamily::Hmac);
    if let Some(secret) = &keys.secret {
        if families.iter().any(|f| *f != AlgorithmFamily::Hmac) {
            cx.err(path.key("secret"), "a shared secret only verifies HS256/384/512; the other listed algorithms need `public_key`, `jwks_file`, `jwks_url` or `discovery` (use a separate issuer entry)");
            return None;
        }
        if secret.is_empty() {
            cx.err(
                path.key("secret"),
                "empty secret; set a long random value (e.g. from ${JWT_SECRET})",
            );
            return None;
        }
        let longest = algorithms
            .unwrap_or(&[])
            .iter()
            .filter_map(|alg| hmac_key_bytes(*alg).map(|n| (*alg, n)))
            .max_by_key(|(_, n)| *n);
        if let Some((alg, needed)) = longest {
            // Bytes of the string, as the verifier uses them. The length is
            // not quoted: even that says something about a secret.
            if secret.len() < needed {
                cx.err(path.key("secret"), format!("too short for {alg:?}: an HMAC key must be at least as long as the hash, {needed} bytes (RFC 7518, section 3.2); set a random value of {needed} bytes or more, e.g. from `openssl rand -base64 {needed}`"));
                return None;
            }
        }
        return Some(KeySource::Secret(secret.clone()));
    }
    if has_hmac {
        cx.err(
            path.clone(),
            "HS256/384/512 need `secret`; a public key source cannot verify them",
        );
        return None;
    }
    if let Some(file) = &keys.public_key {
        let family = match families.as_slice() {
            [single] => *single,
            [] => return None,
            _ => {
                let names: Vec<&str> = families.iter().map(|f| family_name(*f)).collect();
                cx.err(path.key("public_key"), format!("one PEM key fits one algorithm family, but {} are listed; use jwks_file for several keys", names.join(" and ")));
                return None;
            }
        };
        return cx
            .file(file, path.key("public_key"), |p| {
                files::check_public_key(p, family)
            })
            .map(KeySource::PublicKey);
    }
    if let Some(file) = &keys.jwks_file {
        return cx
            .file(file, path.key("jwks_file"), files::check_jwks_file)
            .map(KeySource::JwksFile);
    }
    if let Some(url) = &keys.jwks_url {
        return match check_fetch_url(url) {
            Ok(()) => Some(KeySource::JwksUrl(url.clone())),
            Err(msg) => {
                cx.err(path.key("jwks_url"), msg);
                None
            }
        };
    }
    // Only `discovery: true` is left.
    let issuer_path = path.key("discovery");
    match &issuer.issuer {
        None => {
            cx.err(issuer_path, "discovery needs the issuer's `issuer:` URL (its /.well-known/openid-configuration is fetched)");
            None
        }
        Some(url) => match check_fetch_url(url) {
            Ok(()) => Some(KeySource::Discovery),
            Err(msg) => {
                cx.err(
                    issuer_path,
                    format!("the `issuer` URL is fetched for discovery, so: {msg}"),
                );
                None
            }
        },
    }
}

/// Keys are fetched over https; plain http is allowed only to this machine,
/// where nobody can tamper with them in transit.
pub(crate) fn check_fetch_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "expected an https:// URL".to_owned())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".to_owned());
    }
    let host = host_of(authority).ok_or_else(|| "the URL has no host".to_owned())?;
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err("plain http:// is accepted only for loopback hosts (localhost, 127.0.0.0/8, ::1); use https://".to_owned()),
        _ => Err("expected an https:// URL".to_owned()),
    }
}

/// The host part of `host[:port]` or `[v6][:port]`, without brackets.
fn host_of(authority: &str) -> Option<&str> {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_urls() {
        assert!(check_fetch_url("https://id.example.com/jwks.json").is_ok());
        assert!(check_fetch_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_fetch_url("http://127.9.0.1/jwks").is_ok());
        assert!(check_fetch_url("http://[::1]:80/jwks").is_ok());
        assert!(check_fetch_url("http://LOCALHOST/jwks").is_ok());
        assert!(check_fetch_url("http://id.example.com/jwks").is_err());
        assert!(check_fetch_url("http://10.0.0.1/jwks").is_err());
        assert!(check_fetch_url("ftp://x/jwks").is_err());
        assert!(check_fetch_url("id.example.com").is_err());
        assert!(check_fetch_url("https:///x").is_err());
        assert!(check_fetch_url("http://u:p@127.0.0.1/").is_err());
    }
}
