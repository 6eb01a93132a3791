//! Path matching for exemptions and per-route policies: whole segments only, and never on a
//! path that is not canonical (a `..` or an encoded slash could otherwise borrow a weaker policy).

/// True when `path` has no dot segments, backslashes, empty segments or percent-encoded `.`, `/`
/// or `\`: the forms that an upstream might resolve to a different path than the one matched.
pub fn is_canonical(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') || path.contains("//") {
        return false;
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    !(lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%25"))
}

/// A configured prefix, matched on segment boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(String);

impl PathPrefix {
    /// `prefix` must start with `/`; a trailing `/` is ignored (`/api/` is `/api`).
    pub fn new(prefix: &str) -> Option<Self> {
        if !prefix.starts_with('/') || prefix.contains('?') || !is_canonical(prefix) {
            return None;
        }
        let trimmed = prefix.trim_end_matches('/');
        Some(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        if self.0.is_empty() {
            "/"
        } else {
            &self.0
        }
    }

    /// Does this prefix cover `path` (without query)? `/healthz` covers `/healthz` and
    /// `/healthz/live`, not `/healthzz`. Non-canonical paths are covered only by `/`.
    pub fn matches(&self, path: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        if !is_canonical(path) {
            return false;
        }
        match path.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        let p = PathPrefix::new("/healthz").unwrap();
        assert!(p.matches("/healthz"));
        assert!(p.matches("/healthz/live"));
        assert!(!p.matches("/healthzz"));
        assert!(!p.matches("/health"));
        assert!(!p.matches("/api/healthz"));
        assert_eq!(
            PathPrefix::new("/api/").unwrap(),
            PathPrefix::new("/api").unwrap()
        );
    }

    #[test]
    fn non_canonical_paths_never_match_a_specific_prefix() {
        let p = PathPrefix::new("/healthz").unwrap();
        for sneaky in [
            "/healthz/../admin",
            "/healthz/./x",
            "/healthz/%2e%2e/admin",
            "/healthz%2Fadmin",
            "/healthz\\..\\admin",
            "/healthz//admin",
            "/healthz/%252e%252e/admin",
        ] {
            assert!(!p.matches(sneaky), "{sneaky}");
        }
        assert!(PathPrefix::new("/").unwrap().matches("/healthz/../admin"));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "healthz", "/a/../b", "/a?x=1", "/a//b"] {
            assert!(PathPrefix::new(bad).is_none(), "{bad}");
        }
    }
}
