//! The `pipeline` binary: parses the command line and hands off to the library.
//! Errors become exit codes here: 2 for configuration and usage errors, 1 for the rest.
//! A closed stdout (broken pipe) is success.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    pipeline::telemetry::logging::init();
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            let code = if is_config_error(&error) { 2 } else { 1 };
            eprintln!("error: {}", report(&error));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, `: `-separated, each cause left out when the message before it
/// already ends with it (many library errors quote their source, which the chain repeats).
fn report(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.ends_with(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

fn is_config_error(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<pipeline::config::ConfigError>().is_some()
            || e.downcast_ref::<cli::UsageError>().is_some()
    })
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
