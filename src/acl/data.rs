//! The ACL's data: who is in which group, and who owns which object. The decision reads it
//! through [`AclData`], one entry at a time, so the backing (this VM's memory, or the proxy's
//! shared data) can change without the decision knowing.
//!
//! The shape rules here are the same for `acl.groups` / `acl.owners` in the configuration and in
//! the live policy document.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::config_error::ConfigError;
use crate::live::table::MAX_NAMES_PER_ENTRY;
use crate::policy::is_consumer_id;

/// A principal an ACL entry names: `consumer:<id>` or `group:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    Consumer(String),
    Group(String),
}

impl Principal {
    /// Reads `consumer:<id>` or `group:<name>` (ids and names as consumer ids are written).
    pub fn parse(s: &str) -> Option<Principal> {
        match s.split_once(':') {
            Some(("consumer", id)) if is_consumer_id(id) => Some(Self::Consumer(id.to_owned())),
            Some(("group", name)) if is_consumer_id(name) => Some(Self::Group(name.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Consumer(id) => write!(f, "consumer:{id}"),
            Self::Group(name) => write!(f, "group:{name}"),
        }
    }
}

/// Why the ACL's data could not be read (the request then fails closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclDataError {
    /// The live document that carries part of the data has not been loaded yet (→ the existing
    /// 503 `policy_not_loaded`).
    NotLoaded,
    /// The live document is older than `data_source.max_stale_seconds` allows (→ 503
    /// `policy_not_loaded`, out of date).
    Stale,
    /// Shared data refused the read (→ 503 `acl_data_unavailable`).
    Store,
}

impl fmt::Display for AclDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotLoaded => "the policy document that holds acl data is not loaded",
            Self::Stale => "the policy document that holds acl data is out of date",
            Self::Store => "the proxy's shared data refused to read acl data",
        })
    }
}

/// Where group membership and object ownership are read from.
pub trait AclData {
    /// The groups that list `consumer` as a member (sorted, no duplicates).
    fn groups_of(&mut self, consumer: &str) -> Result<Vec<String>, AclDataError>;
    /// The principals that own object `id` of type `kind`; `None` when there is no entry.
    fn owners_of(&mut self, kind: &str, id: &str) -> Result<Option<Vec<Principal>>, AclDataError>;
}

/// `acl.groups`: group name → member consumer ids.
pub type GroupsConfig = BTreeMap<String, Vec<String>>;
/// `acl.owners`: object type → object id → principals.
pub type OwnersConfig = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The longest object id an ownership entry may name.
pub const MAX_OBJECT_ID_BYTES: usize = 256;

/// Checks the shape of the ACL's data: group names and members as consumer ids are, object
/// types likewise, object ids of 1-256 bytes, owners as `consumer:<id>` / `group:<name>`.
/// Returns the number of groups and of ownership entries. Errors name the field, never a value
/// beyond a group or type name.
pub fn check_acl_data(
    groups: &GroupsConfig,
    owners: &OwnersConfig,
) -> Result<(usize, usize), ConfigError> {
    let mut memberships: HashMap<&str, usize> = HashMap::new();
    for (group, members) in groups {
        if !is_consumer_id(group) {
            return Err(ConfigError::new(
                "acl.groups",
                "group names must be 1-128 characters of A-Z a-z 0-9 . _ - : @",
            ));
        }
        if let Some(i) = members.iter().position(|m| !is_consumer_id(m)) {
            return Err(ConfigError::new(
                format!("acl.groups.{group}[{i}]"),
                "must be a consumer id (1-128 characters of A-Z a-z 0-9 . _ - : @)",
            ));
        }
        for member in members {
            let n = memberships.entry(member).or_default();
            *n += 1;
            if *n > MAX_NAMES_PER_ENTRY {
                return Err(ConfigError::new(
                    "acl.groups",
                    format!("a consumer may be a member of at most {MAX_NAMES_PER_ENTRY} groups"),
                ));
            }
        }
    }
    let mut entries = 0usize;
    for (kind, objects) in owners {
        if !is_consumer_id(kind) {
            return Err(ConfigError::new(
                "acl.owners",
                "object types must be 1-128 characters of A-Z a-z 0-9 . _ - : @",
            ));
        }
        for (object, principals) in objects {
            if object.is_empty() || object.len() > MAX_OBJECT_ID_BYTES {
                return Err(ConfigError::new(
                    format!("acl.owners.{kind}"),
                    format!("object ids must be 1-{MAX_OBJECT_ID_BYTES} bytes"),
                ));
            }
            if principals.len() > MAX_NAMES_PER_ENTRY {
                return Err(ConfigError::new(
                    format!("acl.owners.{kind}"),
                    format!("an object may have at most {MAX_NAMES_PER_ENTRY} owners"),
                ));
            }
            if let Some(i) = principals
                .iter()
                .position(|p| Principal::parse(p).is_none())
            {
                return Err(ConfigError::new(
                    format!("acl.owners.{kind}"),
                    format!(
                        "entry {i} of an object's owners must be consumer:<id> or group:<name>"
                    ),
                ));
            }
            entries += 1;
        }
    }
    Ok((groups.len(), entries))
}

/// The data written in `acl.groups` / `acl.owners`, in memory: the unit tests' stand-in for the
/// shared-data table (`crate::live::SharedAclData`).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryAclData {
    /// Consumer → its groups (sorted, no duplicates).
    groups_by_member: HashMap<String, Vec<String>>,
    /// Type → object id → owners (sorted, no duplicates).
    owners: HashMap<String, HashMap<String, Vec<Principal>>>,
}

#[cfg(test)]
impl MemoryAclData {
    /// The data of a compiled `acl` (`AclPolicy::configured_data`).
    pub fn from_configured(json: Option<&[u8]>) -> Self {
        #[derive(serde::Deserialize)]
        struct Data {
            groups: GroupsConfig,
            owners: OwnersConfig,
        }
        json.map_or_else(Self::default, |json| {
            let data: Data = serde_json::from_slice(json).unwrap();
            Self::new(&data.groups, data.owners)
        })
    }

    /// Builds the lookups from data that passed [`check_acl_data`] (entries that do not parse
    /// are left out).
    pub fn new(groups: &GroupsConfig, owners: OwnersConfig) -> Self {
        let mut groups_by_member: HashMap<String, Vec<String>> = HashMap::new();
        for (group, members) in groups {
            for member in members {
                groups_by_member
                    .entry(member.clone())
                    .or_default()
                    .push(group.clone());
            }
        }
        for list in groups_by_member.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        let owners = owners
            .into_iter()
            .map(|(kind, objects)| {
                let objects = objects
                    .into_iter()
                    .map(|(id, principals)| {
                        let mut parsed: Vec<Principal> = principals
                            .iter()
                            .filter_map(|p| Principal::parse(p))
                            .collect();
                        parsed.sort_unstable();
                        parsed.dedup();
                        (id, parsed)
                    })
                    .collect();
                (kind, objects)
            })
            .collect();
        Self {
            groups_by_member,
            owners,
        }
    }

    /// The number of ownership entries of every type.
    pub fn ownership_entries(&self) -> usize {
        self.owners.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
impl AclData for &MemoryAclData {
    fn groups_of(&mut self, consumer: &str) -> Result<Vec<String>, AclDataError> {
        Ok(self
            .groups_by_member
            .get(consumer)
            .cloned()
            .unwrap_or_default())
    }

    fn owners_of(&mut self, kind: &str, id: &str) -> Result<Option<Vec<Principal>>, AclDataError> {
        Ok(self
            .owners
            .get(kind)
            .and_then(|objects| objects.get(id))
            .cloned())
    }
}

#[cfg(test)]
impl AclData for MemoryAclData {
    fn groups_of(&mut self, consumer: &str) -> Result<Vec<String>, AclDataError> {
        (&*self).groups_of(consumer)
    }

    fn owners_of(&mut self, kind: &str, id: &str) -> Result<Option<Vec<Principal>>, AclDataError> {
        (&*self).owners_of(kind, id)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn groups(pairs: &[(&str, &[&str])]) -> GroupsConfig {
        pairs
            .iter()
            .map(|(g, m)| ((*g).to_owned(), m.iter().map(|s| (*s).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn principals_parse_and_print_both_forms() {
        for text in ["consumer:alice", "group:support"] {
            let p = Principal::parse(text).unwrap();
            assert_eq!(p.to_string(), text);
        }
        for text in ["any", "user:alice", "consumer:", "group:a b", "alice"] {
            assert_eq!(Principal::parse(text), None, "{text}");
        }
    }

    #[test]
    fn memory_data_answers_groups_and_owners() {
        let mut owners = OwnersConfig::new();
        owners.entry("account".to_owned()).or_default().insert(
            "acct-1".to_owned(),
            vec!["group:support".to_owned(), "consumer:alice".to_owned()],
        );
        let g = groups(&[("support", &["bob", "carol"]), ("admins", &["bob", "bob"])]);
        check_acl_data(&g, &owners).unwrap();
        let mut data = MemoryAclData::new(&g, owners);
        assert_eq!(data.groups_of("bob").unwrap(), ["admins", "support"]);
        assert!(data.groups_of("dave").unwrap().is_empty());
        assert_eq!(
            data.owners_of("account", "acct-1").unwrap().unwrap(),
            [
                Principal::Consumer("alice".to_owned()),
                Principal::Group("support".to_owned())
            ]
        );
        assert_eq!(data.owners_of("account", "acct-2").unwrap(), None);
        assert_eq!(data.owners_of("order", "acct-1").unwrap(), None);
        assert_eq!(data.ownership_entries(), 1);
    }

    #[test]
    fn bad_shapes_name_their_field() {
        let mut owners = OwnersConfig::new();
        owners
            .entry("account".to_owned())
            .or_default()
            .insert("a".to_owned(), vec!["alice".to_owned()]);
        let err = check_acl_data(&GroupsConfig::new(), &owners).unwrap_err();
        assert_eq!(err.path, "acl.owners.account");
        let err = check_acl_data(&groups(&[("g", &["a b"])]), &OwnersConfig::new()).unwrap_err();
        assert_eq!(err.path, "acl.groups.g[0]");
    }
}
