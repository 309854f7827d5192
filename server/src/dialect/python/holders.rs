//! Which process holds the references CPython clients take, so a crashed one's can be
//! given back.
//!
//! A CPython client takes and gives back references (`create`, `incref`, `decref`,
//! `iter`) over short connections of their own, not through a session, so the end of a
//! session says nothing about them: a client killed with SIGKILL never sends its
//! decrefs, and CPython's own manager leaks its objects for good. Over a Unix socket
//! the kernel names the peer process ([`Transport::peer_pid`](crate::listener::Transport::peer_pid)); its references are counted
//! here, and once that process is gone (checked every second by the server) what it
//! still held is given back with ordinary `Decref` commands. Over TCP the peer process
//! is unknown: those references are only counted ([`ClientRefs::untracked_objects`],
//! shown by `agora stats`) and stay until a decref or a restart.
//!
//! Knowing the peer's process costs a read of `/proc/PID/stat` (its start time tells a
//! reused pid from the process that had it), and every CPython connection over a Unix
//! socket needs it: proxy creation opens four connections. So the processes seen lately
//! are kept with a pidfd each, which says when its process exits: while it
//! does not, the pid is still that process's and its start time is known.
//!
//! This module keeps counts only; it never applies a command itself.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use agora_proto::native::ObjectId;

/// A process on this machine: its pid and when it started (a reused pid is another
/// process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    pid: u32,
    started: u64,
}

impl Process {
    /// True while this process runs.
    fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.started)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// When process `pid` started, in clock ticks after boot (`/proc/PID/stat`, field 22).
fn start_time(pid: u32) -> Option<u64> {
    use std::io::Read;
    // Read for every CPython connection's peer: one read into a buffer that holds any
    // stat line, where `read_to_string` first asks for the file's size (0 in /proc)
    // and then grows its buffer in reads of 32 bytes and up (nine system calls, not four).
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut stat = [0u8; 4096];
    let mut len = 0;
    loop {
        match file.read(&mut stat[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if len == stat.len() {
            return None; // longer than a stat line can be
        }
    }
    start_time_in(&stat[..len])
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces, parentheses or any bytes: count after its last `)`.
fn start_time_in(stat: &[u8]) -> Option<u64> {
    let after_name = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    std::str::from_utf8(after_name).ok()?.split_whitespace().nth(19)?.parse().ok()
}

/// The most processes [`Seen`] keeps a pidfd for (one file descriptor each); past it, a
/// new peer's start time is read at each of its connections, as without the cache.
const MOST_SEEN: usize = 1024;

/// How many pidfds [`ClientRefs`] may keep under an open-files limit (`ulimit -n`):
/// 1,024, and never more than a sixteenth of the limit, so that watching
/// processes never costs a connection its socket.
pub fn watch_limit(open_files: Option<u64>) -> usize {
    open_files.map_or(MOST_SEEN, |limit| usize::try_from(limit / 16).map_or(MOST_SEEN, |cap| cap.min(MOST_SEEN)))
}

/// Processes seen lately, by pid: each one's start time, and a pidfd that becomes
/// readable when it exits (`pidfd_open(2)`, Linux 5.3; without it nothing is kept).
#[derive(Debug)]
struct Seen {
    by_pid: HashMap<u32, Watched>,
    /// The most pidfds kept.
    most: usize,
}

#[derive(Debug)]
struct Watched {
    started: u64,
    pidfd: OwnedFd,
}

impl Seen {
    /// Process `pid` as seen before, if that process has not exited since.
    fn known(&mut self, pid: u32) -> Option<Process> {
        let watched = self.by_pid.get(&pid)?;
        if !has_exited(&watched.pidfd) {
            return Some(Process { pid, started: watched.started });
        }
        self.by_pid.remove(&pid);
        None
    }

    /// Keeps `process`, watched through `pidfd`, if there is room.
    fn keep(&mut self, process: Process, pidfd: OwnedFd) {
        if self.by_pid.len() >= self.most {
            self.forget_exited();
        }
        if self.by_pid.len() < self.most {
            self.by_pid.insert(process.pid, Watched { started: process.started, pidfd });
        }
    }

    /// True if `process` is kept: running as of the last [`Seen::forget_exited`].
    fn keeps(&self, process: &Process) -> bool {
        self.by_pid.get(&process.pid).is_some_and(|watched| watched.started == process.started)
    }

    /// Closes the pidfds of processes that exited.
    fn forget_exited(&mut self) {
        self.by_pid.retain(|_, watched| !has_exited(&watched.pidfd));
    }
}

/// A pidfd for process `pid`, if the kernel has them and the process exists.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = std::os::fd::RawFd::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the descriptor was just opened and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True once the process of `pidfd` has exited (its pidfd polls readable), or if the
/// kernel cannot say.
fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut wanted = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no waiting.
    let ready = unsafe { libc::poll(&mut wanted, 1, 0) };
    ready != 0
}

/// References held by CPython clients, by holding process (see the module docs).
#[derive(Debug)]
pub struct ClientRefs {
    inner: Mutex<Inner>,
    seen: Mutex<Seen>,
}

impl Default for ClientRefs {
    fn default() -> Self {
        ClientRefs::watching_at_most(MOST_SEEN)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Net references each known process took, by object.
    by_process: HashMap<Process, HashMap<ObjectId, i64>>,
    /// Net references taken by peers whose process is unknown (TCP), by object.
    untracked: HashMap<ObjectId, i64>,
}

impl ClientRefs {
    /// No references yet; at most `most` processes watched through a pidfd ([`watch_limit`]).
    pub fn watching_at_most(most: usize) -> ClientRefs {
        ClientRefs { inner: Mutex::default(), seen: Mutex::new(Seen { by_pid: HashMap::new(), most }) }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running process `pid` (a Unix socket's peer, as the kernel names it), which
    /// holds the references its connections take; `None` if it is gone already.
    pub fn holder(&self, pid: u32) -> Option<Process> {
        if let Some(known) = self.seen().known(pid) {
            return Some(known);
        }
        // Read without the lock, so that connections from processes already seen never
        // wait behind another's /proc read. The pidfd first: if its process still runs
        // once the start time is read, that start time was its own, not a successor's on
        // a reused pid.
        let pidfd = pidfd_open(pid);
        let process = Process { pid, started: start_time(pid)? };
        if let Some(pidfd) = pidfd.filter(|pidfd| !has_exited(pidfd)) {
            self.seen().keep(process, pidfd);
        }
        Some(process)
    }

    /// `holder` took one reference on `object` (`None`: a peer of unknown process).
    pub fn took(&self, holder: Option<Process>, object: ObjectId) {
        self.add(holder, object, 1);
    }

    /// `holder` gave one back.
    pub fn gave(&self, holder: Option<Process>, object: ObjectId) {
        self.add(holder, object, -1);
    }

    fn add(&self, holder: Option<Process>, object: ObjectId, delta: i64) {
        let mut inner = self.inner();
        let counts = match holder {
            Some(process) => inner.by_process.entry(process).or_default(),
            None => &mut inner.untracked,
        };
        let count = counts.entry(object).or_default();
        *count += delta;
        if *count == 0 {
            counts.remove(&object);
        }
        if let Some(process) = holder {
            if inner.by_process.get(&process).is_some_and(HashMap::is_empty) {
                inner.by_process.remove(&process);
            }
        }
    }

    /// Forgets every process that is gone and returns what each still held:
    /// (process, [(object, references)]), for the server to give back.
    pub fn take_dead(&self) -> Vec<(Process, Vec<(ObjectId, u64)>)> {
        let holders: Vec<Process> = self.inner().by_process.keys().copied().collect();
        // One poll per kept process; /proc only for holders not kept, read without the lock.
        let unwatched: Vec<Process> = {
            let mut seen = self.seen();
            seen.forget_exited();
            holders.into_iter().filter(|p| !seen.keeps(p)).collect()
        };
        let dead: Vec<Process> = unwatched.into_iter().filter(|p| !p.is_alive()).collect();
        let mut inner = self.inner();
        dead.into_iter()
            .filter_map(|process| {
                let held = inner.by_process.remove(&process)?;
                let mut held: Vec<(ObjectId, u64)> =
                    held.into_iter().filter(|&(_, n)| n > 0).map(|(object, n)| (object, n as u64)).collect();
                held.sort_unstable();
                Some((process, held))
            })
            .collect()
    }

    /// How many objects clients of unknown process (TCP) hold references on.
    pub fn untracked_objects(&self) -> u64 {
        self.inner().untracked.values().filter(|&&n| n > 0).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_process_and_gives_back_only_for_the_dead() {
        let me = Process { pid: std::process::id(), started: start_time(std::process::id()).unwrap() };
        assert!(me.is_alive());
        let gone = Process { pid: me.pid, started: me.started + 1 }; // a reused pid: another process
        assert!(!gone.is_alive());
        let refs = ClientRefs::default();
        refs.took(Some(me), 1);
        refs.took(Some(gone), 2);
        refs.took(Some(gone), 2);
        refs.took(Some(gone), 3);
        refs.gave(Some(gone), 3);
        refs.took(None, 4);
        assert_eq!(refs.take_dead(), vec![(gone, vec![(2, 2)])]);
        assert!(refs.take_dead().is_empty(), "given back once");
        assert_eq!(refs.untracked_objects(), 1);
        refs.gave(None, 4);
        assert_eq!(refs.untracked_objects(), 0);
    }

    #[test]
    fn a_process_seen_is_known_until_it_exits_and_then_given_back_for() {
        let refs = ClientRefs::default();
        let mut child = std::process::Command::new("sleep").arg("60").spawn().expect("sleep(1) runs");
        let pid = child.id();
        let seen = refs.holder(pid).expect("a running process");
        assert_eq!(seen, Process { pid, started: start_time(pid).unwrap() });
        if pidfd_open(std::process::id()).is_some() {
            assert!(refs.seen().by_pid.contains_key(&pid), "kept, with its pidfd");
        }
        assert_eq!(refs.holder(pid), Some(seen), "the same process while it runs");
        refs.took(Some(seen), 7);
        assert!(refs.take_dead().is_empty(), "it runs: it keeps its reference");
        child.kill().unwrap();
        child.wait().unwrap();
        // Its pid now names no process (or, reused at once, another one): never the one seen.
        assert_ne!(refs.holder(pid), Some(seen));
        assert_eq!(refs.take_dead(), vec![(seen, vec![(7, 1)])]);
        assert!(!refs.seen().by_pid.contains_key(&pid), "its pidfd closed");
    }

    #[test]
    fn the_sweep_alone_sees_a_watched_holder_exit() {
        let refs = ClientRefs::default();
        let mut child = std::process::Command::new("sleep").arg("60").spawn().expect("sleep(1) runs");
        let seen = refs.holder(child.id()).expect("a running process");
        refs.took(Some(seen), 9);
        child.kill().unwrap();
        child.wait().unwrap();
        // No connection from its pid in between: the sweep must see the exit itself.
        assert_eq!(refs.take_dead(), vec![(seen, vec![(9, 1)])]);
        assert!(refs.seen().by_pid.is_empty(), "its pidfd closed");
    }

    #[test]
    fn watching_processes_never_takes_more_than_a_sixteenth_of_the_open_files() {
        assert_eq!(watch_limit(None), MOST_SEEN);
        assert_eq!(watch_limit(Some(1_048_576)), MOST_SEEN);
        assert_eq!(watch_limit(Some(1024)), 64);
        assert_eq!(watch_limit(Some(10)), 0);
        // With no room, nothing is kept, and the process is still known.
        let refs = ClientRefs::watching_at_most(0);
        let me = std::process::id();
        assert_eq!(refs.holder(me), Some(Process { pid: me, started: start_time(me).unwrap() }));
        assert!(refs.seen().by_pid.is_empty());
    }

    #[test]
    fn the_start_time_is_counted_after_the_command_name_whatever_it_holds() {
        let fields = "S 1 2 3 0 -1 4194304 10 0 0 0 1 2 0 0 20 0 1 0 181670 25223168 4996 18446744073709551615";
        for name in [&b"python3"[..], b"a) b (c", b"\xff\xfe) 7 8"] {
            let mut line = b"1233 (".to_vec();
            line.extend_from_slice(name);
            line.extend_from_slice(format!(") {fields}\n").as_bytes());
            assert_eq!(start_time_in(&line), Some(181670), "{:?}", String::from_utf8_lossy(name));
        }
        assert_eq!(start_time_in(b"1233 (cut short) S 1 2"), None);
        // This process's own line, as the kernel writes it, reads the same as before.
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(start_time(std::process::id()), start_time_in(own.as_bytes()));
    }
}
