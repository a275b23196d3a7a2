//! The PROXY protocol (v1 text and v2 binary, as HAProxy specifies it): a
//! load balancer that relays TCP writes the client's address in a header
//! before the connection's first byte; `listeners[].proxy_protocol: true`
//! reads it before TLS.
//!
//! On such a listener every connection must start with a valid header: one
//! that is missing or malformed is refused, since a client that could skip
//! it could also write one claiming any address. The reader takes exactly
//! the header's bytes off the socket, so what follows (a TLS ClientHello,
//! an HTTP request) is left for the next stage untouched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;
/// v2 address blocks (and TLVs) above this are refused: real ones are a
/// few hundred bytes at most.
const V2_MAX_LEN: usize = 4096;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection was relayed for `source`.
    Proxied { source: SocketAddr },
    /// A health check of the proxy itself (v2 `LOCAL`), or a family the
    /// header does not give (`UNKNOWN`, UNIX sockets): the peer's own
    /// address stands.
    Local,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("PROXY protocol header incomplete")]
    Incomplete,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses a whole header at the start of `buf`; returns it and its length.
pub fn parse(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    if buf.starts_with(&V2_SIG) {
        parse_v2(buf)
    } else if V2_SIG.starts_with(&buf[..buf.len().min(V2_SIG.len())]) && buf.len() < 12 {
        Err(ParseError::Incomplete)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else if b"PROXY ".starts_with(buf) {
        Err(ParseError::Incomplete)
    } else {
        Err(ParseError::Missing)
    }
}

fn parse_v1(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return Err(if buf.len() >= V1_MAX {
            ParseError::Malformed("v1 line too long")
        } else {
            ParseError::Incomplete
        });
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ParseError::Malformed("not text"))?;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        // Whatever follows UNKNOWN is to be ignored.
        Some("UNKNOWN") => Header::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let v4 = family == "TCP4";
            let mut next = || fields.next().ok_or(ParseError::Malformed("missing field"));
            let src = v1_ip(next()?, v4)?;
            let _dst = v1_ip(next()?, v4)?;
            let sport = v1_port(next()?)?;
            let _dport = v1_port(next()?)?;
            if fields.next().is_some() {
                return Err(ParseError::Malformed("extra field"));
            }
            Header::Proxied {
                source: SocketAddr::new(src, sport),
            }
        }
        _ => return Err(ParseError::Malformed("unknown protocol")),
    };
    Ok((header, end + 2))
}

fn v1_ip(s: &str, v4: bool) -> Result<IpAddr, ParseError> {
    let bad = ParseError::Malformed("bad address");
    if v4 {
        s.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad)
    } else {
        s.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| bad)
    }
}

fn v1_port(s: &str) -> Result<u16, ParseError> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    s.parse()
        .ok()
        .filter(|_| ok)
        .ok_or(ParseError::Malformed("bad port"))
}

fn parse_v2(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    if buf.len() < 16 {
        return Err(ParseError::Incomplete);
    }
    let ver_cmd = buf[12];
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(ParseError::Malformed("v2 version"));
    }
    if len > V2_MAX_LEN {
        return Err(ParseError::Malformed("v2 header too long"));
    }
    let total = 16 + len;
    let Some(body) = buf.get(16..total) else {
        return Err(ParseError::Incomplete);
    };
    let header = match ver_cmd & 0x0f {
        0x0 => Header::Local,
        0x1 => match family {
            // TCP over IPv4: src, dst, sport, dport.
            0x11 => {
                let b = body
                    .get(..12)
                    .ok_or(ParseError::Malformed("v2 IPv4 block short"))?;
                let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                let port = u16::from_be_bytes([b[8], b[9]]);
                Header::Proxied {
                    source: SocketAddr::new(IpAddr::V4(ip), port),
                }
            }
            0x21 => {
                let b = body
                    .get(..36)
                    .ok_or(ParseError::Malformed("v2 IPv6 block short"))?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[..16]);
                let port = u16::from_be_bytes([b[32], b[33]]);
                Header::Proxied {
                    source: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port),
                }
            }
            // UNSPEC and UNIX sockets say nothing usable about the client.
            0x00 | 0x31 | 0x32 => Header::Local,
            _ => return Err(ParseError::Malformed("v2 family")),
        },
        _ => return Err(ParseError::Malformed("v2 command")),
    };
    Ok((header, total))
}

/// Reads exactly one header off `io` (the caller bounds it in time).
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> Result<Header, ReadError> {
    // Both versions are at least 15 bytes long ("PROXY UNKNOWN\r\n"), and
    // 12 tell them apart, so these never take a byte beyond the header.
    let mut buf = vec![0u8; 12];
    io.read_exact(&mut buf).await?;
    if buf[..] == V2_SIG {
        buf.resize(16, 0);
        io.read_exact(&mut buf[12..]).await?;
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > V2_MAX_LEN {
            return Err(ParseError::Malformed("v2 header too long").into());
        }
        buf.resize(16 + len, 0);
        io.read_exact(&mut buf[16..]).await?;
    } else if buf.starts_with(b"PROXY ") {
        // Byte by byte to the CRLF: the line is short, and nothing after
        // it may be consumed.
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n") && buf.len() < V1_MAX {
            io.read_exact(&mut b).await?;
            buf.push(b[0]);
        }
    } else {
        return Err(ParseError::Missing.into());
    }
    Ok(parse(&buf)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut b = V2_SIG.to_vec();
        b.push(0x20 | cmd);
        b.push(family);
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    fn src(s: &str) -> Header {
        Header::Proxied {
            source: s.parse().unwrap(),
        }
    }

    #[test]
    fn v1_lines() {
        let h = b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\nGET";
        assert_eq!(parse(h), Ok((src("192.0.2.1:56324"), h.len() - 3)));
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(parse(h).unwrap().0, src("[2001:db8::1]:1"));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok((Header::Local, 15)));
        assert_eq!(parse(b"PROXY UNKNOWN x y\r\n").unwrap().0, Header::Local);
        for bad in [
            &b"PROXY TCP4 192.0.2.1 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.1  10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2 3\r\n",
            b"PROXY UDP4 192.0.2.1 10.0.0.1 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"PROXY TCP4 1.2"), Err(ParseError::Incomplete));
        assert_eq!(parse(b"PRO"), Err(ParseError::Incomplete));
        let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 120]].concat();
        assert!(matches!(parse(&long), Err(ParseError::Malformed(_))));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ParseError::Missing));
    }

    #[test]
    fn v2_blocks() {
        let mut body = vec![192, 0, 2, 1, 10, 0, 0, 1];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 1, 0xff]); // a TLV, skipped
        let h = v2(1, 0x11, &body);
        assert_eq!(parse(&h), Ok((src("192.0.2.1:56324"), h.len())));

        let mut body = Ipv6Addr::LOCALHOST.octets().to_vec();
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&[0, 80, 0, 81]);
        assert_eq!(parse(&v2(1, 0x21, &body)).unwrap().0, src("[::1]:80"));

        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap().0, Header::Local);
        assert_eq!(parse(&v2(1, 0x00, &[])).unwrap().0, Header::Local);
        assert!(matches!(
            parse(&v2(1, 0x11, &[1, 2, 3])),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(2, 0x11, &[0; 12])),
            Err(ParseError::Malformed(_))
        ));
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert!(matches!(parse(&bad_version), Err(ParseError::Malformed(_))));
        let h = v2(1, 0x11, &[0; 12]);
        assert_eq!(parse(&h[..20]), Err(ParseError::Incomplete));
        assert_eq!(parse(&h[..5]), Err(ParseError::Incomplete));
    }

    #[tokio::test]
    async fn the_reader_takes_the_header_and_nothing_more() {
        let mut input: &[u8] = b"PROXY TCP4 192.0.2.1 10.0.0.1 5 443\r\n\x16\x03\x01";
        let h = read_header(&mut input).await.unwrap();
        assert_eq!(h, src("192.0.2.1:5"));
        assert_eq!(input, b"\x16\x03\x01");

        let body = [192, 0, 2, 7, 10, 0, 0, 1, 0, 9, 1, 187];
        let mut wire = v2(1, 0x11, &body);
        wire.extend_from_slice(b"GET /");
        let mut input: &[u8] = &wire;
        assert_eq!(read_header(&mut input).await.unwrap(), src("192.0.2.7:9"));
        assert_eq!(input, b"GET /");

        let mut input: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            read_header(&mut input).await,
            Err(ReadError::Parse(ParseError::Missing))
        ));
        let mut input: &[u8] = b"PROXY TCP4 1.2.3.4";
        assert!(matches!(
            read_header(&mut input).await,
            Err(ReadError::Io(_))
        ));
    }
}
