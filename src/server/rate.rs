//! A per-source-address rate limit: one token bucket per address.
//!
//! Used for check-outs from sessions the state does not hold
//! (`limits.unheld_writes_per_address_per_s`): such a request is proposed,
//! and when it is denied its answer is all it writes — a log entry on every
//! node and a place in the state's ring of remembered answers — with no
//! session that the sessions-per-address limit would count. The active node
//! takes a token before it proposes one and gives it back when the request
//! created a session (a grant), so only the requests that end with nothing
//! held are paid for.
//!
//! IPv6 sources are keyed by their /64 prefix: one host is handed a whole
//! /64 and can send from any address in it. The table of buckets is bounded
//! ([`RATE_ADDRESSES_MAX`]); full buckets are dropped first (they are the
//! same as no bucket), and when every tracked address is still paying, new
//! addresses are refused until one refills: under a flood from that many
//! addresses the limit fails closed rather than growing without bound. A
//! full table is scanned at most once per [`RATE_PRUNE_INTERVAL_MS`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::lease::boottime_ms;

/// Most addresses whose buckets are tracked at once.
pub const RATE_ADDRESSES_MAX: usize = 65_536;

/// Least time between two scans of a full table for buckets to drop: one
/// scan costs a pass over [`RATE_ADDRESSES_MAX`] buckets, so a flood from
/// ever new addresses gets at most one a second, not one per request.
pub const RATE_PRUNE_INTERVAL_MS: u64 = 1_000;

/// How many seconds of the rate one address may spend at once (the bucket's
/// size): a burst of application starts behind one NAT address, all denied
/// because every seat is taken, passes; a sustained flood does not.
pub const RATE_BURST_S: u64 = 5;

/// One bucket per source address.
pub struct AddressRate {
    /// Tokens added per second; 0 turns the limit off.
    per_s: u64,
    // std Mutex: one look-up or insert, never held across `.await`.
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<IpAddr, Bucket>,
    /// Boot-time ms of the last scan for full buckets, if any.
    pruned_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in thousandths.
    milli: u64,
    /// Boot-time ms of the last refill.
    at_ms: u64,
}

impl AddressRate {
    /// A limit of `per_s` a second per address (0: no limit).
    pub fn new(per_s: u64) -> AddressRate {
        AddressRate {
            per_s,
            table: Mutex::default(),
        }
    }

    fn capacity_milli(&self) -> u64 {
        self.per_s.saturating_mul(RATE_BURST_S).saturating_mul(1000)
    }

    /// Takes a token for `address` at boot-time `now_ms`; `false` if it has
    /// none left. A request without an address (a local socket) is not
    /// limited.
    pub fn take_at(&self, address: Option<IpAddr>, now_ms: u64) -> bool {
        let (Some(address), true) = (address, self.per_s > 0) else {
            return true;
        };
        let key = key_of(address);
        let capacity = self.capacity_milli();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !table.buckets.contains_key(&key) && table.buckets.len() >= RATE_ADDRESSES_MAX {
            let due = table
                .pruned_at_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= RATE_PRUNE_INTERVAL_MS);
            if !due {
                return false;
            }
            table.pruned_at_ms = Some(now_ms);
            let per_s = self.per_s;
            table
                .buckets
                .retain(|_, b| refilled(*b, per_s, capacity, now_ms).milli < capacity);
            if table.buckets.len() >= RATE_ADDRESSES_MAX {
                return false;
            }
        }
        let bucket = table.buckets.entry(key).or_insert(Bucket {
            milli: capacity,
            at_ms: now_ms,
        });
        *bucket = refilled(*bucket, self.per_s, capacity, now_ms);
        if bucket.milli < 1000 {
            return false;
        }
        bucket.milli -= 1000;
        true
    }

    /// [`AddressRate::take_at`] now.
    pub fn take(&self, address: Option<IpAddr>) -> bool {
        self.take_at(address, boottime_ms())
    }

    /// Gives back a token taken for `address` (the request turned out not to
    /// need it).
    pub fn give_back(&self, address: Option<IpAddr>) {
        let Some(address) = address else {
            return;
        };
        let capacity = self.capacity_milli();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = table.buckets.get_mut(&key_of(address)) {
            bucket.milli = (bucket.milli + 1000).min(capacity);
        }
    }

    /// The limit, per second (0: none).
    pub fn per_s(&self) -> u64 {
        self.per_s
    }
}

fn refilled(bucket: Bucket, per_s: u64, capacity: u64, now_ms: u64) -> Bucket {
    let elapsed = now_ms.saturating_sub(bucket.at_ms);
    Bucket {
        milli: bucket
            .milli
            .saturating_add(elapsed.saturating_mul(per_s))
            .min(capacity),
        at_ms: now_ms.max(bucket.at_ms),
    }
}

/// The key an address is limited under: itself, or its /64 for IPv6.
fn key_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    // A burst of RATE_BURST_S seconds' worth passes, then one a second per
    // unit of rate; another address has its own bucket; tokens given back
    // can be spent again.
    #[test]
    fn a_burst_then_the_rate() {
        let rate = AddressRate::new(2);
        let a = ip("10.0.0.1");
        for _ in 0..2 * RATE_BURST_S {
            assert!(rate.take_at(a, 1_000));
        }
        assert!(!rate.take_at(a, 1_000));
        assert!(rate.take_at(ip("10.0.0.2"), 1_000));
        assert!(!rate.take_at(a, 1_400));
        assert!(rate.take_at(a, 1_500));
        assert!(!rate.take_at(a, 1_500));
        rate.give_back(a);
        assert!(rate.take_at(a, 1_500));
        assert!(rate.take_at(None, 1_500), "no address, no limit");
        assert!(AddressRate::new(0).take_at(a, 0), "0 turns it off");
    }

    // Every address of one /64 shares a bucket; an IPv4-mapped address is
    // its IPv4 address.
    #[test]
    fn ipv6_is_limited_per_64() {
        let rate = AddressRate::new(1);
        for n in 0..RATE_BURST_S {
            assert!(rate.take_at(ip(&format!("2001:db8:1:2::{n:x}")), 0));
        }
        assert!(!rate.take_at(ip("2001:db8:1:2:ffff::1"), 0));
        assert!(rate.take_at(ip("2001:db8:1:3::1"), 0));
        assert_eq!(
            key_of("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    // The table stays bounded: full buckets make room; when every tracked
    // address is paying, a new one is refused, and a full table is scanned at
    // most once per RATE_PRUNE_INTERVAL_MS.
    #[test]
    fn the_table_is_bounded() {
        // Two a second: a bucket that spent one token is full again within a
        // second.
        let rate = AddressRate::new(2);
        let v4 = |n: u32| Some(IpAddr::V4(n.into()));
        for n in 0..RATE_ADDRESSES_MAX as u32 {
            assert!(rate.take_at(v4(n), 0));
        }
        assert!(!rate.take_at(v4(u32::MAX), 0), "every bucket is paying");
        // Refilled by now, but the last scan was under a second ago: refused
        // without scanning again.
        assert!(!rate.take_at(v4(u32::MAX), RATE_PRUNE_INTERVAL_MS - 1));
        assert_eq!(rate.table.lock().unwrap().buckets.len(), RATE_ADDRESSES_MAX);
        // A second after the last scan the full buckets are dropped to make room.
        assert!(rate.take_at(v4(u32::MAX), RATE_PRUNE_INTERVAL_MS));
        assert_eq!(rate.table.lock().unwrap().buckets.len(), 1);
    }
}
