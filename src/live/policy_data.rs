//! Policy data in one VM: the live document, fetched for the whole proxy when this VM holds the
//! lease (conditionally, with the ETag of the version in force), or the ACL data written in the
//! configuration; validated whole, written into shared data as a sharded table (see
//! [`super::table`]), and looked up (keys, groups, owners) in whatever version the proxy has in
//! force.

use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::document::{validate, DocumentRules};
use super::source::DataSource;
use super::table::{
    find_in_shard, group_index, owner_index, shard_bits_for, shard_key, shard_of, write_generation,
    Descriptor, Generation, LiveKeyEntry, ShardLookup, ShardTag, TableEntry,
};
use super::{Feed, FeedTiming, FetchReason, Lease, Published};
use crate::ports::{
    Call, CallFailure, CallReply, Event, Events, HttpCall, KeySpace, SharedStore, StoreError,
};
use crate::secret::ct_eq;

/// The longest ETag kept for conditional requests (a longer one is simply not used).
const MAX_ETAG_LEN: usize = 256;
/// After a refresh is due, the VM that fetched last has this long to take it before any other
/// VM may: the document's peak memory stays in one VM (wasm memory never shrinks).
const STICKY_MS: i64 = 1000;

/// Why a request that needs the live document cannot be decided with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataUnavailable {
    /// No version has been loaded yet (or the one in force is being replaced under the reader).
    NotLoaded,
    /// The endpoint has not confirmed the version in force for longer than `max_stale_seconds`.
    Stale,
    /// Shared data failed.
    StoreFailed,
}

/// What this VM reads with: the proxy's version in force and its layout.
#[derive(Debug, Clone, Default)]
struct View {
    version: u64,
    descriptor: Option<Descriptor>,
    last_ok_ms: i64,
}

/// Where a table's data comes from.
#[derive(Debug)]
enum Origin {
    /// The control endpoint of `data_source`.
    Endpoint(DataSource),
    /// The configuration's `acl.groups` and `acl.owners` (`acl_json`: an object with those two
    /// members). When configurations change, VMs of the old one and the new one share the table
    /// for a while: the newest configuration (by the time a VM first published) is the one in
    /// force.
    Configuration {
        acl_json: Rc<[u8]>,
        configured_at_ms: Option<i64>,
    },
}

/// The document version a configuration's data is published under (the publisher's
/// configuration time: an older configuration's VM never replaces a newer one's data).
const CONFIGURATION_VERSION: &str = "configuration ";

#[derive(Debug)]
pub struct PolicyData {
    origin: Origin,
    feed: Feed,
    /// Shard keys start with this.
    prefix: String,
    timing: FeedTiming,
    view: View,
    /// What a document was validated against (configured digests, plan names): published
    /// digests cover it too, so the same body under another configuration is validated again.
    rules_digest: [u8; 32],
    /// The version this VM last announced as in force (an event per VM and version).
    announced: u64,
    /// This VM's lease, and when it took it.
    lease: Option<(Lease, i64)>,
}

impl PolicyData {
    /// `rules_digest` names the configuration a document is validated against (see
    /// [`rules_digest`]).
    pub fn new(source: DataSource, space: &KeySpace, rules_digest: [u8; 32]) -> Self {
        let name = feed_name(&source);
        let timing = FeedTiming {
            refresh_ms: source.refresh_ms,
            // A failed or refused fetch is retried at the next refresh.
            min_refetch_ms: source.refresh_ms,
            // Long enough for the call and for validating and writing a large document.
            lease_ms: i64::try_from(source.timeout_ms.saturating_mul(2))
                .unwrap_or(i64::MAX)
                .saturating_add(30_000),
            sticky_ms: STICKY_MS,
        };
        Self::with_origin(Origin::Endpoint(source), &name, timing, space, rules_digest)
    }

    /// The ACL data of a configuration (`acl_json`: an object with `groups` and `owners`). It
    /// is published by the first VM to take the lease (see [`PolicyData::publish_configured`])
    /// and never goes stale.
    pub fn configured(acl_json: Rc<[u8]>, space: &KeySpace, rules_digest: [u8; 32]) -> Self {
        let timing = FeedTiming {
            refresh_ms: i64::MAX / 4,
            // A publisher that died half-way is replaced once its lease expires.
            min_refetch_ms: 1000,
            lease_ms: 60_000,
            sticky_ms: 0,
        };
        let origin = Origin::Configuration {
            acl_json,
            configured_at_ms: None,
        };
        Self::with_origin(origin, "config-data", timing, space, rules_digest)
    }

    fn with_origin(
        origin: Origin,
        name: &str,
        timing: FeedTiming,
        space: &KeySpace,
        rules_digest: [u8; 32],
    ) -> Self {
        Self {
            feed: Feed::new(space, name),
            prefix: space.key(name),
            timing,
            origin,
            view: View::default(),
            rules_digest,
            announced: 0,
            lease: None,
        }
    }

    /// The control endpoint, for data fetched from one.
    pub fn source(&self) -> Option<&DataSource> {
        match &self.origin {
            Origin::Endpoint(source) => Some(source),
            Origin::Configuration { .. } => None,
        }
    }

    pub fn create(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        self.feed.create(store)
    }

    /// The document version in force in this VM's view (0 = none loaded).
    pub fn version(&self) -> u64 {
        self.view.version
    }

    fn refresh_view(&mut self, store: &dyn SharedStore) -> Result<(), StoreError> {
        let state = self.feed.state(store)?;
        self.view = View {
            version: state.version,
            descriptor: Descriptor::decode(&state.extra),
            last_ok_ms: state.last_ok_ms,
        };
        Ok(())
    }

    /// The periodic turn: see what the proxy has in force; start a fetch when this VM takes the
    /// lease.
    pub fn tick(
        &mut self,
        store: &dyn SharedStore,
        holder: u64,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> Result<Option<Call>, StoreError> {
        self.refresh_view(store)?;
        if self.view.version != self.announced {
            self.announced = self.view.version;
            events.emit(Event::DataInForce {
                version: self.view.version,
                document_version: self
                    .view
                    .descriptor
                    .as_ref()
                    .map(|d| d.document_version.clone())
                    .unwrap_or_default(),
            });
        }
        let Origin::Endpoint(source) = &self.origin else {
            return Ok(None);
        };
        if let Some((_, taken_ms)) = self.lease {
            if now_ms < taken_ms.saturating_add(self.timing.lease_ms) {
                return Ok(None);
            }
            // The answer never came: the lease has expired for everyone, ours too.
            self.lease = None;
        }
        let Some(lease) =
            self.feed
                .try_lease(store, holder, FetchReason::Scheduled, self.timing, now_ms)?
        else {
            return Ok(None);
        };
        let call = self.call(source);
        self.lease = Some((lease, now_ms));
        Ok(Some(call))
    }

    fn call(&self, source: &DataSource) -> Call {
        let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
        let etag = self.view.descriptor.as_ref().map(|d| d.etag.as_str());
        if let Some(etag) = etag.filter(|e| self.view.version != 0 && !e.is_empty()) {
            headers.push(("if-none-match".to_owned(), etag.to_owned()));
        }
        Call::Http(HttpCall {
            cluster: source.cluster.clone(),
            method: "GET".to_owned(),
            path: source.path.clone(),
            authority: source.authority.clone(),
            headers,
            body: Vec::new(),
            timeout_ms: source.timeout_ms,
        })
    }

    /// The answer to this VM's fetch: publish a new valid version, confirm an unchanged one,
    /// or keep the one in force and say why.
    pub fn on_reply(
        &mut self,
        reply: &CallReply,
        rules: &DocumentRules<'_>,
        store: &dyn SharedStore,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> Result<(), StoreError> {
        let Some((lease, _)) = self.lease.take() else {
            return Ok(());
        };
        let outcome = self.apply_reply(reply, lease, rules, store, now_ms, events);
        if outcome.is_err() {
            // Shared data failed half-way: give the lease back; the next refresh tries again.
            let _ = self.feed.fail(store, lease, self.timing, now_ms);
        }
        outcome
    }

    fn apply_reply(
        &mut self,
        reply: &CallReply,
        lease: Lease,
        rules: &DocumentRules<'_>,
        store: &dyn SharedStore,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> Result<(), StoreError> {
        let fail = |this: &Self, reason: String, events: &mut dyn Events| {
            events.emit(Event::DataFetchFailed { reason });
            this.feed.fail(store, lease, this.timing, now_ms)
        };
        let (headers, body) = match reply {
            CallReply::Failed(CallFailure::TooLarge { bytes }) => {
                events.emit(Event::DataRefused {
                    path: String::new(),
                    message: format!(
                        "the document has {bytes} bytes, more than data_source.max_document_bytes ({})",
                        rules.max_bytes
                    ),
                    in_force: self.view.version,
                });
                return self.feed.fail(store, lease, self.timing, now_ms);
            }
            CallReply::Failed(CallFailure::NoResponse) => {
                // Envoy answers a body over its buffer limit the same way as a dead endpoint.
                let reason = "no response (connection failure, timeout, or an answer larger than \
                              Envoy's http.async_response_buffer_limit, 32 MiB by default)";
                return fail(self, reason.to_owned(), events);
            }
            CallReply::Failed(failure) => return fail(self, failure.to_string(), events),
            CallReply::Answered { status: 304, .. } if self.view.version != 0 => {
                events.emit(Event::DataNotModified);
                self.feed.confirm(store, lease, self.timing, now_ms, None)?;
                return self.refresh_view(store);
            }
            CallReply::Answered {
                status: 200,
                headers,
                body,
            } => (headers, body),
            CallReply::Answered { status, .. } => {
                return fail(self, format!("the endpoint answered {status}"), events)
            }
            CallReply::Message(_) => {
                return fail(
                    self,
                    "a gRPC message instead of an HTTP answer".to_owned(),
                    events,
                )
            }
        };
        let digest = body_digest(&self.rules_digest, body);
        let etag = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("etag"))
            .map(|(_, v)| v.clone())
            .filter(|v| v.len() <= MAX_ETAG_LEN)
            .unwrap_or_default();
        let state = self.feed.state(store)?;
        if state.version != 0 && state.digest == digest {
            // The same bytes again (an endpoint without ETags, or a file touched): nothing to
            // validate; a new ETag is kept so the next refresh can be a 304.
            events.emit(Event::DataNotModified);
            let descriptor = Descriptor::decode(&state.extra)
                .filter(|d| d.etag != etag)
                .map(|d| Descriptor { etag, ..d }.encode());
            self.feed
                .confirm(store, lease, self.timing, now_ms, descriptor)?;
            return self.refresh_view(store);
        }
        self.publish(body, digest, etag, lease, rules, store, now_ms, events)
    }

    /// Validates `body` and writes it as the next version (this VM holds `lease`).
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        body: &[u8],
        digest: [u8; 32],
        etag: String,
        lease: Lease,
        rules: &DocumentRules<'_>,
        store: &dyn SharedStore,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> Result<(), StoreError> {
        let state = self.feed.state(store)?;
        let document = match validate(body, rules) {
            Ok(document) => document,
            Err(refusal) => {
                events.emit(Event::DataRefused {
                    path: refusal.path,
                    message: refusal.message,
                    in_force: state.version,
                });
                return self.feed.fail(store, lease, self.timing, now_ms);
            }
        };
        let Some(pending) = self.feed.begin_publish(store, lease, self.timing, now_ms)? else {
            // Another VM took the lease over, or the state kept changing under us: give it back
            // if it is still ours (the next refresh tries again).
            return self.feed.fail(store, lease, self.timing, now_ms);
        };
        let current = Descriptor::decode(&pending.current_extra);
        let slot = current.as_ref().map_or(0, |d| 1 - d.slot);
        let mut slot_shards = current.as_ref().map_or([0, 0], |d| d.slot_shards);
        let shard_bits = shard_bits_for(document.entries.len());
        let generation = Generation {
            feed_prefix: &self.prefix,
            slot,
            shard_bits,
            previous_shards: slot_shards.get(usize::from(slot)).copied().unwrap_or(0),
            tag: ShardTag {
                version: pending.version,
                writer: lease.holder(),
            },
        };
        let (feed, timing) = (&self.feed, self.timing);
        let mut still_ours = || feed.renew(store, lease, timing, now_ms);
        let Some(written) =
            write_generation(store, generation, &document.entries, &mut still_ours)?
        else {
            return Ok(());
        };
        if let Some(n) = slot_shards.get_mut(usize::from(slot)) {
            *n = written;
        }
        let entries = u64::try_from(document.entries.len()).unwrap_or(u64::MAX);
        let descriptor = Descriptor {
            writer: lease.holder(),
            slot,
            shard_bits,
            slot_shards,
            entries,
            etag,
            document_version: document.version.clone(),
        };
        let published = self.feed.commit(
            store,
            &pending,
            digest,
            descriptor.encode(),
            self.timing,
            now_ms,
        )?;
        if let (Published::New { version }, Origin::Configuration { .. }) =
            (published, &self.origin)
        {
            events.emit(Event::ConfigDataPublished {
                version,
                acl_groups: document.acl_groups,
                acl_ownership_entries: document.acl_ownership_entries,
            });
        } else if let Published::New { version } = published {
            events.emit(Event::DataLoaded {
                document_version: document.version,
                version,
                api_keys: u64::try_from(document.api_keys).unwrap_or(u64::MAX),
                acl_groups: document.acl_groups,
                acl_ownership_entries: document.acl_ownership_entries,
            });
        }
        self.refresh_view(store)
    }

    /// Whether the endpoint has failed for longer than `max_stale_seconds`, counted from the
    /// refresh that was due after its last confirmation.
    fn is_stale(&self, now_ms: i64) -> bool {
        let Origin::Endpoint(source) = &self.origin else {
            return false;
        };
        let max_stale = source.max_stale_ms;
        let failing_since = self.view.last_ok_ms.saturating_add(source.refresh_ms);
        max_stale > 0 && now_ms.saturating_sub(failing_since) > max_stale
    }

    /// Publishes the configuration's data when the proxy has something else in force (nothing
    /// yet, or an older configuration's) and this VM takes the lease. Called at start-up and on
    /// every tick (a publisher may have died half-way).
    pub fn publish_configured(
        &mut self,
        rules: &DocumentRules<'_>,
        store: &dyn SharedStore,
        holder: u64,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> Result<(), StoreError> {
        let Origin::Configuration {
            acl_json,
            configured_at_ms,
        } = &mut self.origin
        else {
            return Ok(());
        };
        // The first call is at start-up: that is when this VM's configuration came.
        let configured_at_ms = *configured_at_ms.get_or_insert(now_ms);
        // The data alone: every VM of one configuration has the same digest.
        let digest = body_digest(&self.rules_digest, acl_json);
        let body = configuration_document(configured_at_ms, acl_json);
        let state = self.feed.state(store)?;
        if state.version != 0 {
            if state.digest == digest {
                return Ok(());
            }
            let in_force_at = Descriptor::decode(&state.extra).and_then(|d| {
                d.document_version
                    .strip_prefix(CONFIGURATION_VERSION)
                    .and_then(|at| at.parse::<i64>().ok())
            });
            if in_force_at.is_some_and(|at| at > configured_at_ms) {
                return Ok(());
            }
        }
        let Some(lease) =
            self.feed
                .try_lease(store, holder, FetchReason::Early, self.timing, now_ms)?
        else {
            return Ok(());
        };
        let outcome = self.publish(
            &body,
            digest,
            String::new(),
            lease,
            rules,
            store,
            now_ms,
            events,
        );
        if outcome.is_err() {
            let _ = self.feed.fail(store, lease, self.timing, now_ms);
        }
        outcome
    }

    /// The live entry of a key's digest in the version the proxy has in force.
    pub fn lookup(
        &mut self,
        digest: &[u8; 32],
        store: &dyn SharedStore,
        now_ms: i64,
    ) -> Result<Option<LiveKeyEntry>, DataUnavailable> {
        match self.find(digest, store, now_ms)? {
            // The index compares digests; the match is confirmed in constant time.
            Some(TableEntry::Key(entry)) if ct_eq(&entry.digest, digest) => Ok(Some(entry)),
            _ => Ok(None),
        }
    }

    /// The groups that list `consumer`, in the version in force (empty when none does).
    pub fn groups_of(
        &mut self,
        consumer: &str,
        store: &dyn SharedStore,
        now_ms: i64,
    ) -> Result<Vec<String>, DataUnavailable> {
        match self.find(&group_index(consumer), store, now_ms)? {
            Some(TableEntry::Groups { groups, .. }) => Ok(groups),
            _ => Ok(Vec::new()),
        }
    }

    /// The owners (`consumer:<id>`, `group:<name>`) of object `id` of type `kind`, in the
    /// version in force; `None` when the object has no entry.
    pub fn owners_of(
        &mut self,
        kind: &str,
        id: &str,
        store: &dyn SharedStore,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>, DataUnavailable> {
        match self.find(&owner_index(kind, id), store, now_ms)? {
            Some(TableEntry::Owners { principals, .. }) => Ok(Some(principals)),
            _ => Ok(None),
        }
    }

    /// The entry under `digest` in the version the proxy has in force.
    fn find(
        &mut self,
        digest: &[u8; 32],
        store: &dyn SharedStore,
        now_ms: i64,
    ) -> Result<Option<TableEntry>, DataUnavailable> {
        let failed = |_: StoreError| DataUnavailable::StoreFailed;
        if self.view.version == 0 {
            // Nothing loaded at the last tick: look again (the first version may just be in).
            self.refresh_view(store).map_err(failed)?;
        }
        if self.view.version == 0 {
            return Err(DataUnavailable::NotLoaded);
        }
        if self.is_stale(now_ms) {
            // The view is up to a tick old: another VM may just have confirmed the document.
            self.refresh_view(store).map_err(failed)?;
            if self.is_stale(now_ms) {
                return Err(DataUnavailable::Stale);
            }
        }
        for _ in 0..2 {
            let Some(descriptor) = &self.view.descriptor else {
                return Err(DataUnavailable::NotLoaded);
            };
            let key = shard_key(
                &self.prefix,
                descriptor.slot,
                shard_of(digest, descriptor.shard_bits),
            );
            let shard = store.get(&key).map_err(failed)?;
            let shard = shard.as_ref().map_or(&[][..], |s| s.value.as_slice());
            let tag = ShardTag {
                version: self.view.version,
                writer: descriptor.writer,
            };
            match find_in_shard(shard, tag, digest) {
                ShardLookup::Found(entry) => return Ok(Some(entry)),
                ShardLookup::Absent => return Ok(None),
                // The slot was rewritten since this VM looked: look at the state again.
                ShardLookup::OtherVersion => self.refresh_view(store).map_err(failed)?,
            }
        }
        Err(DataUnavailable::NotLoaded)
    }
}

/// What a published version is known by: the rules it was validated against and its bytes.
fn body_digest(rules_digest: &[u8; 32], body: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(rules_digest)
        .chain_update(body)
        .finalize()
        .into()
}

/// The document a configuration's ACL data is published as (validated like a fetched one).
fn configuration_document(configured_at_ms: i64, acl_json: &[u8]) -> Vec<u8> {
    let mut body = format!(r#"{{"version": "{CONFIGURATION_VERSION}{configured_at_ms}", "acl": "#)
        .into_bytes();
    body.extend_from_slice(acl_json);
    body.push(b'}');
    body
}

/// What documents are validated against: the configured key digests and the plan names.
pub fn rules_digest(rules: &DocumentRules<'_>, plan_names: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    if let Some(keys) = rules.config_keys {
        h.update(keys.digest_set_fingerprint());
    }
    let mut names = plan_names.to_vec();
    names.sort_unstable();
    for name in names {
        h.update(name.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// The document's name in shared data: a digest of where it comes from.
fn feed_name(source: &DataSource) -> String {
    let mut h = Sha256::new();
    for part in [&source.cluster, &source.authority, &source.path] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("data/{hex}")
}

#[cfg(test)]
mod tests;
