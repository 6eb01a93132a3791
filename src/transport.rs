//! HTTPS only: deciding whether a request arrived over HTTPS, refusing or redirecting it when
//! not, and the `Strict-Transport-Security` value for responses.

use crate::request::RequestFacts;

#[derive(Debug, Clone)]
pub struct HttpsPolicy {
    pub required: bool,
    pub redirect: bool,
    pub trust_x_forwarded_proto: bool,
    /// The full HSTS header value, or None when HSTS is off.
    pub hsts: Option<String>,
}

/// What to do with a request that is not HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainHttp {
    /// 403 `https_required`.
    Refuse,
    /// 308 to this `https://` URL.
    Redirect(String),
}

impl HttpsPolicy {
    pub fn hsts_value(max_age: u64, include_subdomains: bool, preload: bool) -> Option<String> {
        if max_age == 0 {
            return None;
        }
        let mut value = format!("max-age={max_age}");
        if include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if preload {
            value.push_str("; preload");
        }
        Some(value)
    }

    /// Whether the request came over HTTPS: the downstream connection's TLS state, or, when the
    /// hop before Envoy is trusted, the last `x-forwarded-proto` value (the one that hop wrote).
    pub fn is_https(&self, req: &RequestFacts) -> bool {
        if !self.trust_x_forwarded_proto {
            return req.downstream_tls();
        }
        req.header_values("x-forwarded-proto")
            .flat_map(|v| v.split(','))
            .last()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("https"))
    }

    /// Whether the connection's TLS state can change any outcome (else the host need not read it).
    pub fn needs_connection_state(&self) -> bool {
        !self.trust_x_forwarded_proto && (self.required || self.hsts.is_some())
    }

    /// None when the request may go on; otherwise how to answer it.
    pub fn check(&self, req: &RequestFacts) -> Option<PlainHttp> {
        if !self.required || self.is_https(req) {
            return None;
        }
        // Only safe methods are redirected: a client would replay a POST body over the new URL.
        let method = req.method();
        if self.redirect
            && (method == "GET" || method == "HEAD")
            && is_plain_authority(req.authority())
        {
            return Some(PlainHttp::Redirect(format!(
                "https://{}{}",
                req.authority(),
                req.path_and_query()
            )));
        }
        Some(PlainHttp::Refuse)
    }
}

/// An authority we are willing to put into a Location header: host[:port] characters only.
fn is_plain_authority(authority: &str) -> bool {
    !authority.is_empty()
        && authority
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::request::test_support::TestRequest;

    fn policy(trust: bool, redirect: bool) -> HttpsPolicy {
        HttpsPolicy {
            required: true,
            redirect,
            trust_x_forwarded_proto: trust,
            hsts: None,
        }
    }

    #[test]
    fn connection_decides_unless_the_forwarded_proto_is_trusted() {
        let spoofed =
            TestRequest::with_headers(&[(":scheme", "http"), ("x-forwarded-proto", "https")])
                .build();
        assert!(!policy(false, false).is_https(&spoofed));
        assert!(policy(true, false).is_https(&spoofed));
        assert!(policy(false, false)
            .is_https(&TestRequest::with_headers(&[(":scheme", "https")]).build()));
        // Envoy may have copied the client's x-forwarded-proto into :scheme: it does not count.
        let rewritten = TestRequest::with_headers(&[(":scheme", "https")])
            .tls(false)
            .build();
        assert!(!policy(false, false).is_https(&rewritten));
        let tls_but_claims_http =
            TestRequest::with_headers(&[(":scheme", "https"), ("x-forwarded-proto", "http")])
                .build();
        assert!(policy(false, false).is_https(&tls_but_claims_http));
        // The nearest hop's value (the last) counts, not what the client put first.
        let appended =
            TestRequest::with_headers(&[(":scheme", "http"), ("x-forwarded-proto", "https, http")])
                .build();
        assert!(!policy(true, false).is_https(&appended));
        let two_headers = TestRequest::with_headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "http"),
        ])
        .build();
        assert!(!policy(true, false).is_https(&two_headers));
    }

    #[test]
    fn plain_http_is_refused_or_redirected_for_safe_methods_only() {
        let get = TestRequest::with_headers(&[
            (":scheme", "http"),
            (":method", "GET"),
            (":authority", "api.example.com"),
            (":path", "/v1?a=1"),
        ])
        .build();
        assert_eq!(policy(false, false).check(&get), Some(PlainHttp::Refuse));
        assert_eq!(
            policy(false, true).check(&get),
            Some(PlainHttp::Redirect("https://api.example.com/v1?a=1".into()))
        );
        let post = TestRequest::with_headers(&[
            (":scheme", "http"),
            (":method", "POST"),
            (":authority", "api.example.com"),
            (":path", "/v1"),
        ])
        .build();
        assert_eq!(policy(false, true).check(&post), Some(PlainHttp::Refuse));
        let odd_host = TestRequest::with_headers(&[
            (":scheme", "http"),
            (":method", "GET"),
            (":authority", "a\r\nb"),
            (":path", "/"),
        ])
        .build();
        assert_eq!(
            policy(false, true).check(&odd_host),
            Some(PlainHttp::Refuse)
        );
        let not_required = HttpsPolicy {
            required: false,
            ..policy(false, false)
        };
        assert_eq!(not_required.check(&get), None);
    }

    #[test]
    fn connection_state_is_read_only_when_it_can_matter() {
        assert!(policy(false, false).needs_connection_state());
        assert!(!policy(true, false).needs_connection_state());
        let relaxed = HttpsPolicy {
            required: false,
            hsts: None,
            ..policy(false, false)
        };
        assert!(!relaxed.needs_connection_state());
        let hsts_only = HttpsPolicy {
            required: false,
            hsts: Some("max-age=1".into()),
            ..policy(false, false)
        };
        assert!(hsts_only.needs_connection_state());
    }

    #[test]
    fn hsts_value_follows_the_settings() {
        assert_eq!(HttpsPolicy::hsts_value(0, true, false), None);
        assert_eq!(
            HttpsPolicy::hsts_value(60, false, false).as_deref(),
            Some("max-age=60")
        );
        assert_eq!(
            HttpsPolicy::hsts_value(31_536_000, true, true).as_deref(),
            Some("max-age=31536000; includeSubDomains; preload")
        );
    }
}
