//! Quotas per caller and a throttle for failed authentication, both as token buckets in the
//! proxy's shared data, exact across Envoy workers.
//!
//! Keys are bounded by design (shared data can never be deleted):
//! - a caller with an API key has a bucket named by a digest of its consumer id (`bucket_by:
//!   consumer`) or of its key (`key`): as many keys as the configuration has consumers or keys;
//! - a caller with a JWT only is bucketed by a digest of issuer and subject into one of
//!   [`SUBJECT_SLOTS`] slots; two subjects that share a slot share a bucket;
//! - a client address is bucketed by a keyed digest (a random salt per proxy) into one of
//!   `max_tracked_clients` slots.
//!
//! Nothing is ever evicted, so sharing a slot can only make a limit stricter for both callers,
//! never looser: flooding the table with new addresses cannot hand anyone a fresh bucket.

mod bucket;
mod config;
mod global;
mod limiter;
pub mod rls;
mod shared;

use std::collections::HashMap;
use std::rc::Rc;

use sha2::{Digest, Sha256};

pub use self::bucket::{ceil_seconds, Limit, Per, Verdict};
pub use self::config::{
    BucketBy, ClientAddressSource, FailedAuthConfig, FailureMode, GlobalRateLimitConfig,
    OnContention, PlanConfig, RateLimitsConfig,
};
pub use self::global::{DescriptorFacts, GlobalRateLimit, GlobalVerdict};
pub use self::limiter::{Limiter, Quota};
pub use self::shared::{peek, take, CreationToken, TakeError, CAS_ATTEMPTS};

use crate::config_error::ConfigError;
use crate::ports::{KeySpace, SharedStore, StoreError};
use crate::request::RequestFacts;

/// Slots for the buckets of JWT-only callers (bounded: subjects are not configured).
pub const SUBJECT_SLOTS: u32 = 65_536;

/// Largest `max_tracked_clients`.
const MAX_TRACKED_CLIENTS: u32 = 1 << 24;

/// A named plan.
#[derive(Debug)]
pub struct Plan {
    pub name: Rc<str>,
    pub limit: Limit,
    /// `RateLimit-Policy` (IETF httpapi RateLimit fields): the plan, its burst, the seconds to
    /// refill the whole burst. Fixed by the configuration, so written once.
    pub policy_field: String,
}

impl Plan {
    pub fn new(name: &str, limit: Limit) -> Self {
        let policy_field = format!(
            "\"{name}\";q={};w={}",
            limit.burst(),
            limit.window_seconds()
        );
        Self {
            name: Rc::from(name),
            limit,
            policy_field,
        }
    }

    /// `RateLimit`: tokens left and seconds until the bucket is full again.
    pub fn state_field(&self, remaining: u64, full_in_ns: i64) -> String {
        format!(
            "\"{}\";r={remaining};t={}",
            self.name,
            ceil_seconds(full_in_ns, 0)
        )
    }
}

/// Compiled `rate_limits`.
#[derive(Debug)]
pub struct RateLimits {
    plans: HashMap<String, Rc<Plan>>,
    default_plan: Option<Rc<Plan>>,
    consumers: HashMap<String, Rc<Plan>>,
    pub plan_claim: Option<String>,
    pub bucket_by: BucketBy,
    pub on_store_contention: OnContention,
    pub response_headers: bool,
}

fn compile_limit(
    rate: u64,
    per: config::PerConfig,
    burst: u64,
    at: &str,
) -> Result<Limit, ConfigError> {
    if rate == 0 {
        return Err(ConfigError::new(format!("{at}.rate"), "must be at least 1"));
    }
    if burst == 0 {
        return Err(ConfigError::new(
            format!("{at}.burst"),
            "must be at least 1",
        ));
    }
    Ok(Limit::new(rate, per.into(), burst))
}

/// A plan name goes into response headers between quotes.
pub fn is_plan_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

impl RateLimits {
    pub fn compile(cfg: RateLimitsConfig) -> Result<Self, ConfigError> {
        let mut plans = HashMap::new();
        for (name, plan) in cfg.plans {
            let at = format!("rate_limits.plans.{name}");
            if !is_plan_name(&name) {
                return Err(ConfigError::new(
                    at,
                    "a plan name must be 1-64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            let limit = compile_limit(plan.rate, plan.per, plan.burst, &at)?;
            let plan = Rc::new(Plan::new(&name, limit));
            plans.insert(name, plan);
        }
        if plans.is_empty() {
            return Err(ConfigError::new(
                "rate_limits.plans",
                "must name at least one plan",
            ));
        }
        let lookup = |name: &str, at: String| {
            plans.get(name).cloned().ok_or_else(|| {
                ConfigError::new(at, "names a plan that rate_limits.plans does not define")
            })
        };
        let default_plan = cfg
            .default_plan
            .as_deref()
            .map(|name| lookup(name, "rate_limits.default_plan".to_owned()))
            .transpose()?;
        let mut consumers = HashMap::new();
        for (consumer, plan) in cfg.consumers {
            let plan = lookup(&plan, format!("rate_limits.consumers.{consumer}"))?;
            consumers.insert(consumer, plan);
        }
        if cfg.plan_claim.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new(
                "rate_limits.plan_claim",
                "must not be empty",
            ));
        }
        Ok(Self {
            plans,
            default_plan,
            consumers,
            plan_claim: cfg.plan_claim,
            bucket_by: cfg.bucket_by,
            on_store_contention: cfg.on_store_contention,
            response_headers: cfg.response_headers,
        })
    }

    pub fn plan(&self, name: &str) -> Option<&Rc<Plan>> {
        self.plans.get(name)
    }

    pub fn plans(&self) -> impl Iterator<Item = &Rc<Plan>> {
        self.plans.values()
    }

    /// The caller's plan: its key's, its consumer's, the plan its token's claim names (only a
    /// configured one), or the default. `None`: not limited.
    pub fn plan_for(
        &self,
        key_plan: Option<&str>,
        consumer: Option<&str>,
        claim: Option<&str>,
    ) -> Option<Rc<Plan>> {
        key_plan
            .and_then(|p| self.plans.get(p))
            .or_else(|| consumer.and_then(|c| self.consumers.get(c)))
            .or_else(|| claim.and_then(|c| self.plans.get(c)))
            .or(self.default_plan.as_ref())
            .cloned()
    }
}

/// Whose bucket a request takes from.
#[derive(Debug, Clone, Copy)]
pub enum BucketOwner<'a> {
    Consumer(&'a str),
    Key(&'a [u8; 32]),
    Subject { issuer: &'a str, subject: &'a str },
}

fn digest_hex(parts: &[&[u8]], bytes: usize) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn slot(parts: &[&[u8]], slots: u32) -> u32 {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
        h.update([0]);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    u32::try_from(u64::from_le_bytes(first) % u64::from(slots.max(1))).unwrap_or(0)
}

/// The shared-data key of a quota bucket.
pub fn quota_key(space: &KeySpace, owner: BucketOwner<'_>) -> String {
    match owner {
        BucketOwner::Consumer(c) => space.key(&format!("rl/c/{}", digest_hex(&[c.as_bytes()], 8))),
        BucketOwner::Key(d) => space.key(&format!("rl/k/{}", digest_hex(&[d], 8))),
        BucketOwner::Subject { issuer, subject } => space.key(&format!(
            "rl/s/{}",
            slot(&[issuer.as_bytes(), subject.as_bytes()], SUBJECT_SLOTS)
        )),
    }
}

/// Compiled `failed_auth_limit`.
#[derive(Debug)]
pub struct FailedAuthLimit {
    pub limit: Limit,
    pub source: ClientAddressSource,
    pub trusted_hops: u32,
    pub slots: u32,
}

impl FailedAuthLimit {
    pub fn compile(cfg: FailedAuthConfig) -> Result<Self, ConfigError> {
        let limit = compile_limit(cfg.rate, cfg.per, cfg.burst, "failed_auth_limit")?;
        if !(1..=MAX_TRACKED_CLIENTS).contains(&cfg.max_tracked_clients) {
            return Err(ConfigError::new(
                "failed_auth_limit.max_tracked_clients",
                format!("must be between 1 and {MAX_TRACKED_CLIENTS}"),
            ));
        }
        if cfg.trusted_hops > 0 && cfg.client_address == ClientAddressSource::Connection {
            return Err(ConfigError::new(
                "failed_auth_limit.trusted_hops",
                "only applies when client_address is x_forwarded_for",
            ));
        }
        if cfg.trusted_hops > 64 {
            return Err(ConfigError::new(
                "failed_auth_limit.trusted_hops",
                "must be at most 64",
            ));
        }
        Ok(Self {
            limit,
            source: cfg.client_address,
            trusted_hops: cfg.trusted_hops,
            slots: cfg.max_tracked_clients,
        })
    }

    /// The client's address: the connection's, or the `x-forwarded-for` entry `trusted_hops`
    /// from the right (0: the rightmost); too few entries, or none, the connection's.
    pub fn client_address<'r>(&self, req: &'r RequestFacts) -> Option<&'r str> {
        if self.source == ClientAddressSource::XForwardedFor {
            // Several x-forwarded-for headers read as one list, in order.
            let entries: Vec<&str> = req
                .header_values("x-forwarded-for")
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect();
            let hops = usize::try_from(self.trusted_hops).unwrap_or(usize::MAX);
            if let Some(entry) = entries
                .len()
                .checked_sub(hops.saturating_add(1))
                .and_then(|i| entries.get(i))
                .filter(|e| !e.is_empty())
            {
                return Some(entry);
            }
        }
        req.client_address()
    }

    /// The shared-data key of a client address's bucket.
    pub fn key(&self, space: &KeySpace, salt: &[u8], address: &str) -> String {
        space.key(&format!(
            "rl/a/{}",
            slot(&[salt, address.as_bytes()], self.slots)
        ))
    }
}

/// The proxy's salt for client-address slots: the first VM's candidate wins, every VM reads it
/// back (so all agree), and it is never overwritten.
pub fn proxy_salt(
    store: &dyn SharedStore,
    space: &KeySpace,
    candidate: u64,
    create: CreationToken,
) -> Result<Vec<u8>, StoreError> {
    let key = space.key("rl/salt");
    if store.get(&key)?.is_none() {
        store.set(&key, &candidate.to_le_bytes(), Some(create.token()))?;
    }
    Ok(store.get(&key)?.map(|s| s.value).unwrap_or_default())
}

#[cfg(test)]
mod global_pipeline_tests;
#[cfg(test)]
mod tests;
