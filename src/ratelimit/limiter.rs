//! One VM's view of the proxy's buckets: where they live in shared data, and the three things a
//! request does with them (is this client throttled; count its failed authentication; take the
//! caller's quota).

use crate::denial::{Denial, RateLimitFields};
use crate::ports::{KeySpace, SharedStore, StoreError};
use crate::request::RequestFacts;

use super::{
    ceil_seconds, peek, proxy_salt, quota_key, take, BucketOwner, ClientAddressSource,
    CreationToken, FailedAuthLimit, Plan, TakeError, Verdict,
};

/// What taking a caller's quota decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quota {
    Admitted(RateLimitFields),
    Refused(Denial),
}

#[derive(Debug)]
pub struct Limiter {
    space: KeySpace,
    salt_candidate: u64,
    /// Read from shared data on first use: every VM of the proxy gets the same.
    shared: Option<(CreationToken, Vec<u8>)>,
    /// The operator was told that `connection` addresses come from `x-forwarded-for`.
    warned_forwarded: bool,
}

impl Limiter {
    /// `salt_candidate`: this VM's random proposal for the proxy's address salt.
    pub fn new(space: KeySpace, salt_candidate: u64) -> Self {
        Self {
            space,
            salt_candidate,
            shared: None,
            warned_forwarded: false,
        }
    }

    /// Sets up the probe key and the proxy's salt (at start-up; otherwise on first use).
    pub fn prepare(&mut self, store: &dyn SharedStore) -> Result<(), StoreError> {
        if self.shared.is_none() {
            let create = CreationToken::new(store, &self.space.key("rl/probe"))?;
            let salt = proxy_salt(store, &self.space, self.salt_candidate, create)?;
            self.shared = Some((create, salt));
        }
        Ok(())
    }

    fn shared(&mut self, store: &dyn SharedStore) -> Result<CreationToken, StoreError> {
        self.prepare(store)?;
        self.shared.as_ref().map(|(c, _)| *c).ok_or(StoreError)
    }

    /// The key of a client address's bucket.
    fn address_key(
        &mut self,
        limit: &FailedAuthLimit,
        address: &str,
        store: &dyn SharedStore,
    ) -> Result<(CreationToken, String), StoreError> {
        let create = self.shared(store)?;
        let salt = self.shared.as_ref().map_or(&[][..], |(_, s)| s.as_slice());
        Ok((create, limit.key(&self.space, salt, address)))
    }

    /// True the first time a `connection` address turns out to come from `x-forwarded-for`:
    /// the operator must hear of it once, not on every request.
    pub fn first_forwarded_connection_address(
        &mut self,
        limit: &FailedAuthLimit,
        req: &RequestFacts,
    ) -> bool {
        let forwarded =
            limit.source == ClientAddressSource::Connection && req.client_address_forwarded();
        let first = forwarded && !self.warned_forwarded;
        self.warned_forwarded |= forwarded;
        first
    }

    /// The refusal for a client whose failed-authentication bucket is empty (nothing is taken).
    pub fn throttled(
        &mut self,
        limit: &FailedAuthLimit,
        req: &RequestFacts,
        store: &dyn SharedStore,
        now_ns: i64,
    ) -> Result<Option<Denial>, StoreError> {
        let Some(address) = limit.client_address(req) else {
            return Ok(None);
        };
        let (_, key) = self.address_key(limit, address, store)?;
        Ok(match peek(store, &key, &limit.limit, now_ns)? {
            Verdict::Admitted { .. } => None,
            Verdict::Refused { retry_in_ns, .. } => Some(Denial::TooManyAuthFailures {
                retry_after: ceil_seconds(retry_in_ns, 1),
            }),
        })
    }

    /// Takes a token from the client's failed-authentication bucket.
    pub fn record_failure(
        &mut self,
        limit: &FailedAuthLimit,
        req: &RequestFacts,
        store: &dyn SharedStore,
        now_ns: i64,
    ) -> Result<(), TakeError> {
        let Some(address) = limit.client_address(req) else {
            return Ok(());
        };
        let (create, key) = self.address_key(limit, address, store)?;
        take(store, &key, &limit.limit, 1, now_ns, create).map(|_| ())
    }

    /// Takes `cost` tokens from the caller's bucket of `plan`.
    pub fn take_quota(
        &mut self,
        plan: &Plan,
        owner: BucketOwner<'_>,
        cost: u64,
        store: &dyn SharedStore,
        now_ns: i64,
    ) -> Result<Quota, TakeError> {
        let create = self.shared(store)?;
        let key = quota_key(&self.space, owner);
        Ok(
            match take(store, &key, &plan.limit, cost, now_ns, create)? {
                Verdict::Admitted {
                    remaining,
                    full_in_ns,
                    ..
                } => Quota::Admitted(RateLimitFields {
                    policy: plan.policy_field.clone(),
                    state: plan.state_field(remaining, full_in_ns),
                    remaining,
                }),
                Verdict::Refused {
                    retry_in_ns,
                    remaining,
                    full_in_ns,
                } => Quota::Refused(Denial::RateLimited {
                    retry_after: ceil_seconds(retry_in_ns, 1),
                    fields: Some(RateLimitFields {
                        policy: plan.policy_field.clone(),
                        state: plan.state_field(remaining, full_in_ns),
                        remaining,
                    }),
                }),
            },
        )
    }
}
