//! `listeners:`, `admin:` and `demo:` validation: bind addresses (distinct
//! across all three) and the TLS files a listener names.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use super::error::FieldPath;
use super::files;
use super::model::*;
use super::raw::*;
use super::validate::Ctx;

pub(crate) fn listeners(
    cx: &mut Ctx,
    raw: Option<&[RawListener]>,
    path: FieldPath,
) -> Vec<ListenerConfig> {
    let list = raw.unwrap_or(&[]);
    if list.is_empty() {
        cx.err(
            path.clone(),
            "at least one listener is needed, e.g. `listeners: [{bind: \"127.0.0.1:8080\"}]`",
        );
    }
    let mut out = Vec::new();
    for (i, l) in list.iter().enumerate() {
        let p = path.index(i);
        let bind = cx
            .required(&l.bind, p.key("bind"), "add `bind: \"0.0.0.0:8443\"`")
            .and_then(|b| cx.bind(b, p.key("bind")));
        let tls = l.tls.as_ref().map(|t| tls(cx, t, p.key("tls")));
        // `Some(None)`: a TLS block that failed; its errors are recorded.
        let tls_ok = !matches!(tls, Some(None));
        if let (Some(bind), true) = (bind, tls_ok) {
            out.push(ListenerConfig {
                bind,
                tls: tls.flatten(),
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
                reuse_port: l.reuse_port.unwrap_or(false),
            });
        }
    }
    out
}

fn tls(cx: &mut Ctx, raw: &RawTls, path: FieldPath) -> Option<TlsConfig> {
    let cert = cx
        .required(
            &raw.cert,
            path.key("cert"),
            "add `cert: server.pem` (a PEM certificate chain)",
        )
        .and_then(|c| cx.file(c, path.key("cert"), files::check_cert_chain));
    let key = cx
        .required(
            &raw.key,
            path.key("key"),
            "add `key: server.key` (a PEM private key)",
        )
        .and_then(|k| cx.file(k, path.key("key"), files::check_private_key));
    let pair_ok = key_pair(cx, cert.as_deref(), key.as_deref(), path.key("key"));
    let client_ca = raw
        .client_ca
        .as_ref()
        .map(|ca| cx.file(ca, path.key("client_ca"), files::check_client_ca));
    let mut sni = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in raw.sni.iter().flatten().enumerate() {
        let p = path.key("sni").index(i);
        let names = cx.required(
            &s.names,
            p.key("names"),
            "add `names: [\"chat.example.com\"]`",
        );
        let mut lowered = Vec::new();
        for (j, name) in names.into_iter().flatten().enumerate() {
            let name = name.trim().to_ascii_lowercase();
            // Server names follow the route `host` grammar, minus IP
            // literals: a client never sends an address as SNI.
            let parsed = crate::route::HostPattern::parse(&name);
            if let Err(e) = parsed {
                cx.err(
                    p.key("names").index(j),
                    format!("the server name {}", e.problem),
                );
            } else if name.contains(':') || name.parse::<std::net::Ipv4Addr>().is_ok() {
                cx.err(
                    p.key("names").index(j),
                    "an IP address is never sent as a TLS server name; use the certificate at `cert` for clients that connect by address",
                );
            } else if !seen.insert(name.clone()) {
                cx.err(
                    p.key("names").index(j),
                    "this server name is already listed in another `sni` entry",
                );
            }
            lowered.push(name);
        }
        if names.is_some_and(|n| n.is_empty()) {
            cx.err(
                p.key("names"),
                "empty; list the server names this certificate is for",
            );
        }
        let cert = cx
            .required(&s.cert, p.key("cert"), "add `cert: chat.pem`")
            .and_then(|c| cx.file(c, p.key("cert"), files::check_cert_chain));
        let key = cx
            .required(&s.key, p.key("key"), "add `key: chat.key`")
            .and_then(|k| cx.file(k, p.key("key"), files::check_private_key));
        let sni_pair_ok = key_pair(cx, cert.as_deref(), key.as_deref(), p.key("key"));
        if let (Some(cert), Some(key), true) = (cert, key, sni_pair_ok) {
            sni.push(SniCert {
                names: lowered,
                cert,
                key,
            });
        }
    }
    pair_ok.then_some(())?;
    Some(TlsConfig {
        cert: cert?,
        key: key?,
        sni,
        // `Some(None)`: the CA file failed and its error is recorded.
        client_ca: match client_ca {
            Some(ca) => Some(ca?),
            None => None,
        },
    })
}

/// Shortest admin token accepted: a bearer token guessed over the network
/// must not be within reach, and a short one is usually a placeholder.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Whether a listener's `cert` and `key` belong together; `true` when either
/// is missing or unreadable (that error is reported already).
fn key_pair(cx: &mut Ctx, cert: Option<&Path>, key: Option<&Path>, path: FieldPath) -> bool {
    let (Some(cert), Some(key)) = (cert, key) else {
        return true;
    };
    match files::check_key_pair(cert, key) {
        Ok(()) => true,
        Err(e) => {
            cx.err(path, e.to_string());
            false
        }
    }
}

pub(crate) fn admin(cx: &mut Ctx, raw: &RawAdmin, path: FieldPath) -> Option<AdminConfig> {
    let token = match raw.token.as_deref() {
        Some(t) if t.trim().is_empty() => {
            cx.err(
                path.key("token"),
                "empty; set a token, or remove the key (then /admin/* is refused to everyone)",
            );
            None
        }
        Some(t) if t.chars().count() < MIN_ADMIN_TOKEN_CHARS => {
            cx.err(
                path.key("token"),
                format!("shorter than {MIN_ADMIN_TOKEN_CHARS} characters; use a long random value, e.g. from `openssl rand -hex 32`"),
            );
            None
        }
        other => other.map(str::to_owned),
    };
    let bind = cx.required(
        &raw.bind,
        path.key("bind"),
        "add `bind: \"127.0.0.1:9090\"`",
    )?;
    let bind = cx.bind(bind, path.key("bind"))?;
    if !bind.ip().is_loopback() {
        cx.warn(
            path.key("bind"),
            "the admin listener has no TLS, yet this address is reachable from other machines: the admin token and the session list cross the network in clear; bind it to 127.0.0.1 (or a private interface behind a TLS proxy)",
        );
    }
    Some(AdminConfig { bind, token })
}

pub(crate) fn demo(cx: &mut Ctx, raw: &RawDemo, path: FieldPath) -> Option<DemoConfig> {
    let echo = cx.required(
        &raw.echo,
        path.key("echo"),
        "add `echo: \"127.0.0.1:9001\"`",
    )?;
    let echo_bind = cx.bind(echo, path.key("echo"))?;
    Some(DemoConfig { echo_bind })
}

pub(crate) fn check_distinct_binds(
    cx: &mut Ctx,
    listeners: &[ListenerConfig],
    admin: Option<&AdminConfig>,
    demo: Option<&DemoConfig>,
) {
    let root = FieldPath::root();
    let mut seen: Vec<(SocketAddr, FieldPath)> = Vec::new();
    let all = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (l.bind, root.key("listeners").index(i).key("bind")))
        .chain(admin.map(|a| (a.bind, root.key("admin").key("bind"))))
        .chain(demo.map(|d| (d.echo_bind, root.key("demo").key("echo"))));
    for (addr, path) in all {
        // Port 0 asks the kernel for a fresh port per socket: never a clash.
        if addr.port() == 0 {
            continue;
        }
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
            let msg = format!("address already used by {first}; each listener needs its own port");
            cx.err(path.clone(), msg);
        } else {
            seen.push((addr, path));
        }
    }
}

pub(crate) fn trusted_proxies(
    cx: &mut Ctx,
    raw: Option<&[String]>,
    path: FieldPath,
) -> Vec<crate::client_addr::Cidr> {
    let mut out = Vec::new();
    for (i, entry) in raw.unwrap_or(&[]).iter().enumerate() {
        match entry.parse() {
            Ok(c) => out.push(c),
            Err(e) => cx.err(
                path.index(i),
                format!("{e}; write a range such as \"10.0.0.0/8\" or one address"),
            ),
        }
    }
    out
}
