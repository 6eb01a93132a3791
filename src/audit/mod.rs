//! The audit log: one record per request, tied to the caller, written when the request ends;
//! linked into the VM's hash chain, exported as OTLP/HTTP JSON logs with signed checkpoints,
//! and checked afterwards by `apiguard-audit-verify` ([`verify`]).
//!
//! Pure: the host hands in each ended request ([`Exchange`]) with its decision's [`Outcome`],
//! drives the export from the root's tick through the `Outbound` port, and hands answers back.

mod chain;
mod config;
mod entry;
mod record;
mod shipper;
pub mod verify;

use std::rc::Rc;

pub use self::chain::{Chain, Linked};
pub use self::config::{AuditConfig, AuditSettings, EnvoyLog, OtlpSettings, SigningKey};
pub use self::entry::{AttrValue, Entry};
pub use self::record::{key_fingerprint, Exchange, Outcome, Stamp, Verdict};
pub use self::shipper::Shipper;

use self::chain::{DROPPED, GAP_BODY};
use crate::ports::{CallReply, Event, Events, Outbound};
use crate::query::QueryCredentials;

/// One VM's audit log.
#[derive(Debug)]
pub struct AuditLog {
    settings: Rc<AuditSettings>,
    stamp: Stamp,
    chain: Chain,
    shipper: Option<Shipper>,
    /// Records dropped (buffer full) since the last gap record.
    undeclared_drops: u64,
}

impl AuditLog {
    /// `stream`: this VM's stream id (random per VM and configuration).
    pub fn new(settings: Rc<AuditSettings>, stream: &str, stamp: Stamp) -> Self {
        let shipper = settings
            .otlp
            .clone()
            .map(|o| Shipper::new(o, settings.signing_key.clone(), stamp.version));
        Self {
            settings,
            stamp,
            chain: Chain::new(stream),
            shipper,
            undeclared_drops: 0,
        }
    }

    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    pub fn buffered(&self) -> usize {
        self.shipper.as_ref().map_or(0, Shipper::buffered)
    }

    /// Writes the record of an ended request. Returns the record's JSON when `envoy_log` asks
    /// for a log line. Never waits: a full buffer drops the record and counts it.
    pub fn record(
        &mut self,
        exchange: &Exchange,
        outcome: Option<&Outcome>,
        query: &QueryCredentials,
        events: &mut dyn Events,
    ) -> Option<String> {
        let entry = record::request_entry(exchange, outcome, query, &self.stamp);
        let now_ms = exchange.end_ms;
        self.declare_gap(now_ms);
        if self.shipper.as_ref().is_some_and(|s| !s.has_room()) {
            self.undeclared_drops = self.undeclared_drops.saturating_add(1);
            events.emit(Event::AuditDropped);
            return None;
        }
        let linked = self.chain.append(entry);
        if let Some(shipper) = self.shipper.as_mut() {
            shipper.push(&linked, now_ms);
        }
        (self.settings.envoy_log == EnvoyLog::Info).then(|| linked.entry.to_json_text())
    }

    /// The root's periodic turn: declare drops once there is room, start a due export.
    pub fn tick(&mut self, now_ms: i64, out: &mut dyn Outbound, events: &mut dyn Events) {
        self.declare_gap(now_ms);
        if let Some(shipper) = self.shipper.as_mut() {
            shipper.tick(self.chain.stream(), now_ms, false, out, events);
        }
    }

    /// At shutdown: exports what is buffered now, whatever its age (one batch at a time; call
    /// again after each answer). True when an export is under way (the host waits for it).
    pub fn flush(&mut self, now_ms: i64, out: &mut dyn Outbound, events: &mut dyn Events) -> bool {
        self.declare_gap(now_ms);
        let Some(shipper) = self.shipper.as_mut() else {
            return false;
        };
        shipper.tick(self.chain.stream(), now_ms, true, out, events);
        shipper.exporting()
    }

    /// The answer to a call; false when it is not one of this log's exports.
    pub fn on_reply(
        &mut self,
        token: u32,
        reply: &CallReply,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> bool {
        self.shipper
            .as_mut()
            .is_some_and(|s| s.on_reply(token, reply, now_ms, events))
    }

    /// A gap record in the chain says how many records were dropped at this point.
    fn declare_gap(&mut self, now_ms: i64) {
        if self.undeclared_drops == 0 {
            return;
        }
        let Some(shipper) = self.shipper.as_mut().filter(|s| s.has_room()) else {
            return;
        };
        let nanos = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1_000_000);
        let mut gap = Entry::new(nanos, GAP_BODY);
        gap.push_int(
            DROPPED,
            i64::try_from(self.undeclared_drops).unwrap_or(i64::MAX),
        );
        gap.push_str("apiguard.version", self.stamp.version);
        gap.push_str("apiguard.config_digest", self.stamp.config_digest.clone());
        let linked = self.chain.append(gap);
        shipper.push(&linked, now_ms);
        self.undeclared_drops = 0;
    }
}

/// A stopped plugin's last exports: one batch after another while each takes records off the
/// buffer; a few exports that fail end the wait (a dead collector cannot keep it alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopping {
    buffered: usize,
    failures: u32,
}

impl Stopping {
    pub const MAX_FAILURES: u32 = 3;

    /// `buffered`: the records pending when the plugin was stopped.
    pub fn new(buffered: usize) -> Self {
        Self {
            buffered,
            failures: 0,
        }
    }

    /// An export's answer came and `buffered` records are left: whether to send the next batch.
    pub fn after_export(&mut self, buffered: usize) -> bool {
        if buffered >= self.buffered {
            self.failures += 1;
        }
        self.buffered = buffered;
        buffered > 0 && self.failures < Self::MAX_FAILURES
    }
}

#[cfg(test)]
mod tests;
