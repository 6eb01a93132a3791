//! Credentials in the query string, found the way any common server stack would read them.
//!
//! A parameter is a credential when its **name**, read as permissively as any framework reads
//! it, is a configured credential parameter or a credential header's name; or when its **value**
//! has the shape of an apiguard key (prefix and valid checksum) or of a JWT (three base64url
//! segments whose first decodes to a JSON object with `alg`), whatever its name.
//!
//! Reading a name permissively: pairs split on `&` and `;` (older Rack, Go before 1.17, Python's
//! cgi); `%XX` and `+` decoded; ASCII case folded; an array suffix cut (`api_key[]`,
//! `api_key[0]`, PHP's `api_key[x]`); and `_`, `-`, `.` and spaces removed, which covers PHP's
//! mangling (`.` and space become `_`), `-` for `_`, and near-misses such as `apiKey`, `api-key`,
//! `access.token`.

use crate::api_key::is_well_formed;
use crate::request::percent_escape_at;

/// A name reduced to what every reader agrees on (see the module comment).
pub fn normalize_name(name: &str) -> String {
    let decoded = form_decode(name);
    // `api_key[]`, `api_key[0]`: an array of `api_key`. A `[` without its `]` is a plain
    // character that PHP turns into `_` (`api[key` is `api_key`).
    let base = match decoded.split_once('[') {
        Some((head, tail)) if tail.contains(']') => head.to_owned(),
        _ => decoded.replace('[', "_"),
    };
    base.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The forbidden names, normalized once at start-up.
#[derive(Debug, Clone, Default)]
pub struct QueryCredentials {
    names: Vec<String>,
}

/// A credential found in a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The parameter's name as decoded (names are not secrets; values never leave here).
    pub param: String,
}

impl QueryCredentials {
    /// `params`: the configured parameter names; `headers`: the credential headers' names.
    pub fn new<'a>(params: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = params
            .into_iter()
            .map(normalize_name)
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Self { names }
    }

    /// The first credential in `query`, by name or by value.
    pub fn find(&self, query: &str) -> Option<Found> {
        pairs(query).find_map(|(name, value)| {
            let name = form_decode(name);
            if looks_like_credential(&name) {
                // A credential sent as a bare name (`?agk_…`): never echo it.
                return Some(Found {
                    param: "(a credential as the parameter name)".to_owned(),
                });
            }
            let by_name = self.names.contains(&normalize_name(&name));
            (by_name || looks_like_credential(&form_decode(value))).then_some(Found { param: name })
        })
    }

    fn carries_credential(&self, pair: &str) -> bool {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        looks_like_credential(&name)
            || self.names.contains(&normalize_name(&name))
            || looks_like_credential(&form_decode(value))
    }

    /// `query` with the value of every pair that carries a credential replaced by `mark` (the
    /// whole pair when its name is the credential), for logs.
    pub fn redact(&self, query: &str, mark: &str) -> String {
        let pairs: Vec<String> = query
            .split(['&', ';'])
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                if !self.carries_credential(pair) {
                    return pair.to_owned();
                }
                match pair.split_once('=') {
                    Some((name, _)) if !looks_like_credential(&form_decode(name)) => {
                        format!("{name}={mark}")
                    }
                    _ => mark.to_owned(),
                }
            })
            .collect();
        pairs.join("&")
    }

    /// `path_and_query` without the pairs that carry credentials (for report-only forwarding,
    /// which must never forward one either).
    pub fn strip(&self, path_and_query: &str) -> String {
        let Some((path, query)) = path_and_query.split_once('?') else {
            return path_and_query.to_owned();
        };
        let kept: Vec<&str> = query
            .split(['&', ';'])
            .filter(|pair| !pair.is_empty() && !self.carries_credential(pair))
            .collect();
        if kept.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", kept.join("&"))
        }
    }
}

/// `name=value` pairs, split on `&` and `;`.
fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split(['&', ';'])
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Whether a (decoded) value is an apiguard key or a JWT.
pub fn looks_like_credential(value: &str) -> bool {
    let value = value.trim();
    is_well_formed(value) || looks_like_jwt(value)
}

/// Three base64url segments, the first decoding to a JSON object with `alg`.
fn looks_like_jwt(value: &str) -> bool {
    let mut segments = value.split('.');
    let (Some(header), Some(_), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    if header.is_empty() || header.len() > 4096 {
        return false;
    }
    let Some(bytes) = b64url(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
        .is_ok_and(|h| h.contains_key("alg"))
}

/// Unpadded (or padded) base64url.
fn b64url(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    Some(out)
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+`. Invalid escapes stay.
pub fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match (c, percent_escape_at(bytes, i)) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::api_key::test_support::key;

    fn detector() -> QueryCredentials {
        QueryCredentials::new([
            "api_key",
            "apikey",
            "key",
            "access_token",
            "token",
            "x-api-key",
            "authorization",
        ])
    }

    #[test]
    fn every_way_a_framework_reads_a_name_is_caught() {
        let d = detector();
        for query in [
            "api_key=x",
            "API_KEY=x",
            "%61pi_key=x",
            "api-key=x",
            "api.key=x",
            "api+key=x",
            "api%20key=x",
            "api_key[]=x",
            "api_key[0]=x",
            "api_key[a]=x",
            "api[key=x",
            "api%5Bkey=x",
            "apiKey=x",
            "a=1;api_key=x",
            "a=1&access-token=x",
            "access.token=x",
            "x-api-key=x",
            "x_api_key=x",
            "X.Api.Key=x",
            "Authorization=x",
            "api_key",
        ] {
            assert!(d.find(query).is_some(), "{query}");
        }
        for query in [
            "",
            "a=1",
            "keys=1",
            "page=2&sort=key",
            "monkey=1",
            "tokens=1",
        ] {
            assert_eq!(d.find(query), None, "{query}");
        }
    }

    #[test]
    fn a_key_or_a_token_is_caught_by_its_value_whatever_the_name() {
        let d = detector();
        let k = key(3);
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        for query in [
            format!("q={k}"),
            format!("q=%20{k}"),
            format!("a=1;cb={jwt}"),
            format!("state={}", jwt.replace('.', "%2E")),
            k.clone(),
            format!("a=1&{jwt}"),
        ] {
            let found = d.find(&query);
            assert!(found.is_some(), "{query}");
            assert!(!format!("{found:?}").contains(&k), "the value never leaves");
        }
        let mut typo = k.clone();
        typo.pop();
        typo.push(if k.ends_with('A') { 'B' } else { 'A' });
        for query in [
            format!("q={typo}"),
            "q=a.b.c".to_owned(),
            "q=e30.e30.e30".to_owned(),
            "v=1.2.3".to_owned(),
        ] {
            assert_eq!(d.find(&query), None, "{query}");
        }
    }

    #[test]
    fn stripping_keeps_every_other_pair() {
        let d = detector();
        let k = key(3);
        assert_eq!(
            d.strip(&format!("/v1?a=1&api_key=x;b=2&q={k}&{k}")),
            "/v1?a=1&b=2"
        );
        assert_eq!(d.strip("/v1?token=x"), "/v1");
        assert_eq!(d.strip("/v1"), "/v1");
    }
}
