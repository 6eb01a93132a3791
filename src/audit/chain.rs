//! The VM's stream: every record carries the stream id, its sequence number and the SHA-256 of
//! the record before it; a checkpoint signs (stream, first and last sequence, head hash) with
//! Ed25519 so that a rewritten chain, or a cut tail, shows.

use ed25519_compact::{PublicKey, Signature};

use super::config::SigningKey;
use super::entry::Entry;
use crate::secret::{parse_hex32, to_hex};

pub const STREAM: &str = "apiguard.audit.stream";
pub const SEQ: &str = "apiguard.audit.seq";
pub const PREV_HASH: &str = "apiguard.audit.prev_hash";
pub const FIRST_SEQ: &str = "apiguard.audit.first_seq";
pub const LAST_SEQ: &str = "apiguard.audit.last_seq";
pub const HEAD_HASH: &str = "apiguard.audit.head_hash";
pub const KID: &str = "apiguard.audit.kid";
pub const SIGNATURE: &str = "apiguard.audit.signature";
pub const DROPPED: &str = "apiguard.audit.dropped_records";

pub const REQUEST_BODY: &str = "apiguard.request";
pub const GAP_BODY: &str = "apiguard.gap";
pub const CHECKPOINT_BODY: &str = "apiguard.checkpoint";

/// The `prev_hash` of a stream's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// A record with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    pub seq: u64,
    pub hash: [u8; 32],
    pub entry: Entry,
}

/// One VM's stream.
#[derive(Debug, Clone)]
pub struct Chain {
    stream: String,
    next_seq: u64,
    head: [u8; 32],
}

impl Chain {
    pub fn new(stream: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            next_seq: 0,
            head: GENESIS,
        }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Links `entry` after the head.
    pub fn append(&mut self, mut entry: Entry) -> Linked {
        let seq = self.next_seq;
        entry.push_str(STREAM, self.stream.clone());
        entry.push_int(SEQ, i64::try_from(seq).unwrap_or(i64::MAX));
        entry.push_str(PREV_HASH, to_hex(&self.head));
        let hash = entry.hash();
        self.head = hash;
        self.next_seq = seq.saturating_add(1);
        Linked { seq, hash, entry }
    }
}

/// What a checkpoint signs.
pub fn checkpoint_message(stream: &str, first: u64, last: u64, head: &[u8; 32]) -> Vec<u8> {
    let mut m = b"apiguard-audit-checkpoint/1\n".to_vec();
    m.extend_from_slice(&(stream.len() as u64).to_be_bytes());
    m.extend_from_slice(stream.as_bytes());
    m.extend_from_slice(&first.to_be_bytes());
    m.extend_from_slice(&last.to_be_bytes());
    m.extend_from_slice(head);
    m
}

/// The signed checkpoint over `first..=last` of `stream`, whose last record hashes to `head`.
/// Outside the chain: it vouches for records, it is not one.
pub fn checkpoint(
    key: &SigningKey,
    stream: &str,
    first: u64,
    last: u64,
    head: &[u8; 32],
    time_unix_nano: u64,
) -> Entry {
    // Deterministic Ed25519 (RFC 8032): no noise needed.
    let signature = key
        .pair
        .sk
        .sign(checkpoint_message(stream, first, last, head), None);
    let mut e = Entry::new(time_unix_nano, CHECKPOINT_BODY);
    e.push_str(STREAM, stream);
    e.push_int(FIRST_SEQ, i64::try_from(first).unwrap_or(i64::MAX));
    e.push_int(LAST_SEQ, i64::try_from(last).unwrap_or(i64::MAX));
    e.push_str(HEAD_HASH, to_hex(head));
    e.push_str(KID, key.kid.clone());
    e.push_str(SIGNATURE, to_hex(signature.as_ref()));
    e
}

/// A checkpoint as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub stream: String,
    pub first: u64,
    pub last: u64,
    pub head: [u8; 32],
    pub signature_valid: bool,
}

/// Reads a checkpoint record and checks its signature with `key`; `None` when it is malformed.
pub fn read_checkpoint(entry: &Entry, key: &PublicKey) -> Option<Checkpoint> {
    let stream = entry.str(STREAM)?.to_owned();
    let first = u64::try_from(entry.int(FIRST_SEQ)?).ok()?;
    let last = u64::try_from(entry.int(LAST_SEQ)?).ok()?;
    let head = parse_hex32(entry.str(HEAD_HASH)?)?;
    let signature = hex64(entry.str(SIGNATURE)?).and_then(|s| Signature::from_slice(&s).ok());
    let signature_valid = signature.is_some_and(|s| {
        key.verify(checkpoint_message(&stream, first, last, &head), &s)
            .is_ok()
    });
    Some(Checkpoint {
        stream,
        first,
        last,
        head,
        signature_valid,
    })
}

fn hex64(text: &str) -> Option<Vec<u8>> {
    if text.len() != 128 {
        return None;
    }
    let (a, b) = text.split_at(64);
    let mut out = parse_hex32(a)?.to_vec();
    out.extend_from_slice(&parse_hex32(b)?);
    Some(out)
}

#[cfg(test)]
pub mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::rc::Rc;

    use super::super::config::{AuditConfig, AuditSettings};
    use super::*;

    /// RFC 8037 Appendix A.1.
    pub const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    pub const D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";

    pub fn settings(extra: serde_json::Value) -> Rc<AuditSettings> {
        let mut cfg = serde_json::json!({
            "otlp": {"cluster": "otel-collector", "batch_max_records": 3, "buffer_max_records": 5},
            "signing_key": {"kty": "OKP", "crv": "Ed25519", "x": X, "d": D, "kid": "k1"},
        });
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let cfg: AuditConfig = serde_json::from_value(cfg).unwrap();
        AuditSettings::compile(cfg).unwrap()
    }

    pub fn public_key() -> PublicKey {
        let x = crate::jwt::jwks::b64url_decode(X).unwrap();
        PublicKey::from_slice(&x).unwrap()
    }

    #[test]
    fn records_link_to_their_predecessor() {
        let mut chain = Chain::new("s1");
        let a = chain.append(Entry::new(1, REQUEST_BODY));
        let b = chain.append(Entry::new(2, REQUEST_BODY));
        assert_eq!((a.seq, b.seq), (0, 1));
        assert_eq!(a.entry.str(PREV_HASH), Some(to_hex(&GENESIS).as_str()));
        assert_eq!(b.entry.str(PREV_HASH), Some(to_hex(&a.hash).as_str()));
        assert_eq!(b.entry.hash(), b.hash);
        assert_eq!(b.entry.str(STREAM), Some("s1"));
    }

    #[test]
    fn a_checkpoint_verifies_and_any_change_breaks_it() {
        let key = settings(serde_json::json!({})).signing_key.clone().unwrap();
        let head = [7u8; 32];
        let cp = checkpoint(&key, "s1", 0, 9, &head, 5);
        let read = read_checkpoint(&cp, &public_key()).unwrap();
        assert!(read.signature_valid);
        assert_eq!((read.first, read.last, read.head), (0, 9, head));
        for (field, value) in [(LAST_SEQ, "8"), (HEAD_HASH, "x"), (STREAM, "s2")] {
            let mut forged = cp.clone();
            for (k, v) in &mut forged.attributes {
                if k == field {
                    *v = match v {
                        super::super::entry::AttrValue::Int(_) => {
                            super::super::entry::AttrValue::Int(8)
                        }
                        super::super::entry::AttrValue::Str(_) if field == HEAD_HASH => {
                            super::super::entry::AttrValue::Str(to_hex(&[8u8; 32]))
                        }
                        super::super::entry::AttrValue::Str(_) => {
                            super::super::entry::AttrValue::Str(value.to_owned())
                        }
                    };
                }
            }
            let read = read_checkpoint(&forged, &public_key()).unwrap();
            assert!(!read.signature_valid, "{field}");
        }
    }
}
