//! JWT access-token verification: the pure core (no host calls). Time comes in as `now_unix`,
//! remote JWKS bodies come in through [`JwtVerifier::on_jwks_response`].
//!
//! Order of checks for one token (cheapest and least trusting first):
//! size → cache hit (re-checks time claims only) → parse header (`alg` none/unknown, `crit`) →
//! parse claims → provider by `iss` → claim rules on the *unverified* claims (refresh-token
//! markers → `exp`/`nbf`/`iat`/lifetime → `iss`/`aud` → `sub`) → `alg` allow-list → key by `kid`
//! and key family → signature → forwarded claims.
//!
//! The claim rules run before the signature because a signature check is by far the most
//! expensive step, and most refused tokens are refused for what their claims say (above all
//! `exp`). They can only refuse: the claims are trusted — identity, forwarded claims, cache
//! entry — only once the signature has verified. So a forged token whose claims break a rule is
//! refused for that rule, not as `invalid_signature`; the client learns nothing it could not read
//! from its own token.

mod alg;
mod cache;
mod claims;
mod config;
mod ecdsa;
mod error;
mod es256;
pub(crate) mod jwks;
mod jwt_authn;
mod p256_field;
mod remote;
mod rsa_pkcs1;
#[cfg(test)]
pub(crate) mod test_keys;
mod token;
mod words;

use std::rc::Rc;

use serde_json::Value;

pub use self::alg::Alg;
pub use self::claims::VerifiedJwt;
pub use self::config::{
    JwtConfig, JwtSettings, ProviderConfig, RefreshClaimConfig, RemoteJwksConfig, Verification,
    VerifiedBy,
};
pub use self::error::{JwksError, JwtError, Malformed};
pub use self::jwt_authn::FILTER_NAMESPACE as JWT_AUTHN_NAMESPACE;

use self::alg::KeyFamily;
use self::cache::{CacheEntry, TokenCache};
use self::jwks::{key_array, parse_jwk, KeySource, VerifyKey, MAX_KEYS_PER_SET};
#[cfg(test)]
pub(crate) use self::remote::feed_name as jwks_feed_name;
use self::remote::RemoteState;
use self::token::{ParsedToken, SignatureChecked};
use crate::live::FetchReason;
use crate::ports::{CallReply, Event, Events, HttpCall, KeySpace, SharedStore, StoreError};

/// Largest JWKS response body accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A remote JWKS fetch to start: the provider it is for and the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksFetch {
    pub provider: usize,
    pub call: HttpCall,
}

/// What to do about a token whose key is not (yet) in its provider's key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refetch {
    /// Another VM had already published newer keys; they are loaded now: verify again.
    Reloaded,
    /// This VM took the proxy's fetch lease: start this fetch and wait for it.
    Start(JwksFetch),
    /// A fetch is under way (here or in another VM): wait for its version.
    Underway,
    /// No fetch may start now (rate limit, or no remote key set): refuse as is.
    Refuse,
}

/// A refused token, and the provider whose keys a refetch could complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: JwtError,
    /// Set for `unknown_kid` / `no_verification_key` of a provider with a remote key set.
    pub awaits_keys_of: Option<usize>,
}

/// Keys tried for a token without `kid` (issuers that rotate keys put a `kid` in their tokens).
pub const MAX_KIDLESS_ATTEMPTS: usize = 3;

/// Per-VM verification state: remote key sets, the verified-token cache and fetch bookkeeping.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: Rc<JwtSettings>,
    /// One per provider; `None` for providers with inline keys only.
    remote: Vec<Option<RemoteState>>,
    cache: TokenCache,
}

impl JwtVerifier {
    /// `space` names the shared-data keys the remote key sets are published under.
    pub fn new(settings: Rc<JwtSettings>, space: &KeySpace) -> Self {
        let remote = settings
            .providers
            .iter()
            .map(|p| p.remote.as_ref().map(|r| RemoteState::new(r, space)))
            .collect();
        let cache = TokenCache::new(settings.cache_max_entries);
        Self {
            settings,
            remote,
            cache,
        }
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Number of tokens in the verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Verifies a bearer token at `now_unix`, for a request whose dynamic metadata was not read.
    pub fn verify(&mut self, token: &str, now_unix: i64) -> Result<VerifiedJwt, JwtError> {
        self.verify_with(token, None, now_unix)
    }

    /// Verifies a bearer token at `now_unix`. `jwt_authn` is the request's dynamic metadata
    /// (serialized), when the host read it (see [`JwtSettings::wants_jwt_authn_metadata`]).
    pub fn verify_with(
        &mut self,
        token: &str,
        jwt_authn: Option<&[u8]>,
        now_unix: i64,
    ) -> Result<VerifiedJwt, JwtError> {
        self.verify_or_await_keys(token, jwt_authn, now_unix)
            .map_err(|refusal| refusal.error)
    }

    /// Verifies a bearer token; a refusal says whether fresher keys could change the answer.
    pub fn verify_or_await_keys(
        &mut self,
        token: &str,
        jwt_authn: Option<&[u8]>,
        now_unix: i64,
    ) -> Result<VerifiedJwt, Refusal> {
        self.check(token, jwt_authn, now_unix).map_err(|error| {
            let awaits_keys_of =
                if matches!(error, JwtError::UnknownKid | JwtError::NoVerificationKey) {
                    // Rare (a key rotation, or a forgery): finding the provider again is cheap.
                    self.provider_of(token)
                        .filter(|p| self.remote.get(*p).is_some_and(Option::is_some))
                } else {
                    None
                };
            Refusal {
                error,
                awaits_keys_of,
            }
        })
    }

    /// The provider a token's `iss` selects.
    fn provider_of(&self, token: &str) -> Option<usize> {
        let parsed = ParsedToken::parse(token).ok()?;
        let unverified = parsed.unverified_claims().ok()?;
        let iss = unverified.issuer_hint()?;
        self.settings.providers.iter().position(|p| p.issuer == iss)
    }

    fn check(
        &mut self,
        token: &str,
        jwt_authn: Option<&[u8]>,
        now_unix: i64,
    ) -> Result<VerifiedJwt, JwtError> {
        let max = self.settings.max_token_bytes;
        if token.len() > max {
            return Err(JwtError::TokenTooLarge {
                bytes: token.len(),
                max,
            });
        }
        let digest = self.cache.enabled().then(|| cache::digest(token));
        if let Some(key) = &digest {
            if let Some(hit) = self.cache.get(key) {
                let provider = self.settings.providers.get(hit.verified.provider);
                let checked = match provider {
                    Some(p) => claims::check_times(p, hit.times, now_unix),
                    None => Err(JwtError::UnknownIssuer),
                };
                match checked {
                    Ok(()) => return Ok(hit.verified.clone()),
                    Err(err) => {
                        self.cache.remove(key);
                        return Err(err);
                    }
                }
            }
        }

        let parsed = ParsedToken::parse(token)?;
        let unverified = parsed.unverified_claims()?;
        let settings = Rc::clone(&self.settings);
        let (index, provider) = unverified
            .issuer_hint()
            .and_then(|iss| {
                settings
                    .providers
                    .iter()
                    .enumerate()
                    .find(|(_, p)| p.issuer == iss)
            })
            .ok_or(JwtError::UnknownIssuer)?;
        // jwt_authn's word for the claims, if that is how this provider verifies; its refusal
        // comes after the claim rules', as a bad signature's does.
        let vouched = match &provider.verification {
            Verification::Keys => None,
            Verification::EnvoyJwtAuthn { metadata_key } => Some(
                jwt_authn::vouched_payload(jwt_authn, metadata_key)
                    .and_then(|payload| unverified.check_vouched(payload)),
            ),
        };
        // Refuse-only, before the costly signature check; nothing is trusted yet.
        let screened = unverified.screen(provider, parsed.header_typ(), now_unix)?;
        let proof = match vouched {
            None => self.check_signature(index, &parsed)?,
            Some(vouched) => vouched?,
        };
        let (verified, times) = claims::identity(provider, index, screened.into_verified(proof))?;
        // Tokens without exp are not cached: nothing would ever expire them. Nor are tokens
        // jwt_authn verified: each request must show its own metadata.
        let by_keys = provider.verification == Verification::Keys;
        if let (Some(key), Some(exp), true) = (digest, times.exp, by_keys) {
            let entry = CacheEntry {
                verified: verified.clone(),
                times,
                valid_until: exp.saturating_add(provider.clock_skew),
            };
            self.cache.insert(key, entry, now_unix);
        }
        Ok(verified)
    }

    /// Finds the key and checks the signature. The algorithm must be on the provider's
    /// allow-list *and* supported by the key; the header's `alg` alone never decides.
    fn check_signature(
        &self,
        index: usize,
        parsed: &ParsedToken<'_>,
    ) -> Result<SignatureChecked, JwtError> {
        let Some(provider) = self.settings.providers.get(index) else {
            return Err(JwtError::UnknownIssuer);
        };
        let remote_keys = match self.remote.get(index) {
            Some(Some(remote)) => remote.keys.as_slice(),
            _ => &[],
        };
        let alg = parsed.alg();
        if provider
            .algorithms
            .as_ref()
            .is_some_and(|list| !list.contains(&alg))
        {
            return Err(JwtError::AlgNotAllowed { alg: Some(alg) });
        }
        let keys = || provider.inline_keys.iter().chain(remote_keys.iter());
        let mismatch = |key: KeyFamily| {
            if alg.family() == KeyFamily::Hmac && key != KeyFamily::Hmac {
                JwtError::AlgorithmConfusion { alg, key }
            } else {
                JwtError::KeyTypeMismatch { alg, key }
            }
        };
        match parsed.kid() {
            Some(kid) => {
                let mut named = keys().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
                let Some(first_family) = named.peek().map(|k| k.family()) else {
                    // Distinguish "this kid is unknown" from "no keys at all yet" for operators.
                    return Err(if keys().next().is_some() {
                        JwtError::UnknownKid
                    } else {
                        JwtError::NoVerificationKey
                    });
                };
                match named.find(|k| k.supports(alg)) {
                    Some(key) => parsed.check_signature(key),
                    None => Err(mismatch(first_family)),
                }
            }
            None => {
                // No kid: try the keys that support the algorithm, but only a few: a forged
                // kid-less token must not buy one signature check per key in the set.
                let mut tried = false;
                for key in keys()
                    .filter(|k| k.supports(alg))
                    .take(MAX_KIDLESS_ATTEMPTS)
                {
                    tried = true;
                    if let Ok(proof) = parsed.check_signature(key) {
                        return Ok(proof);
                    }
                }
                if tried {
                    return Err(JwtError::InvalidSignature);
                }
                let mut families = keys().map(VerifyKey::family);
                let first = families.next().ok_or(JwtError::NoVerificationKey)?;
                if first == alg.family() || families.any(|f| f == alg.family()) {
                    Err(JwtError::KeyTypeMismatch {
                        alg,
                        key: alg.family(),
                    })
                } else {
                    Err(mismatch(first))
                }
            }
        }
    }

    fn remote_mut(&mut self, provider: usize) -> Option<&mut RemoteState> {
        self.remote.get_mut(provider).and_then(Option::as_mut)
    }

    /// Creates the shared-data keys of every remote key set (at start-up, before any fetch).
    pub fn create_feeds(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        for remote in self.remote.iter().flatten() {
            remote.feed.create(store)?;
        }
        Ok(())
    }

    /// The periodic look at shared data: loads key sets other VMs published, then takes the
    /// lease of every fetch the proxy-wide schedule says is due.
    pub fn jwks_tick(
        &mut self,
        store: &dyn SharedStore,
        holder: u64,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> Result<Vec<JwksFetch>, StoreError> {
        self.load_published(store, events)?;
        let mut due = Vec::new();
        for (provider, remote) in self.remote.iter_mut().enumerate() {
            let Some(remote) = remote else { continue };
            if remote.lease.is_some() {
                continue;
            }
            let reason = FetchReason::Scheduled;
            if let Some(lease) =
                remote
                    .feed
                    .try_lease(store, holder, reason, remote.timing, now_ms)?
            {
                remote.lease = Some(lease);
                due.push(JwksFetch {
                    provider,
                    call: remote.call.clone(),
                });
            }
        }
        Ok(due)
    }

    /// Loads every key set whose published version differs from ours. Returns whether any did.
    pub fn load_published(
        &mut self,
        store: &dyn SharedStore,
        events: &mut dyn Events,
    ) -> Result<bool, StoreError> {
        let mut changed = false;
        for provider in 0..self.remote.len() {
            let Some(remote) = self.remote_mut(provider) else {
                continue;
            };
            let Some((version, body)) = remote.feed.load_if_changed(store, remote.version)? else {
                continue;
            };
            match parse_remote_jwks(Some(200), &body) {
                Ok(keys) => {
                    let count = keys.len();
                    remote.keys = keys;
                    remote.version = version;
                    self.cache.forget_provider(provider);
                    changed = true;
                    events.emit(Event::JwksLoaded {
                        provider,
                        keys: count,
                        version,
                    });
                }
                Err(error) => {
                    // Only validated documents are published; this one is not ours to trust.
                    remote.version = version;
                    events.emit(Event::JwksRejected {
                        provider,
                        reason: format!("published version {version} unusable: {error}"),
                    });
                }
            }
        }
        Ok(changed)
    }

    /// A request's token named a key the provider's set lacks: load a newer published set if
    /// there is one, else bring the proxy's next fetch forward (rate-limited), else say whether
    /// one is under way.
    pub fn refetch(
        &mut self,
        provider: usize,
        store: &dyn SharedStore,
        holder: u64,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> Result<Refetch, StoreError> {
        if self.load_published(store, events)? {
            return Ok(Refetch::Reloaded);
        }
        let Some(remote) = self.remote_mut(provider) else {
            return Ok(Refetch::Refuse);
        };
        if remote.lease.is_some() {
            return Ok(Refetch::Underway);
        }
        let early = FetchReason::Early;
        if let Some(lease) = remote
            .feed
            .try_lease(store, holder, early, remote.timing, now_ms)?
        {
            remote.lease = Some(lease);
            return Ok(Refetch::Start(JwksFetch {
                provider,
                call: remote.call.clone(),
            }));
        }
        if remote.feed.state(store)?.fetching(now_ms) {
            return Ok(Refetch::Underway);
        }
        Ok(Refetch::Refuse)
    }

    /// How long a request may wait for `provider`'s refetch (0: not at all).
    pub fn unknown_kid_wait_ms(&self, provider: usize) -> u64 {
        self.settings
            .providers
            .get(provider)
            .and_then(|p| p.remote.as_ref())
            .map_or(0, |r| r.unknown_kid_wait_ms)
    }

    /// Whether some VM's fetch for `provider` is under way.
    pub fn fetch_underway(
        &self,
        provider: usize,
        store: &dyn SharedStore,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match self.remote.get(provider).and_then(Option::as_ref) {
            Some(remote) => {
                Ok(remote.lease.is_some() || remote.feed.state(store)?.fetching(now_ms))
            }
            None => Ok(false),
        }
    }

    /// The answer to this VM's fetch. A 200 with at least one usable key is published for the
    /// whole proxy and loaded here; anything else releases the lease and keeps the last good
    /// keys (every VM keeps using the published version).
    pub fn on_jwks_reply(
        &mut self,
        provider: usize,
        reply: &CallReply,
        store: &dyn SharedStore,
        now_ms: i64,
        events: &mut dyn Events,
    ) -> Result<(), StoreError> {
        let Some(remote) = self.remote_mut(provider) else {
            return Ok(());
        };
        // A reply we hold no lease for (from before a configuration change) is dropped.
        let Some(lease) = remote.lease.take() else {
            return Ok(());
        };
        let parsed = match reply {
            CallReply::Answered { status, body, .. } => {
                parse_remote_jwks(Some(*status), body).map(|_| body.as_slice())
            }
            // A gRPC message cannot answer an HTTP fetch.
            CallReply::Message(_) | CallReply::Failed(_) => Err(JwksError::Transport),
        };
        match parsed {
            Ok(body) => {
                remote
                    .feed
                    .publish(store, lease, body, remote.timing, now_ms)?;
                self.load_published(store, events)?;
            }
            Err(error) => {
                remote.feed.fail(store, lease, remote.timing, now_ms)?;
                events.emit(Event::JwksRejected {
                    provider,
                    reason: error.to_string(),
                });
            }
        }
        Ok(())
    }
}

fn parse_remote_jwks(status: Option<u16>, body: &[u8]) -> Result<Vec<VerifyKey>, JwksError> {
    match status {
        None => return Err(JwksError::Transport),
        Some(200) => {}
        Some(status) => return Err(JwksError::HttpStatus { status }),
    }
    if body.len() > MAX_JWKS_BYTES {
        return Err(JwksError::BodyTooLarge {
            bytes: body.len(),
            max: MAX_JWKS_BYTES,
        });
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| JwksError::InvalidJson {
        line: e.line(),
        column: e.column(),
    })?;
    let entries = key_array(&doc).ok_or(JwksError::NotAKeySet)?;
    // Keys we cannot use (encryption keys, other curves, oct, malformed) are skipped, not fatal:
    // real JWKS documents mix purposes.
    let keys: Vec<VerifyKey> = entries
        .iter()
        .take(MAX_KEYS_PER_SET)
        .filter_map(|entry| {
            entry
                .as_object()
                .and_then(|jwk| parse_jwk(jwk, KeySource::Remote).ok())
        })
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoUsableKeys {
            skipped: entries.len(),
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
