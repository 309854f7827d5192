//! The socket of a connection served by a thread of its own, which waits for its
//! client's next request with the thread blocked in `recv(2)`.
//!
//! A thread that serves one connection has nothing else to wait for between requests,
//! so the runtime's turn around each one — `epoll_wait(2)`, the driver, the task's
//! wake-up — is pure overhead: with a blocking `recv` a round trip takes two system
//! calls (`recv`, `send`) instead of three, as CPython's own manager does it
//! (bench/changes.md, round 30). The socket is therefore in blocking mode, with a read
//! timeout ([`BLOCK_AT_MOST`]) so a thread never sleeps in `recv` for longer than that
//! while its server shuts down or its connection is told to stop; past it, the
//! connection waits on the runtime as any other does. Everything read or written
//! through the runtime ([`AsyncRead`], [`AsyncWrite`]) passes `MSG_DONTWAIT`, so the
//! blocking mode never blocks the runtime.
//!
//! **Woken by a request alone, while others call.** When a Unix socket's reader takes
//! a message, the kernel wakes whatever sleeps on the writer's socket to say there is
//! room: a thread blocked in `recv(2)` there too, which finds nothing and sleeps again.
//! So a thread waiting in `recv` is woken each time its client reads a reply. For a
//! lone client that wake-up comes just before its next request and does no harm; while
//! other connections are calling (the busy poll's gate says so) it takes a CPU their
//! threads need. Then the thread waits in `poll(2)` for `POLLIN`, which that wake-up
//! does not reach, and reads without waiting (bench/changes.md, round 37: at K = 2
//! over Unix 1.10–1.25× the calls for 13 % less CPU per call). A TCP socket has no
//! such wake-up (the kernel wakes a TCP writer's waiters only once the writer ran out
//! of room), so its thread always waits in `recv`.
//!
//! Owns: the socket's mode and its reads and writes. What the connection says, and
//! when it waits which way, belongs to the dialect.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use agora_proto::Address;
use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Detached;
use crate::listener::Transport;

/// The longest a thread waits for its client's next request blocked in `recv(2)`; a
/// client quiet for longer is waited for on the runtime, where a shutdown or a stop
/// reaches it at once. It bounds how late a blocked thread notices either.
pub const BLOCK_AT_MOST: Duration = Duration::from_millis(10);

impl AsFd for Detached {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Detached::Tcp(s) => s.as_fd(),
            Detached::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Detached {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A connection's socket on its own thread: blocking reads for the thread, and
/// non-blocking reads and writes for the runtime.
pub struct ThreadSocket {
    io: AsyncFd<Detached>,
    /// What the connection asks of its transport, learnt before the socket changed hands.
    peer_local: bool,
    peer_pid: Option<u32>,
    local: Option<Address>,
}

impl ThreadSocket {
    /// Takes `stream`'s socket off its runtime (noting what it says of its peer) and
    /// registers it, in blocking mode, with the current one.
    pub fn new<S: Transport>(stream: S) -> io::Result<ThreadSocket> {
        // Asked of the runtime's own stream, so the answers are the ones every other
        // connection gets; it costs a registration and its removal, once a connection.
        let (peer_local, peer_pid, local) = (stream.peer_is_local(), stream.peer_pid(), stream.local_address());
        let detached = match stream.detach() {
            Ok(detached) => detached?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::Unsupported, "this stream has no socket of its own")),
        };
        let socket = socket2::SockRef::from(&detached);
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(BLOCK_AT_MOST))?;
        // SAFETY: `detached` owns its socket, and its `as_raw_fd` names that one for
        // as long as it lives: it is never given another.
        let io = unsafe { AsyncFd::register(detached)? };
        Ok(ThreadSocket { io, peer_local, peer_pid, local })
    }

    /// Takes the socket off this thread's runtime, back in non-blocking mode, to be
    /// served elsewhere.
    pub fn into_detached(self) -> io::Result<Detached> {
        let detached = self.io.into_inner();
        let socket = socket2::SockRef::from(&detached);
        socket.set_read_timeout(None)?;
        socket.set_nonblocking(true)?;
        Ok(detached)
    }

    /// One `recv(2)` or `send(2)` with `flags` on the socket, through the runtime's
    /// readiness; a short read clears it (the socket's buffer is empty), as tokio's
    /// own streams do, so the next read waits instead of trying first.
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        write: bool,
        mut io: impl FnMut(RawFd) -> io::Result<(usize, bool)>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard =
                if write { ready!(self.io.poll_write_ready(cx))? } else { ready!(self.io.poll_read_ready(cx))? };
            match guard.try_io(|fd| io(fd.as_raw_fd())) {
                Ok(Ok((done, drained))) => {
                    if drained {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(done));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// `recv(2)` into `buf` with `flags`; the count, or the error.
fn recv(fd: RawFd, buf: &mut [std::mem::MaybeUninit<u8>], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we own.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl AsyncRead for ThreadSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // SAFETY: `recv` only writes the bytes it reports, which are then marked filled.
        let spare = unsafe { buf.unfilled_mut() };
        let room = spare.len();
        let n = ready!(self.poll_io(cx, false, |fd| {
            let n = recv(fd, spare, libc::MSG_DONTWAIT)?;
            Ok((n, n > 0 && n < room))
        }))?;
        // SAFETY: `recv` initialised the first `n` bytes of the unfilled part.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ThreadSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_io(cx, true, |fd| {
            // SAFETY: `send` reads at most `data.len()` bytes of `data`.
            let n =
                unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            Ok((n, n > 0 && n < data.len()))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(self.io.get_ref()).shutdown(std::net::Shutdown::Write))
    }
}

impl Transport for ThreadSocket {
    fn before_read(&self) {
        #[cfg(target_os = "linux")]
        if let Detached::Tcp(s) = self.io.get_ref() {
            let _ = socket2::SockRef::from(s).set_quickack(true);
        }
    }

    fn peer_is_local(&self) -> bool {
        self.peer_local
    }

    fn peer_pid(&self) -> Option<u32> {
        self.peer_pid
    }

    fn local_address(&self) -> Option<Address> {
        self.local.clone()
    }

    fn input_waiting(&self) -> Option<bool> {
        crate::listener::input_waiting(self.io.get_ref())
    }

    fn raw_socket(&self) -> Option<RawFd> {
        Some(self.io.as_raw_fd())
    }

    fn read_blocking(&mut self, buf: &mut BytesMut, input_only: bool) -> Option<io::Result<usize>> {
        const READ_AT_LEAST: usize = 4096;
        let fd = self.io.as_raw_fd();
        let mut flags = 0;
        if input_only && matches!(self.io.get_ref(), Detached::Unix(_)) {
            let mut wait = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let at_most = libc::c_int::try_from(BLOCK_AT_MOST.as_millis()).unwrap_or(libc::c_int::MAX);
            // SAFETY: `poll` reads and writes the one `pollfd` we pass.
            if unsafe { libc::poll(&mut wait, 1, at_most) } < 0 {
                return Some(Err(io::Error::last_os_error()));
            }
            // Waited already: what is not there now, the recv must not wait for.
            flags = libc::MSG_DONTWAIT;
        }
        buf.reserve(READ_AT_LEAST);
        let read = recv(fd, buf.spare_capacity_mut(), flags);
        if let Ok(n) = read {
            // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
        }
        Some(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A `ThreadSocket` on one end of a fresh socket pair, the other end left blocking.
    fn pair() -> (ThreadSocket, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let ours = ThreadSocket::new(tokio::net::UnixStream::from_std(ours).unwrap()).unwrap();
        (ours, theirs)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_blocking_read_takes_what_came_gives_up_after_a_moment_and_sees_the_end() {
        for input_only in [false, true] {
            runtime().block_on(async {
                let (mut ours, mut theirs) = pair();
                let mut buf = BytesMut::new();
                let nothing = ours.read_blocking(&mut buf, input_only).expect("a thread's socket reads blocking");
                assert_eq!(nothing.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock), "nothing was sent");
                theirs.write_all(b"request").unwrap();
                assert_eq!(ours.read_blocking(&mut buf, input_only).unwrap().unwrap(), 7);
                assert_eq!(&buf[..], b"request");
                drop(theirs);
                assert_eq!(ours.read_blocking(&mut buf, input_only).unwrap().unwrap(), 0, "the peer closed");
            });
        }
    }

    /// Voluntary context switches of the calling thread so far: one per sleep.
    fn sleeps_so_far() -> i64 {
        // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `getrusage` writes the one struct we pass.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
        usage.ru_nvcsw
    }

    #[test]
    fn a_thread_waiting_for_input_only_is_not_woken_by_its_client_reading_replies() {
        runtime().block_on(async {
            let (mut ours, theirs) = pair();
            // Replies the client has not read yet, each a message of its own.
            const REPLIES: usize = 200;
            for _ in 0..REPLIES {
                ours.write_all(b"reply").await.unwrap();
            }
            // The client reads them one by one while the thread waits for a request:
            // each read frees room on the thread's socket, which wakes a thread
            // blocked in `recv(2)` on it.
            let reader = std::thread::spawn(move || {
                let mut theirs = theirs;
                let mut reply = [0u8; 5];
                for _ in 0..REPLIES {
                    theirs.read_exact(&mut reply).unwrap();
                    std::thread::sleep(Duration::from_micros(250));
                }
                theirs
            });
            const WAITS: i64 = 10;
            let before = sleeps_so_far();
            let mut buf = BytesMut::new();
            for _ in 0..WAITS {
                let nothing = ours.read_blocking(&mut buf, true).expect("a thread's socket waits");
                assert_eq!(nothing.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock), "no request was sent");
            }
            let slept = sleeps_so_far() - before;
            let _theirs = reader.join().unwrap();
            // One sleep per wait; a wait woken by each read sleeps once more per reply
            // read meanwhile.
            assert!(slept <= 2 * WAITS, "{slept} sleeps in {WAITS} waits");
        });
    }

    #[test]
    fn reads_and_writes_through_the_runtime_wait_without_blocking_the_thread() {
        runtime().block_on(async {
            let (mut ours, theirs) = pair();
            // Far more than the socket buffers hold while nobody reads: a blocking send
            // would stall the thread, and with it the timer that must end this write.
            // If it did, the watchdog closes the peer after a while, which fails the
            // write (and this test) instead of hanging it.
            let (done, watched) = std::sync::mpsc::channel::<()>();
            let watchdog_end = theirs.try_clone().unwrap();
            let watchdog = std::thread::spawn(move || {
                if watched.recv_timeout(Duration::from_secs(30)).is_err() {
                    let _ = watchdog_end.shutdown(std::net::Shutdown::Both);
                }
            });
            let big = vec![7u8; 16 << 20];
            let stalled = tokio::time::timeout(Duration::from_millis(200), ours.write_all(&big)).await;
            let _ = done.send(()); // (the watchdog may have acted, and gone)
            watchdog.join().unwrap();
            assert!(stalled.is_err(), "the write waits for the reader, on the runtime: {stalled:?}");
            // Once the peer reads, everything arrives, whole, and the peer's answer comes
            // back through a read that waited for it.
            let reader = std::thread::spawn(move || {
                let mut theirs = theirs;
                let mut got = Vec::new();
                theirs.read_to_end(&mut got).unwrap();
                theirs.write_all(b"thanks").unwrap();
                got
            });
            ours.write_all(&big).await.unwrap();
            ours.shutdown().await.unwrap();
            let mut answer = [0u8; 6];
            ours.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"thanks");
            let got = reader.join().unwrap();
            // The stalled write sent part of a first copy before it was dropped.
            assert!((16 << 20..32 << 20).contains(&got.len()), "{} bytes", got.len());
            assert!(got.iter().all(|&b| b == 7));
        });
    }
}
