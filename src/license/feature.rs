//! One licensed feature line, as it is held in the replicated state.
//!
//! A `FEATURE` or `INCREMENT` line of a license file becomes a [`FeatureLine`]
//! once it has been parsed, its signature checked and its binding to the
//! cluster name confirmed. The state machine never re-checks signatures: it
//! only counts seats, so this type is plain data.
//!
//! Dates are whole days since 1970-01-01 (UTC), written `dd-mmm-yyyy` in files
//! (`31-dec-2027`). A line is valid *through* its expiry day: it stops granting
//! at the first millisecond of the following day, UTC.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::host::HostId;
use super::identity::ClusterId;

/// Milliseconds in one day.
pub const DAY_MS: u64 = 86_400_000;

/// Whether a line creates a feature or adds seats to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LineKind {
    /// `FEATURE`: the first line for a feature in a file.
    Feature,
    /// `INCREMENT`: adds its count to the feature's seats.
    Increment,
}

impl LineKind {
    /// The keyword as written in a license file.
    pub fn keyword(self) -> &'static str {
        match self {
            LineKind::Feature => "FEATURE",
            LineKind::Increment => "INCREMENT",
        }
    }
}

/// A calendar date, stored as days since 1970-01-01 (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    /// Days since 1970-01-01.
    pub days: i64,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

impl Date {
    /// The date of a year, month (1–12) and day (1–31), if it exists.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date {
            days: days_from_civil(year, month, day),
        })
    }

    /// Parses `dd-mmm-yyyy` (month name in any case, e.g. `31-dec-2027`).
    pub fn parse(text: &str) -> Option<Date> {
        Date::parse_checked(text).ok()
    }

    /// Parses `dd-mmm-yyyy` like [`Date::parse`], telling a text that is not
    /// in that form apart from one that is but names a day that does not
    /// exist (`31-feb-2027`, `00-jan-2027`).
    pub fn parse_checked(text: &str) -> Result<Date, DateError> {
        let mut parts = text.split('-');
        let (Some(d), Some(m), Some(y), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DateError::Format);
        };
        if d.is_empty() || d.len() > 2 || y.len() != 4 {
            return Err(DateError::Format);
        }
        if !d.bytes().all(|b| b.is_ascii_digit()) || !y.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DateError::Format);
        }
        let (Ok(day), Ok(year)) = (d.parse::<u32>(), y.parse::<i64>()) else {
            return Err(DateError::Format);
        };
        let month = MONTHS
            .iter()
            .position(|name| name.eq_ignore_ascii_case(m))
            .map(|i| i as u32 + 1)
            .ok_or(DateError::Format)?;
        Date::from_ymd(year, month, day).ok_or(DateError::NoSuchDay {
            day,
            month,
            year,
            days: days_in_month(year, month),
        })
    }

    /// The date that contains the instant `ms` (milliseconds since the epoch, UTC).
    pub fn from_unix_ms(ms: u64) -> Date {
        Date {
            days: (ms / DAY_MS) as i64,
        }
    }

    /// The first millisecond of this day (UTC), or 0 for days before 1970.
    pub fn start_ms(self) -> u64 {
        if self.days <= 0 {
            0
        } else {
            (self.days as u64).saturating_mul(DAY_MS)
        }
    }

    /// The year, month (1–12) and day of this date.
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.days)
    }
}

/// A moment as raftlm's messages write it: `07-dec-2026 03:20:05 UTC`.
pub fn time_text(ms: u64) -> String {
    let seconds_of_day = (ms / 1000) % 86_400;
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        Date::from_unix_ms(ms),
        seconds_of_day / 3600,
        (seconds_of_day / 60) % 60,
        seconds_of_day % 60
    )
}

impl fmt::Display for Date {
    /// Formats as a license file writes dates: `31-dec-2027`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{:02}-{}-{:04}", d, MONTHS[(m - 1) as usize], y)
    }
}

/// Why a text is not a date (see [`Date::parse_checked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateError {
    /// Not of the form `dd-mmm-yyyy`.
    Format,
    /// Of that form, but the month has no such day (`31-feb-2027`, `00-jan-2027`).
    NoSuchDay {
        /// The day as written.
        day: u32,
        /// The month, 1–12.
        month: u32,
        /// The year.
        year: i64,
        /// The days that month has.
        days: u32,
    },
}

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl fmt::Display for DateError {
    /// Why the day does not exist: `February 2027 has 28 days`, or
    /// `days start at 1`; for [`DateError::Format`], the expected form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DateError::Format => f.write_str("expected dd-mmm-yyyy"),
            DateError::NoSuchDay { day: 0, .. } => f.write_str("days start at 1"),
            DateError::NoSuchDay {
                month, year, days, ..
            } => write!(
                f,
                "{} {year} has {days} days",
                MONTH_NAMES[(month - 1) as usize]
            ),
        }
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-calendar algorithms (public domain), proleptic Gregorian.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// When a line stops granting seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Expiry {
    /// `permanent`: never expires.
    Permanent,
    /// Valid through the end of this day (UTC).
    On(Date),
}

impl Expiry {
    /// Whether the line still grants seats at `now_ms` (ms since the epoch, UTC).
    pub fn is_valid_at(self, now_ms: u64) -> bool {
        match self {
            Expiry::Permanent => true,
            Expiry::On(date) => {
                now_ms
                    < Date {
                        days: date.days + 1,
                    }
                    .start_ms()
            }
        }
    }
}

impl Expiry {
    /// Parses `permanent` or `dd-mmm-yyyy`, as [`Display`](fmt::Display) writes it.
    pub fn parse(text: &str) -> Option<Expiry> {
        if text.eq_ignore_ascii_case("permanent") {
            Some(Expiry::Permanent)
        } else {
            Date::parse(text).map(Expiry::On)
        }
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expiry::Permanent => f.write_str("permanent"),
            Expiry::On(date) => date.fmt(f),
        }
    }
}

/// A verified `FEATURE` or `INCREMENT` line: what the vendor licensed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeatureLine {
    /// `FEATURE` or `INCREMENT`.
    pub kind: LineKind,
    /// The feature (licensed product) name, e.g. `cad`.
    pub feature: String,
    /// The vendor that issued it, e.g. `acme`.
    pub vendor: String,
    /// The licensed version, as written (e.g. `2.0`).
    pub version: String,
    /// When the line stops granting.
    pub expiry: Expiry,
    /// Seats this line licenses.
    pub seats: u32,
    /// Optional `KEY=value` attributes other than `SIGN`, in file order.
    pub attributes: Vec<(String, String)>,
    /// The cluster identity the line's file is bound to (`SERVER … ID=…`),
    /// covered by the signature; `None`: bound to the cluster name only.
    pub cluster_id: Option<ClusterId>,
    /// The host ids the line's file is bound to (`SERVER … HOSTIDS=…`),
    /// covered by the signature; empty: not bound to machines. The line
    /// counts only while a majority of the voters report one of them
    /// ([`crate::license::host::HostReport::admits`]).
    pub host_ids: Vec<HostId>,
    /// The signature as written in the file (`ed25519:<base64>`). Two lines
    /// with the same signature are the same grant of seats and count once.
    pub signature: String,
    /// The 1-based line in the source file, for messages.
    pub line: u32,
}
