//! Checks collected export bodies: every stream must run from sequence 0 without holes, each
//! record's SHA-256 must be the next one's `prev_hash`, and every record must be covered by a
//! valid checkpoint whose head hash is the hash of its last record. Findings carry positions
//! (`file#n`: the n-th log record of that file, from 1).

use std::collections::BTreeMap;

use ed25519_compact::PublicKey;

use super::chain::{
    read_checkpoint, CHECKPOINT_BODY, DROPPED, GAP_BODY, PREV_HASH, REQUEST_BODY, SEQ, STREAM,
};
use super::entry::{records_of, Entry};
use crate::jwt::jwks::b64url_decode;
use crate::secret::{parse_hex32, to_hex};

/// What the verifier found, in the order it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub at: String,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    Unreadable,
    Deleted,
    Inserted,
    Reordered,
    Modified,
    MissingCheckpoint,
    ForgedCheckpoint,
    DeclaredGap,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::Deleted => "deleted",
            Self::Inserted => "inserted",
            Self::Reordered => "reordered",
            Self::Modified => "modified",
            Self::MissingCheckpoint => "missing checkpoint",
            Self::ForgedCheckpoint => "forged checkpoint",
            Self::DeclaredGap => "gap declared by the plugin",
        }
    }
}

/// The summary of a clean run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub streams: usize,
    pub records: usize,
    pub checkpoints: usize,
    pub findings: Vec<Finding>,
}

/// Reads the public key of a JWK (`{"kty":"OKP","crv":"Ed25519","x":…}`).
pub fn public_key_from_jwk(text: &[u8]) -> Result<PublicKey, String> {
    let jwk: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    if jwk.get("kty").and_then(|v| v.as_str()) != Some("OKP")
        || jwk.get("crv").and_then(|v| v.as_str()) != Some("Ed25519")
    {
        return Err("not an Ed25519 key (kty OKP, crv Ed25519)".to_owned());
    }
    let x = jwk
        .get("x")
        .and_then(|v| v.as_str())
        .and_then(b64url_decode)
        .ok_or("x is not unpadded base64url")?;
    PublicKey::from_slice(&x).map_err(|_| "x is not an Ed25519 public key".to_owned())
}

/// One chained record as found.
struct Found {
    at: String,
    order: usize,
    seq: u64,
    prev: Option<[u8; 32]>,
    hash: [u8; 32],
    dropped: Option<i64>,
}

/// Verifies the export bodies `files` (name, bytes), in the order they were collected.
pub fn verify(files: &[(String, Vec<u8>)], key: &PublicKey) -> Summary {
    let mut summary = Summary::default();
    let mut streams: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    let mut checkpoints = Vec::new();
    let mut order = 0usize;
    for (name, bytes) in files {
        let Some(records) = records_of(bytes) else {
            summary.findings.push(finding(
                FindingKind::Unreadable,
                name.clone(),
                "not an OTLP/HTTP JSON logs export".into(),
            ));
            continue;
        };
        for (i, value) in records.iter().enumerate() {
            let at = format!("{name}#{}", i + 1);
            order += 1;
            let Some(entry) = Entry::from_json(value) else {
                summary.findings.push(finding(
                    FindingKind::Unreadable,
                    at,
                    "not a log record".into(),
                ));
                continue;
            };
            match entry.body.as_str() {
                CHECKPOINT_BODY => match read_checkpoint(&entry, key) {
                    Some(cp) => checkpoints.push((at, cp)),
                    None => summary.findings.push(finding(
                        FindingKind::ForgedCheckpoint,
                        at,
                        "malformed checkpoint".into(),
                    )),
                },
                REQUEST_BODY | GAP_BODY => {
                    let (Some(stream), Some(seq)) = (
                        entry.str(STREAM),
                        entry.int(SEQ).and_then(|s| u64::try_from(s).ok()),
                    ) else {
                        summary.findings.push(finding(
                            FindingKind::Modified,
                            at,
                            "a record without its stream or sequence number".into(),
                        ));
                        continue;
                    };
                    let dropped = (entry.body == GAP_BODY).then(|| entry.int(DROPPED).unwrap_or(0));
                    streams.entry(stream.to_owned()).or_default().push(Found {
                        at,
                        order,
                        seq,
                        prev: entry.str(PREV_HASH).and_then(parse_hex32),
                        hash: entry.hash(),
                        dropped,
                    });
                }
                // Not ours (a collector may mix in other logs).
                _ => {}
            }
        }
    }
    summary.streams = streams.len();
    summary.checkpoints = checkpoints.len();
    for (stream, found) in &mut streams {
        check_stream(stream, found, &checkpoints, &mut summary);
    }
    for (at, cp) in &checkpoints {
        if !cp.signature_valid {
            summary.findings.push(finding(
                FindingKind::ForgedCheckpoint,
                at.clone(),
                format!(
                    "the signature over {} seq {}..={} does not verify",
                    cp.stream, cp.first, cp.last
                ),
            ));
        } else if !streams.contains_key(&cp.stream) {
            summary.findings.push(finding(
                FindingKind::Deleted,
                at.clone(),
                format!(
                    "checkpoint for stream {} seq {}..={}, whose records are all missing",
                    cp.stream, cp.first, cp.last
                ),
            ));
        }
    }
    summary
}

fn finding(kind: FindingKind, at: String, detail: String) -> Finding {
    Finding { kind, at, detail }
}

fn check_stream(
    stream: &str,
    found: &mut Vec<Found>,
    checkpoints: &[(String, super::chain::Checkpoint)],
    summary: &mut Summary,
) {
    // Collected order first: a record after a later one was moved (exact re-deliveries of a
    // retried export are not findings).
    let mut highest: Option<(u64, [u8; 32])> = None;
    let mut seen: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    for f in found.iter() {
        let duplicate = seen.get(&f.seq) == Some(&f.hash);
        if let Some((max, _)) = highest {
            if f.seq < max && !duplicate {
                summary.findings.push(finding(
                    FindingKind::Reordered,
                    f.at.clone(),
                    format!("{stream} seq {} comes after seq {max}", f.seq),
                ));
            }
        }
        if highest.map_or(true, |(max, _)| f.seq > max) {
            highest = Some((f.seq, f.hash));
        }
        seen.entry(f.seq).or_insert(f.hash);
    }
    found.sort_by_key(|f| (f.seq, f.order));
    found.dedup_by(|b, a| a.seq == b.seq && a.hash == b.hash);
    summary.records += found.len();
    // Two different records under one sequence number: the one the chain links to is genuine.
    let mut chain: Vec<&Found> = Vec::with_capacity(found.len());
    let mut i = 0;
    while let Some(f) = found.get(i) {
        let same: Vec<&Found> = found
            .iter()
            .skip(i)
            .take_while(|g| g.seq == f.seq)
            .collect();
        i += same.len();
        if same.len() == 1 {
            chain.extend(same);
            continue;
        }
        let next_prev = found
            .get(i)
            .filter(|n| n.seq == f.seq + 1)
            .and_then(|n| n.prev);
        let genuine = same
            .iter()
            .position(|g| Some(g.hash) == next_prev)
            .unwrap_or(0);
        for (j, g) in same.iter().enumerate() {
            if j == genuine {
                chain.push(g);
            } else {
                summary.findings.push(finding(
                    FindingKind::Inserted,
                    g.at.clone(),
                    format!("{stream} seq {} is a second, different record", g.seq),
                ));
            }
        }
    }
    let mut expected_seq = 0u64;
    let mut prev_hash = Some(super::chain::GENESIS);
    for f in &chain {
        if f.seq > expected_seq {
            summary.findings.push(finding(
                FindingKind::Deleted,
                f.at.clone(),
                format!(
                    "{stream} seq {}..={} missing before this record",
                    expected_seq,
                    f.seq - 1
                ),
            ));
        } else if f.prev != prev_hash {
            // The record before this one is not the one this record was linked to.
            summary.findings.push(finding(
                FindingKind::Modified,
                f.at.clone(),
                format!(
                    "{stream} seq {}: the record before it was changed (prev_hash {} does not match)",
                    f.seq,
                    f.prev.map_or_else(|| "absent".to_owned(), |p| to_hex(&p))
                ),
            ));
        }
        if let Some(n) = f.dropped {
            summary.findings.push(finding(
                FindingKind::DeclaredGap,
                f.at.clone(),
                format!("{stream}: {n} records dropped before seq {}", f.seq),
            ));
        }
        expected_seq = f.seq.saturating_add(1);
        prev_hash = Some(f.hash);
    }
    // Coverage by valid checkpoints whose head matches the record they name.
    let mut covered = vec![false; chain.len()];
    let by_seq: BTreeMap<u64, usize> = chain.iter().enumerate().map(|(i, f)| (f.seq, i)).collect();
    for (at, cp) in checkpoints
        .iter()
        .filter(|(_, cp)| cp.stream == stream && cp.signature_valid)
    {
        match by_seq.get(&cp.last).and_then(|&i| chain.get(i)) {
            Some(head) if head.hash == cp.head => {
                for (&seq, &i) in by_seq.range(cp.first..=cp.last) {
                    let _ = seq;
                    if let Some(c) = covered.get_mut(i) {
                        *c = true;
                    }
                }
            }
            Some(head) => summary.findings.push(finding(
                FindingKind::Modified,
                head.at.clone(),
                format!(
                    "{stream} seq {} does not match the head hash signed at {at}",
                    cp.last
                ),
            )),
            None => {} // reported as deleted above, or the tail was cut
        }
        if by_seq.range(cp.last.saturating_add(1)..).next().is_none() && cp.last >= expected_seq {
            summary.findings.push(finding(
                FindingKind::Deleted,
                at.clone(),
                format!(
                    "{stream} seq {}..={} signed but missing at the end",
                    expected_seq, cp.last
                ),
            ));
        }
    }
    let mut run: Option<(u64, u64, String)> = None;
    let flush = |run: &mut Option<(u64, u64, String)>, summary: &mut Summary| {
        if let Some((a, b, at)) = run.take() {
            summary.findings.push(finding(
                FindingKind::MissingCheckpoint,
                at,
                format!("{stream} seq {a}..={b} is covered by no valid checkpoint"),
            ));
        }
    };
    for (f, c) in chain.iter().zip(&covered) {
        if *c {
            flush(&mut run, summary);
        } else {
            match run.as_mut() {
                Some((_, b, _)) => *b = f.seq,
                None => run = Some((f.seq, f.seq, f.at.clone())),
            }
        }
    }
    flush(&mut run, summary);
}
