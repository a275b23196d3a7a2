//! TLS listeners (key formats, SNI, versions, mTLS) and wss:// upstreams.
// Tests measure real (wall) time and share logs with plain threads: the
// async-code bans of .clippy.toml do not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use serde_json::json;
use support::pki::{self, Ca};
use support::*;

const ECHO_ROUTE: &str = "routes:\n  - id: echo\n    path: /echo\n    upstream: UPSTREAM\n";

/// A config with one TLS listener (`tls` is the YAML under `tls:`).
fn tls_config(tls: &str, upstream: &str) -> String {
    let h = head().replace(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n",
        &format!("listeners:\n  - bind: \"127.0.0.1:0\"\n    tls:\n{tls}"),
    );
    format!("{h}{}", ECHO_ROUTE.replace("UPSTREAM", upstream))
}

fn auth() -> String {
    format!("Bearer {}", token("alice", json!({})))
}

/// Starts a TLS gateway whose default cert has key `key_pem`.
fn start_with_key(ca: &Ca, leaf: &pki::Leaf, key_pem: &str, upstream: &str) -> Gateway {
    Gateway::start_with_files(
        &tls_config(
            "      cert: certs/server.pem\n      key: certs/server.key\n",
            upstream,
        ),
        &[
            ("certs/server.pem", leaf.cert_pem.as_bytes()),
            ("certs/server.key", key_pem.as_bytes()),
            ("certs/ca.pem", ca.cert_pem.as_bytes()),
        ],
    )
}

async fn roundtrip_over_tls(gw: &Gateway, ca: &Ca, name: &str) {
    let cfg = pki::client_config(ca, rustls::ALL_VERSIONS, None);
    let mut ws = pki::wss_connect(gw.addr(), name, "/echo", cfg, &[("authorization", &auth())])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    roundtrip(&mut ws, "over tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_pkcs8_key() {
    install_crypto();
    let up = EchoUpstream::start().await;
    let ca = Ca::new("wsgate test CA");
    let leaf = ca.server(&["localhost", "127.0.0.1"]);
    let gw = start_with_key(&ca, &leaf, &leaf.key_pem, &up.url());
    assert!(gw.logged("tls=true"));
    roundtrip_over_tls(&gw, &ca, "localhost").await;
    let c = up.conn(0).await;
    assert_eq!(c.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_ec_sec1_key() {
    install_crypto();
    let up = EchoUpstream::start().await;
    let ca = Ca::new("wsgate test CA");
    let leaf = ca.server(&["localhost"]);
    let key = leaf.traditional_key_pem("EC PRIVATE KEY");
    let gw = start_with_key(&ca, &leaf, &key, &up.url());
    roundtrip_over_tls(&gw, &ca, "localhost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_rsa_pkcs1_key() {
    install_crypto();
    let up = EchoUpstream::start().await;
    let ca = Ca::new("wsgate test CA");
    let leaf = ca.leaf(&["localhost"], &rcgen::PKCS_RSA_SHA256, false);
    let key = leaf.traditional_key_pem("RSA PRIVATE KEY");
    let gw = start_with_key(&ca, &leaf, &key, &up.url());
    roundtrip_over_tls(&gw, &ca, "localhost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_extra_cert() {
    install_crypto();
    let up = EchoUpstream::start().await;
    let ca = Ca::new("wsgate test CA");
    let default = ca.server(&["localhost"]);
    let chat = ca.server(&["chat.example.com"]);
    let gw = Gateway::start_with_files(
        &tls_config(
            "      cert: certs/server.pem\n      key: certs/server.key\n      sni:\n        - { names: [\"chat.example.com\"], cert: certs/chat.pem, key: certs/chat.key }\n",
            &up.url(),
        ),
        &[
            ("certs/server.pem", default.cert_pem.as_bytes()),
            ("certs/server.key", default.key_pem.as_bytes()),
            ("certs/chat.pem", chat.cert_pem.as_bytes()),
            ("certs/chat.key", chat.key_pem.as_bytes()),
        ],
    );
    // The client verifies the name, so success proves which cert came back;
    // check the presented certificate too.
    for (name, expected) in [("chat.example.com", &chat), ("localhost", &default)] {
        let cfg = pki::client_config(&ca, rustls::ALL_VERSIONS, None);
        let mut ws = pki::wss_connect(gw.addr(), name, "/echo", cfg, &[("authorization", &auth())])
            .await
            .unwrap_or_else(|e| panic!("{name}: {}", describe(&e)));
        let presented = ws.get_ref().get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(presented, expected.der, "{name}");
        roundtrip(&mut ws, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_both_work() {
    install_crypto();
    let up = EchoUpstream::start().await;
    let ca = Ca::new("wsgate test CA");
    let leaf = ca.server(&["localhost"]);
    let gw = start_with_key(&ca, &leaf, &leaf.key_pem, &up.url());
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let cfg = pki::client_config(&ca, &[version], None);
        let mut ws = pki::wss_connect(
            gw.addr(),
            "localhost",
            "/echo",
            cfg,
            &[("authorization", &auth())],
        )
        .await
        .unwrap_or_else(|e| panic!("{expected:?}: {}", describe(&e)));
        assert_eq!(ws.get_ref().get_ref().1.protocol_version(), Some(expected));
        roundtrip(&mut ws, "v").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_client_without_cert() {
    install_crypto();
    let up = EchoUpstream::start().await;
    let ca = Ca::new("wsgate test CA");
    let leaf = ca.server(&["localhost"]);
    let client = ca.leaf(&["client-1"], &rcgen::PKCS_ECDSA_P256_SHA256, true);
    let other_ca = Ca::new("someone else");
    let stranger = other_ca.leaf(&["client-2"], &rcgen::PKCS_ECDSA_P256_SHA256, true);
    let gw = Gateway::start_with_files(
        &tls_config(
            "      cert: certs/server.pem\n      key: certs/server.key\n      client_ca: certs/ca.pem\n",
            &up.url(),
        ),
        &[
            ("certs/server.pem", leaf.cert_pem.as_bytes()),
            ("certs/server.key", leaf.key_pem.as_bytes()),
            ("certs/ca.pem", ca.cert_pem.as_bytes()),
        ],
    );
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        // No client certificate: refused (TLS 1.3 reports it at first read).
        let cfg = pki::client_config(&ca, &[version], None);
        let r = pki::wss_connect(
            gw.addr(),
            "localhost",
            "/echo",
            cfg,
            &[("authorization", &auth())],
        )
        .await;
        assert!(
            r.is_err(),
            "{version:?}: a client without a certificate got in"
        );
        // A certificate from another CA: refused.
        let cfg = pki::client_config(&ca, &[version], Some(&stranger));
        let r = pki::wss_connect(
            gw.addr(),
            "localhost",
            "/echo",
            cfg,
            &[("authorization", &auth())],
        )
        .await;
        assert!(
            r.is_err(),
            "{version:?}: a client with a foreign certificate got in"
        );
        // A certificate from the configured CA: accepted.
        let cfg = pki::client_config(&ca, &[version], Some(&client));
        let mut ws = pki::wss_connect(
            gw.addr(),
            "localhost",
            "/echo",
            cfg,
            &[("authorization", &auth())],
        )
        .await
        .unwrap_or_else(|e| panic!("{version:?}: {}", describe(&e)));
        roundtrip(&mut ws, "mtls").await;
    }
    assert!(gw.try_exit().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_upstream_with_ca() {
    install_crypto();
    let up_ca = Ca::new("upstream CA");
    let up_leaf = up_ca.server(&["localhost"]);
    let up = EchoUpstream::start_with(upstream::Select::None, Some(pki::acceptor(&up_leaf))).await;
    let port = up.addr.port();
    let route = |ca_line: &str| {
        format!(
            "{}routes:\n  - id: echo\n    path: /echo\n    upstream:\n      urls: [\"wss://localhost:{port}\"]\n{ca_line}",
            head()
        )
    };
    let gw = Gateway::start_with_files(
        &route("      ca: certs/upstream-ca.pem\n"),
        &[("certs/upstream-ca.pem", up_ca.cert_pem.as_bytes())],
    );
    let mut ws = ws_bearer(&gw.ws_url("/echo"), &token("alice", json!({}))).await;
    roundtrip(&mut ws, "to a wss upstream").await;
    assert_eq!(up.count(), 1);
    drop(gw);

    // Without the CA, the upstream's certificate is not trusted: 502.
    let gw = Gateway::start(&route(""));
    let r = ws_connect(&gw.ws_url("/echo"), &[("authorization", &auth())]).await;
    assert_eq!(status_of(r), 502);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_listeners_side_by_side() {
    install_crypto();
    let up = EchoUpstream::start().await;
    let ca = Ca::new("wsgate test CA");
    let leaf = ca.server(&["localhost"]);
    let h = head().replace(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n",
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      cert: certs/server.pem\n      key: certs/server.key\n  - bind: \"127.0.0.1:0\"\n",
    );
    let gw = Gateway::start_with_files(
        &format!("{h}{}", ECHO_ROUTE.replace("UPSTREAM", &up.url())),
        &[
            ("certs/server.pem", leaf.cert_pem.as_bytes()),
            ("certs/server.key", leaf.key_pem.as_bytes()),
        ],
    );
    assert_eq!(gw.listeners.len(), 2);
    roundtrip_over_tls(&gw, &ca, "localhost").await;
    let mut ws = ws_bearer(
        &format!("ws://{}/echo", gw.listeners[1]),
        &token("bob", json!({})),
    )
    .await;
    roundtrip(&mut ws, "plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_the_certificate_without_dropping_sessions() {
    install_crypto();
    let up = EchoUpstream::start().await;
    let ca = Ca::new("wsgate test CA");
    let old = ca.server(&["localhost"]);
    let new = ca.server(&["localhost"]);
    let gw = start_with_key(&ca, &old, &old.key_pem, &up.url());
    let connect = || async {
        let cfg = pki::client_config(&ca, rustls::ALL_VERSIONS, None);
        pki::wss_connect(
            gw.addr(),
            "localhost",
            "/echo",
            cfg,
            &[("authorization", &auth())],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)))
    };
    let mut live = connect().await;
    let presented = live.get_ref().get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, old.der);

    // New files under the same names, then SIGHUP with the same config.
    write_file(&gw.dir().join("certs/server.pem"), new.cert_pem.as_bytes());
    write_file(&gw.dir().join("certs/server.key"), new.key_pem.as_bytes());
    let yaml = read_to_string(gw.config_path());
    gw.reload(&yaml).await;

    let mut fresh = connect().await;
    let presented = fresh.get_ref().get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, new.der, "new handshakes get the new certificate");
    roundtrip(&mut fresh, "new").await;
    roundtrip(&mut live, "the old session lives on").await;
}
