//! Path templates: `/v1/accounts/{account}/orders/{order}`. A template matches a whole canonical
//! path, segment by segment: a literal segment ignores ASCII case (as routes do), `{name}`
//! matches exactly one non-empty segment. As with routes, a literal last segment also covers
//! itself followed by `.` or `:` and anything: frameworks route `/reports.json` to the
//! `/reports` handler (format suffixes) and `/reports:batchGet` is a custom method of it, so
//! neither spelling may escape the rule into `unmatched`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Kept lower-cased: it is compared ignoring ASCII case.
    Literal(String),
    Param(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

/// Why a template was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateError {
    NoLeadingSlash,
    EmptySegment,
    DotSegment,
    BadLiteral,
    BadParam,
    RepeatedParam,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoLeadingSlash => "must start with '/'",
            Self::EmptySegment => "must not have empty segments ('//' or a trailing '/')",
            Self::DotSegment => "must not have '.' or '..' segments",
            Self::BadLiteral => {
                "literal segments may hold only A-Z a-z 0-9 and - . _ ~ ! $ & ' ( ) * + , = : @"
            }
            Self::BadParam => {
                "a parameter is a whole segment '{name}', name of A-Z a-z 0-9 _ not starting with a digit"
            }
            Self::RepeatedParam => "names a parameter twice",
        })
    }
}

fn is_literal_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&c)
}

fn is_param_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Whether a template's last literal segment (lower-cased) covers a path's last segment: the
/// same in any case, or followed by `.` or `:` and anything.
fn covers_last(literal: &str, part: &str) -> bool {
    let Some(head) = part.get(..literal.len()) else {
        return false;
    };
    let rest = part.get(literal.len()..).unwrap_or("");
    head.eq_ignore_ascii_case(literal)
        && (rest.is_empty() || rest.starts_with('.') || rest.starts_with(':'))
}

/// The segments of a path (`/` has none).
fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').filter(move |_| !rest.is_empty())
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if !text.starts_with('/') {
            return Err(TemplateError::NoLeadingSlash);
        }
        let mut segments = Vec::new();
        for part in path_segments(text) {
            if part.is_empty() {
                return Err(TemplateError::EmptySegment);
            }
            if part == "." || part == ".." {
                return Err(TemplateError::DotSegment);
            }
            let segment = if let Some(inner) = part.strip_prefix('{') {
                let name = inner.strip_suffix('}').ok_or(TemplateError::BadParam)?;
                if !is_param_name(name) {
                    return Err(TemplateError::BadParam);
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Param(p) if p == name))
                {
                    return Err(TemplateError::RepeatedParam);
                }
                Segment::Param(name.to_owned())
            } else if part.bytes().all(is_literal_char) {
                Segment::Literal(part.to_ascii_lowercase())
            } else if part.contains(['{', '}']) {
                return Err(TemplateError::BadParam);
            } else {
                return Err(TemplateError::BadLiteral);
            };
            segments.push(segment);
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The index of parameter `name`'s segment.
    pub fn param_position(&self, name: &str) -> Option<usize> {
        self.segments
            .iter()
            .position(|s| matches!(s, Segment::Param(p) if p == name))
    }

    /// Whether segment `i` is a parameter.
    pub fn is_param(&self, i: usize) -> bool {
        matches!(self.segments.get(i), Some(Segment::Param(_)))
    }

    /// The number of literal segments: more is more specific.
    pub fn literals(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// The number of parameters: fewer is more specific.
    pub fn params(&self) -> usize {
        self.segments.len() - self.literals()
    }

    /// The path's segments when the template matches the whole (canonical) path.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let parts: Vec<&str> = path_segments(path).collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let last = parts.len().saturating_sub(1);
        let all = self
            .segments
            .iter()
            .zip(&parts)
            .enumerate()
            .all(|(i, (s, part))| match s {
                Segment::Literal(l) if i == last => covers_last(l, part),
                Segment::Literal(l) => l.eq_ignore_ascii_case(part),
                Segment::Param(_) => !part.is_empty(),
            });
        all.then_some(parts)
    }

    /// Whether some path matches both templates.
    pub fn overlaps(&self, other: &Template) -> bool {
        let last = self.segments.len().saturating_sub(1);
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .enumerate()
                .all(|(i, pair)| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) if i == last => {
                        covers_last(a, b) || covers_last(b, a)
                    }
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    _ => true,
                })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn t(text: &str) -> Template {
        Template::parse(text).unwrap()
    }

    #[test]
    fn parameters_match_one_non_empty_segment() {
        let orders = t("/v1/accounts/{account}/orders/{order}");
        assert_eq!(
            orders.matches("/v1/accounts/acct-1/orders/42"),
            Some(vec!["v1", "accounts", "acct-1", "orders", "42"])
        );
        assert_eq!(orders.param_position("account"), Some(2));
        assert_eq!(orders.param_position("order"), Some(4));
        assert_eq!(orders.param_position("user"), None);
        for path in [
            "/v1/accounts/acct-1/orders",
            "/v1/accounts/acct-1/orders/",
            "/v1/accounts/acct-1/orders/42/items",
            "/v1/accounts//orders/42",
            "/v2/accounts/acct-1/orders/42",
        ] {
            assert_eq!(orders.matches(path), None, "{path}");
        }
    }

    #[test]
    fn literals_ignore_ascii_case_and_values_keep_theirs() {
        let users = t("/V1/Users/{user}");
        assert_eq!(
            users.matches("/v1/USERS/Alice"),
            Some(vec!["v1", "USERS", "Alice"])
        );
        assert_eq!(users.as_str(), "/V1/Users/{user}");
        // The last literal covers format suffixes and custom methods; inner literals do not.
        let reports = t("/v1/reports");
        for path in ["/v1/reports.json", "/v1/Reports:batchGet", "/v1/reports."] {
            assert!(reports.matches(path).is_some(), "{path}");
        }
        for path in ["/v1/reportsx", "/v1.json/reports", "/v1/report"] {
            assert!(reports.matches(path).is_none(), "{path}");
        }
        let root = t("/");
        assert!(root.matches("/").is_some());
        assert!(root.matches("/a").is_none());
    }

    #[test]
    fn specificity_counts_literals_and_params() {
        let a = t("/v1/users/me");
        let b = t("/v1/users/{user}");
        assert_eq!((a.literals(), a.params()), (3, 0));
        assert_eq!((b.literals(), b.params()), (2, 1));
        assert!(a.overlaps(&b));
        assert!(t("/a/{x}/c").overlaps(&t("/{y}/b/c")));
        assert!(!t("/a/{x}").overlaps(&t("/b/{x}")));
        assert!(!t("/a/{x}").overlaps(&t("/a/{x}/c")));
        assert!(t("/A/{x}").overlaps(&t("/a/{y}")));
        assert!(t("/a/b").overlaps(&t("/a/B.json")));
        assert!(t("/a/b:x").overlaps(&t("/a/b")));
        assert!(!t("/a/b").overlaps(&t("/a/bc")));
    }

    #[test]
    fn malformed_templates_are_refused() {
        let cases = [
            ("v1/users", TemplateError::NoLeadingSlash),
            ("/v1//users", TemplateError::EmptySegment),
            ("/v1/users/", TemplateError::EmptySegment),
            ("/v1/../users", TemplateError::DotSegment),
            ("/v1/us%65rs", TemplateError::BadLiteral),
            ("/v1/users?x=1", TemplateError::BadLiteral),
            ("/v1/{user", TemplateError::BadParam),
            ("/v1/user-{id}", TemplateError::BadParam),
            ("/v1/{}", TemplateError::BadParam),
            ("/v1/{1st}", TemplateError::BadParam),
            ("/v1/{a}/{a}", TemplateError::RepeatedParam),
        ];
        for (text, error) in cases {
            assert_eq!(Template::parse(text), Err(error), "{text}");
        }
    }
}
