//! `wsgate run | check | token`: parse the command line, load the config,
//! hand over to the library, and map failures to exit code 1.

use std::process::ExitCode;

use clap::Parser;
use wsgate::cli::{Cli, Command};

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    wsgate::memory::set_release(release_memory);
    let cli = Cli::parse();
    match cli.command {
        // Every check `run` makes before binding, and the warnings; the
        // errors all at once.
        Command::Check(c) => match wsgate::config::load_checked(&c.config) {
            Ok(checked) => {
                for w in &checked.warnings {
                    eprintln!("warning: {w}");
                }
                let mut summary = wsgate::config::summary(&checked.config);
                match checked.warnings.len() {
                    0 => {}
                    1 => summary.push_str(" (1 warning)"),
                    n => summary.push_str(&format!(" ({n} warnings)")),
                }
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Token(t) => match token(&t) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wsgate token: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(c) => {
            let checked = match wsgate::config::load_checked(&c.config) {
                Ok(checked) => checked,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            // Logging starts here rather than in `serve` (which starts it
            // again, a no-op), so the warnings go out in the configured format.
            wsgate::telemetry::init(&checked.config.log);
            checked.log_warnings();
            let cfg = checked.config;
            // The control runtime (accept loops, admin, background work):
            // connections and sessions run on the I/O workers (`wsgate::workers`).
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("wsgate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(wsgate::app::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wsgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `wsgate token`: the config supplies the issuer (and its secret).
fn token(t: &wsgate::cli::TokenArgs) -> anyhow::Result<String> {
    let cfg = wsgate::config::load(&t.config.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ttl = wsgate::config::units::parse_duration(&t.ttl)
        .map_err(|e| anyhow::anyhow!("--ttl {}: {e}", t.ttl))?;
    let claims = t
        .claims
        .iter()
        .map(|c| wsgate::token_cmd::parse_claim_arg(c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(wsgate::token_cmd::mint(
        &cfg,
        &t.issuer,
        &t.sub,
        &claims,
        ttl,
        t.key.as_deref(),
    )?)
}

/// Returns the free pages of every malloc arena to the kernel (see
/// `wsgate::memory`, which decides when).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_memory() {
    // SAFETY: `malloc_trim` has no preconditions: it only gives back pages
    // that hold no live allocation, under the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
