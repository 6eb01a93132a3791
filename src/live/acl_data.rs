//! The ACL's data as requests read it: the configuration's `acl.groups` / `acl.owners` and the
//! live document's `acl` section, each a table in shared data (one copy per proxy), read one
//! entry at a time. A caller's groups and an object's owners are the union of both.

use super::policy_data::{DataUnavailable, PolicyData};
use crate::acl::{AclData, AclDataError, Principal};
use crate::ports::SharedStore;

/// The tables a request's ACL lookups read.
pub struct SharedAclData<'a> {
    /// The configuration's ACL data, when it has some.
    pub configured: Option<&'a mut PolicyData>,
    /// The live document, when `data_source` is configured.
    pub live: Option<&'a mut PolicyData>,
    pub store: &'a dyn SharedStore,
    pub now_ms: i64,
}

impl SharedAclData<'_> {
    fn tables(&mut self) -> impl Iterator<Item = &mut PolicyData> {
        [self.configured.as_deref_mut(), self.live.as_deref_mut()]
            .into_iter()
            .flatten()
    }
}

fn unavailable(e: DataUnavailable) -> AclDataError {
    match e {
        DataUnavailable::NotLoaded => AclDataError::NotLoaded,
        DataUnavailable::Stale => AclDataError::Stale,
        DataUnavailable::StoreFailed => AclDataError::Store,
    }
}

impl AclData for SharedAclData<'_> {
    fn groups_of(&mut self, consumer: &str) -> Result<Vec<String>, AclDataError> {
        let (store, now_ms) = (self.store, self.now_ms);
        let mut groups = Vec::new();
        for table in self.tables() {
            groups.extend(
                table
                    .groups_of(consumer, store, now_ms)
                    .map_err(unavailable)?,
            );
        }
        groups.sort_unstable();
        groups.dedup();
        Ok(groups)
    }

    fn owners_of(&mut self, kind: &str, id: &str) -> Result<Option<Vec<Principal>>, AclDataError> {
        let (store, now_ms) = (self.store, self.now_ms);
        let mut owners: Option<Vec<Principal>> = None;
        for table in self.tables() {
            if let Some(listed) = table
                .owners_of(kind, id, store, now_ms)
                .map_err(unavailable)?
            {
                // Validated when published: every name parses.
                owners
                    .get_or_insert_with(Vec::new)
                    .extend(listed.iter().filter_map(|p| Principal::parse(p)));
            }
        }
        if let Some(owners) = owners.as_mut() {
            owners.sort_unstable();
            owners.dedup();
        }
        Ok(owners)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::live::document::DocumentRules;
    use crate::ports::fakes::{MemoryStore, RecordedEvents};
    use crate::ports::{CallReply, KeySpace};

    const NOW: i64 = 1_800_000_000_000;

    fn rules() -> DocumentRules<'static> {
        DocumentRules {
            max_bytes: 1 << 20,
            config_keys: None,
            plans: crate::key_entry::KnownPlans::Configured(None),
        }
    }

    fn configured(store: &MemoryStore, acl: serde_json::Value) -> PolicyData {
        let mut data = PolicyData::configured(
            acl.to_string().into_bytes().into(),
            &KeySpace::new("apiguard"),
            [0; 32],
        );
        data.create(store).unwrap();
        data.publish_configured(&rules(), store, 1, NOW, &mut RecordedEvents::default())
            .unwrap();
        data
    }

    /// A live document's VM, before anything is fetched.
    fn unloaded(store: &MemoryStore) -> PolicyData {
        let source = crate::live::source::DataSource {
            cluster: "control".into(),
            path: "/p".into(),
            authority: "control".into(),
            refresh_ms: 10_000,
            timeout_ms: 1000,
            max_document_bytes: 1 << 20,
            max_stale_ms: 0,
        };
        let data = PolicyData::new(source, &KeySpace::new("apiguard"), [0; 32]);
        data.create(store).unwrap();
        data
    }

    fn live(store: &MemoryStore, doc: serde_json::Value) -> PolicyData {
        let mut data = unloaded(store);
        let mut events = RecordedEvents::default();
        data.tick(store, 2, NOW, &mut events).unwrap().unwrap();
        let reply = CallReply::Answered {
            status: 200,
            headers: vec![],
            body: doc.to_string().into_bytes(),
        };
        data.on_reply(&reply, &rules(), store, NOW, &mut events)
            .unwrap();
        data
    }

    #[test]
    fn groups_and_owners_are_the_union_of_configuration_and_live_document() {
        let store = MemoryStore::default();
        let mut cfg = configured(
            &store,
            serde_json::json!({"groups": {"support": ["bob"]},
                "owners": {"account": {"a1": ["group:support"], "a2": ["consumer:bob"]}}}),
        );
        let mut doc = live(
            &store,
            serde_json::json!({"version": "v1", "acl": {"groups": {"auditors": ["bob"]},
                "owners": {"account": {"a1": ["consumer:carol"], "a3": ["consumer:dave"]}}}}),
        );
        let mut data = SharedAclData {
            configured: Some(&mut cfg),
            live: Some(&mut doc),
            store: &store,
            now_ms: NOW,
        };
        assert_eq!(data.groups_of("bob").unwrap(), ["auditors", "support"]);
        assert_eq!(
            data.owners_of("account", "a1").unwrap().unwrap(),
            [
                Principal::Consumer("carol".into()),
                Principal::Group("support".into())
            ]
        );
        assert_eq!(
            data.owners_of("account", "a3").unwrap().unwrap(),
            [Principal::Consumer("dave".into())]
        );
        assert_eq!(data.owners_of("account", "a9").unwrap(), None);
    }

    #[test]
    fn a_live_document_not_loaded_yet_fails_the_lookup_closed() {
        let store = MemoryStore::default();
        let mut cfg = configured(&store, serde_json::json!({"groups": {"support": ["bob"]}}));
        let mut doc = unloaded(&store);
        let mut data = SharedAclData {
            configured: Some(&mut cfg),
            live: Some(&mut doc),
            store: &store,
            now_ms: NOW,
        };
        assert_eq!(data.groups_of("bob"), Err(AclDataError::NotLoaded));
        assert_eq!(
            data.owners_of("account", "a1"),
            Err(AclDataError::NotLoaded)
        );
    }
}
