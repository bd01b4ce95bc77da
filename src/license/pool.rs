//! Which imported license lines count, and the seats of a vendor's feature.
//!
//! Seats belong to a vendor's feature: lines are pooled per
//! `(vendor, feature)`, and lines of one vendor never serve another's. Within
//! a pool, FlexNet's rules decide which lines count (docs/license-format.md,
//! "Which lines count"):
//!
//! 1. **The same signed content counts once.** Two lines with the same
//!    content — keyword, feature, vendor, version, expiry, seats and
//!    attributes, everything the signature covers — are one grant of seats,
//!    however often they are imported and whichever key signed them. The first
//!    in (license name, line) order counts; the others are duplicates of it.
//! 2. **FEATURE lines do not add up.** Of a pool's FEATURE lines, the newest
//!    issuance counts — by `ISSUED=` date, then by the vendor's serial `SN=`
//!    (numerically when both are numbers) — and supersedes the others: a
//!    renewal replaces the file it renews, whether the old file is removed or
//!    not.
//! 3. **INCREMENT lines add when their serials differ.** INCREMENT lines with
//!    the same `SN=` are issuances of one purchase: the newest counts. Lines
//!    without `SN=` differ by content (rule 1 already merged identical ones).
//!
//! A request for version V is served by counted lines of version ≥ V
//! ([`Version`]: dotted numbers, trailing zeros ignored). Because the lines a
//! request may use grow with a lower V, a set of grants fits the lines exactly
//! when, for every version t requested, the seats granted for versions ≥ t are
//! at most the seats of lines of version ≥ t (Hall's condition for nested
//! sets); [`Pool::shortfall`] checks that.
//!
//! Ties on every ordering key are broken by the content itself, so every
//! replica picks the same lines.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::feature::{DAY_MS, Date, Expiry, FeatureLine, LineKind};
use super::host::HostReport;

/// A version as compared: its dot-separated parts as numbers (a part that is
/// not a number counts as 0), trailing zeros dropped, so `2` equals `2.0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(Vec<u64>);

impl Version {
    /// Parses `2.0`, `10.3.1`; the empty string is the lowest version (any).
    pub fn parse(text: &str) -> Version {
        let mut parts: Vec<u64> = if text.is_empty() {
            Vec::new()
        } else {
            text.split('.').map(|p| p.parse().unwrap_or(0)).collect()
        };
        while parts.last() == Some(&0) {
            parts.pop();
        }
        Version(parts)
    }

    /// The lowest version: what a request without a version asks for.
    pub fn any() -> Version {
        Version(Vec::new())
    }
}

/// The pool a line belongs to: `(vendor, feature)`.
pub type PoolKey = (String, String);

/// One counted line of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolLine {
    /// Its version.
    pub version: Version,
    /// The version as written.
    pub version_text: String,
    /// When it stops granting.
    pub expiry: Expiry,
    /// Its seats.
    pub seats: u32,
    /// The line itself, signature included (what backs a grant).
    pub signed: FeatureLine,
}

/// When and where a line is judged: state time, and the host ids the
/// voters reported (`None`: host bindings are not judged, e.g. to tell
/// "expired" apart from "hosts not listed").
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// State time, ms since the epoch.
    pub ms: u64,
    /// The voters' host ids.
    pub hosts: Option<&'a HostReport>,
}

impl PoolLine {
    /// Whether the line grants seats at `at`: unexpired, and its host
    /// binding (if any) admitted by the voters' report.
    pub fn grants_at(&self, at: &At<'_>) -> bool {
        self.expiry.is_valid_at(at.ms) && at.hosts.is_none_or(|h| h.admits(&self.signed.host_ids))
    }
}

/// The counted lines of one vendor's feature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Counted lines, in (license, line) order.
    pub lines: Vec<PoolLine>,
}

impl Pool {
    /// Seats of lines of version ≥ `min`; when `at` is given, of the lines
    /// that grant at `at` only ([`PoolLine::grants_at`]).
    pub fn supply(&self, min: &Version, at: Option<&At<'_>>) -> u32 {
        self.lines
            .iter()
            .filter(|l| l.version >= *min)
            .filter(|l| at.is_none_or(|at| l.grants_at(at)))
            .fold(0u32, |sum, l| sum.saturating_add(l.seats))
    }

    /// The counted lines of version ≥ `min`: what backs a grant of that version.
    pub fn backing(&self, min: &Version) -> Vec<&FeatureLine> {
        self.lines
            .iter()
            .filter(|l| l.version >= *min)
            .map(|l| &l.signed)
            .collect()
    }

    /// Whether `demand` (seats in use by requested version) fits the lines:
    /// `None` if it does, else the first version where it does not, with the
    /// seats in use and licensed for versions ≥ it.
    pub fn shortfall(
        &self,
        demand: &BTreeMap<Version, u32>,
        at: Option<&At<'_>>,
    ) -> Option<(Version, u32, u32)> {
        demand.keys().find_map(|t| {
            let used = demand_from(demand, t);
            let licensed = self.supply(t, at);
            (used > licensed).then(|| (t.clone(), used, licensed))
        })
    }

    /// Seats still free for a new request of version `want`, given `demand`,
    /// counting only lines that grant at `at`: the smallest slack over
    /// every version ≤ `want` that is requested (and `want` itself).
    pub fn available(&self, demand: &BTreeMap<Version, u32>, want: &Version, at: &At<'_>) -> u32 {
        demand
            .keys()
            .filter(|t| *t <= want)
            .chain(std::iter::once(want))
            .map(|t| {
                self.supply(t, Some(at))
                    .saturating_sub(demand_from(demand, t))
            })
            .min()
            .unwrap_or(0)
    }
}

/// Seats in use for versions ≥ `t`.
fn demand_from(demand: &BTreeMap<Version, u32>, t: &Version) -> u32 {
    demand
        .range(t.clone()..)
        .fold(0u32, |sum, (_, n)| sum.saturating_add(*n))
}

/// Why a line counts or does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The line's seats count.
    Counts,
    /// The same signed content is imported earlier (license, line).
    Duplicate {
        /// The license holding the line that counts.
        license: String,
        /// Its line.
        line: u32,
    },
    /// A newer issuance replaces it (license, line).
    Superseded {
        /// The license holding the newer line.
        license: String,
        /// Its line.
        line: u32,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Counts => f.write_str("counts"),
            Verdict::Duplicate { license, line } => {
                write!(
                    f,
                    "duplicate of {license}:{line} (the same signed content counts once)"
                )
            }
            Verdict::Superseded { license, line } => {
                write!(f, "superseded by the newer issuance {license}:{line}")
            }
        }
    }
}

/// The outcome of [`evaluate`]: the pools, and a verdict for every line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Counted lines per `(vendor, feature)`.
    pub pools: BTreeMap<PoolKey, Pool>,
    /// A verdict per `(license, index of the line in it)`.
    pub verdicts: BTreeMap<(String, usize), Verdict>,
}

/// The content a signature covers, for comparing lines.
type Content<'a> = (
    LineKind,
    &'a str,
    &'a str,
    &'a str,
    Expiry,
    u32,
    &'a [(String, String)],
);

fn content(line: &FeatureLine) -> Content<'_> {
    (
        line.kind,
        &line.feature,
        &line.vendor,
        &line.version,
        line.expiry,
        line.seats,
        &line.attributes,
    )
}

fn attribute<'a>(line: &'a FeatureLine, key: &str) -> Option<&'a str> {
    line.attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// The line's `ISSUED=` date, if it has a valid one.
pub fn issued(line: &FeatureLine) -> Option<Date> {
    attribute(line, "ISSUED").and_then(Date::parse)
}

/// How far a line's `ISSUED` date may be ahead of the cluster's time: one
/// day. A license date names no time zone; the vendor writes its own
/// calendar day, and the first places on Earth (UTC+14) start a day 14 hours
/// before UTC does, so a file issued today anywhere is at most a day ahead of
/// UTC. Anything further ahead is a mistake (a year typed wrong) or a file
/// meant to move the cluster's time, and is refused. The tolerance never moves
/// the cluster's time: only the active node's clock does
/// (docs/decisions/0016-license-dates-never-move-the-clusters-time.md).
pub const ISSUED_AHEAD_MAX_MS: u64 = DAY_MS;

/// The line's `ISSUED` date when it is further ahead of `now_ms` than
/// [`ISSUED_AHEAD_MAX_MS`].
pub fn issued_ahead(line: &FeatureLine, now_ms: u64) -> Option<Date> {
    issued(line).filter(|date| issued_too_far(*date, now_ms))
}

/// Whether a line issued on `date` is further ahead of `now_ms` than
/// [`ISSUED_AHEAD_MAX_MS`] allows.
pub fn issued_too_far(date: Date, now_ms: u64) -> bool {
    date.start_ms() > now_ms.saturating_add(ISSUED_AHEAD_MAX_MS)
}

/// The line's vendor serial `SN=`, if it has one.
pub fn serial(line: &FeatureLine) -> Option<&str> {
    attribute(line, "SN")
}

fn serial_cmp(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// Orders issuances: newer is greater (ISSUED, then SN, then content).
fn issuance_cmp(a: &FeatureLine, b: &FeatureLine) -> Ordering {
    issued(a)
        .cmp(&issued(b))
        .then_with(|| serial_cmp(serial(a), serial(b)))
        .then_with(|| Version::parse(&a.version).cmp(&Version::parse(&b.version)))
        .then_with(|| content(a).cmp(&content(b)))
}

/// Decides which lines of `licenses` count (see the module docs).
pub fn evaluate(licenses: &BTreeMap<String, Vec<FeatureLine>>) -> Evaluation {
    let mut verdicts = BTreeMap::new();
    // Rule 1: the first line of each content counts, the others are duplicates.
    let mut firsts: BTreeMap<Content<'_>, (&str, usize, &FeatureLine)> = BTreeMap::new();
    for (name, lines) in licenses {
        for (i, line) in lines.iter().enumerate() {
            match firsts.get(&content(line)) {
                Some((license, _, first)) => {
                    verdicts.insert(
                        (name.clone(), i),
                        Verdict::Duplicate {
                            license: license.to_string(),
                            line: first.line,
                        },
                    );
                }
                None => {
                    firsts.insert(content(line), (name.as_str(), i, line));
                }
            }
        }
    }
    // Rules 2 and 3: in each group, the newest issuance counts.
    type Group<'a> = (PoolKey, Option<String>);
    let mut groups: BTreeMap<Group<'_>, Vec<(&str, usize, &FeatureLine)>> = BTreeMap::new();
    for &(name, i, line) in firsts.values() {
        let pool = (line.vendor.clone(), line.feature.clone());
        let purchase = match line.kind {
            LineKind::Feature => None,
            // Without a serial, each distinct content is its own purchase.
            LineKind::Increment => Some(
                serial(line)
                    .map(|s| format!("SN {s}"))
                    .unwrap_or_else(|| format!("{name}:{i}")),
            ),
        };
        groups
            .entry((pool, purchase))
            .or_default()
            .push((name, i, line));
    }
    let mut counted: BTreeMap<PoolKey, Vec<(&str, usize, &FeatureLine)>> = BTreeMap::new();
    for ((pool, _), members) in groups {
        let Some(&(w_name, w_index, winner)) = members.iter().max_by(|a, b| issuance_cmp(a.2, b.2))
        else {
            continue;
        };
        for &(name, i, _) in &members {
            let verdict = if (name, i) == (w_name, w_index) {
                Verdict::Counts
            } else {
                Verdict::Superseded {
                    license: w_name.to_string(),
                    line: winner.line,
                }
            };
            verdicts.insert((name.to_string(), i), verdict);
        }
        counted
            .entry(pool)
            .or_default()
            .push((w_name, w_index, winner));
    }
    let pools = counted
        .into_iter()
        .map(|(key, mut lines)| {
            lines.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let lines = lines
                .into_iter()
                .map(|(_, _, l)| PoolLine {
                    version: Version::parse(&l.version),
                    version_text: l.version.clone(),
                    expiry: l.expiry,
                    seats: l.seats,
                    signed: l.clone(),
                })
                .collect();
            (key, Pool { lines })
        })
        .collect();
    Evaluation { pools, verdicts }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT0: At<'static> = At { ms: 0, hosts: None };

    fn line(
        kind: LineKind,
        vendor: &str,
        version: &str,
        seats: u32,
        attrs: &[(&str, &str)],
    ) -> FeatureLine {
        FeatureLine {
            kind,
            feature: "cad".into(),
            vendor: vendor.into(),
            version: version.into(),
            expiry: Expiry::Permanent,
            seats,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cluster_id: None,
            host_ids: Vec::new(),
            signature: format!("sig-{vendor}-{version}-{seats}-{attrs:?}"),
            line: 1,
        }
    }

    fn pools(licenses: &[(&str, Vec<FeatureLine>)]) -> Evaluation {
        evaluate(
            &licenses
                .iter()
                .map(|(n, l)| (n.to_string(), l.clone()))
                .collect(),
        )
    }

    fn seats(e: &Evaluation, vendor: &str) -> u32 {
        e.pools
            .get(&(vendor.to_string(), "cad".to_string()))
            .map_or(0, |p| p.supply(&Version::any(), None))
    }

    // Versions compare numerically, with trailing zeros ignored.
    #[test]
    fn versions_compare_numerically() {
        assert_eq!(Version::parse("2"), Version::parse("2.0"));
        assert!(Version::parse("10.0") > Version::parse("9.5"));
        assert!(Version::parse("2.0.1") > Version::parse("2"));
        assert!(Version::any() < Version::parse("0.1"));
    }

    // Two vendors' lines for a feature of the same name are separate pools.
    #[test]
    fn vendors_never_share_seats() {
        let e = pools(&[
            (
                "a.lic",
                vec![line(LineKind::Feature, "acme", "1.0", 10, &[])],
            ),
            (
                "b.lic",
                vec![line(LineKind::Feature, "beta", "1.0", 100, &[])],
            ),
        ]);
        assert_eq!(seats(&e, "acme"), 10);
        assert_eq!(seats(&e, "beta"), 100);
    }

    // A renewal (a newer FEATURE issuance) replaces the old file's line, larger or smaller.
    #[test]
    fn renewals_supersede() {
        let old = line(
            LineKind::Feature,
            "acme",
            "2.0",
            25,
            &[("ISSUED", "01-jan-2026")],
        );
        let renewed = line(
            LineKind::Feature,
            "acme",
            "2.0",
            10,
            &[("ISSUED", "01-jan-2027")],
        );
        let e = pools(&[("old.lic", vec![old]), ("new.lic", vec![renewed])]);
        assert_eq!(seats(&e, "acme"), 10);
        assert_eq!(
            e.verdicts[&("old.lic".to_string(), 0)],
            Verdict::Superseded {
                license: "new.lic".into(),
                line: 1
            }
        );
        assert_eq!(e.verdicts[&("new.lic".to_string(), 0)], Verdict::Counts);
    }

    // The same content counts once (re-signed or imported twice); INCREMENTs with distinct
    // serials add, the same serial's newest issuance counts.
    #[test]
    fn duplicates_once_increments_by_serial() {
        let mut resigned = line(LineKind::Increment, "acme", "1.0", 5, &[("SN", "1")]);
        resigned.signature = "another-key".into();
        let e = pools(&[
            (
                "a.lic",
                vec![
                    line(LineKind::Increment, "acme", "1.0", 5, &[("SN", "1")]),
                    line(LineKind::Increment, "acme", "1.0", 5, &[("SN", "2")]),
                ],
            ),
            ("b.lic", vec![resigned]),
        ]);
        assert_eq!(seats(&e, "acme"), 10);
        assert!(matches!(
            e.verdicts[&("b.lic".to_string(), 0)],
            Verdict::Duplicate { .. }
        ));
        let e = pools(&[(
            "a.lic",
            vec![
                line(
                    LineKind::Increment,
                    "acme",
                    "1.0",
                    5,
                    &[("SN", "7"), ("ISSUED", "01-jan-2026")],
                ),
                line(
                    LineKind::Increment,
                    "acme",
                    "1.0",
                    8,
                    &[("SN", "7"), ("ISSUED", "01-jun-2026")],
                ),
                line(LineKind::Feature, "acme", "1.0", 20, &[]),
            ],
        )]);
        assert_eq!(seats(&e, "acme"), 28);
    }

    // A request for version V is served by lines of version ≥ V only, and grants of a
    // low version may not take the seats a high-version request needs.
    #[test]
    fn version_rule_and_nested_demand() {
        let e = pools(&[(
            "a.lic",
            vec![
                line(LineKind::Increment, "acme", "1.0", 3, &[]),
                line(LineKind::Increment, "acme", "2.0", 2, &[]),
            ],
        )]);
        let pool = &e.pools[&("acme".to_string(), "cad".to_string())];
        let v1 = Version::parse("1");
        let v2 = Version::parse("2");
        let v3 = Version::parse("3");
        let none = BTreeMap::new();
        assert_eq!(pool.available(&none, &v2, &AT0), 2);
        assert_eq!(pool.available(&none, &v1, &AT0), 5);
        assert_eq!(pool.available(&none, &v3, &AT0), 0);
        // Two version-2 grants use both version-2 seats: version 1 still has 3.
        let demand = BTreeMap::from([(v2.clone(), 2)]);
        assert_eq!(pool.available(&demand, &v2, &AT0), 0);
        assert_eq!(pool.available(&demand, &v1, &AT0), 3);
        // Four version-1 grants: only one seat left, and it is a version-2 seat.
        let demand = BTreeMap::from([(v1.clone(), 4)]);
        assert_eq!(pool.available(&demand, &v2, &AT0), 1);
        assert_eq!(pool.shortfall(&demand, None), None);
        let over = BTreeMap::from([(v1.clone(), 4), (v2.clone(), 2)]);
        assert_eq!(pool.shortfall(&over, None), Some((v1, 6, 5)));
    }
}
