//! The `triggers` binary: parses the command line, starts logging, and hands over
//! to [`triggers::cli::run`]. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the engine allocates and frees many small JSON maps per event, where
/// it is markedly faster than the system allocator (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = triggers::cli::Cli::parse();
    triggers::cli::init_tracing();
    match triggers::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
