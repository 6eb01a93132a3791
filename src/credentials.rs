//! Finding credentials in a request: where they may be (headers), where they must never be
//! (the query string), and refusing ambiguity.

use crate::request::RequestFacts;
use crate::secret::Secret;

/// What a request presented, before anything is verified.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presented<'a> {
    pub api_key: Option<Secret<'a>>,
    pub bearer: Option<Secret<'a>>,
}

/// The request carried a credential in a way we refuse to interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguous {
    pub header: String,
}

/// Where credentials are looked for.
#[derive(Debug, Clone)]
pub struct CredentialSources {
    pub api_key_header: Option<String>,
    pub api_key_in_authorization: bool,
    pub bearer_header: Option<String>,
}

/// Splits `Scheme value` (scheme case-insensitive, RFC 9110 §11.4).
pub fn with_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.trim().split_once([' ', '\t'])?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim())
        .filter(|v| !v.is_empty())
}

/// The single value of a header, or an error when it was sent more than once. Envoy joins
/// repeated inline headers (such as `authorization`) with commas; no key or token contains one.
fn single<'a>(req: &'a RequestFacts, name: &'a str) -> Result<Option<&'a str>, Ambiguous> {
    let mut values = req.header_values(name);
    let first = values.next();
    if values.next().is_some() || first.is_some_and(|v| v.contains(',')) {
        return Err(Ambiguous {
            header: name.to_owned(),
        });
    }
    Ok(first.map(str::trim).filter(|v| !v.is_empty()))
}

impl CredentialSources {
    pub fn extract<'a>(&'a self, req: &'a RequestFacts) -> Result<Presented<'a>, Ambiguous> {
        let mut presented = Presented::default();
        if let Some(header) = &self.api_key_header {
            presented.api_key = single(req, header)?.map(Secret::new);
        }
        let authorization = if self.api_key_in_authorization
            || self.bearer_header.as_deref() == Some("authorization")
        {
            single(req, "authorization")?
        } else {
            None
        };
        if self.api_key_in_authorization {
            if let Some(key) = authorization.and_then(|v| with_scheme(v, "ApiKey")) {
                if presented.api_key.is_some_and(|k| k.expose() != key) {
                    return Err(Ambiguous {
                        header: "authorization".to_owned(),
                    });
                }
                presented.api_key = Some(Secret::new(key));
            }
        }
        match self.bearer_header.as_deref() {
            Some("authorization") => {
                presented.bearer = authorization
                    .and_then(|v| with_scheme(v, "Bearer"))
                    .map(Secret::new)
            }
            Some(other) => {
                presented.bearer = single(req, other)?
                    .map(|v| with_scheme(v, "Bearer").unwrap_or(v))
                    .map(Secret::new)
            }
            None => {}
        }
        Ok(presented)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::request::test_support::TestRequest;

    #[test]
    fn api_key_from_header_or_authorization_scheme() {
        let sources = CredentialSources {
            api_key_header: Some("x-api-key".into()),
            api_key_in_authorization: true,
            bearer_header: None,
        };
        let header = TestRequest::with_headers(&[("x-api-key", " k1 ")]).build();
        assert_eq!(
            sources.extract(&header).unwrap().api_key,
            Some(Secret::new("k1"))
        );
        let auth = TestRequest::with_headers(&[("authorization", "apikey k2")]).build();
        assert_eq!(
            sources.extract(&auth).unwrap().api_key,
            Some(Secret::new("k2"))
        );
        let both_same =
            TestRequest::with_headers(&[("x-api-key", "k3"), ("authorization", "ApiKey k3")])
                .build();
        assert_eq!(
            sources.extract(&both_same).unwrap().api_key,
            Some(Secret::new("k3"))
        );
        let both_differ =
            TestRequest::with_headers(&[("x-api-key", "k3"), ("authorization", "ApiKey k4")])
                .build();
        assert!(sources.extract(&both_differ).is_err());
        let twice = TestRequest::with_headers(&[("x-api-key", "k1"), ("x-api-key", "k2")]).build();
        assert_eq!(sources.extract(&twice).unwrap_err().header, "x-api-key");
        let joined = TestRequest::with_headers(&[("authorization", "ApiKey k1,ApiKey k2")]).build();
        assert_eq!(
            sources.extract(&joined).unwrap_err().header,
            "authorization"
        );
        assert_eq!(
            sources
                .extract(&TestRequest::with_headers(&[("x-api-key", "  ")]).build())
                .unwrap(),
            Presented::default()
        );
    }

    #[test]
    fn bearer_tokens_need_the_scheme_in_authorization() {
        let sources = CredentialSources {
            api_key_header: None,
            api_key_in_authorization: false,
            bearer_header: Some("authorization".into()),
        };
        assert_eq!(
            sources
                .extract(&TestRequest::with_headers(&[("authorization", "Bearer t")]).build())
                .unwrap()
                .bearer,
            Some(Secret::new("t"))
        );
        assert_eq!(
            sources
                .extract(&TestRequest::with_headers(&[("authorization", "bearer  t ")]).build())
                .unwrap()
                .bearer,
            Some(Secret::new("t"))
        );
        assert_eq!(
            sources
                .extract(&TestRequest::with_headers(&[("authorization", "Basic dXNlcg==")]).build())
                .unwrap()
                .bearer,
            None
        );
        assert_eq!(
            sources
                .extract(&TestRequest::with_headers(&[("authorization", "Bearer")]).build())
                .unwrap()
                .bearer,
            None
        );
    }
}
