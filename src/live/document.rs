//! The live policy document: what the control endpoint serves, and the rules a fetched copy
//! must pass as a whole before any of it is published.
//!
//! ```json
//! {"version": "2026-11-28T10:00:00Z#42",
//!  "api_keys": [{"sha256": "…", "consumer": "alice", "expires_at": "…", "revoked": false, "plan": "gold"}],
//!  "acl": {"groups": {"support": ["bob"]}, "owners": {"account": {"acct-1": ["consumer:alice"]}}}}
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::table::{group_index, owner_index, LiveKeyEntry, TableEntry};
use crate::acl::data::{check_acl_data, GroupsConfig, OwnersConfig};
use crate::api_key::KeyStore;
use crate::config::parse_object;
use crate::config_error::ConfigError;
use crate::key_entry::{check_key_entry, KeyEntryFields, KnownPlans};

/// The longest `version` string (it is logged and kept in shared data).
const MAX_VERSION_LEN: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentDto<'a> {
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(default, borrow)]
    api_keys: Vec<KeyEntryDto<'a>>,
    #[serde(default)]
    acl: Option<AclDataDto>,
}

/// The fields of `api_keys.keys[]` in configuration, borrowed from the document's text (a
/// million entries should not cost a million copies).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntryDto<'a> {
    #[serde(borrow)]
    sha256: Cow<'a, str>,
    #[serde(borrow)]
    consumer: Cow<'a, str>,
    #[serde(default, borrow)]
    expires_at: Option<Cow<'a, str>>,
    #[serde(default)]
    revoked: bool,
    #[serde(default, borrow)]
    plan: Option<Cow<'a, str>>,
}

/// The ACL's data parts: group members, and who owns which object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclDataDto {
    #[serde(default)]
    groups: GroupsConfig,
    #[serde(default)]
    owners: OwnersConfig,
}

/// What a fetched document is checked against.
#[derive(Debug, Clone, Copy)]
pub struct DocumentRules<'a> {
    pub max_bytes: usize,
    /// The configuration's keys: a digest may not be both there and in the document.
    pub config_keys: Option<&'a KeyStore>,
    pub plans: KnownPlans<'a>,
}

/// A document that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidDocument {
    pub version: String,
    /// Keys, then each member's groups and each object's owners under their index digests;
    /// sorted by digest, no digest twice.
    pub entries: Vec<TableEntry>,
    pub api_keys: usize,
    pub acl_groups: usize,
    pub acl_ownership_entries: usize,
}

/// Checks a whole document. The error names the field (`api_keys[3].sha256`), never a value.
pub fn validate(body: &[u8], rules: &DocumentRules<'_>) -> Result<ValidDocument, ConfigError> {
    if body.len() > rules.max_bytes {
        return Err(ConfigError::new(
            "",
            format!(
                "the document has {} bytes, more than data_source.max_document_bytes ({})",
                body.len(),
                rules.max_bytes
            ),
        ));
    }
    let dto: DocumentDto<'_> = parse_object(body)?;
    let version = dto.version.trim();
    if version.is_empty()
        || version.len() > MAX_VERSION_LEN
        || !version.bytes().all(|c| c.is_ascii_graphic() || c == b' ')
    {
        return Err(ConfigError::new(
            "version",
            format!("must be 1-{MAX_VERSION_LEN} printable ASCII characters"),
        ));
    }
    let mut keys: Vec<(LiveKeyEntry, usize)> = Vec::with_capacity(dto.api_keys.len());
    for (i, key) in dto.api_keys.iter().enumerate() {
        let at = |field: &str| format!("api_keys[{i}].{field}");
        let fields = KeyEntryFields {
            sha256: &key.sha256,
            consumer: &key.consumer,
            expires_at: key.expires_at.as_deref(),
            revoked: key.revoked,
            plan: key.plan.as_deref(),
        };
        let checked = check_key_entry(fields, rules.plans, at)?;
        if rules
            .config_keys
            .is_some_and(|k| k.contains(&checked.digest))
        {
            return Err(ConfigError::new(
                at("sha256"),
                "the same digest is configured in api_keys.keys",
            ));
        }
        let entry = LiveKeyEntry {
            digest: checked.digest,
            expires_at: checked.expires_at,
            revoked: checked.revoked,
            consumer: checked.consumer.to_owned(),
            plan: checked.plan.map(str::to_owned),
        };
        keys.push((entry, i));
    }
    drop(dto.api_keys);
    keys.sort_unstable_by_key(|(entry, _)| entry.digest);
    let repeated = keys.windows(2).find_map(|pair| match pair {
        [(a, i), (b, j)] if a.digest == b.digest => Some((*i).max(*j)),
        _ => None,
    });
    if let Some(later) = repeated {
        return Err(ConfigError::new(
            format!("api_keys[{later}].sha256"),
            "the same digest appears earlier in the document",
        ));
    }
    let api_keys = keys.len();
    let mut entries: Vec<TableEntry> = keys
        .into_iter()
        .map(|(entry, _)| TableEntry::Key(entry))
        .collect();
    let (acl_groups, acl_ownership_entries) = match &dto.acl {
        Some(acl) => {
            let counts = check_acl_data(&acl.groups, &acl.owners)?;
            entries.extend(acl_entries(&acl.groups, &acl.owners));
            // Index digests are SHA-256 of tagged names: they meet key digests only by a
            // collision, so one sort keeps the table's order.
            entries.sort_unstable_by(|a, b| a.digest().cmp(b.digest()));
            counts
        }
        None => (0, 0),
    };
    Ok(ValidDocument {
        version: version.to_owned(),
        entries,
        api_keys,
        acl_groups,
        acl_ownership_entries,
    })
}

/// The table entries of the ACL's data: for each consumer, the groups that list it (a request
/// reads one entry for its caller); for each object, its owners.
/// The data passed [`check_acl_data`], which bounds both lists.
pub fn acl_entries(groups: &GroupsConfig, owners: &OwnersConfig) -> Vec<TableEntry> {
    let mut groups_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (group, members) in groups {
        for member in members {
            groups_of.entry(member).or_default().push(group.clone());
        }
    }
    let mut entries = Vec::with_capacity(groups_of.len());
    for (member, mut groups) in groups_of {
        // BTreeMap order: already sorted; a member listed twice in one group counts once.
        groups.dedup();
        entries.push(TableEntry::Groups {
            digest: group_index(member),
            groups,
        });
    }
    for (kind, objects) in owners {
        for (object, principals) in objects {
            let mut principals = principals.clone();
            principals.sort_unstable();
            principals.dedup();
            entries.push(TableEntry::Owners {
                digest: owner_index(kind, object),
                principals,
            });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::api_key::KeyRecord;
    use crate::live::table::MAX_NAMES_PER_ENTRY;
    use crate::secret::to_hex;

    const MAX: usize = 1 << 20;

    fn rules() -> DocumentRules<'static> {
        DocumentRules {
            max_bytes: MAX,
            config_keys: None,
            plans: KnownPlans::Configured(None),
        }
    }

    fn digest(seed: u8) -> String {
        to_hex(&[seed; 32])
    }

    fn refused(doc: &str, rules: &DocumentRules<'_>) -> ConfigError {
        validate(doc.as_bytes(), rules).unwrap_err()
    }

    #[test]
    fn a_valid_document_is_sorted_by_digest_with_its_fields() {
        let doc = format!(
            r#"{{"version": "2026-11-28T10:00:00Z#42",
                "api_keys": [
                  {{"sha256": "{}", "consumer": "bob", "revoked": true}},
                  {{"sha256": "{}", "consumer": "alice", "expires_at": "2027-01-01T00:00:00Z"}}],
                "acl": {{"groups": {{"support": ["bob"]}},
                         "owners": {{"account": {{"acct-1": ["consumer:alice", "group:support"]}}}}}}}}"#,
            digest(9),
            digest(1)
        );
        let valid = validate(doc.as_bytes(), &rules()).unwrap();
        assert_eq!(valid.version, "2026-11-28T10:00:00Z#42");
        assert_eq!(valid.api_keys, 2);
        let keys = keys_of(&valid);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].consumer, "alice");
        assert_eq!(keys[0].expires_at, Some(1_798_761_600));
        assert!(keys[1].revoked);
        assert_eq!((valid.acl_groups, valid.acl_ownership_entries), (1, 1));
        assert!(valid.entries.contains(&TableEntry::Groups {
            digest: group_index("bob"),
            groups: vec!["support".to_owned()]
        }));
        assert!(valid.entries.contains(&TableEntry::Owners {
            digest: owner_index("account", "acct-1"),
            principals: vec!["consumer:alice".to_owned(), "group:support".to_owned()]
        }));
        assert!(valid
            .entries
            .windows(2)
            .all(|w| w[0].digest() < w[1].digest()));
    }

    fn keys_of(valid: &ValidDocument) -> Vec<&LiveKeyEntry> {
        valid
            .entries
            .iter()
            .filter_map(|e| match e {
                TableEntry::Key(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_member_gets_one_entry_with_all_its_groups_and_owners_are_deduplicated() {
        let doc = r#"{"version": "v", "acl": {
            "groups": {"support": ["bob", "carol", "bob"], "ops": ["bob"]},
            "owners": {"account": {"a1": ["group:ops", "consumer:bob", "group:ops"]}}}}"#;
        let valid = validate(doc.as_bytes(), &rules()).unwrap();
        assert!(valid.entries.contains(&TableEntry::Groups {
            digest: group_index("bob"),
            groups: vec!["ops".to_owned(), "support".to_owned()]
        }));
        assert!(valid.entries.contains(&TableEntry::Groups {
            digest: group_index("carol"),
            groups: vec!["support".to_owned()]
        }));
        assert!(valid.entries.contains(&TableEntry::Owners {
            digest: owner_index("account", "a1"),
            principals: vec!["consumer:bob".to_owned(), "group:ops".to_owned()]
        }));
        assert_eq!(valid.entries.len(), 3);
    }

    #[test]
    fn more_owners_than_an_entry_holds_are_refused() {
        let owners: Vec<String> = (0..=MAX_NAMES_PER_ENTRY)
            .map(|i| format!("consumer:c{i}"))
            .collect();
        let doc = serde_json::json!({"version": "v", "acl": {"owners": {"doc": {"d1": owners}}}});
        let err = refused(&doc.to_string(), &rules());
        assert_eq!(err.path, "acl.owners.doc");
    }

    #[test]
    fn every_kind_of_bad_document_is_refused_naming_the_field_never_the_value() {
        let secretish = "s3cr3t-value-not-to-echo";
        let cases = [
            // serde names a missing field in the message, at its parent's path.
            (r#"{"api_keys": []}"#.to_owned(), ""),
            (r#"{"version": ""}"#.to_owned(), "version"),
            (r#"{"version": "v\u0007"}"#.to_owned(), "version"),
            (r#"{"version": "v", "extra": 1}"#.to_owned(), "extra"),
            (
                format!(
                    r#"{{"version": "v", "api_keys": [{{"sha256": "{secretish}", "consumer": "a"}}]}}"#
                ),
                "api_keys[0].sha256",
            ),
            (
                format!(
                    r#"{{"version": "v", "api_keys": [{{"sha256": "{}", "consumer": "{secretish} x"}}]}}"#,
                    digest(1)
                ),
                "api_keys[0].consumer",
            ),
            (
                format!(
                    r#"{{"version": "v", "api_keys": [{{"sha256": "{}", "consumer": "a", "expires_at": "{secretish}"}}]}}"#,
                    digest(1)
                ),
                "api_keys[0].expires_at",
            ),
            (
                format!(
                    r#"{{"version": "v", "api_keys": [{{"sha256": "{}", "consumer": "a", "plan": "gold"}}]}}"#,
                    digest(1)
                ),
                "api_keys[0].plan",
            ),
            (
                format!(
                    r#"{{"version": "v", "api_keys": [{{"sha256": "{}", "consumer": "a", "revoked": "{secretish}"}}]}}"#,
                    digest(1)
                ),
                "api_keys[0].revoked",
            ),
            (
                format!(
                    r#"{{"version": "v", "api_keys": [{{"sha256": "{0}", "consumer": "a"}}, {{"sha256": "{1}", "consumer": "b"}}, {{"sha256": "{0}", "consumer": "c"}}]}}"#,
                    digest(1),
                    digest(2)
                ),
                "api_keys[2].sha256",
            ),
            (
                format!(r#"{{"version": "v", "acl": {{"groups": {{"g": ["{secretish} x"]}}}}}}"#),
                "acl.groups.g[0]",
            ),
            (
                format!(
                    r#"{{"version": "v", "acl": {{"owners": {{"account": {{"a": ["{secretish}"]}}}}}}}}"#
                ),
                "acl.owners.account",
            ),
            (r#"["version"]"#.to_owned(), ""),
            (r#"{"version": "v""#.to_owned(), ""),
            (r#"{"version": "v"} trailing"#.to_owned(), ""),
        ];
        for (doc, path) in cases {
            let err = refused(&doc, &rules());
            assert_eq!(err.path, path, "{doc}: {err}");
            assert!(!err.to_string().contains(secretish), "{err}");
        }
    }

    #[test]
    fn a_digest_already_configured_refuses_the_document() {
        let mut store = KeyStore::default();
        store
            .insert(KeyRecord::new([3; 32], "cfg".into(), None, false))
            .unwrap();
        let rules = DocumentRules {
            config_keys: Some(&store),
            ..rules()
        };
        let doc = format!(
            r#"{{"version": "v", "api_keys": [{{"sha256": "{}", "consumer": "a"}}, {{"sha256": "{}", "consumer": "b"}}]}}"#,
            digest(4),
            digest(3)
        );
        assert_eq!(refused(&doc, &rules).path, "api_keys[1].sha256");
    }

    #[test]
    fn a_document_over_the_size_limit_is_refused_before_parsing() {
        let rules = DocumentRules {
            max_bytes: 10,
            ..rules()
        };
        let err = refused(r#"{"version": "v1"}"#, &rules);
        assert!(err.message.contains("max_document_bytes"), "{err}");
    }

    #[test]
    fn escaped_strings_are_read_like_plain_ones() {
        let doc = format!(
            r#"{{"version": "v\u0031", "api_keys": [{{"sha256": "{}", "consumer": "al\u0069ce"}}]}}"#,
            digest(1)
        );
        let valid = validate(doc.as_bytes(), &rules()).unwrap();
        assert_eq!(
            (valid.version.as_str(), keys_of(&valid)[0].consumer.as_str()),
            ("v1", "alice")
        );
    }
}
