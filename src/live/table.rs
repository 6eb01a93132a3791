//! The live policy data in shared data (API keys, ACL group membership and ownership entries):
//! one copy per proxy, sharded by digest so a lookup reads one small entry, in two generation
//! slots so storage is reused across versions. ACL entries are found by index digests
//! ([`group_index`], [`owner_index`]) in the same digest space as key digests.
//!
//! Layout, under the document's feed name `<feed>` (see [`crate::live::PolicyData`]):
//! - `<feed>/state` holds the feed state; its descriptor ([`Descriptor`]) names the slot in
//!   force (0 or 1), the shard count (a power of two), the entries, the document's ETag and
//!   its `version` string;
//! - `<feed>/<slot>/<shard>` (shard in hex) holds the entries whose digest starts with the
//!   shard's bits, sorted by digest, behind the version they belong to and the VM that wrote them
//!   (so a writer that lost its lease can never pass for the one that published).
//!
//! A new version is written into the slot not in force, then the descriptor switches to it.
//! Shared data cannot delete keys, so a slot's keys are overwritten by the next version but one,
//! and shards a smaller version no longer needs are emptied. A reader that finds another
//! version in a shard than its descriptor names (the slot was rewritten since it looked)
//! reads the descriptor again.

use super::bytes::Reader;
use crate::ports::{SharedStore, StoreError};
use crate::text::parts_digest;

/// Entries per shard the layout aims at: a lookup copies about 1 KiB out of shared data.
const TARGET_ENTRIES_PER_SHARD: usize = 16;
/// At most 2^20 shards (16M keys at the target size; more keys only make shards larger).
const MAX_SHARD_BITS: u8 = 20;

const DESCRIPTOR_FORMAT: u8 = 2;
const SHARD_FORMAT: u8 = 3;
/// The writer checks that it still holds the lease (and renews it) every this many shards.
const SHARDS_PER_LEASE_CHECK: u32 = 1024;
/// `expires_at` of an entry that never expires.
const NEVER: i64 = i64::MIN;
const REVOKED: u8 = 1;
/// What an entry is, after its digest.
const KIND_KEY: u8 = 0;
const KIND_GROUPS: u8 = 1;
const KIND_OWNERS: u8 = 2;
/// The most names one ACL entry lists (the document refuses more).
pub const MAX_NAMES_PER_ENTRY: usize = 1024;

/// Which slot and shard layout readers use, and what the proxy loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// The VM that wrote the version in force (its shards carry the same id).
    pub writer: u64,
    pub slot: u8,
    pub shard_bits: u8,
    /// Shard keys written so far in each slot (they are never deleted, only emptied).
    pub slot_shards: [u32; 2],
    pub entries: u64,
    /// The document's `ETag` (for `If-None-Match`); empty when it had none.
    pub etag: String,
    /// The document's own `version` string.
    pub document_version: String,
}

impl Descriptor {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![DESCRIPTOR_FORMAT];
        out.extend_from_slice(&self.writer.to_le_bytes());
        out.extend_from_slice(&[self.slot, self.shard_bits]);
        for n in self.slot_shards {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.entries.to_le_bytes());
        for text in [&self.etag, &self.document_version] {
            let bytes = text.as_bytes();
            let len = u16::try_from(bytes.len()).unwrap_or(0);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or_default());
        }
        out
    }

    /// `None` for the empty descriptor of a feed that never published, or anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(1)? != [DESCRIPTOR_FORMAT] {
            return None;
        }
        let writer = r.u64()?;
        let slot = r.u8()?;
        let shard_bits = r.u8()?;
        let slot_shards = [r.u32()?, r.u32()?];
        let entries = r.u64()?;
        let mut text = || -> Option<String> {
            let len = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
            String::from_utf8(r.take(usize::from(len))?.to_vec()).ok()
        };
        let etag = text()?;
        let document_version = text()?;
        (slot < 2 && shard_bits <= MAX_SHARD_BITS).then_some(Self {
            writer,
            slot,
            shard_bits,
            slot_shards,
            entries,
            etag,
            document_version,
        })
    }

    pub fn shards(&self) -> u32 {
        1 << self.shard_bits
    }
}

/// The shard count for `entries`: a power of two near `entries / TARGET_ENTRIES_PER_SHARD`.
pub fn shard_bits_for(entries: usize) -> u8 {
    let wanted = entries.div_ceil(TARGET_ENTRIES_PER_SHARD).max(1);
    let bits = usize::BITS - (wanted - 1).leading_zeros();
    u8::try_from(bits)
        .unwrap_or(MAX_SHARD_BITS)
        .min(MAX_SHARD_BITS)
}

/// The shard a digest belongs to: its first `bits` bits.
pub fn shard_of(digest: &[u8; 32], bits: u8) -> u32 {
    if bits == 0 {
        return 0;
    }
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    head >> (32 - u32::from(bits))
}

/// The shared-data key of one shard.
pub fn shard_key(feed_prefix: &str, slot: u8, shard: u32) -> String {
    format!("{feed_prefix}/{slot}/{shard:x}")
}

/// One live key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKeyEntry {
    pub digest: [u8; 32],
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub consumer: String,
    pub plan: Option<String>,
}

/// One entry of the table, found by its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableEntry {
    /// A live API key (the digest is the key's SHA-256).
    Key(LiveKeyEntry),
    /// The groups that list a consumer (the digest is its [`group_index`]).
    Groups {
        digest: [u8; 32],
        groups: Vec<String>,
    },
    /// The principals (`consumer:<id>`, `group:<name>`) that own an object (the digest is its
    /// [`owner_index`]).
    Owners {
        digest: [u8; 32],
        principals: Vec<String>,
    },
}

/// The digest under which the groups of `consumer` are stored.
pub fn group_index(consumer: &str) -> [u8; 32] {
    parts_digest(&[b"apiguard acl groups-of", consumer.as_bytes()])
}

/// The digest under which the owners of object `id` of type `kind` are stored.
pub fn owner_index(kind: &str, id: &str) -> [u8; 32] {
    parts_digest(&[b"apiguard acl owners-of", kind.as_bytes(), id.as_bytes()])
}

impl TableEntry {
    pub fn digest(&self) -> &[u8; 32] {
        match self {
            Self::Key(key) => &key.digest,
            Self::Groups { digest, .. } | Self::Owners { digest, .. } => digest,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.digest());
        match self {
            Self::Key(key) => {
                out.push(KIND_KEY);
                out.extend_from_slice(&key.expires_at.unwrap_or(NEVER).to_le_bytes());
                out.push(if key.revoked { REVOKED } else { 0 });
                // Consumer ids are at most 128 bytes and plan names 64: both fit a length byte
                // (the document's validation refuses anything longer before it gets here).
                push_short_text(out, &key.consumer);
                push_short_text(out, key.plan.as_deref().unwrap_or_default());
            }
            Self::Groups { groups: names, .. }
            | Self::Owners {
                principals: names, ..
            } => {
                out.push(if matches!(self, Self::Groups { .. }) {
                    KIND_GROUPS
                } else {
                    KIND_OWNERS
                });
                // Names are at most 137 bytes (`consumer:` and an id), at most
                // MAX_NAMES_PER_ENTRY of them (validated before).
                let count = names.len().min(MAX_NAMES_PER_ENTRY);
                out.extend_from_slice(&u16::try_from(count).unwrap_or(0).to_le_bytes());
                for name in names.iter().take(count) {
                    push_short_text(out, name);
                }
            }
        }
    }
}

fn push_short_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let len = u8::try_from(bytes.len()).unwrap_or(0);
    out.push(len);
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or_default());
}

/// Which publication a shard belongs to: the version, and the VM that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardTag {
    pub version: u64,
    pub writer: u64,
}

/// A shard's value: format, its tag, the entries sorted by digest.
pub fn encode_shard(tag: ShardTag, entries: &[TableEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 16 + entries.len() * 64);
    out.push(SHARD_FORMAT);
    out.extend_from_slice(&tag.version.to_le_bytes());
    out.extend_from_slice(&tag.writer.to_le_bytes());
    for entry in entries {
        entry.encode_into(&mut out);
    }
    out
}

/// What a shard says about one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardLookup {
    Found(TableEntry),
    Absent,
    /// The shard belongs to another publication than the reader's (or is not written yet).
    OtherVersion,
}

/// Finds `digest` in a shard of the publication `tag`.
pub fn find_in_shard(shard: &[u8], tag: ShardTag, digest: &[u8; 32]) -> ShardLookup {
    let mut r = Reader(shard);
    let header = (|| Some((r.u8()?, r.u64()?, r.u64()?)))();
    if header != Some((SHARD_FORMAT, tag.version, tag.writer)) {
        return ShardLookup::OtherVersion;
    }
    while !r.0.is_empty() {
        let Some(entry) = read_entry(&mut r) else {
            // A torn shard can only come from a writer that lost its lease: treat it as not
            // this version's, so the reader looks again.
            return ShardLookup::OtherVersion;
        };
        match entry.digest().cmp(digest) {
            std::cmp::Ordering::Less => continue,
            // Equal digests: the caller still compares in constant time (this is the index).
            std::cmp::Ordering::Equal => return ShardLookup::Found(entry),
            std::cmp::Ordering::Greater => break,
        }
    }
    ShardLookup::Absent
}

fn read_entry(r: &mut Reader<'_>) -> Option<TableEntry> {
    let digest: [u8; 32] = r.take(32)?.try_into().ok()?;
    match r.u8()? {
        KIND_KEY => {
            let expires_at = Some(r.i64()?).filter(|&at| at != NEVER);
            let revoked = r.u8()? & REVOKED != 0;
            let consumer = read_short_text(r)?;
            let plan = Some(read_short_text(r)?).filter(|p| !p.is_empty());
            Some(TableEntry::Key(LiveKeyEntry {
                digest,
                expires_at,
                revoked,
                consumer,
                plan,
            }))
        }
        kind @ (KIND_GROUPS | KIND_OWNERS) => {
            let count = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
            let names = (0..count)
                .map(|_| read_short_text(r))
                .collect::<Option<Vec<_>>>()?;
            Some(if kind == KIND_GROUPS {
                TableEntry::Groups {
                    digest,
                    groups: names,
                }
            } else {
                TableEntry::Owners {
                    digest,
                    principals: names,
                }
            })
        }
        _ => None,
    }
}

fn read_short_text(r: &mut Reader<'_>) -> Option<String> {
    let len = r.u8()?;
    String::from_utf8(r.take(usize::from(len))?.to_vec()).ok()
}

/// Where a generation goes and what it replaces.
#[derive(Debug, Clone, Copy)]
pub struct Generation<'a> {
    pub feed_prefix: &'a str,
    pub slot: u8,
    pub shard_bits: u8,
    /// Shard keys the slot already has (from earlier versions).
    pub previous_shards: u32,
    pub tag: ShardTag,
}

/// Writes `entries` (sorted by digest) into the generation's slot, emptying the shards of that
/// slot a larger earlier version used beyond the new count. `still_ours` is asked every
/// [`SHARDS_PER_LEASE_CHECK`] shards (it renews the writer's lease); when it says no, the
/// writing stops and `None` is returned. Otherwise: the shard keys the slot now has.
pub fn write_generation(
    store: &dyn SharedStore,
    generation: Generation<'_>,
    entries: &[TableEntry],
    still_ours: &mut dyn FnMut() -> Result<bool, StoreError>,
) -> Result<Option<u32>, StoreError> {
    let Generation {
        feed_prefix,
        slot,
        shard_bits,
        previous_shards,
        tag,
    } = generation;
    let shards = 1u32 << shard_bits;
    let mut start = 0;
    for shard in 0..shards.max(previous_shards) {
        if shard > 0 && shard % SHARDS_PER_LEASE_CHECK == 0 && !still_ours()? {
            return Ok(None);
        }
        let key = shard_key(feed_prefix, slot, shard);
        if shard >= shards {
            store.set(&key, b"", None)?;
            continue;
        }
        let end = start
            + entries
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|e| shard_of(e.digest(), shard_bits) == shard)
                .count();
        let value = encode_shard(tag, entries.get(start..end).unwrap_or_default());
        store.set(&key, &value, None)?;
        start = end;
    }
    Ok(Some(shards.max(previous_shards)))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::ports::fakes::MemoryStore;

    fn key_entry(first: u8, consumer: &str) -> LiveKeyEntry {
        let mut digest = [7u8; 32];
        digest[0] = first;
        LiveKeyEntry {
            digest,
            expires_at: None,
            revoked: false,
            consumer: consumer.to_owned(),
            plan: None,
        }
    }

    fn entry(first: u8, consumer: &str) -> TableEntry {
        TableEntry::Key(key_entry(first, consumer))
    }

    #[test]
    fn shard_counts_grow_with_the_entries_in_powers_of_two() {
        assert_eq!(shard_bits_for(0), 0);
        assert_eq!(shard_bits_for(16), 0);
        assert_eq!(shard_bits_for(17), 1);
        assert_eq!(shard_bits_for(1_000_000), 16);
        assert_eq!(shard_bits_for(usize::MAX / 2), MAX_SHARD_BITS);
    }

    #[test]
    fn a_digest_belongs_to_the_shard_of_its_leading_bits() {
        let mut d = [0u8; 32];
        d[0] = 0b1010_0000;
        assert_eq!(shard_of(&d, 0), 0);
        assert_eq!(shard_of(&d, 1), 1);
        assert_eq!(shard_of(&d, 3), 0b101);
        d[1] = 0xff;
        assert_eq!(shard_of(&d, 12), 0b1010_0000_1111);
    }

    #[test]
    fn entries_survive_a_shard_and_absent_digests_are_absent() {
        let mut revoked = key_entry(1, "bob");
        revoked.revoked = true;
        revoked.expires_at = Some(1_900_000_000);
        revoked.plan = Some("gold".to_owned());
        let revoked = TableEntry::Key(revoked);
        let entries = vec![entry(0, "alice"), revoked.clone(), entry(9, "carol")];
        let tag = ShardTag {
            version: 4,
            writer: 0xA,
        };
        let shard = encode_shard(tag, &entries);
        assert_eq!(
            find_in_shard(&shard, tag, revoked.digest()),
            ShardLookup::Found(revoked)
        );
        assert_eq!(
            find_in_shard(&shard, tag, entry(5, "x").digest()),
            ShardLookup::Absent
        );
        assert_eq!(
            find_in_shard(&shard, tag, entry(10, "x").digest()),
            ShardLookup::Absent
        );
        let other_version = ShardTag { version: 5, ..tag };
        assert_eq!(
            find_in_shard(&shard, other_version, entries[0].digest()),
            ShardLookup::OtherVersion
        );
        // The same version written by a VM that lost its lease is not the publication.
        let other_writer = ShardTag { writer: 0xB, ..tag };
        assert_eq!(
            find_in_shard(&shard, other_writer, entries[0].digest()),
            ShardLookup::OtherVersion
        );
        assert_eq!(
            find_in_shard(b"", tag, entries[0].digest()),
            ShardLookup::OtherVersion
        );
        let torn = shard.get(..shard.len() - 3).unwrap();
        assert_eq!(
            find_in_shard(torn, tag, entries[2].digest()),
            ShardLookup::OtherVersion
        );
    }

    #[test]
    fn acl_entries_survive_a_shard_beside_keys() {
        let groups = TableEntry::Groups {
            digest: group_index("bob"),
            groups: vec!["ops".to_owned(), "support".to_owned()],
        };
        let owners = TableEntry::Owners {
            digest: owner_index("account", "acct-1"),
            principals: vec!["consumer:alice".to_owned(), "group:support".to_owned()],
        };
        let none = TableEntry::Owners {
            digest: owner_index("account", "acct-2"),
            principals: vec![],
        };
        let mut entries = vec![entry(0x40, "alice"), groups, owners, none];
        entries.sort_by(|a, b| a.digest().cmp(b.digest()));
        let tag = ShardTag {
            version: 1,
            writer: 1,
        };
        let shard = encode_shard(tag, &entries);
        for e in &entries {
            assert_eq!(
                find_in_shard(&shard, tag, e.digest()),
                ShardLookup::Found(e.clone())
            );
        }
        assert_eq!(
            find_in_shard(&shard, tag, &owner_index("account", "acct-3")),
            ShardLookup::Absent
        );
    }

    #[test]
    fn index_digests_keep_their_parts_apart() {
        // "ab" + "c" and "a" + "bc" are different objects; a kind and a consumer never meet.
        assert_ne!(owner_index("ab", "c"), owner_index("a", "bc"));
        assert_ne!(group_index("account"), owner_index("account", ""));
        assert_eq!(group_index("bob"), group_index("bob"));
    }

    #[test]
    fn descriptors_survive_encoding_and_anything_else_is_none() {
        let d = Descriptor {
            writer: 7,
            slot: 1,
            shard_bits: 3,
            slot_shards: [4, 8],
            entries: 99,
            etag: "\"abc\"".to_owned(),
            document_version: "2026-11-28T10:00:00Z#42".to_owned(),
        };
        assert_eq!(Descriptor::decode(&d.encode()), Some(d.clone()));
        assert_eq!(Descriptor::decode(b""), None);
        let mut bad_slot = d.encode();
        bad_slot[9] = 2;
        assert_eq!(Descriptor::decode(&bad_slot), None);
    }

    #[test]
    fn a_generation_fills_every_shard_and_empties_the_ones_it_no_longer_needs() {
        let store = MemoryStore::default();
        let entries: Vec<_> = (0u8..=255).step_by(16).map(|b| entry(b, "c")).collect();
        let first = ShardTag {
            version: 1,
            writer: 0xA,
        };
        let generation = Generation {
            feed_prefix: "f",
            slot: 0,
            shard_bits: 2,
            previous_shards: 0,
            tag: first,
        };
        let written = write_generation(&store, generation, &entries, &mut || Ok(true))
            .unwrap()
            .unwrap();
        assert_eq!(written, 4);
        for e in &entries {
            let key = shard_key("f", 0, shard_of(e.digest(), 2));
            let shard = store.get(&key).unwrap().unwrap().value;
            assert_eq!(
                find_in_shard(&shard, first, e.digest()),
                ShardLookup::Found(e.clone())
            );
        }
        // The next version in this slot has fewer shards: the rest are emptied, not left stale.
        let fewer = vec![entry(3, "d")];
        let third = ShardTag {
            version: 3,
            writer: 0xA,
        };
        let generation = Generation {
            shard_bits: 0,
            previous_shards: written,
            tag: third,
            ..generation
        };
        let written = write_generation(&store, generation, &fewer, &mut || Ok(true))
            .unwrap()
            .unwrap();
        assert_eq!(written, 4);
        assert_eq!(
            store.get(&shard_key("f", 0, 3)).unwrap().unwrap().value,
            b""
        );
        let shard = store.get(&shard_key("f", 0, 0)).unwrap().unwrap().value;
        assert_eq!(
            find_in_shard(&shard, third, fewer[0].digest()),
            ShardLookup::Found(fewer[0].clone())
        );
        assert_eq!(
            find_in_shard(&shard, third, entries[0].digest()),
            ShardLookup::Absent
        );
    }

    #[test]
    fn a_writer_that_lost_its_lease_stops_writing() {
        let store = MemoryStore::default();
        let generation = Generation {
            feed_prefix: "f",
            slot: 1,
            shard_bits: 12,
            previous_shards: 0,
            tag: ShardTag {
                version: 2,
                writer: 0xA,
            },
        };
        let mut asked = 0;
        let outcome = write_generation(&store, generation, &[], &mut || {
            asked += 1;
            Ok(asked < 2)
        })
        .unwrap();
        assert_eq!(outcome, None);
        // It wrote the first 2 * 1024 shards, then stopped at the second check.
        assert_eq!(asked, 2);
        assert!(store.get(&shard_key("f", 1, 2047)).unwrap().is_some());
        assert!(store.get(&shard_key("f", 1, 2048)).unwrap().is_none());
    }
}
