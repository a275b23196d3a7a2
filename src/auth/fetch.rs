//! A deliberately small HTTPS GET client for JWKS and OIDC discovery documents:
//! one request per connection (hyper 1.x over tokio-rustls), no redirects, a
//! deadline on the whole exchange and a cap on the body size. Plain `http://`
//! is allowed only for loopback hosts, so a key set can never be swapped by
//! someone on the network path.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What a successful fetch returns.
#[derive(Debug)]
pub struct Fetched {
    pub body: Bytes,
    /// `Cache-Control: max-age`, when the server sent one (`no-cache`/`no-store` = 0).
    pub max_age: Option<Duration>,
}

#[derive(thiserror::Error, Debug)]
pub enum FetchError {
    #[error("invalid URL")]
    BadUrl,
    #[error("plain http is only allowed for loopback hosts")]
    InsecureUrl,
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("unexpected status {0}")]
    Status(StatusCode),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("timed out")]
    Timeout,
    #[error("invalid document: {0}")]
    Document(String),
}

/// GETs small JSON documents.
#[derive(Clone)]
pub struct Fetcher {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
    max_body: usize,
}

impl Fetcher {
    pub fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration, max_body: usize) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(tls),
            timeout,
            max_body,
        }
    }

    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        tokio::time::timeout(self.timeout, self.get_inner(url))
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn get_inner(&self, url: &str) -> Result<Fetched, FetchError> {
        let target = Target::parse(url)?;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(FetchError::Connect)?;
        // Nagle would only delay a single small request.
        let _ = tcp.set_nodelay(true);
        if target.tls {
            let name = ServerName::try_from(target.host.clone()).map_err(|_| FetchError::BadUrl)?;
            let stream = self.tls.connect(name, tcp).await.map_err(FetchError::Tls)?;
            self.exchange(stream, &target).await
        } else {
            self.exchange(tcp, &target).await
        }
    }

    async fn exchange<S>(&self, io: S, target: &Target) -> Result<Fetched, FetchError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let request = Request::get(target.path.as_str())
            .header(header::HOST, target.authority.as_str())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wsgate/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|_| FetchError::BadUrl)?;
        let max_body = self.max_body;
        let work = async move {
            let response = sender.send_request(request).await?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status(response.status()));
            }
            let max_age = max_age(response.headers());
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => FetchError::Http(*e),
                    // The only other error `Limited` produces is its length limit.
                    Err(_) => FetchError::TooLarge(max_body),
                })?
                .to_bytes();
            Ok(Fetched { body, max_age })
        };
        // The connection future must be polled for the response to progress;
        // it is driven here rather than spawned so nothing outlives the fetch.
        tokio::pin!(work, conn);
        tokio::select! {
            result = &mut work => result,
            done = &mut conn => match done {
                Ok(()) => work.await,
                Err(e) => Err(FetchError::Http(e)),
            },
        }
    }
}

/// A parsed `http(s)://host[:port]/path` URL.
#[derive(Debug)]
struct Target {
    tls: bool,
    /// Without IPv6 brackets, as needed for connect and SNI.
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, FetchError> {
        let uri: Uri = url.parse().map_err(|_| FetchError::BadUrl)?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(FetchError::BadUrl),
        };
        let authority = uri.authority().ok_or(FetchError::BadUrl)?;
        // Credentials in a URL would end up in logs; refuse them.
        if authority.as_str().contains('@') {
            return Err(FetchError::BadUrl);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !tls && !is_loopback(&host) {
            return Err(FetchError::InsecureUrl);
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Self {
            tls,
            host,
            port,
            authority: authority.as_str().to_string(),
            path,
        })
    }
}

/// `localhost` or a loopback IP literal.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `url` may be fetched at all (https, or http to a loopback host).
pub fn check_url(url: &str) -> Result<(), FetchError> {
    Target::parse(url).map(|_| ())
}

fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=") {
                if let Ok(secs) = secs.trim_matches('"').parse::<u64>() {
                    found = Some(Duration::from_secs(secs));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("https://id.example.com/jwks").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://[::1]:8080/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(matches!(
            check_url("http://id.example.com/jwks"),
            Err(FetchError::InsecureUrl)
        ));
        assert!(matches!(check_url("ftp://x/"), Err(FetchError::BadUrl)));
        assert!(matches!(
            check_url("https://u:p@x/"),
            Err(FetchError::BadUrl)
        ));
        let t = Target::parse("https://[::1]/a?b=c").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 443, "/a?b=c")
        );
    }

    #[test]
    fn cache_control() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            header::CACHE_CONTROL,
            "public, max-age=3600".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(3600)));
        h.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::ZERO));
    }
}
