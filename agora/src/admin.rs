//! The operator's subcommands against a running server: `ping`, `stats`, `ls`, `get`,
//! `del`, `shutdown`. They speak the native protocol through `agora-client`, like any
//! other client, and print for people (or JSON with `--json`).

use std::time::Instant;

use agora_client::Manager;
use agora_proto::Address;

use crate::cli::ClientArgs;

/// Connects as the subcommand's flags (environment, config file) say.
async fn connect(args: &ClientArgs) -> Result<Manager, String> {
    connect_to(args).await.map(|(manager, _)| manager)
}

/// Connects; also returns the address used.
async fn connect_to(args: &ClientArgs) -> Result<(Manager, Address), String> {
    let (address, authkey) = args.resolve()?;
    let manager = Manager::connect_to(&address, authkey).await.map_err(|e| match e {
        agora_client::Error::Connect { .. } => format!(
            "{e}\n  is a server running there? Give its address with --address ADDR (or AGORA_ADDRESS), \
             or --config with its config file"
        ),
        agora_client::Error::AuthenticationFailed(_) => format!(
            "{address}: {e}\n  give the server's key with --authkey-file PATH (or AGORA_AUTHKEY, or --config with \
             its config file)"
        ),
        e => format!("{address}: {e}"),
    })?;
    Ok((manager, address))
}

/// `agora ping`.
pub async fn ping(args: &ClientArgs) -> Result<(), String> {
    let (manager, address) = connect_to(args).await?;
    let start = Instant::now();
    manager.ping().await.map_err(|e| e.to_string())?;
    let rtt = start.elapsed();
    println!("pong from agora {} at {} in {:.3} ms", manager.server_version(), address, rtt.as_secs_f64() * 1e3);
    Ok(())
}

/// `agora stats`.
pub async fn stats(args: &ClientArgs, json: bool) -> Result<(), String> {
    let stats = connect(args).await?.stats().await.map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("version        {}", stats.version);
    println!("uptime         {}s", stats.uptime_secs);
    println!("sessions       {}", stats.sessions);
    println!("connections    {} accepted, {} refused", stats.connections_total, stats.connections_refused);
    println!("requests       {} total, {:.1}/s", stats.requests_total, stats.requests_per_sec);
    println!("memory         {:.1} MiB resident", mib(stats.memory_bytes));
    if let Some(m) = &stats.memory {
        let limit = match m.limit {
            Some(limit) => {
                format!("of a {:.1} MiB limit ({:.0}%), ", mib(limit), m.in_use as f64 * 100.0 / limit as f64)
            }
            None => "no limit (--max-memory), ".to_owned(),
        };
        println!(
            "  in use       {:.1} MiB {limit}{} calls refused, {:.1} MiB given back to the system",
            mib(m.in_use),
            m.refused,
            mib(m.returned)
        );
    }
    println!("named objects  {}", stats.named_objects);
    if stats.client_objects_untracked > 0 {
        println!(
            "tcp-held       {} objects held by CPython clients over TCP (freed by their decref; \
             a crashed one's stay until a restart)",
            stats.client_objects_untracked
        );
    }
    match &stats.durability {
        None => println!("durability     none: state in memory only (start with --data-dir to keep it)"),
        Some(d) => {
            println!("durability     {} (fsync {})", d.data_dir, d.fsync);
            println!(
                "  log          {:.1} MiB, {:.1} MiB since the last snapshot",
                mib(d.log_bytes),
                mib(d.log_bytes_since_snapshot)
            );
            println!(
                "  records      {} appended, {} written, {} fsynced ({} ms ago)",
                d.appended_lsn, d.written_lsn, d.synced_lsn, d.ms_since_fsync
            );
            match &d.last_snapshot {
                Some(s) => println!(
                    "  snapshot     record {}, {:.1} MiB, paused changes {:.1} ms, {}",
                    s.lsn,
                    mib(s.bytes),
                    s.pause_us as f64 / 1000.0,
                    s.path
                ),
                None => println!("  snapshot     none yet"),
            }
            if let Some(why) = &d.refusing {
                println!("  REFUSING CHANGES: the server cannot write its log ({why}); reads still work");
            }
        }
    }
    println!("objects by kind:");
    for (kind, count) in &stats.objects_by_kind {
        println!("  {kind:<18} {count}");
    }
    Ok(())
}

/// `agora ls`.
pub async fn ls(args: &ClientArgs, json: bool) -> Result<(), String> {
    let objects = connect(args).await?.list_named().await.map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&objects).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let width = objects.iter().map(|o| o.name.len()).max().unwrap_or(4).max(4);
    println!("{:<width$}  {:<16}  SIZE", "NAME", "KIND");
    for o in objects {
        let size = o.size.map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!("{:<width$}  {:<16}  {size}", o.name, o.kind.as_str());
    }
    Ok(())
}

/// `agora get NAME`.
pub async fn get(args: &ClientArgs, name: &str) -> Result<(), String> {
    let value = connect(args).await?.snapshot(name).await.map_err(|e| e.to_string())?;
    println!("{}", value.py_repr());
    Ok(())
}

/// `agora del NAME`.
pub async fn del(args: &ClientArgs, name: &str) -> Result<(), String> {
    connect(args).await?.delete(name).await.map_err(|e| e.to_string())?;
    println!("deleted {name}");
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `agora snapshot`.
pub async fn snapshot(args: &ClientArgs) -> Result<(), String> {
    let saved = connect(args).await?.save_snapshot().await.map_err(|e| e.to_string())?;
    println!(
        "snapshot of record {} written to {} ({:.1} MiB; changes paused {:.1} ms, written in {} ms)",
        saved.lsn,
        saved.path,
        mib(saved.bytes),
        saved.pause_us as f64 / 1000.0,
        saved.write_ms
    );
    Ok(())
}

/// `agora check --data-dir DIR [--truncate]`.
pub fn check(dir: &std::path::Path, truncate: bool) -> Result<(), String> {
    let report = agora_server::durability::check(dir, truncate).map_err(|e| e.to_string())?;
    let r = &report.recovery;
    match r.snapshot {
        Some(lsn) => println!("snapshot       covers records up to {lsn}"),
        None => println!("snapshot       none"),
    }
    println!("log            {} records after it replay cleanly", r.replayed);
    if let Some((path, bytes)) = &r.truncated {
        println!("cut            {bytes} bytes at the end of {}", path.display());
    }
    println!("state          {} objects, {} named; next record {}", report.objects, report.named, r.next_lsn);
    println!("ok ({} ms)", r.took.as_millis());
    Ok(())
}

/// `agora shutdown`.
pub async fn shutdown(args: &ClientArgs) -> Result<(), String> {
    connect(args).await?.shutdown_server().await.map_err(|e| e.to_string())?;
    println!("shutdown requested");
    Ok(())
}
