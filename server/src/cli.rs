//! The `agora` command line: argument parsing and the `serve` subcommand.
//!
//! Every `serve` flag also has an environment-variable form (shown in `--help`).
//! The authkey is deliberately *not* a flag: a flag's value shows in `ps`.

use std::path::PathBuf;
use std::time::Duration;

use agora_proto::Address;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Limits, AUTHKEY_ENV};
use crate::server::Server;

/// agora: a shared-state server for Rust and unmodified CPython multiprocessing clients.
#[derive(Debug, Parser)]
#[command(name = "agora", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (listens on 127.0.0.1:50000 by default).
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(ServeArgs),
    /// Check that a server answers, and how fast.
    Ping(ClientArgs),
    /// Show sessions, objects by kind, memory and requests per second.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List named objects with their kind and size.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a named object's value (as Python's repr).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The object's name.
        name: String,
    },
    /// Delete a named object.
    Del {
        #[command(flatten)]
        client: ClientArgs,
        /// The object's name.
        name: String,
    },
    /// Ask a server to shut down gracefully.
    Shutdown(ClientArgs),
    /// Load-test a server (like redis-benchmark): throughput and latency percentiles.
    Bench(crate::bench::BenchArgs),
}

/// How the admin subcommands reach a server.
#[derive(Debug, Args)]
#[command(
    after_help = "The authkey comes from --authkey-file, else $AGORA_AUTHKEY, else the file a zero-config `agora serve` generated."
)]
pub struct ClientArgs {
    /// The server's address.
    #[arg(long, short = 'a', value_name = "ADDR", env = "AGORA_ADDRESS", default_value = config::DEFAULT_LISTEN)]
    pub address: Address,

    /// Read the authkey from this file (one trailing newline is ignored).
    #[arg(long, value_name = "PATH", env = "AGORA_AUTHKEY_FILE")]
    pub authkey_file: Option<PathBuf>,
}

const SERVE_AFTER_HELP: &str = "\
AUTHKEY:
  Every connection must prove it knows the authkey (HMAC challenge, as CPython's
  multiprocessing does). The key comes from --authkey-file, else from the AGORA_AUTHKEY
  environment variable (the key itself), else a random key is generated and written to
  $XDG_RUNTIME_DIR/agora/authkey (or $TMPDIR/agora-$UID/authkey) with mode 0600, and its
  path is logged. It is never taken from a plain command-line argument.

ADDRESSES:
  host:port, [v6addr]:port, tcp://host:port, unix:/path/to.sock (or just /path/to.sock),
  unix:@name (Linux abstract socket). Repeat --listen to serve several at once.

EXAMPLES:
  agora serve
  AGORA_AUTHKEY=s3cret agora serve --listen 0.0.0.0:50000 --listen unix:/run/agora.sock";

/// Flags of `agora serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; repeat for several.
    #[arg(long = "listen", short = 'l', value_name = "ADDR", env = "AGORA_LISTEN", value_delimiter = ',', default_value = config::DEFAULT_LISTEN)]
    pub listen: Vec<Address>,

    /// Read the authkey from this file (one trailing newline is ignored).
    #[arg(long, value_name = "PATH", env = "AGORA_AUTHKEY_FILE")]
    pub authkey_file: Option<PathBuf>,

    /// Refuse the legacy HMAC-MD5 handshake answer (drops CPython <= 3.11 clients).
    #[arg(long, env = "AGORA_STRICT_AUTH")]
    pub strict_auth: bool,

    /// Largest message accepted, in bytes (suffixes K, M, G, KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", env = "AGORA_MAX_FRAME", default_value = "64MiB", value_parser = parse_size)]
    pub max_frame: u64,

    /// Most connections served at once; more are refused with a clear error.
    #[arg(long, value_name = "N", env = "AGORA_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,

    /// Most blocked (parked) requests one connection may have at once.
    #[arg(long, value_name = "N", env = "AGORA_MAX_IN_FLIGHT", default_value_t = Limits::default().max_in_flight)]
    pub max_in_flight: u32,

    /// Time a new connection has to authenticate (e.g. 5s, 500ms).
    #[arg(long, value_name = "DURATION", env = "AGORA_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// End a client session that sends nothing, not even its heartbeat, for this long
    /// (its locks, permits and leases are released).
    #[arg(long, value_name = "DURATION", env = "AGORA_HEARTBEAT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// Serve a named object to CPython clients under a typeid: TYPEID=KIND:NAME, e.g.
    /// get_tasks=queue:tasks (Python: BaseManager.register("get_tasks")); repeatable.
    #[arg(long, value_name = "TYPEID=KIND:NAME", env = "AGORA_EXPOSE", value_delimiter = ',')]
    pub expose: Vec<crate::config::Exposure>,

    /// Log level or filter: error, warn, info, debug, trace (or a tracing filter string).
    #[arg(long, value_name = "LEVEL", env = "AGORA_LOG", default_value = "info")]
    pub log_level: String,
}

/// Parses `1024`, `64K`, `64KiB`, `8M`, `1GiB` (K = KiB = 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is not a size like 1024, 64K or 8MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown size unit in '{text}' (use K, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses `5s`, `500ms`, `2m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("'{text}' is not a duration like 5s or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("unknown duration unit in '{text}' (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{text}' is not a valid duration"))
}

/// Finds the authkey: `--authkey-file`, else `$AGORA_AUTHKEY`, else a generated key
/// written to a private file (whose path is logged).
fn load_authkey(args: &ServeArgs) -> Result<Vec<u8>, config::AuthkeyError> {
    if let Some(path) = &args.authkey_file {
        tracing::info!(path = %path.display(), "authkey read from file");
        return config::read_authkey_file(path);
    }
    if let Some(key) = config::authkey_from_env()? {
        tracing::info!("authkey taken from ${AUTHKEY_ENV}");
        return Ok(key);
    }
    let path = config::default_authkey_path();
    let key = config::generate_authkey(&path)?;
    tracing::info!(path = %path.display(), "no authkey given: generated a random one (mode 0600); clients read it from this file");
    Ok(key)
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("agora: invalid --log-level '{filter}' ({e}); using 'info'");
        tracing_subscriber::EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs `agora serve` to completion (until SIGINT/SIGTERM).
pub async fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(&args.log_level);
    // Before anything is announced, so a signal that arrives early stops us cleanly.
    let stop_signal = stop_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut config = Config::new(args.listen.clone(), Vec::new());
    config.strict_auth = args.strict_auth;
    config.expose = args.expose.clone();
    config.limits = Limits {
        max_frame: args.max_frame,
        max_connections: args.max_connections,
        max_in_flight: args.max_in_flight,
        handshake_timeout: args.handshake_timeout,
        heartbeat_timeout: args.heartbeat_timeout,
    };
    // Bind before touching the authkey, so a port clash leaves no new key file behind.
    let mut server = Server::bind(config).await.map_err(|e| e.to_string())?;
    let authkey = load_authkey(&args).map_err(|e| e.to_string())?;
    server.set_authkey(authkey);
    for address in server.addresses() {
        tracing::info!(%address, "listening");
    }
    let handle = server.shutdown_handle();
    tokio::spawn(async move {
        stop_signal.await;
        tracing::info!("shutdown requested by signal");
        handle.shutdown();
    });
    server.run().await;
    Ok(())
}

/// Installs SIGTERM and SIGINT handlers now; the future completes on either signal.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
