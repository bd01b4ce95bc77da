//! `raftlm checkout FEATURE [--count N] [--hold DURATION|forever] [--user U]
//! [--host H] [--server S]`: takes seats, prints the grant, holds it with
//! heartbeats until the hold ends or a signal (SIGINT, SIGTERM, SIGHUP), then
//! checks in.
//!
//! While it holds the grant it prints one line when the session fails over to
//! another node, enters or leaves caching mode, or loses a grant. Exit codes
//! (`README.md`, "Exit codes"): 1 when the check-out is refused (with the cluster's numbers),
//! 3 when no node answers, 2 for usage errors; 130, 143 or 129 when SIGINT,
//! SIGTERM or SIGHUP stopped it ([`crate::cli::signals`]).
//!
//! It never exits with a seat held if it can help it: the signal handlers
//! are installed before the first request, and every way out — a signal
//! before, during or after the check-out, a grant refused as untrusted, the
//! end of the hold — goes through [`Session::close`], which waits for a
//! check-out in flight and checks in every grant, within
//! [`CHECKIN_ON_EXIT_TIMEOUT`]. A second signal during that exits at once;
//! what was not checked in is then freed by the cluster when the session's
//! TTL runs out.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::cli::Failure;
use crate::cli::common::{
    CLIENT_LOG_DEFAULT, failure, format_duration, format_time, init_logging, runtime,
};
use crate::cli::signals::{Signals, Stop};
use crate::client::{
    ClientError, DEFAULT_SERVER, Grant, ServerList, Session, SessionEvent, SessionOptions,
    local_host, local_user,
};
use crate::text::parse_duration;

/// Prints a line on stdout, ignoring a failed write: after SIGHUP the
/// terminal may be gone, and the seats must still be checked in.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How long to hold the seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until Ctrl-C.
    Forever,
    /// For this long, then check in (Ctrl-C checks in earlier).
    For(Duration),
}

/// Parses a hold: `forever`, or a duration such as `30s`, `5m`, `2h`, `1d`,
/// `250ms`, several of them together (`1h30m`), or a number of seconds.
pub fn parse_hold(text: &str) -> Result<Hold, String> {
    if text.eq_ignore_ascii_case("forever") {
        return Ok(Hold::Forever);
    }
    parse_duration(text).map(Hold::For)
}

/// `raftlm checkout`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The feature to check out.
    #[arg(value_name = "FEATURE")]
    pub feature: String,
    /// The vendor whose feature it is (default: the one vendor the cluster
    /// licenses the feature for; needed when several vendors do).
    #[arg(long, env = "RAFTLM_VENDOR", value_name = "V")]
    pub vendor: Option<String>,
    /// The lowest version accepted, e.g. 2.0 (default: any).
    #[arg(long, value_name = "VERSION", default_value = "")]
    pub version: String,
    /// A vendor public key (PREFIX.pub) the grant's lines must be signed by, as
    /// a vendor's application checks; repeat for several. Default: no check.
    #[arg(long = "vendor-key", value_name = "FILE.pub")]
    pub vendor_keys: Vec<std::path::PathBuf>,
    /// Seats to take, 1 to 1,000,000 (`CHECKOUT_SEATS_MAX`; more is a usage
    /// error, exit 2, before anything is sent).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::license::state::CHECKOUT_SEATS_MAX as i64))]
    pub count: u32,
    /// How long to hold the seats: e.g. 30s, 5m, 2h, or forever (until Ctrl-C).
    #[arg(long, default_value = "forever", value_parser = parse_hold, value_name = "DURATION")]
    pub hold: Hold,
    /// The user name to report (default: $USER).
    #[arg(long, value_name = "U")]
    pub user: Option<String>,
    /// The host name to report (default: this machine's host name).
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// The access point or node list: host:port or port@host, comma-separated.
    #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
    pub server: ServerList,
}

/// The one vendor the cluster licenses `feature` for, or why there is not one.
async fn vendor_of(client: &crate::client::Client, feature: &str) -> Result<String, Failure> {
    let status = client.status().await.map_err(failure)?;
    let mut vendors: Vec<&str> = status
        .features
        .iter()
        .filter(|f| f.feature == feature)
        .map(|f| f.vendor.as_str())
        .collect();
    vendors.dedup();
    match vendors.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(Failure::refused(format!(
            "no license for feature \"{feature}\" (raftlm status lists the features)"
        ))),
        several => Err(Failure::usage(format!(
            "feature \"{feature}\" is licensed by several vendors ({}): choose one with --vendor",
            several.join(", ")
        ))),
    }
}

/// How long, once the command stops (a signal, a refused untrusted grant, the
/// end of the hold), it waits for the session to close: for the answer to a
/// check-out still in flight and for the check-in of every grant. Ten times
/// the slowest failover `docs/performance.md` reports (p99 under 1 s), so a
/// failover during the check-in does not cut it short, and a third of the
/// default session TTL (`DEFAULT_SESSION_TTL`, 30 s): when the cluster cannot
/// be reached, waiting longer would gain little over the cluster freeing the
/// seats of the silent session at the end of its TTL.
pub const CHECKIN_ON_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `raftlm checkout`. The signal handlers are installed before anything
/// is sent to the cluster.
pub fn run(args: Args) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    // Held back until their handlers are heard (see `Blocked`); the
    // runtime's threads never take them.
    let blocked = crate::cli::signals::Blocked::stops();
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let signals = Signals::install();
        blocked.release();
        checkout(args, signals?).await
    });
    // The outcome is decided: exit now, not when a task left behind (a
    // connection attempt, a blocking lookup) ends, which dropping the
    // runtime would wait for.
    runtime.shutdown_timeout(RUNTIME_STOP_MAX);
    result
}

/// How long `raftlm checkout` lets the tasks left behind finish once its
/// outcome is decided, before it exits anyway.
pub const RUNTIME_STOP_MAX: Duration = Duration::from_millis(100);

fn describe(grant: &Grant) -> String {
    format!(
        "checked out {} seat{} of \"{}\": grant {}, term {}, node {} ({} of {} seats free)",
        grant.count,
        if grant.count == 1 { "" } else { "s" },
        grant.feature,
        grant.token,
        grant.term,
        grant.address,
        grant.available,
        grant.total
    )
}

/// The failure of a command a signal stopped before it asked for seats.
fn stopped(stop: Stop) -> Failure {
    Failure {
        code: stop.exit_code(),
        message: format!("stopped by {} before any seat was asked for", stop.name()),
    }
}

async fn checkout(args: Args, mut signals: Signals) -> Result<(), Failure> {
    let options = SessionOptions {
        user: args.user.unwrap_or_else(local_user),
        host: args.host.unwrap_or_else(local_host),
        ..SessionOptions::default()
    };
    let client = crate::cli::env_client(args.server)?;
    let vendor = match args.vendor {
        Some(vendor) => vendor,
        None => tokio::select! {
            vendor = vendor_of(&client, &args.feature) => vendor?,
            stop = signals.recv() => return Err(stopped(stop)),
        },
    };
    let vendor_keys = args
        .vendor_keys
        .iter()
        .map(|p| crate::keys::load_public_key(p).map_err(|e| Failure::usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let options = SessionOptions {
        vendor,
        vendor_keys,
        ..options
    };
    let session = Session::start(client, options);
    let mut events = session.subscribe();
    // A signal while the check-out is in flight stops waiting for its answer,
    // not the check-out: the session still records the grant when the answer
    // comes, and closing the session waits for it and checks it in.
    let answer = tokio::select! {
        answer = session.checkout_version(&args.feature, &args.version, args.count) => answer,
        stop = signals.recv() => {
            say!(
                "stopped by {} while the check-out was in flight: checking in whatever it is granted",
                stop.name()
            );
            let closed = close(session, &mut signals, Some(stop)).await;
            return ending(closed, None, &[]);
        }
    };
    let grant = match answer {
        Ok(grant) => grant,
        Err(error) => {
            // A grant refused as untrusted is being checked in by the session;
            // closing waits until the cluster confirmed it.
            let refusal = failure(error);
            let closed = close(session, &mut signals, None).await;
            return ending(closed, Some(refusal), &[]);
        }
    };
    say!("{}", describe(&grant));
    let hold_end = match args.hold {
        Hold::Forever => {
            say!("holding until Ctrl-C");
            None
        }
        Hold::For(duration) => {
            say!(
                "holding for {} (Ctrl-C checks in earlier)",
                format_duration(duration)
            );
            Some(tokio::time::Instant::now() + duration)
        }
    };
    let hold = async {
        match hold_end {
            Some(end) => tokio::time::sleep_until(end).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(hold);
    let mut stop = None;
    loop {
        tokio::select! {
            _ = &mut hold => break,
            signal = signals.recv() => {
                say!("stopped by {}: checking in", signal.name());
                stop = Some(signal);
                break;
            }
            event = events.recv() => match event {
                Ok(event) => print_event(&event),
                Err(RecvError::Lagged(missed)) => say!("({missed} session events missed)"),
                Err(RecvError::Closed) => break,
            },
        }
    }
    let held = session.grants().await.unwrap_or_default();
    let closed = close(session, &mut signals, stop).await;
    ending(closed, None, &held)
}

/// How closing the session went.
struct Closed {
    /// The first signal received, before or while closing.
    stop: Option<Stop>,
    /// Whether every grant was checked in, and if not, why.
    result: Result<(), CloseError>,
}

enum CloseError {
    /// A check-in failed.
    Client(ClientError),
    /// The session did not close within [`CHECKIN_ON_EXIT_TIMEOUT`].
    TimedOut,
    /// A second signal ended the wait.
    Abandoned(Stop),
}

/// Closes the session: waits for a check-out in flight and checks every grant
/// in, within [`CHECKIN_ON_EXIT_TIMEOUT`]. A first signal while it runs lets
/// it finish (and decides the exit code); a second one ends the wait at once.
/// Either way the session stops heartbeating, so whatever is not checked in
/// is freed by the cluster when the session's TTL runs out.
async fn close(session: Session, signals: &mut Signals, mut stop: Option<Stop>) -> Closed {
    let closing = tokio::time::timeout(CHECKIN_ON_EXIT_TIMEOUT, session.close());
    tokio::pin!(closing);
    loop {
        tokio::select! {
            closed = &mut closing => {
                let result = match closed {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(CloseError::Client(error)),
                    Err(_) => Err(CloseError::TimedOut),
                };
                return Closed { stop, result };
            }
            signal = signals.recv() => match stop {
                Some(_) => {
                    return Closed {
                        stop,
                        result: Err(CloseError::Abandoned(signal)),
                    };
                }
                None => {
                    say!(
                        "{} received: checking in first (another signal exits at once)",
                        signal.name()
                    );
                    stop = Some(signal);
                }
            },
        }
    }
}

/// The command's outcome once the session is closed: the first signal decides
/// the exit code (130, 143, 129), else a refusal of the check-out, else how
/// the check-in went. `held` are the grants known before closing, reported
/// as checked in.
fn ending(closed: Closed, refusal: Option<Failure>, held: &[Grant]) -> Result<(), Failure> {
    let left = match &closed.result {
        Ok(()) => {
            for grant in held {
                say!(
                    "checked in {} seat(s) of \"{}\" (grant {})",
                    grant.count,
                    grant.feature,
                    grant.token
                );
            }
            None
        }
        Err(CloseError::Client(error)) => Some(format!("a check-in failed ({error})")),
        Err(CloseError::TimedOut) => Some(format!(
            "the check-in was not confirmed within {}",
            format_duration(CHECKIN_ON_EXIT_TIMEOUT)
        )),
        Err(CloseError::Abandoned(signal)) => {
            Some(format!("{} during the check-in ended it", signal.name()))
        }
    };
    let left = left.map(|why| {
        format!("{why}; the cluster frees any seat still held when the session's TTL runs out")
    });
    if let Some(stop) = closed.stop {
        let message = match left {
            None => format!("stopped by {}", stop.name()),
            Some(left) => format!("stopped by {}, but {left}", stop.name()),
        };
        return Err(Failure {
            code: stop.exit_code(),
            message,
        });
    }
    match (refusal, closed.result) {
        (Some(refusal), Ok(())) => Err(refusal),
        (Some(refusal), Err(_)) => Err(Failure {
            code: refusal.code,
            message: format!("{}, and {}", refusal.message, left.unwrap_or_default()),
        }),
        (None, Ok(())) => Ok(()),
        (None, Err(CloseError::Client(error))) => Err(failure(error)),
        (None, Err(_)) => Err(Failure::unreachable(left.unwrap_or_default())),
    }
}

fn print_event(event: &SessionEvent) {
    match event {
        SessionEvent::Connected { .. } => {}
        SessionEvent::FailedOver { from, to, term } if from == to => {
            say!("failed over: a new active node serves {to} (term {term}); grants kept")
        }
        SessionEvent::FailedOver { from, to, term } => {
            say!("failed over: {from} -> {to} (term {term}); grants kept")
        }
        SessionEvent::EnteredCaching { grace_until, .. } => say!(
            "cluster unreachable: caching mode, grants valid until {}",
            format_time(*grace_until)
        ),
        SessionEvent::LeftCaching {
            cached_for,
            address,
            term,
        } => say!(
            "cluster answered again after {} ({address}, term {term}): left caching mode",
            format_duration(*cached_for)
        ),
        SessionEvent::GraceExpired { .. } => {
            say!("grace period over: the grant is no longer valid")
        }
        SessionEvent::GrantLost {
            token,
            feature,
            count,
        } => {
            say!(
                "grant {token} ({count} seat(s) of \"{feature}\") was lost: the cluster expired the session"
            )
        }
        SessionEvent::GrantRemoved {
            token,
            feature,
            count,
            by,
            at,
        } => {
            say!(
                "grant {token} ({count} seat(s) of \"{feature}\") was removed by {by} at {}: its seats are free, and it is not checked out again",
                format_time(*at)
            )
        }
        SessionEvent::SessionRestarted { old, new } => {
            say!("session {old} expired; continuing as session {new}")
        }
        SessionEvent::GrantRecovered { lost, grant } => {
            say!("grant {lost} replaced: {}", describe(grant))
        }
        SessionEvent::GrantNotRecovered { lost, reason, .. } => {
            say!("grant {lost} could not be checked out again: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --hold accepts forever, unit durations alone or combined, and bare seconds, and rejects the rest with a sentence.
    #[test]
    fn hold_durations() {
        assert_eq!(parse_hold("forever"), Ok(Hold::Forever));
        assert_eq!(parse_hold("FOREVER"), Ok(Hold::Forever));
        assert_eq!(parse_hold("30s"), Ok(Hold::For(Duration::from_secs(30))));
        assert_eq!(parse_hold("5m"), Ok(Hold::For(Duration::from_secs(300))));
        assert_eq!(parse_hold("2h"), Ok(Hold::For(Duration::from_secs(7200))));
        assert_eq!(parse_hold("1d"), Ok(Hold::For(Duration::from_secs(86_400))));
        assert_eq!(
            parse_hold("250ms"),
            Ok(Hold::For(Duration::from_millis(250)))
        );
        assert_eq!(
            parse_hold("1h30m"),
            Ok(Hold::For(Duration::from_secs(5400)))
        );
        assert_eq!(parse_hold("0s"), Ok(Hold::For(Duration::ZERO)));
        // A bare number is seconds (the grammar raftlm-chaos --duration took).
        assert_eq!(parse_hold("10"), Ok(Hold::For(Duration::from_secs(10))));
        let bad = |text: &str| {
            format!("\"{text}\" is not a duration: write e.g. 30s, 5m, 2h, 1h30m or forever")
        };
        for text in [
            "",
            "s",
            "5 m",
            "-5s",
            "1.5h",
            "5x",
            "5sec",
            "forever5s",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_hold(text), Err(bad(text)), "{text:?}");
        }
        assert_eq!(
            parse_hold("36600d"),
            Err("\"36600d\" is longer than 100 years; use forever".to_string())
        );
        assert_eq!(
            parse_hold("18446744073709551615d"),
            Err(bad("18446744073709551615d"))
        );
    }
}
