//! Editing a live policy document file (`data_source`'s document): add a key's entry, revoke
//! keys, bump `version`, and write the file only when the result passes the plugin's own
//! document rules, atomically (the server never serves half a file).

use std::path::Path;

use apiguard::api_key::fingerprint;
use apiguard::key_entry::KnownPlans;
use apiguard::live::document::{validate, DocumentRules};
use apiguard::secret::parse_hex32;
use apiguard::time::format_rfc3339;
use serde_json::{json, Value};

/// The shortest fingerprint prefix `--revoke` accepts (shorter ones name too many keys).
const MIN_FINGERPRINT_LEN: usize = 8;

/// A document being edited. Fields this tool does not know (`acl`) are kept as they are.
pub struct PolicyFile {
    doc: Value,
}

impl PolicyFile {
    /// Reads `path`; a missing file is a new, empty document.
    pub fn load(path: &Path) -> Result<Self, String> {
        let doc = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| format!("{}: not JSON: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                json!({"version": "", "api_keys": []})
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if !doc.is_object() {
            return Err(format!(
                "{}: not a policy document (expected a JSON object)",
                path.display()
            ));
        }
        Ok(Self { doc })
    }

    fn keys_mut(&mut self) -> Result<&mut Vec<Value>, String> {
        let map = self.doc.as_object_mut().ok_or("not a policy document")?;
        map.entry("api_keys")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .ok_or_else(|| "api_keys is not a list".to_owned())
    }

    pub fn add(&mut self, entry: Value) -> Result<(), String> {
        self.keys_mut()?.push(entry);
        Ok(())
    }

    /// Marks revoked every key whose fingerprint starts with `selector` (at least 8 hex digits),
    /// or else every key of the consumer `selector`. Returns the fingerprints it revoked; it is
    /// an error when nothing, or both a fingerprint and a consumer, match.
    pub fn revoke(&mut self, selector: &str) -> Result<Vec<String>, String> {
        let by_fingerprint = selector.len() >= MIN_FINGERPRINT_LEN
            && selector.bytes().all(|c| c.is_ascii_hexdigit());
        let selector_lower = selector.to_ascii_lowercase();
        let keys = self.keys_mut()?;
        let fingerprint_of = |entry: &Value| {
            entry
                .get("sha256")
                .and_then(Value::as_str)
                .and_then(parse_hex32)
                .map(|d| (fingerprint(&d), apiguard::secret::to_hex(&d)))
        };
        let matches_fingerprint = |entry: &Value| {
            by_fingerprint
                && fingerprint_of(entry).is_some_and(|(_, hex)| hex.starts_with(&selector_lower))
        };
        let matches_consumer =
            |entry: &Value| entry.get("consumer").and_then(Value::as_str) == Some(selector);
        let (by_print, by_consumer) = (
            keys.iter().filter(|e| matches_fingerprint(e)).count(),
            keys.iter().filter(|e| matches_consumer(e)).count(),
        );
        let use_print = match (by_print, by_consumer) {
            (0, 0) => {
                return Err(format!(
                    "no key has the fingerprint or consumer {selector:?}"
                ))
            }
            (0, _) => false,
            (_, 0) => true,
            _ => {
                return Err(format!(
                    "{selector:?} is both a fingerprint prefix and a consumer: give more digits"
                ))
            }
        };
        if use_print && by_print > 1 {
            return Err(format!(
                "the fingerprint prefix {selector:?} names {by_print} keys: give more digits"
            ));
        }
        let mut revoked = Vec::new();
        for entry in keys.iter_mut() {
            let hit = if use_print {
                matches_fingerprint(entry)
            } else {
                matches_consumer(entry)
            };
            if let (true, Some(map)) = (hit, entry.as_object_mut()) {
                map.insert("revoked".to_owned(), Value::Bool(true));
                revoked.extend(fingerprint_of(&Value::Object(map.clone())).map(|(f, _)| f));
            }
        }
        Ok(revoked)
    }

    /// `version` becomes `<now, RFC 3339>#<n + 1>`, where `n` ends the previous version (0 when
    /// it has no such number): always different, and ordered for the eye.
    pub fn bump_version(&mut self, now_unix: i64) {
        let previous = self
            .doc
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("");
        let n = previous
            .rsplit_once('#')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(0);
        let version = format!("{}#{}", format_rfc3339(now_unix), n.saturating_add(1));
        if let Some(map) = self.doc.as_object_mut() {
            map.insert("version".to_owned(), Value::String(version));
        }
    }

    /// The document checked with the plugin's rules (plans are not known here: the plugin
    /// checks them when it loads the document).
    pub fn check(&self, path: &Path) -> Result<Vec<u8>, String> {
        let body = serde_json::to_vec(&self.doc).map_err(|e| e.to_string())?;
        let rules = DocumentRules {
            max_bytes: usize::MAX,
            config_keys: None,
            plans: KnownPlans::Unchecked,
        };
        validate(&body, &rules)
            .map_err(|e| format!("{}: the document would be invalid {e}", path.display()))?;
        Ok(body)
    }

    /// Checks the edited document and replaces the file atomically. Its modification time moves
    /// on by at least a second: static servers (nginx) derive the ETag from it and the size, and
    /// an edit must never look like the version before.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let body = self.check(path)?;
        let previous = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let now = std::time::SystemTime::now();
        let modified = previous
            .map(|p| p + std::time::Duration::from_secs(1))
            .filter(|after| *after > now)
            .unwrap_or(now);
        let tmp = path.with_extension("tmp-apiguard-keygen");
        let written = std::fs::write(&tmp, &body)
            .and_then(|()| std::fs::File::options().write(true).open(&tmp))
            .and_then(|f| f.set_modified(modified));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("{}: {e}", tmp.display()));
        }
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: u8, consumer: &str) -> Value {
        json!({"sha256": apiguard::secret::to_hex(&[seed; 32]), "consumer": consumer})
    }

    fn file(entries: Vec<Value>) -> PolicyFile {
        PolicyFile {
            doc: json!({"version": "2026-11-28T10:00:00Z#41", "api_keys": entries, "acl": {"groups": {}}}),
        }
    }

    fn revoked(f: &PolicyFile) -> Vec<bool> {
        f.doc["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.get("revoked") == Some(&Value::Bool(true)))
            .collect()
    }

    #[test]
    fn versions_count_up_after_the_time() {
        let mut f = file(vec![]);
        f.bump_version(1_795_860_000);
        assert_eq!(f.doc["version"], "2026-11-28T10:00:00Z#42");
        f.doc["version"] = json!("hand-written");
        f.bump_version(1_795_860_000);
        assert_eq!(f.doc["version"], "2026-11-28T10:00:00Z#1");
    }

    #[test]
    fn revoking_by_consumer_or_fingerprint_prefix() {
        let mut f = file(vec![
            entry(0xab, "alice"),
            entry(0xcd, "alice"),
            entry(0xef, "bob"),
        ]);
        assert_eq!(
            f.revoke("bob").unwrap(),
            vec!["efefefefefefefef".to_owned()]
        );
        assert_eq!(revoked(&f), vec![false, false, true]);
        assert_eq!(
            f.revoke("CDCDCDCD").unwrap(),
            vec!["cdcdcdcdcdcdcdcd".to_owned()]
        );
        assert_eq!(f.revoke("alice").unwrap().len(), 2);
        assert_eq!(revoked(&f), vec![true, true, true]);
        assert!(f.revoke("nobody").is_err());
        // too short a prefix is read as a consumer id
        assert!(f.revoke("abab").is_err());
        // the ACL part is kept untouched
        assert_eq!(f.doc["acl"], json!({"groups": {}}));
    }

    #[test]
    fn a_selector_that_is_both_a_fingerprint_and_a_consumer_is_refused() {
        let mut f = file(vec![entry(0xab, "abababab"), entry(0xab, "x")]);
        assert!(f.revoke("abababab").unwrap_err().contains("both"));
    }

    #[test]
    fn an_edit_that_breaks_the_document_is_not_written() {
        let dir = std::env::temp_dir().join(format!("apiguard-keygen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.json");
        let mut f = file(vec![entry(1, "alice")]);
        f.add(entry(1, "again")).unwrap();
        f.bump_version(0);
        let err = f.save(&path).unwrap_err();
        assert!(err.contains("api_keys[1].sha256"), "{err}");
        assert!(!path.exists());
        let mut f = file(vec![entry(1, "alice")]);
        f.bump_version(0);
        f.save(&path).unwrap();
        let back = PolicyFile::load(&path).unwrap();
        assert_eq!(back.doc["version"], "1970-01-01T00:00:00Z#42");
        // Saved again at once: the modification time still moves on (ETags follow it).
        let first = std::fs::metadata(&path).unwrap().modified().unwrap();
        back.save(&path).unwrap();
        let second = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(second >= first + std::time::Duration::from_secs(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
