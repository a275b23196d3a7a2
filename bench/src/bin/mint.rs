//! Signs HS256 tokens for the cluster benchmark: one JSON claims object a
//! line on stdin, one token a line on stdout.
//!
//! ```text
//! mint --secret S < claims.jsonl > tokens.txt
//! ```

use std::io::{self, BufRead, BufWriter, Write};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use wsgate_bench::Args;

fn main() -> io::Result<()> {
    let args = Args::from_env(1);
    let secret = args
        .get("secret")
        .ok_or_else(|| io::Error::other("--secret required"))?;
    let key = EncodingKey::from_secret(secret.as_bytes());
    let header = Header::new(Algorithm::HS256);
    let mut out = BufWriter::new(io::stdout().lock());
    for line in io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let claims: serde_json::Value = serde_json::from_str(&line).map_err(io::Error::other)?;
        let token = encode(&header, &claims, &key).map_err(io::Error::other)?;
        writeln!(out, "{token}")?;
    }
    out.flush()
}
