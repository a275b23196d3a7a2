//! Command-line interface (clap). Config path: `-c/--config`, else
//! `WSGATE_CONFIG`, else `./gateway.yaml`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "wsgate",
    version,
    about = "A WebSocket reverse proxy that authenticates every session with a JWT and ends it when the token does"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(short, long, env = "WSGATE_CONFIG", default_value = "gateway.yaml")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. SIGHUP reloads the config; SIGTERM/SIGINT shut down gracefully.
    Run(ConfigArg),
    /// Validate the config (and the files it names) and print a summary.
    Check(ConfigArg),
    /// Print a signed JWT for trying the gateway out.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Issuer id from the config (`issuers[].id`).
    #[arg(long)]
    pub issuer: String,
    /// The `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// Extra claim `k=v`; `k=a,b` makes an array. Repeatable.
    #[arg(long = "claim", value_name = "K=V")]
    pub claims: Vec<String>,
    /// Lifetime, e.g. 15m, 1h.
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    /// Sign with this private key (PEM) instead of the issuer's secret.
    #[arg(long)]
    pub key: Option<PathBuf>,
}
