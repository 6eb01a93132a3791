//! The bounded buffer of linked records and their export: batches by size and age, one export
//! call at a time from the root context, failures retried with exponential backoff. Pure: the
//! root's tick drives it through the [`Outbound`] port.

use std::collections::VecDeque;

use super::chain::{checkpoint, Linked};
use super::config::{OtlpSettings, SigningKey};
use super::entry::export_body;
use crate::ports::{Call, CallReply, Event, Events, HttpCall, Outbound};

/// The first retry waits this long; each failure doubles it up to `retry_max_backoff_ms`.
const FIRST_BACKOFF_MS: u64 = 250;

#[derive(Debug)]
struct Queued {
    seq: u64,
    hash: [u8; 32],
    json: String,
    queued_ms: i64,
}

/// The export call under way: its token and how many records from the front it carries.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    token: u32,
    records: usize,
}

#[derive(Debug)]
pub struct Shipper {
    settings: OtlpSettings,
    key: Option<SigningKey>,
    version: &'static str,
    /// Records not yet acknowledged, oldest first (those in flight included).
    buffer: VecDeque<Queued>,
    in_flight: Option<InFlight>,
    /// After a failure: no export before this time.
    retry_at_ms: Option<i64>,
    backoff_ms: u64,
    /// The buffer size last reported.
    reported: Option<usize>,
}

impl Shipper {
    pub fn new(settings: OtlpSettings, key: Option<SigningKey>, version: &'static str) -> Self {
        Self {
            settings,
            key,
            version,
            buffer: VecDeque::new(),
            in_flight: None,
            retry_at_ms: None,
            backoff_ms: 0,
            reported: None,
        }
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Whether an export is under way (its answer will come back).
    pub fn exporting(&self) -> bool {
        self.in_flight.is_some()
    }

    pub fn has_room(&self) -> bool {
        self.buffer.len() < self.settings.buffer_max_records
    }

    /// Queues a record; the caller checked [`Shipper::has_room`].
    pub fn push(&mut self, linked: &Linked, now_ms: i64) {
        self.buffer.push_back(Queued {
            seq: linked.seq,
            hash: linked.hash,
            json: linked.entry.to_json_text(),
            queued_ms: now_ms,
        });
    }

    /// Starts an export when a batch is due (full, old enough, a retry, or `flush`) and none is
    /// under way. Call from the root context: the answer comes back there.
    pub fn tick(
        &mut self,
        stream: &str,
        now_ms: i64,
        flush: bool,
        out: &mut dyn Outbound,
        events: &mut dyn Events,
    ) {
        self.report(events);
        if self.in_flight.is_some() || self.buffer.is_empty() {
            return;
        }
        if let Some(at) = self.retry_at_ms {
            if now_ms < at && !flush {
                return;
            }
        }
        let full = self.buffer.len() >= self.settings.batch_max_records;
        let age_ms = self.settings.batch_max_age_ms;
        let old = self.buffer.front().is_some_and(|q| {
            now_ms.saturating_sub(q.queued_ms) >= i64::try_from(age_ms).unwrap_or(i64::MAX)
        });
        if !(full || old || flush || self.retry_at_ms.is_some()) {
            return;
        }
        let records = self.buffer.len().min(self.settings.batch_max_records);
        let call = self.batch_call(stream, records, now_ms);
        match out.dispatch(&call) {
            Ok(token) => self.in_flight = Some(InFlight { token, records }),
            Err(_) => self.failed(now_ms, events),
        }
    }

    /// The answer to an export; false when `token` is not an export of this shipper.
    pub fn on_reply(
        &mut self,
        token: u32,
        reply: &CallReply,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> bool {
        let Some(call) = self.in_flight.filter(|c| c.token == token) else {
            return false;
        };
        self.in_flight = None;
        match reply {
            CallReply::Answered { status, .. } if (200..300).contains(status) => {
                self.buffer.drain(..call.records.min(self.buffer.len()));
                self.retry_at_ms = None;
                self.backoff_ms = 0;
                events.emit(Event::AuditShipped {
                    records: call.records,
                });
                self.report(events);
            }
            _ => self.failed(now_ms, events),
        }
        true
    }

    fn failed(&mut self, now_ms: i64, events: &mut dyn Events) {
        self.backoff_ms = if self.backoff_ms == 0 {
            FIRST_BACKOFF_MS
        } else {
            self.backoff_ms.saturating_mul(2)
        }
        .min(self.settings.retry_max_backoff_ms);
        self.retry_at_ms =
            Some(now_ms.saturating_add(i64::try_from(self.backoff_ms).unwrap_or(i64::MAX)));
        events.emit(Event::AuditRetried);
    }

    fn report(&mut self, events: &mut dyn Events) {
        let now = self.buffer.len();
        if self.reported != Some(now) {
            self.reported = Some(now);
            events.emit(Event::AuditBuffered { records: now });
        }
    }

    /// The export of the first `records` records, with its checkpoint when a key is set.
    fn batch_call(&self, stream: &str, records: usize, now_ms: i64) -> Call {
        let batch: Vec<&Queued> = self.buffer.iter().take(records).collect();
        let mut json: Vec<&str> = batch.iter().map(|q| q.json.as_str()).collect();
        let signed = match (&self.key, batch.first(), batch.last()) {
            (Some(key), Some(first), Some(last)) => {
                let nanos = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1_000_000);
                Some(checkpoint(key, stream, first.seq, last.seq, &last.hash, nanos).to_json_text())
            }
            _ => None,
        };
        if let Some(cp) = &signed {
            json.push(cp);
        }
        Call::Http(HttpCall {
            cluster: self.settings.cluster.clone(),
            method: "POST".to_owned(),
            path: self.settings.path.clone(),
            authority: self.settings.authority.clone(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: export_body(self.version, &json),
            timeout_ms: self.settings.timeout_ms,
        })
    }
}
