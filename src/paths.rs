//! Path matching for exemptions and per-route policies: whole segments only, and only on a
//! path in canonical form. An upstream may resolve `..`, `..;`, `;params` or `%70` to another
//! path than the one apiguard matched, so such paths are refused when any exemption or route
//! could be fooled by them (see [`is_canonical`]).

use crate::request::percent_escape_at;

/// True when `path` is in a form every upstream reads the same way: it starts with `/`, has no
/// empty, `.` or `..` segments, no backslash, no `;` (path parameters: `..;` is `..` to Tomcat),
/// no control or non-ASCII bytes, no percent-encoding of an unreserved character (`%70` is
/// `p`), of `/`, `\`, `;`, `%` or of a control byte, and its percent-encoded bytes decode to
/// valid UTF-8 (an overlong `%C0%AE` is `.` to a lenient decoder; a lone continuation byte or a
/// truncated sequence is read differently by different stacks).
pub fn is_canonical(path: &str) -> bool {
    if !path.starts_with('/') || path.contains("//") {
        return false;
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return false;
    }
    let bytes = path.as_bytes();
    let mut non_ascii_escape = false;
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c == b'\\' || c == b';' || !c.is_ascii_graphic() {
            return false;
        }
        if c == b'%' {
            let Some(decoded) = percent_escape_at(bytes, i) else {
                return false;
            };
            let unreserved = decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded);
            if unreserved || b"/\\;%".contains(&decoded) || decoded.is_ascii_control() {
                return false;
            }
            non_ascii_escape |= !decoded.is_ascii();
            i += 3;
            continue;
        }
        i += 1;
    }
    !non_ascii_escape || decodes_to_utf8(bytes)
}

/// Whether the path's percent-escapes decode to valid UTF-8 (Rust's decoder refuses overlong
/// forms, surrogates, lone continuation bytes and truncated sequences).
fn decodes_to_utf8(bytes: &[u8]) -> bool {
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match percent_escape_at(bytes, i) {
            Some(b) => {
                decoded.push(b);
                i += 3;
            }
            None => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
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
        self.covers(path, false)
    }

    /// For route policies: like [`Self::matches`], but ignoring ASCII case (`/Payments` cannot
    /// dodge the `/payments` rule on an upstream that routes without regard to case), and also
    /// covering the prefix's last segment followed by `.` or `:` and anything: frameworks route
    /// `/payments.json` to the `/payments` handler (Rails' `(.:format)`, Spring's suffix
    /// patterns), and `/payments:batch` is a custom method of `/payments` (Google's API style).
    pub fn matches_ignoring_case(&self, path: &str) -> bool {
        self.covers(path, true)
    }

    fn covers(&self, path: &str, route: bool) -> bool {
        let ignore_case = route;
        if self.0.is_empty() {
            return true;
        }
        if !is_canonical(path) {
            return false;
        }
        let Some(head) = path.get(..self.0.len()) else {
            return false;
        };
        let same = if ignore_case {
            head.eq_ignore_ascii_case(&self.0)
        } else {
            head == self.0
        };
        let rest = path.get(self.0.len()..).unwrap_or("");
        same && (rest.is_empty()
            || rest.starts_with('/')
            || route && (rest.starts_with('.') || rest.starts_with(':')))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn invalid_utf8_escapes_are_not_canonical() {
        for bad in [
            "/%C0%AE%C0%AE/admin",
            "/a%C0%AFb",
            "/%80",
            "/x%E2%82",
            "/%ED%A0%80",
            "/%F8%88%80%80%80",
            "/%E2%82%AC%80",
        ] {
            assert!(!is_canonical(bad), "{bad}");
        }
        for good in ["/caf%C3%A9", "/%E2%82%AC", "/%F0%9F%98%80/x"] {
            assert!(is_canonical(good), "{good}");
        }
    }

    #[test]
    fn routes_cover_format_suffixes_and_custom_methods_exemptions_do_not() {
        let p = PathPrefix::new("/payments").unwrap();
        for path in [
            "/payments.json",
            "/PAYMENTS.xml",
            "/payments.",
            "/payments.json/x",
            "/payments:batch",
        ] {
            assert!(p.matches_ignoring_case(path), "{path}");
            assert!(!p.matches(path), "{path}");
        }
        assert!(!p.matches_ignoring_case("/paymentsx.json"));
        assert!(!p.matches_ignoring_case("/payment.json"));
    }

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
            "/healthz/..;/admin",
            "/healthz;a=b",
            "/%68ealthz",
            "/healthz%00",
            "/healthz/\u{7f}",
            "/healthz/caf\u{e9}",
            "/healthz/%zz",
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
    fn reserved_characters_may_stay_encoded() {
        assert!(is_canonical("/files/a%20b/%3F%23%C3%A9"));
        assert!(is_canonical("/a-b_c.d~e/x:y@z!$&'()*+,="));
        assert!(!is_canonical("/a/%2f/b"));
        assert!(!is_canonical("/a/%3B"));
    }

    #[test]
    fn routes_can_match_ignoring_case_but_exemptions_cannot() {
        let p = PathPrefix::new("/payments").unwrap();
        assert!(p.matches_ignoring_case("/Payments/1"));
        assert!(!p.matches("/Payments/1"));
        assert!(!p.matches_ignoring_case("/paymentsx"));
        assert!(!p.matches_ignoring_case("/pay"));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "healthz", "/a/../b", "/a?x=1", "/a//b"] {
            assert!(PathPrefix::new(bad).is_none(), "{bad}");
        }
    }
}
