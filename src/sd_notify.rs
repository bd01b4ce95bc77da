//! systemd's notification protocol (`sd_notify`), the two messages a node
//! sends: `READY=1` once it serves, and `WATCHDOG=1` keep-alives.
//!
//! When systemd starts a unit with `Type=notify` it sets `NOTIFY_SOCKET` to
//! a unix datagram socket (a path, or an abstract name written `@name`);
//! with `WatchdogSec=` it also sets `WATCHDOG_USEC` (and `WATCHDOG_PID`).
//! A keep-alive is one datagram `WATCHDOG=1`; a unit that sends none within
//! `WatchdogSec` is killed, and its `ExecStopPost=` takes the access point's
//! address off the machine (docs/operations.md, "The watchdog").
//!
//! The keep-alive task pings only while the node's Raft core is running and
//! the node's runtime is responsive: the task runs on that runtime, so a
//! process that is stopped (`SIGSTOP`, a frozen VM) or whose runtime is
//! wedged stops pinging, and systemd removes the address.
//!
//! Left out: `sd_notify`'s file-descriptor passing, `EXTEND_TIMEOUT_USEC`,
//! and `NOTIFY_SOCKET` values other than a path or `@name` (vsock).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing::{debug, warn};

/// The shortest keep-alive period, so a tiny `WATCHDOG_USEC` cannot make
/// the task spin.
pub const WATCHDOG_PERIOD_MIN: Duration = Duration::from_millis(10);

/// Where systemd listens for notifications, from `NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySocket {
    /// A socket file.
    Path(std::path::PathBuf),
    /// An abstract socket name (written `@name` in `NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

impl NotifySocket {
    /// The socket named by `NOTIFY_SOCKET`, if it is set and not empty.
    pub fn from_env() -> Option<NotifySocket> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        NotifySocket::parse(value.as_encoded_bytes())
    }

    /// Parses a `NOTIFY_SOCKET` value.
    pub fn parse(value: &[u8]) -> Option<NotifySocket> {
        match value {
            [] => None,
            [b'@', name @ ..] => Some(NotifySocket::Abstract(name.to_vec())),
            path => Some(NotifySocket::Path(std::path::PathBuf::from(
                String::from_utf8_lossy(path).into_owned(),
            ))),
        }
    }

    /// Sends one notification (`READY=1`, `WATCHDOG=1`, `STOPPING=1`).
    pub fn send(&self, message: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        match self {
            NotifySocket::Path(path) => socket.send_to(message.as_bytes(), path)?,
            NotifySocket::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &address)?
            }
        };
        Ok(())
    }
}

/// The keep-alive period: half of `WATCHDOG_USEC`, when it is set for this
/// process (`WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_period_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| (Duration::from_micros(usec) / 2).max(WATCHDOG_PERIOD_MIN))
}

/// Sends `message` to `NOTIFY_SOCKET` if it is set; a failure is logged,
/// never fatal (the node serves without systemd too).
pub fn notify(message: &str) {
    if let Some(socket) = NotifySocket::from_env()
        && let Err(error) = socket.send(message)
    {
        warn!(%error, message, "cannot notify systemd");
    }
}

/// Sends `WATCHDOG=1` every `period` while `alive()` holds; runs until
/// aborted. A tick that finds the node not alive sends nothing, so systemd's
/// watchdog fires.
pub async fn keep_alive(socket: NotifySocket, period: Duration, alive: impl Fn() -> bool) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = false;
    loop {
        ticks.tick().await;
        if !alive() {
            if !quiet {
                warn!("the node's Raft core has stopped; no longer pinging the watchdog");
                quiet = true;
            }
            continue;
        }
        quiet = false;
        if let Err(error) = socket.send("WATCHDOG=1") {
            debug!(%error, "watchdog keep-alive not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // NOTIFY_SOCKET is read the way systemd writes it: a path, or @ for an abstract name.
    #[test]
    fn notify_socket_values() {
        assert_eq!(NotifySocket::parse(b""), None);
        assert_eq!(
            NotifySocket::parse(b"/run/systemd/notify"),
            Some(NotifySocket::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifySocket::parse(b"@raftlm/notify"),
            Some(NotifySocket::Abstract(b"raftlm/notify".to_vec()))
        );
    }

    // A notification arrives as one datagram, on a socket file and on an abstract socket.
    #[test]
    fn notifications_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        NotifySocket::Path(path).send("READY=1").unwrap();
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("raftlm-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        NotifySocket::Abstract(name.into_bytes())
            .send("WATCHDOG=1")
            .unwrap();
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"WATCHDOG=1");
    }
}
