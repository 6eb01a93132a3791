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
mod error;
mod jwks;
mod remote;
#[cfg(test)]
pub(crate) mod test_keys;
mod token;

use std::rc::Rc;

use serde_json::Value;

pub use self::alg::Alg;
pub use self::claims::VerifiedJwt;
pub use self::config::{
    JwtConfig, JwtSettings, ProviderConfig, RefreshClaimConfig, RemoteJwksConfig,
};
pub use self::error::{JwksError, JwtError, Malformed};

use self::alg::KeyFamily;
use self::cache::{CacheEntry, TokenCache};
use self::jwks::{key_array, parse_jwk, KeySource, VerifyKey, MAX_KEYS_PER_SET};
use self::remote::FetchSchedule;
use self::token::{ParsedToken, SignatureChecked};

/// Largest JWKS response body accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A remote JWKS request the host should dispatch (`GET path` with `:authority` on `cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksFetch {
    pub provider: usize,
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u64,
}

/// Per-provider mutable state.
#[derive(Debug, Default)]
struct ProviderState {
    /// Keys from the last good remote JWKS.
    remote_keys: Vec<VerifyKey>,
    /// SHA-256 of the body the remote keys came from (to notice key changes).
    remote_digest: Option<[u8; 32]>,
    schedule: FetchSchedule,
}

/// Keys tried for a token without `kid` (issuers that rotate keys put a `kid` in their tokens).
pub const MAX_KIDLESS_ATTEMPTS: usize = 3;

/// Per-VM verification state: remote key sets, the verified-token cache and fetch bookkeeping.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: Rc<JwtSettings>,
    providers: Vec<ProviderState>,
    cache: TokenCache,
}

impl JwtVerifier {
    pub fn new(settings: Rc<JwtSettings>) -> Self {
        let providers = settings
            .providers
            .iter()
            .map(|_| ProviderState::default())
            .collect();
        let cache = TokenCache::new(settings.cache_max_entries);
        Self {
            settings,
            providers,
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

    /// Verifies a bearer token at `now_unix`.
    pub fn verify(&mut self, token: &str, now_unix: i64) -> Result<VerifiedJwt, JwtError> {
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
        // Refuse-only, before the costly signature check; nothing is trusted yet.
        let screened = unverified.screen(provider, parsed.header_typ(), now_unix)?;
        let proof = match self.check_signature(index, &parsed) {
            Ok(proof) => proof,
            Err(err) => {
                if matches!(err, JwtError::UnknownKid | JwtError::NoVerificationKey) {
                    self.request_refetch(index, now_unix);
                }
                return Err(err);
            }
        };
        let (verified, times) = claims::identity(provider, index, screened.into_verified(proof))?;
        // Tokens without exp are not cached: nothing would ever expire them.
        if let (Some(key), Some(exp)) = (digest, times.exp) {
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
        let (Some(provider), Some(state)) = (
            self.settings.providers.get(index),
            self.providers.get(index),
        ) else {
            return Err(JwtError::UnknownIssuer);
        };
        let alg = parsed.alg();
        if provider
            .algorithms
            .as_ref()
            .is_some_and(|list| !list.contains(&alg))
        {
            return Err(JwtError::AlgNotAllowed { alg: Some(alg) });
        }
        let keys = || provider.inline_keys.iter().chain(state.remote_keys.iter());
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

    fn request_refetch(&mut self, index: usize, now: i64) {
        if let (Some(remote), Some(state)) = (
            self.settings
                .providers
                .get(index)
                .and_then(|p| p.remote.as_ref()),
            self.providers.get_mut(index),
        ) {
            state.schedule.request_refetch(remote, now);
        }
    }

    /// Remote JWKS fetches the host should dispatch now (first fetch at start, periodic refresh,
    /// retry after failure, unknown-kid refetch rate-limited). Marks them in flight.
    pub fn jwks_fetches_due(&mut self, now_unix: i64) -> Vec<JwksFetch> {
        let mut due = Vec::new();
        for (index, (provider, state)) in self
            .settings
            .providers
            .iter()
            .zip(self.providers.iter_mut())
            .enumerate()
        {
            let Some(remote) = &provider.remote else {
                continue;
            };
            if state.schedule.due(remote, now_unix) {
                state.schedule.started(now_unix);
                due.push(JwksFetch {
                    provider: index,
                    cluster: remote.cluster.clone(),
                    path: remote.path.clone(),
                    authority: remote.authority.clone(),
                    timeout_ms: remote.timeout_ms,
                });
            }
        }
        due
    }

    /// The host reports the outcome of one fetch (`status` `None` = transport failure or
    /// timeout). Anything but a 200 with at least one usable key keeps the last good keys.
    /// Returns the number of usable keys now in use, or why the response was ignored.
    pub fn on_jwks_response(
        &mut self,
        provider: usize,
        status: Option<u16>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<usize, JwksError> {
        let settings = Rc::clone(&self.settings);
        let (Some(remote), Some(state)) = (
            settings
                .providers
                .get(provider)
                .and_then(|p| p.remote.as_ref()),
            self.providers.get_mut(provider),
        ) else {
            return Err(JwksError::UnknownProvider { provider });
        };
        let keys = match parse_remote_jwks(status, body) {
            Ok(keys) => keys,
            Err(err) => {
                state.schedule.failed(remote, now_unix);
                return Err(err);
            }
        };
        state.schedule.succeeded(remote, now_unix);
        let count = keys.len();
        let body_digest = cache::digest_bytes(body);
        if state.remote_digest != Some(body_digest) {
            state.remote_keys = keys;
            state.remote_digest = Some(body_digest);
            self.cache.forget_provider(provider);
        }
        Ok(count)
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
