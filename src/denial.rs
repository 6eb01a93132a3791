//! Why a request is refused, and how the refusal looks on the wire: an RFC 9457
//! `application/problem+json` body with a stable `code`, plus RFC 6750-style challenges.

use crate::api_key::KeyRejection;

/// A refusal. Nothing in here ever holds credential material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    CredentialInQuery {
        param: String,
    },
    /// The upstream could read the path differently than the route/exemption match did.
    NonCanonicalPath,
    MultipleCredentials {
        header: String,
    },
    MissingCredential,
    ApiKey(KeyRejection),
    HttpsRequired,
    /// A JWT was refused; `code` and `description` come from the JWT verifier.
    Jwt {
        code: &'static str,
        description: String,
        /// The token may be good; the verifier could not tell yet (503 with Retry-After).
        retryable: bool,
    },
    /// Both credentials were valid but the token's claim does not name the key's consumer.
    BindingMismatch {
        claim: String,
    },
    /// The caller's quota is used up (`fields`: the RateLimit header values, when known).
    RateLimited {
        retry_after: u64,
        fields: Option<RateLimitFields>,
    },
    /// The client's address failed authentication too often.
    TooManyAuthFailures {
        retry_after: u64,
    },
    /// The key is not configured and the live policy document that could hold it is not
    /// loaded yet, or (`stale`) older than `data_source.max_stale_seconds` allows.
    PolicyNotLoaded {
        stale: bool,
    },
    /// The rate-limit service did not answer (`global_rate_limit.failure_mode: deny`).
    RateLimitUnavailable,
    /// No ACL rule grants the caller this request.
    Forbidden,
    /// The ACL rule grants the caller, but not on the object the path names.
    NotOwner,
    /// An ACL refusal with `acl.deny_status: 404`: nothing says whether the object exists.
    NotFound,
    /// The caller was refused on too many distinct objects (`acl.enumeration_guard`).
    EnumerationBlocked {
        retry_after: u64,
    },
    /// The ACL's data could not be read from the proxy's shared data.
    AclDataUnavailable,
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi RateLimit header fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitFields {
    pub policy: String,
    pub state: String,
    /// Tokens left in the bucket (for the audit record).
    pub remaining: u64,
}

impl RateLimitFields {
    pub fn headers(&self) -> [(String, String); 2] {
        [
            ("ratelimit-policy".to_owned(), self.policy.clone()),
            ("ratelimit".to_owned(), self.state.clone()),
        ]
    }
}

impl Denial {
    pub fn status(&self) -> u16 {
        match self {
            Self::CredentialInQuery { .. }
            | Self::MultipleCredentials { .. }
            | Self::NonCanonicalPath => 400,
            Self::HttpsRequired | Self::Forbidden | Self::NotOwner => 403,
            Self::NotFound => 404,
            Self::RateLimited { .. }
            | Self::TooManyAuthFailures { .. }
            | Self::EnumerationBlocked { .. } => 429,
            Self::Jwt {
                retryable: true, ..
            }
            | Self::PolicyNotLoaded { .. } => 503,
            Self::RateLimitUnavailable | Self::AclDataUnavailable => 503,
            Self::MissingCredential
            | Self::ApiKey(_)
            | Self::Jwt { .. }
            | Self::BindingMismatch { .. } => 401,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::CredentialInQuery { .. } => "credential_in_query",
            Self::NonCanonicalPath => "non_canonical_path",
            Self::MultipleCredentials { .. } => "multiple_credentials",
            Self::MissingCredential => "missing_credential",
            Self::ApiKey(KeyRejection::Malformed) => "malformed_api_key",
            Self::ApiKey(KeyRejection::Unknown) => "unknown_api_key",
            Self::ApiKey(KeyRejection::Revoked) => "revoked_api_key",
            Self::ApiKey(KeyRejection::Expired) => "expired_api_key",
            Self::HttpsRequired => "https_required",
            Self::Jwt { code, .. } => code,
            Self::BindingMismatch { .. } => "credential_binding_mismatch",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooManyAuthFailures { .. } => "too_many_auth_failures",
            Self::PolicyNotLoaded { .. } => "policy_not_loaded",
            Self::RateLimitUnavailable => "rate_limit_unavailable",
            Self::Forbidden => "forbidden",
            Self::NotOwner => "not_owner",
            Self::NotFound => "not_found",
            Self::EnumerationBlocked { .. } => "enumeration_blocked",
            Self::AclDataUnavailable => "acl_data_unavailable",
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            Self::CredentialInQuery { .. } => "Credential in query string",
            Self::NonCanonicalPath => "Path not in canonical form",
            Self::MultipleCredentials { .. } => "Ambiguous credentials",
            Self::MissingCredential => "Credential required",
            Self::ApiKey(KeyRejection::Malformed) => "Malformed API key",
            Self::ApiKey(KeyRejection::Unknown) => "Unknown API key",
            Self::ApiKey(KeyRejection::Revoked) => "Revoked API key",
            Self::ApiKey(KeyRejection::Expired) => "Expired API key",
            Self::HttpsRequired => "HTTPS required",
            Self::Jwt { .. } => "Invalid access token",
            Self::BindingMismatch { .. } => "Credentials do not belong together",
            Self::RateLimited { .. } => "Too many requests",
            Self::TooManyAuthFailures { .. } => "Too many failed authentications",
            Self::PolicyNotLoaded { .. } => "Policy data not loaded",
            Self::RateLimitUnavailable => "Rate limit service unavailable",
            Self::Forbidden => "Forbidden",
            Self::NotOwner => "Not the object's owner",
            Self::NotFound => "Not found",
            Self::EnumerationBlocked { .. } => "Too many refused objects",
            Self::AclDataUnavailable => "Authorization data unavailable",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Self::CredentialInQuery { param } => format!(
                "credentials must not be sent in the query string (parameter '{param}'); send them in a header and rotate the exposed credential"
            ),
            Self::NonCanonicalPath => "the path has dot segments, path parameters or needless percent-encoding; send it in plain form".to_owned(),
            Self::MultipleCredentials { header } => format!("the '{header}' header was sent more than once or disagrees with another credential"),
            Self::MissingCredential => "this API requires a credential".to_owned(),
            Self::ApiKey(KeyRejection::Malformed) => "the API key is not a well-formed apiguard key".to_owned(),
            Self::ApiKey(KeyRejection::Unknown) => "the API key is not known".to_owned(),
            Self::ApiKey(KeyRejection::Revoked) => "the API key has been revoked".to_owned(),
            Self::ApiKey(KeyRejection::Expired) => "the API key has expired".to_owned(),
            Self::HttpsRequired => "this API is served over HTTPS only".to_owned(),
            Self::Jwt { description, .. } => description.clone(),
            Self::BindingMismatch { claim } => format!("the token's '{claim}' claim does not match the API key's consumer"),
            Self::RateLimited { retry_after, .. } => format!("the request quota is used up; retry in {retry_after} seconds"),
            Self::TooManyAuthFailures { retry_after } => format!("too many requests from this address failed authentication; retry in {retry_after} seconds"),
            Self::PolicyNotLoaded { stale: false } => "the policy data needed to check this credential is not loaded yet; retry later".to_owned(),
            Self::PolicyNotLoaded { stale: true } => "the policy data needed to check this credential is out of date (its source has failed for too long); retry later".to_owned(),
            Self::RateLimitUnavailable => "the service that keeps the global quotas did not answer; retry later".to_owned(),
            Self::Forbidden => "the caller is not allowed to make this request".to_owned(),
            Self::NotOwner => "the caller is not allowed to access this object".to_owned(),
            Self::NotFound => "the requested resource was not found".to_owned(),
            Self::EnumerationBlocked { retry_after } => format!("too many requests for objects this caller may not access; retry in {retry_after} seconds"),
            Self::AclDataUnavailable => "the data needed to authorize this request could not be read; retry later".to_owned(),
        }
    }

    /// Whether this refusal counts against the client's failed-authentication bucket: a
    /// credential was missing or wrong (not: our own key set is not loaded yet).
    pub fn is_failed_authentication(&self) -> bool {
        match self {
            Self::MissingCredential | Self::ApiKey(_) | Self::BindingMismatch { .. } => true,
            Self::Jwt { retryable, .. } => !retryable,
            _ => false,
        }
    }

    /// The RFC 6750 `error_description` for bearer challenges, when this is a token problem.
    fn bearer_error(&self) -> Option<String> {
        match self {
            Self::Jwt { description, .. } => Some(description.clone()),
            Self::BindingMismatch { .. } => Some(self.detail()),
            _ => None,
        }
    }
}

/// Which schemes a 401 challenges for (those the route's policy accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenges<'a> {
    /// The header that carries API keys, when the route accepts them.
    pub api_key: Option<&'a str>,
    pub bearer: bool,
}

/// An answer the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The denial's code, for the log and metrics (None for redirects).
    pub code: Option<&'static str>,
}

/// Characters allowed inside a quoted auth-param value that we write (no quotes, no escapes).
fn quotable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect()
}

impl LocalReply {
    pub fn denial(
        denial: &Denial,
        challenges: Challenges<'_>,
        realm: &str,
        request_id: Option<&str>,
    ) -> Self {
        let status = denial.status();
        let code = denial.code();
        let mut body = serde_json::json!({
            "type": format!("urn:apiguard:problem:{code}"),
            "title": denial.title(),
            "status": status,
            "code": code,
            "detail": denial.detail(),
        });
        if let (Some(id), Some(map)) = (request_id, body.as_object_mut()) {
            map.insert(
                "request_id".to_owned(),
                serde_json::Value::String(id.to_owned()),
            );
        }
        let mut headers = vec![
            (
                "content-type".to_owned(),
                "application/problem+json".to_owned(),
            ),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        match denial {
            Denial::RateLimited {
                retry_after,
                fields,
            } => {
                headers.push(("retry-after".to_owned(), retry_after.to_string()));
                headers.extend(fields.iter().flat_map(RateLimitFields::headers));
            }
            Denial::TooManyAuthFailures { retry_after }
            | Denial::EnumerationBlocked { retry_after } => {
                headers.push(("retry-after".to_owned(), retry_after.to_string()));
            }
            _ if status == 503 => headers.push(("retry-after".to_owned(), "5".to_owned())),
            _ => {}
        }
        if status == 401 {
            if let Some(header) = challenges.api_key {
                headers.push((
                    "www-authenticate".to_owned(),
                    format!("ApiKey realm=\"{realm}\", header=\"{header}\""),
                ));
            }
            if challenges.bearer {
                let value = match denial.bearer_error() {
                    Some(description) => format!(
                        "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                        quotable(&description)
                    ),
                    None => format!("Bearer realm=\"{realm}\""),
                };
                headers.push(("www-authenticate".to_owned(), value));
            }
        }
        Self {
            status,
            headers,
            body: body.to_string().into_bytes(),
            code: Some(code),
        }
    }

    /// The filter itself could not decide (no clock, an impossible state): fail closed.
    pub fn internal_error() -> Self {
        let body = serde_json::json!({
            "type": "urn:apiguard:problem:internal_error",
            "title": "Internal error",
            "status": 500,
            "code": "internal_error",
        });
        Self {
            status: 500,
            headers: vec![(
                "content-type".to_owned(),
                "application/problem+json".to_owned(),
            )],
            body: body.to_string().into_bytes(),
            code: Some("internal_error"),
        }
    }

    pub fn redirect(location: String) -> Self {
        Self {
            status: 308,
            headers: vec![("location".to_owned(), location)],
            body: Vec::new(),
            code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn header<'a>(reply: &'a LocalReply, name: &str) -> Vec<&'a str> {
        reply
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn problem_body_follows_rfc_9457() {
        let reply = LocalReply::denial(
            &Denial::ApiKey(KeyRejection::Unknown),
            Challenges {
                api_key: Some("x-api-key"),
                bearer: false,
            },
            "apiguard",
            Some("req-1"),
        );
        assert_eq!(reply.status, 401);
        assert_eq!(header(&reply, "content-type"), ["application/problem+json"]);
        assert_eq!(
            header(&reply, "www-authenticate"),
            ["ApiKey realm=\"apiguard\", header=\"x-api-key\""]
        );
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["type"], "urn:apiguard:problem:unknown_api_key");
        assert_eq!(body["status"], 401);
        assert_eq!(body["code"], "unknown_api_key");
        assert_eq!(body["title"], "Unknown API key");
        assert_eq!(body["request_id"], "req-1");
    }

    #[test]
    fn bearer_challenge_carries_rfc_6750_error_only_for_token_problems() {
        let both = Challenges {
            api_key: Some("k"),
            bearer: true,
        };
        let missing = LocalReply::denial(&Denial::MissingCredential, both, "r", None);
        assert_eq!(
            header(&missing, "www-authenticate"),
            ["ApiKey realm=\"r\", header=\"k\"", "Bearer realm=\"r\""]
        );
        let bad = Denial::Jwt {
            code: "token_expired",
            description: "the token \"expired\"\n".into(),
            retryable: false,
        };
        let reply = LocalReply::denial(
            &bad,
            Challenges {
                api_key: None,
                bearer: true,
            },
            "r",
            None,
        );
        assert_eq!(
            header(&reply, "www-authenticate"),
            ["Bearer realm=\"r\", error=\"invalid_token\", error_description=\"the token expired\""]
        );
    }

    #[test]
    fn non_401_denials_carry_no_challenge() {
        let both = Challenges {
            api_key: Some("k"),
            bearer: true,
        };
        for denial in [
            Denial::HttpsRequired,
            Denial::CredentialInQuery {
                param: "token".into(),
            },
        ] {
            let reply = LocalReply::denial(&denial, both, "r", None);
            assert!(header(&reply, "www-authenticate").is_empty(), "{denial:?}");
        }
    }
}
