//! The hidden modes child processes run in: `serve` (an echo server of the
//! stories) and `hold` (first sockets for a parent's cases).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use addrinuse::scenario::{is_loopback_or_wildcard, Options, SockOpt};
use addrinuse::stories::server::{self, ServerAddr};

use super::{Done, Failure};

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, conflicts_with = "unix")]
    tcp: Option<SocketAddr>,
    #[arg(long)]
    unix: Option<PathBuf>,
    #[arg(long = "option")]
    options: Vec<String>,
    #[arg(long)]
    report_only: bool,
}

pub fn serve(args: ServeArgs) -> Done {
    let place = match (args.tcp, args.unix) {
        (Some(addr), None) if is_loopback_or_wildcard(addr.ip()) => ServerAddr::Tcp(addr),
        (None, Some(path)) => ServerAddr::Unix(path),
        _ => {
            return Err(Failure::Usage(
                "serve: give --tcp LOOPBACK_OR_WILDCARD:PORT or --unix PATH".into(),
            ))
        }
    };
    let mut set = Options::NONE;
    for name in &args.options {
        let opt = SockOpt::from_short(name)
            .ok_or_else(|| Failure::Usage(format!("serve: unknown option '{name}'")))?;
        set = set.with(opt);
    }
    Ok(match server::serve(&place, set, args.report_only) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}

pub fn hold(as_user: Option<String>, second: bool) -> Done {
    let serve = if second {
        addrinuse::run::serve_binder
    } else {
        addrinuse::run::serve_holder
    };
    Ok(match serve(as_user.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}
