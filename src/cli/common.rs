//! Helpers every client subcommand shares: the runtime and logging they run
//! with (the logging `raftlm server` too), how a client error becomes an exit
//! code, and how durations and times are printed (durations are read by
//! [`crate::text::parse_duration`]).

use std::time::{Duration, SystemTime};

use crate::cli::Failure;
use crate::client::ClientError;

/// Formats a duration the way [`parse_duration`](crate::text::parse_duration) reads it, e.g. `1h30m`, `12s`, `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut secs = duration.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Formats a time as `22-nov-2026 10:00:00 UTC`.
pub fn format_time(time: SystemTime) -> String {
    format_time_ms(crate::clock::epoch_ms(time))
}

/// Formats milliseconds since the epoch as `22-nov-2026 10:00:00 UTC`.
pub fn format_time_ms(ms: u64) -> String {
    crate::license::feature::time_text(ms)
}

/// Maps a client error to the command's failure (exit 1, 2 or 3).
pub fn failure(error: ClientError) -> Failure {
    match error {
        ClientError::Unreachable { ref last, .. } => {
            let hint = if last.contains("invalid peer certificate") {
                " (the cluster's certificate is not trusted: set RAFTLM_CA to the cluster CA's certificate, ca.crt)"
            } else {
                ""
            };
            Failure::unreachable(format!("{error}{hint}"))
        }
        // A node answered, but not with what was asked for: the request was not served.
        ClientError::Denied { .. }
        | ClientError::Refused(_)
        | ClientError::SessionExpired
        | ClientError::StaleRequest
        | ClientError::Server { .. }
        | ClientError::Protocol { .. } => Failure::refused(error.to_string()),
        ClientError::SessionClosed => Failure::unreachable(error.to_string()),
        ClientError::UntrustedLicense { .. } => Failure::refused(error.to_string()),
    }
}

/// Builds the runtime the client commands run on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))
}

/// What a client command logs unless `RAFTLM_LOG` says otherwise: the
/// client library's errors.
pub const CLIENT_LOG_DEFAULT: &str = "error";

/// Logs to stderr, for a node (`raftlm server`) and the client commands
/// alike. The filter comes from `RAFTLM_LOG`, else `default_filter`. Colour
/// only on a terminal, and not when `NO_COLOR` is set (to anything but "").
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTLM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = !no_color && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse_duration;

    // Durations print in the form --hold reads.
    #[test]
    fn durations_print_as_parsed() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
        for text in ["250ms", "12s", "1h30m", "1d1h1m1s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    // Refusals exit 1, an unreachable cluster exits 3.
    #[test]
    fn exit_codes() {
        let denied = ClientError::Denied {
            feature: "cad".into(),
            reason: crate::client::DenyReason::ExceedsLicensed,
            available: 3,
            total: 3,
            message: "5 seats of \"cad\" asked for, but only 3 are licensed".into(),
        };
        assert_eq!(
            failure(denied),
            Failure::refused("5 seats of \"cad\" asked for, but only 3 are licensed")
        );
        let unreachable = ClientError::Unreachable {
            tried: vec!["h1:1".into()],
            last: "h1:1: refused".into(),
        };
        assert_eq!(failure(unreachable).code, crate::cli::EXIT_UNREACHABLE);
    }
}
