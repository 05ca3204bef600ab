//! The `sandgate` command: runs the gateway (`serve`) and talks to it (`create`, `get`, `list`,
//! `delete`, `watch`). Exit codes are listed in `sandgate --help`.

mod cli;
mod client;
mod commands;
mod delete;
mod json;
mod output;
mod serve;
mod timefmt;
mod watching;

#[cfg(test)]
mod cli_tests;
#[cfg(test)]
mod fake_server_tests;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::{Cli, Command};
use crate::client::{EXIT_USAGE, Failure};

fn main() -> ExitCode {
    // An empty SANDGATE_SERVER or SANDGATE_WORKSPACE means unset, as an empty variable does for
    // most tools, rather than an invalid value.
    for name in ["SANDGATE_SERVER", "SANDGATE_WORKSPACE"] {
        if std::env::var_os(name).is_some_and(|value| value.is_empty()) {
            // SAFETY: no other thread exists yet, so nothing reads the environment concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return report_parse_error(&error),
    };
    let result = match cli.command {
        // The supervisor starts before any runtime or subscriber exists, as it expects.
        Command::Supervise { args } => serve::supervise(args),
        Command::Serve(args) => serve::serve(args),
        client_command => run_client(client_command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.code)
        }
    }
}

/// Prints a clap error and returns its exit code. An invalid value is reported on one line that
/// names the value and the fix. Other errors keep clap's usage hint.
fn report_parse_error(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::ValueValidation => {
            let rendered = error.render().to_string();
            let first_line = rendered.lines().next().unwrap_or("error: invalid value");
            eprintln!("{first_line}");
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            // Help and version go to stdout with exit code 0, usage errors to stderr with 2.
            let _ = error.print();
            ExitCode::from(error.exit_code().clamp(0, 255) as u8)
        }
    }
}

/// Runs a client command on a single-threaded runtime.
fn run_client(command: Command) -> Result<(), Failure> {
    // Rust ignores SIGPIPE, which turns a closed stdout (`sandgate watch | head`) into a panic at
    // the next print. Client commands end quietly instead, as other command-line tools do.
    // SAFETY: signal(2) with SIG_DFL installs no handler, and no other thread runs yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::failed(format!("cannot start the async runtime: {error}")))?;
    runtime.block_on(async move {
        match command {
            Command::Create(args) => commands::create(args).await,
            Command::Get(args) => commands::get(args).await,
            Command::List(args) => commands::list(args).await,
            Command::Delete(args) => delete::delete(args).await,
            Command::Watch(args) => commands::watch(args).await,
            Command::Serve(_) | Command::Supervise { .. } => {
                unreachable!("serve and supervise do not run on the client runtime")
            }
        }
    })
}
