//! Verified-token cache: SHA-256 of the token → the verification result, so a repeated token
//! skips the signature check. The token itself is never stored.
//!
//! Bounded: when full, expired entries are dropped first; if none are, the entry that expires
//! soonest goes (it has the least remaining value and, unlike LRU, needs no bookkeeping on hits).
//! A `BTreeMap` keeps the cost independent of any hash seed.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::claims::{TimeClaims, VerifiedJwt};

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    digest_bytes(token.as_bytes())
}

pub fn digest_bytes(bytes: &[u8]) -> TokenDigest {
    Sha256::digest(bytes).into()
}

#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub verified: VerifiedJwt,
    pub times: TimeClaims,
    /// Last second at which the entry can still be valid (`exp + skew`).
    pub valid_until: i64,
}

#[derive(Debug)]
pub struct TokenCache {
    max_entries: usize,
    entries: BTreeMap<TokenDigest, CacheEntry>,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            entries: BTreeMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, key: &TokenDigest) -> Option<&CacheEntry> {
        self.entries.get(key)
    }

    pub fn remove(&mut self, key: &TokenDigest) {
        self.entries.remove(key);
    }

    /// Stores an entry, evicting as described in the module docs.
    pub fn insert(&mut self, key: TokenDigest, entry: CacheEntry, now: i64) {
        if !self.enabled() {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.valid_until > now);
            while self.entries.len() >= self.max_entries {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.valid_until)
                    .map(|(k, _)| *k);
                match soonest {
                    Some(k) => self.entries.remove(&k),
                    None => break,
                };
            }
        }
        self.entries.insert(key, entry);
    }

    /// Forgets every token verified by `provider` (its keys changed: a removed key must stop
    /// vouching for cached tokens).
    pub fn forget_provider(&mut self, provider: usize) {
        self.entries.retain(|_, e| e.verified.provider != provider);
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn entry(subject: &str, provider: usize, valid_until: i64) -> CacheEntry {
        CacheEntry {
            verified: VerifiedJwt::for_test(subject, provider, valid_until),
            times: TimeClaims {
                exp: Some(valid_until),
                nbf: None,
                iat: None,
            },
            valid_until,
        }
    }

    #[test]
    fn digest_is_sha256_of_the_token() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(digest("abc")[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_ne!(digest("a.b.c"), digest("a.b.d"));
    }

    #[test]
    fn full_cache_evicts_expired_first_then_soonest_expiring() {
        let mut cache = TokenCache::new(3);
        cache.insert(digest("a"), entry("a", 0, 100), 0);
        cache.insert(digest("b"), entry("b", 0, 500), 0);
        cache.insert(digest("c"), entry("c", 0, 300), 0);
        assert_eq!(cache.len(), 3);
        // At t=200 "a" is expired: it goes, the live ones stay.
        cache.insert(digest("d"), entry("d", 0, 900), 200);
        assert!(cache.get(&digest("a")).is_none());
        assert_eq!(cache.len(), 3);
        // Nothing expired: the soonest-expiring live entry ("c", 300) goes.
        cache.insert(digest("e"), entry("e", 0, 950), 210);
        assert!(cache.get(&digest("c")).is_none());
        for kept in ["b", "d", "e"] {
            assert_eq!(
                cache
                    .get(&digest(kept))
                    .map(|e| e.verified.subject.as_str()),
                Some(kept)
            );
        }
    }

    #[test]
    fn replacing_an_entry_does_not_evict_and_zero_capacity_disables() {
        let mut cache = TokenCache::new(2);
        cache.insert(digest("a"), entry("a", 0, 100), 0);
        cache.insert(digest("b"), entry("b", 0, 100), 0);
        cache.insert(digest("a"), entry("a", 0, 200), 0);
        assert_eq!(cache.len(), 2);
        let mut off = TokenCache::new(0);
        off.insert(digest("a"), entry("a", 0, 100), 0);
        assert_eq!(off.len(), 0);
        assert!(!off.enabled());
    }

    #[test]
    fn forgetting_a_provider_keeps_the_others() {
        let mut cache = TokenCache::new(10);
        cache.insert(digest("a"), entry("a", 0, 100), 0);
        cache.insert(digest("b"), entry("b", 1, 100), 0);
        cache.forget_provider(0);
        assert!(cache.get(&digest("a")).is_none());
        assert!(cache.get(&digest("b")).is_some());
    }
}
