//! The signals that stop a client command holding seats (`raftlm checkout`):
//! SIGINT, SIGTERM and SIGHUP, each with the exit code a shell reports for a
//! process it ended (128 + the signal's number).
//!
//! [`Signals::install`] replaces the default action (ending the process at
//! once) with a handler, so that the command can check its seats in before it
//! exits. A signal that arrives after the handlers are installed and before
//! anyone waits for it is kept, and returned by the next [`Signals::recv`].
//! A signal the command was started with ignored (`nohup` ignores SIGHUP; a
//! shell ignores SIGINT for a background job of a script) stays ignored.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::debug;

use crate::cli::Failure;

/// Exit code after SIGINT (Ctrl-C): 128 + 2.
pub const EXIT_SIGINT: u8 = 130;
/// Exit code after SIGTERM: 128 + 15.
pub const EXIT_SIGTERM: u8 = 143;
/// Exit code after SIGHUP (the terminal went away): 128 + 1.
pub const EXIT_SIGHUP: u8 = 129;

/// Which signal asked the command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGHUP.
    HangUp,
}

impl Stop {
    /// The signal's name, e.g. `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
            Stop::HangUp => "SIGHUP",
        }
    }

    /// The exit code for a command this signal stopped: 130, 143 or 129.
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => EXIT_SIGINT,
            Stop::Terminate => EXIT_SIGTERM,
            Stop::HangUp => EXIT_SIGHUP,
        }
    }

    fn number(self) -> libc::c_int {
        match self {
            Stop::Interrupt => libc::SIGINT,
            Stop::Terminate => libc::SIGTERM,
            Stop::HangUp => libc::SIGHUP,
        }
    }

    fn kind(self) -> SignalKind {
        match self {
            Stop::Interrupt => SignalKind::interrupt(),
            Stop::Terminate => SignalKind::terminate(),
            Stop::HangUp => SignalKind::hangup(),
        }
    }
}

/// Handlers for SIGINT, SIGTERM and SIGHUP; see the module documentation.
pub struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    /// Installs the handlers. Must be called within a tokio runtime with its
    /// I/O driver enabled. Fails (a usage error, exit 2) only if the runtime
    /// cannot register a handler.
    pub fn install() -> Result<Signals, Failure> {
        Ok(Signals {
            interrupt: handler(Stop::Interrupt)?,
            terminate: handler(Stop::Terminate)?,
            hangup: handler(Stop::HangUp)?,
        })
    }

    /// Waits for the next of the signals (forever if all are ignored).
    pub async fn recv(&mut self) -> Stop {
        tokio::select! {
            Some(()) = next(&mut self.interrupt) => Stop::Interrupt,
            Some(()) = next(&mut self.terminate) => Stop::Terminate,
            Some(()) = next(&mut self.hangup) => Stop::HangUp,
            // Every signal ignored, or the runtime shutting down: none will come.
            else => std::future::pending().await,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP held back from the calling thread (and every
/// thread it starts afterwards) until [`Blocked::release`].
///
/// tokio installs a signal's process handler before it registers the stream
/// that hears it: a signal landing between the two would be handled and
/// heard by nobody, and the command would go on holding its seats. So a
/// command blocks the signals before it starts its runtime (whose threads
/// inherit the mask and never take them), installs [`Signals`], then
/// releases them on the thread that runs its main future: a signal that came
/// meanwhile is delivered then, to a handler whose stream hears it.
pub struct Blocked {
    previous: libc::sigset_t,
}

impl Blocked {
    /// Blocks the three signals on this thread.
    pub fn stops() -> Blocked {
        // SAFETY: sigset_t is plain data, initialized by sigemptyset before
        // use; pthread_sigmask only reads `set` and writes `previous`.
        unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            for number in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, number);
            }
            let mut previous = std::mem::zeroed::<libc::sigset_t>();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
            Blocked { previous }
        }
    }

    /// Restores this thread's mask as it was before [`Blocked::stops`]:
    /// signals that arrived meanwhile are delivered now.
    pub fn release(self) {
        // SAFETY: `previous` was filled by pthread_sigmask in `stops`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

/// A handler for `stop`'s signal, or `None` if the process was started with it ignored.
fn handler(stop: Stop) -> Result<Option<Signal>, Failure> {
    if ignored(stop.number()) {
        debug!(signal = stop.name(), "ignored since start: left ignored");
        return Ok(None);
    }
    signal(stop.kind())
        .map(Some)
        .map_err(|e| Failure::usage(format!("cannot handle {}: {e}", stop.name())))
}

/// The next delivery of `handler`'s signal; `None` at once without a handler.
async fn next(handler: &mut Option<Signal>) -> Option<()> {
    match handler {
        Some(handler) => handler.recv().await,
        None => None,
    }
}

/// Whether `number`'s disposition is "ignore" (inherited from the parent).
fn ignored(number: libc::c_int) -> bool {
    let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: sigaction(2) with a null new action only reads the current one
    // into `current`, a zeroed struct of the right type that outlives the call.
    let rc = unsafe { libc::sigaction(number, std::ptr::null(), current.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: the call succeeded, so it wrote the whole struct.
    let current = unsafe { current.assume_init() };
    current.sa_sigaction == libc::SIG_IGN
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each exit code is 128 + the signal's number, as a shell reports a process the signal ended.
    #[test]
    fn exit_codes_are_the_shells() {
        for stop in [Stop::Interrupt, Stop::Terminate, Stop::HangUp] {
            assert_eq!(i32::from(stop.exit_code()), 128 + stop.number(), "{stop:?}");
        }
        assert_eq!([EXIT_SIGINT, EXIT_SIGTERM, EXIT_SIGHUP], [130, 143, 129]);
    }
}
