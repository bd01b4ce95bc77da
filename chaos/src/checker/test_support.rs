//! Builders and helpers for the checker's unit tests: histories written
//! tersely (times in ms), seen grants, and a verdict's results by name.

pub(super) use std::collections::BTreeMap;

pub(super) use super::check;
pub(super) use super::model::*;
pub(super) use crate::history::{Event, EventType, GrantSeen, OpKind, Token};

pub(super) const TTL_US: u64 = 10_000_000;

/// Builds histories tersely: times in ms.
pub(super) struct Builder {
    pub(super) events: Vec<Event>,
    pub(super) next_id: u64,
}

pub(super) fn token(term: u64, index: u64) -> Token {
    Token {
        term,
        index,
        slot: 0,
    }
}

pub(super) fn session(n: u64) -> String {
    crate::history::session_hex(n)
}

impl Builder {
    pub(super) fn new() -> Builder {
        // Ids below 1000 are free for tests that pick them by hand.
        Builder {
            events: Vec::new(),
            next_id: 1000,
        }
    }

    pub(super) fn push(&mut self, at_ms: u64, mut event: Event) {
        event.time_us = at_ms * 1000;
        self.events.push(event);
    }

    pub(super) fn base(&self, kind: EventType, op: OpKind, id: u64, s: u64, attempt: u32) -> Event {
        let mut e = Event::new(&format!("s{s}"), kind, op, id);
        e.session = Some(session(s));
        e.attempt = Some(attempt);
        e
    }

    /// One attempt of a check-out; `result` None means unknown.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn checkout_attempt(
        &mut self,
        id: u64,
        attempt: u32,
        s: u64,
        feature: &str,
        count: u32,
        from_ms: u64,
        to_ms: u64,
        result: Option<(u64, Option<Token>)>,
    ) {
        let mut invoke = self.base(EventType::Invoke, OpKind::Checkout, id, s, attempt);
        invoke.seq = Some(id);
        invoke.feature = Some(feature.into());
        invoke.count = Some(count);
        self.push(from_ms, invoke);
        let kind = match result {
            Some((_, Some(_))) => EventType::Ok,
            Some((_, None)) => EventType::Fail,
            None => EventType::Unknown,
        };
        let mut done = self.base(kind, OpKind::Checkout, id, s, attempt);
        done.seq = Some(id);
        if let Some((term, t)) = result {
            done.term = Some(term);
            done.token = t;
            if t.is_none() {
                done.detail = Some("in-use".into());
            }
        }
        self.push(to_ms, done);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn checkout(
        &mut self,
        s: u64,
        feature: &str,
        count: u32,
        from_ms: u64,
        to_ms: u64,
        term: u64,
        t: Token,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.checkout_attempt(
            id,
            1,
            s,
            feature,
            count,
            from_ms,
            to_ms,
            Some((term, Some(t))),
        );
        id
    }

    pub(super) fn renew(
        &mut self,
        s: u64,
        from_ms: u64,
        to_ms: u64,
        term: u64,
        unknown: Vec<Token>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        // Quoting (as held) what it is answered unknown, as a real renewal would.
        let mut invoke = self.base(EventType::Invoke, OpKind::Renew, id, s, 1);
        invoke.tokens = unknown.clone();
        self.push(from_ms, invoke);
        let mut done = self.base(EventType::Ok, OpKind::Renew, id, s, 1);
        done.term = Some(term);
        done.unknown_tokens = unknown;
        self.push(to_ms, done);
    }

    pub(super) fn checkin(
        &mut self,
        s: u64,
        t: Token,
        from_ms: u64,
        to_ms: u64,
        term: u64,
        ok: bool,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let mut invoke = self.base(EventType::Invoke, OpKind::Checkin, id, s, 1);
        invoke.token = Some(t);
        self.push(from_ms, invoke);
        let kind = if ok { EventType::Ok } else { EventType::Fail };
        let mut done = self.base(kind, OpKind::Checkin, id, s, 1);
        done.term = Some(term);
        self.push(to_ms, done);
    }

    pub(super) fn read(&mut self, from_ms: u64, to_ms: u64, term: u64, grants: Vec<GrantSeen>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut invoke = Event::new("harness", EventType::Invoke, OpKind::Read, id);
        invoke.attempt = Some(1);
        self.push(from_ms, invoke);
        let mut done = Event::new("harness", EventType::Ok, OpKind::Read, id);
        done.attempt = Some(1);
        done.term = Some(term);
        done.grants = Some(grants);
        self.push(to_ms, done);
    }

    pub(super) fn fault(&mut self, at_ms: u64, kind: &str) {
        let mut e = Event::new("nemesis", EventType::Info, OpKind::Nemesis, 0);
        e.fault = Some(kind.into());
        e.detail = Some(format!("start {kind}"));
        self.push(at_ms, e);
    }

    pub(super) fn check(&mut self, licensed: &[(&str, u32)]) -> Verdict {
        self.events.sort_by_key(|e| e.time_us);
        let input = CheckInput {
            licensed: licensed.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
            session_ttl_us: TTL_US,
            replicas: Vec::new(),
            replicas_read_us: 0,
            ..CheckInput::default()
        };
        check(&self.events, &input)
    }
}

pub(super) fn seen(t: Token, s: u64, feature: &str, count: u32) -> GrantSeen {
    GrantSeen {
        token: t,
        session: session(s),
        feature: feature.into(),
        count,
    }
}

pub(super) fn result<'a>(verdict: &'a Verdict, name: &str) -> &'a InvariantResult {
    verdict.invariants.iter().find(|i| i.name == name).unwrap()
}

pub(super) fn failing(verdict: &Verdict) -> Vec<&str> {
    verdict
        .invariants
        .iter()
        .filter(|i| !i.passed)
        .map(|i| i.name.as_str())
        .collect()
}

/// An answered Status read whose node had served for `serving_ms`.
pub(super) fn spell_read(
    h: &mut Builder,
    from_ms: u64,
    to_ms: u64,
    serving_ms: u64,
    grants: Vec<GrantSeen>,
) {
    h.read(from_ms, to_ms, 3, grants);
    h.events.last_mut().unwrap().serving_for_ms = Some(serving_ms);
}
