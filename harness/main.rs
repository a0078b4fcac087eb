//! The `addrinuse` command: parse, run one subcommand (`cli`), and turn
//! every failure into one line on stderr and an exit code.

mod cli;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Failure};

/// One line on stderr, even when stderr itself is gone (`2>/dev/full`).
fn say(message: &str) {
    // Control characters from the command line must not split the line.
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let _ = writeln!(io::stderr(), "addrinuse: {clean}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            say(&format!("{} (see --help)", cli::first_line_of(&err)));
            return ExitCode::from(2);
        }
    };
    if cli.runs_cases() {
        addrinuse::run::isolate();
    }
    let mut out = io::stdout().lock();
    match cli::exec(cli, &mut out)
        .and_then(|code| out.flush().map(|()| code).map_err(Failure::from))
    {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            say(&message);
            ExitCode::from(2)
        }
        // `addrinuse | head`: the reader went away; that is not an error.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => {
            say(&format!("cannot write the output: {e}"));
            ExitCode::FAILURE
        }
    }
}
