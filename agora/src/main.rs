//! The `agora` binary. See `agora --help`.

use clap::Parser;

use agora::admin;
use agora::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        // `serve` builds its own runtime: its worker count is a setting.
        Command::Serve(args) => return exit_code(cli::serve(*args)),
        other => Cli { command: other },
    };
    // Rust ignores SIGPIPE, so printing into a closed pipe (`agora ls | head`) panics;
    // a command-line tool should just end, as others do. Not for `serve`, whose
    // sockets must report a vanished peer as an error instead.
    // SAFETY: signal(2) with SIG_DFL before any thread is started; no memory involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agora: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(_) => unreachable!("served above"),
            Command::Ping(client) => admin::ping(&client).await,
            Command::Stats { client, json } => admin::stats(&client, json).await,
            Command::Ls { client, json } => admin::ls(&client, json).await,
            Command::Get { client, name } => admin::get(&client, &name).await,
            Command::Del { client, name } => admin::del(&client, &name).await,
            Command::Shutdown(client) => admin::shutdown(&client).await,
            Command::Snapshot(client) => admin::snapshot(&client).await,
            Command::Check { data_dir, truncate } => admin::check(&data_dir, truncate),
            Command::Bench(args) => agora::bench::run(args).await,
            Command::Cluster(command) => admin::cluster(command).await,
        }
    });
    exit_code(result)
}

fn exit_code(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("agora: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
