//! The operator's subcommands against a running server: `ping`, `stats`, `ls`, `get`,
//! `del`, `shutdown`. They speak the native protocol through `agora-client`, like any
//! other client, and print for people (or JSON with `--json`).

use std::time::Instant;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use agora_client::Manager;
use agora_proto::native::{HolderInfo, ObjectHolders, WaiterInfo};
use agora_proto::Address;

use crate::cli::ClientArgs;

/// Connects as the subcommand's flags (environment, config file) say.
async fn connect(args: &ClientArgs) -> Result<Manager, String> {
    connect_to(args).await.map(|(manager, _)| manager)
}

/// Connects; also returns the address used.
async fn connect_to(args: &ClientArgs) -> Result<(Manager, Address), String> {
    let (address, authkey) = args.resolve()?;
    let options = args.manager_options()?;
    let manager = Manager::connect_to_with(&address, authkey, options).await.map_err(|e| match e {
        agora_client::Error::Connect { .. } => format!(
            "{e}\n  is a server running there? Give its address with --address ADDR (or AGORA_ADDRESS), \
             or --config with its config file"
        ),
        agora_client::Error::AuthenticationFailed(_) => format!(
            "{address}: {e}\n  give the server's key with --authkey-file PATH (or AGORA_AUTHKEY, or --config with \
             its config file)"
        ),
        agora_client::Error::Tls(_) if args.tls_ca.is_none() => {
            format!(
                "{address}: {e}\n  give the CA bundle that verifies the server with --tls-ca PATH (or AGORA_TLS_CA)"
            )
        }
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
    if stats.python_threads > 0 {
        println!("python threads {} CPython connections on a thread of their own", stats.python_threads);
    }
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
    if let Some(c) = &stats.cluster {
        let shown = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
        println!(
            "cluster        node {} ({}), term {}, leader {}, log {}, applied {}",
            c.node_id,
            c.role,
            c.term,
            c.leader.map_or("unknown".to_owned(), |id| format!("node {id}")),
            shown(c.last_log_index),
            shown(c.last_applied)
        );
        for m in &c.members {
            let lag = m.lag.map_or(String::new(), |lag| format!(", {lag} entries behind"));
            println!("  node {:<6} {} ({}{lag})", m.id, m.peer, if m.voter { "voter" } else { "learner" });
        }
    }
    match &stats.durability {
        None if stats.cluster.is_some() => println!("durability     the cluster's Raft log (fsynced on every node)"),
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

/// `agora ls`: every named object with its kind and size, and for those that are
/// held or waited for (locks, semaphores, queues…) how many holds and waiting calls
/// they have (`agora get NAME` shows who).
pub async fn ls(args: &ClientArgs, json: bool) -> Result<(), String> {
    let manager = connect(args).await?;
    let objects = manager.list_named().await.map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&objects).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let holders: HashMap<String, ObjectHolders> =
        manager.all_holders().await.map_err(|e| e.to_string())?.into_iter().map(|h| (h.name.clone(), h)).collect();
    let width = objects.iter().map(|o| o.name.len()).max().unwrap_or(4).max(4);
    println!("{:<width$}  {:<16}  {:>4}  {:>4}  SIZE", "NAME", "KIND", "HELD", "WAIT");
    for o in objects {
        let size = o.size.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let (held, waiting) = match holders.get(&o.name) {
            Some(h) => (h.held.len().to_string(), h.waiting.len().to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!("{:<width$}  {:<16}  {held:>4}  {waiting:>4}  {size}", o.name, o.kind.as_str());
    }
    Ok(())
}

/// `agora get NAME`: the value (as Python's repr), then who holds the object and who
/// waits for it, if anyone does or its kind can be held.
pub async fn get(args: &ClientArgs, name: &str) -> Result<(), String> {
    let manager = connect(args).await?;
    let value = manager.snapshot(name).await.map_err(|e| e.to_string())?;
    println!("{}", value.py_repr());
    let holders = manager.holders(name).await.map_err(|e| e.to_string())?;
    print!("{}", describe_holders(&holders, now_us()));
    Ok(())
}

/// Microseconds since the Unix epoch on this machine's clock.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The holders and waiters section of `agora get`, with ages relative to `now_us`;
/// empty if nobody holds or waits.
pub fn describe_holders(h: &ObjectHolders, now_us: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if h.held.is_empty() && h.waiting.is_empty() {
        return out;
    }
    let _ = writeln!(out, "held by ({}):", h.held.len());
    for hold in &h.held {
        let _ = writeln!(out, "  {}", holder_line(hold, now_us));
    }
    let _ = writeln!(out, "waiting, in order ({}):", h.waiting.len());
    for (i, waiter) in h.waiting.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, waiter_line(waiter, now_us));
    }
    out
}

fn holder_line(h: &HolderInfo, now_us: u64) -> String {
    let token = h.token.map_or_else(String::new, |t| format!("  token {t}"));
    format!(
        "session {}  peer {}  since {}{token}  {}",
        h.session,
        h.peer.as_deref().unwrap_or("?"),
        when(h.since_us, now_us),
        h.what
    )
}

fn waiter_line(w: &WaiterInfo, now_us: u64) -> String {
    let since = w.since_us.map_or_else(|| "?".to_owned(), |t| when(t, now_us));
    format!("session {}  peer {}  since {since}  {}", w.session, w.peer.as_deref().unwrap_or("?"), w.what)
}

/// A time as UTC (`2026-12-03T09:12:44.120Z`) and its age (`(3.2 s ago)`).
fn when(at_us: u64, now_us: u64) -> String {
    let secs = at_us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let age = now_us.saturating_sub(at_us) as f64 / 1e6;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z ({age:.1} s ago)",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        at_us % 1_000_000 / 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// days-to-civil algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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

/// `agora cluster …`: asks nodes' peer listeners (see `agora_server::cluster::network`).
pub async fn cluster(command: crate::cli::ClusterCommand) -> Result<(), String> {
    use crate::cli::ClusterCommand;
    use agora_server::cluster::network::{ask, PeerAuth, PeerRequest, PeerResponse};

    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
    let call = |peer: String, auth: PeerAuth, request: PeerRequest| async move {
        ask(&peer, &auth, &request, PATIENCE).await.map_err(|e| format!("{peer}: {e}"))
    };
    // A change goes to the leader: a follower's answer names it, and while an election
    // runs (no leader known yet) the asked node is asked again, for up to PATIENCE.
    let change = |peer: String, auth: PeerAuth, request: PeerRequest| async move {
        use agora_server::cluster::ClusterError;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut target = peer.clone();
        loop {
            let answer = ask(&target, &auth, &request, PATIENCE).await.map_err(|e| format!("{target}: {e}"))?;
            match answer {
                PeerResponse::Changed(Ok(())) => return Ok(()),
                PeerResponse::Changed(Err(ClusterError::NotLeader { leader: Some((_, addr)) })) => target = addr,
                PeerResponse::Changed(Err(ClusterError::NotLeader { leader: None }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    target = peer.clone();
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                PeerResponse::Changed(Err(e)) => return Err(format!("{target}: {e}")),
                other => return Err(format!("{target}: unexpected answer {other:?}")),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no leader took the change within {PATIENCE:?}; see agora cluster status"));
            }
        }
    };
    match command {
        ClusterCommand::Status(args) => {
            let auth = args.auth()?;
            let PeerResponse::Status(asked) = call(args.peer.clone(), auth.clone(), PeerRequest::Status).await? else {
                return Err(format!("{}: unexpected answer to a status request", args.peer));
            };
            if asked.voters.is_empty() && asked.learners.is_empty() {
                println!(
                    "node {} at {} is in no cluster yet (agora cluster init, or --cluster)",
                    asked.node_id, args.peer
                );
                return Ok(());
            }
            println!("leader: {}", asked.leader.map_or("none known".to_owned(), |id| format!("node {id}")));
            println!(
                "{:<6} {:<22} {:<10} {:>6} {:>10} {:>10} {:>8}",
                "NODE", "PEER", "ROLE", "TERM", "LOG", "APPLIED", "LAG"
            );
            let members: Vec<(u64, String, bool)> = asked
                .voters
                .iter()
                .map(|(id, peer)| (*id, peer.clone(), true))
                .chain(asked.learners.iter().map(|(id, peer)| (*id, peer.clone(), false)))
                .collect();
            // Ask every member; the lag comes from the leader's own view.
            let mut statuses = Vec::new();
            for (id, peer, _voter) in &members {
                let status = match call(peer.clone(), auth.clone(), PeerRequest::Status).await {
                    Ok(PeerResponse::Status(s)) => Some(s),
                    _ => None,
                };
                statuses.push((*id, peer.clone(), status));
            }
            let lag = statuses
                .iter()
                .filter_map(|(_, _, s)| s.as_ref())
                .find(|s| s.leader == Some(s.node_id))
                .map(|leader| leader.lag.clone())
                .unwrap_or_default();
            let shown = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
            for (id, peer, status) in statuses {
                match status {
                    Some(s) => println!(
                        "{:<6} {:<22} {:<10} {:>6} {:>10} {:>10} {:>8}",
                        id,
                        peer,
                        s.role,
                        s.term,
                        shown(s.last_log_index),
                        shown(s.last_applied),
                        shown(lag.get(&id).copied())
                    ),
                    None => println!("{:<6} {:<22} {:<10}", id, peer, "unreachable"),
                }
            }
            Ok(())
        }
        ClusterCommand::Init { args, members } => {
            let auth = args.auth()?;
            let members = members.into_iter().map(|m| (m.id, m.peer)).collect();
            change(args.peer.clone(), auth, PeerRequest::Init(members)).await?;
            println!("cluster formed; `agora cluster status --peer {}` shows it", args.peer);
            Ok(())
        }
        ClusterCommand::Add { args, member } => {
            let auth = args.auth()?;
            change(args.peer.clone(), auth, PeerRequest::Add(member.id, member.peer.clone())).await?;
            println!("node {} ({}) is a voting member", member.id, member.peer);
            Ok(())
        }
        ClusterCommand::Remove { args, node_id } => {
            let auth = args.auth()?;
            change(args.peer.clone(), auth, PeerRequest::Remove(node_id)).await?;
            println!("node {node_id} is no longer a member");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::native::Kind;

    #[test]
    fn times_print_as_utc_with_their_age() {
        assert_eq!(when(0, 1_500_000), "1970-01-01T00:00:00.000Z (1.5 s ago)");
        // 2026-12-03T09:12:44.120Z
        let at = 1_796_289_164_120_000;
        assert_eq!(when(at, at), "2026-12-03T09:12:44.120Z (0.0 s ago)");
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn holders_print_session_peer_token_and_waiters_in_order() {
        let h = ObjectHolders {
            name: "L".into(),
            kind: Kind::Lock,
            id: 1,
            held: vec![HolderInfo {
                session: 3,
                peer: Some("127.0.0.1:4000".into()),
                since_us: 2_000_000,
                token: Some(17),
                what: "lock".into(),
            }],
            waiting: vec![
                WaiterInfo { session: 4, peer: None, since_us: Some(3_000_000), what: "acquire".into() },
                WaiterInfo { session: 5, peer: Some("[::1]:9".into()), since_us: None, what: "acquire".into() },
            ],
        };
        let text = describe_holders(&h, 4_000_000);
        assert_eq!(
            text,
            "held by (1):\n  session 3  peer 127.0.0.1:4000  since 1970-01-01T00:00:02.000Z (2.0 s ago)  token 17  lock\n\
             waiting, in order (2):\n  1. session 4  peer ?  since 1970-01-01T00:00:03.000Z (1.0 s ago)  acquire\n  \
             2. session 5  peer [::1]:9  since ?  acquire\n"
        );
        let nobody = ObjectHolders { held: vec![], waiting: vec![], ..h };
        assert_eq!(describe_holders(&nobody, 0), "");
    }
}
