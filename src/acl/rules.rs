//! Compiled rules and which one applies to a request: among the rules whose template matches
//! the path and whose methods include the request's, the most specific (more literal segments,
//! then fewer parameters). Configuration refuses two rules that could tie.

use super::data::Principal;
use super::template::Template;

/// Who an `allow` entry grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Any authenticated caller.
    Any,
    Principal(Principal),
}

impl Grant {
    pub fn parse(text: &str) -> Option<Self> {
        if text == "any" {
            Some(Self::Any)
        } else {
            Principal::parse(text).map(Self::Principal)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// `*`
    All,
    /// Compared exactly (`GET` does not cover `HEAD`).
    Only(Vec<String>),
}

impl Methods {
    pub fn covers(&self, method: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.iter().any(|m| m == method),
        }
    }

    pub fn overlap(&self, other: &Methods) -> bool {
        match (self, other) {
            (Self::All, _) | (_, Self::All) => true,
            (Self::Only(a), Self::Only(b)) => a.iter().any(|m| b.contains(m)),
        }
    }
}

/// What a path parameter's value must equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EqualsTo {
    /// The caller's consumer.
    Consumer,
    /// The verified JWT's `sub`.
    Subject,
}

/// The object check of a rule; `segment` is the parameter's position in the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerCheck {
    /// `owners[kind][value]` must name the caller or one of its groups.
    Entry { segment: usize, kind: String },
    /// The value must equal the caller's consumer or subject.
    Equals { segment: usize, to: EqualsTo },
}

impl OwnerCheck {
    pub fn segment(&self) -> usize {
        match self {
            Self::Entry { segment, .. } | Self::Equals { segment, .. } => *segment,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub template: Template,
    pub methods: Methods,
    pub allow: Vec<Grant>,
    pub owner: Option<OwnerCheck>,
}

/// Which rule applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<'r, 'p> {
    /// Rule `index` applies; `segments` are the path's segments.
    Rule {
        index: usize,
        rule: &'r Rule,
        segments: Vec<&'p str>,
    },
    /// Some rule covers the path, none the method: refused (a rule for GET must not leave DELETE
    /// to `unmatched`).
    MethodNotCovered,
    /// No rule covers the path: `unmatched` decides.
    Unmatched,
}

/// The rules in configuration order (indexes are `acl.rules[i]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Rules that passed [`first_tie`]'s check.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    pub fn get(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn select<'p>(&self, method: &str, path: &'p str) -> Selection<'_, 'p> {
        let mut path_covered = false;
        let mut best: Option<(usize, &Rule, Vec<&'p str>)> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(segments) = rule.template.matches(path) else {
                continue;
            };
            path_covered = true;
            if !rule.methods.covers(method) {
                continue;
            }
            let better = match &best {
                None => true,
                Some((_, b, _)) => more_specific(rule, b),
            };
            if better {
                best = Some((index, rule, segments));
            }
        }
        match best {
            Some((index, rule, segments)) => Selection::Rule {
                index,
                rule,
                segments,
            },
            None if path_covered => Selection::MethodNotCovered,
            None => Selection::Unmatched,
        }
    }
}

fn more_specific(a: &Rule, b: &Rule) -> bool {
    let key = |r: &Rule| {
        (
            r.template.literals(),
            std::cmp::Reverse(r.template.params()),
        )
    };
    key(a) > key(b)
}

/// The first pair `(earlier, later)` of rules that some request could match equally: templates
/// that match a common path with as many literal segments, and methods in common.
pub fn first_tie(rules: &[Rule]) -> Option<(usize, usize)> {
    rules.iter().enumerate().find_map(|(j, later)| {
        rules
            .iter()
            .take(j)
            .position(|earlier| {
                earlier.template.overlaps(&later.template)
                    && !more_specific(earlier, later)
                    && !more_specific(later, earlier)
                    && earlier.methods.overlap(&later.methods)
            })
            .map(|i| (i, j))
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn rule(path: &str, methods: &[&str]) -> Rule {
        Rule {
            template: Template::parse(path).unwrap(),
            methods: if methods == ["*"] {
                Methods::All
            } else {
                Methods::Only(methods.iter().map(|m| (*m).to_owned()).collect())
            },
            allow: vec![Grant::Any],
            owner: None,
        }
    }

    fn chosen(set: &RuleSet, method: &str, path: &str) -> Option<usize> {
        match set.select(method, path) {
            Selection::Rule { index, .. } => Some(index),
            _ => None,
        }
    }

    #[test]
    fn the_most_specific_rule_wins_whatever_the_order() {
        let set = RuleSet::new(vec![
            rule("/v1/users/{user}", &["*"]),
            rule("/v1/users/me", &["GET"]),
            rule("/{any}/users/me", &["GET"]),
        ]);
        assert_eq!(
            first_tie(&[
                rule("/v1/users/{user}", &["*"]),
                rule("/v1/users/me", &["GET"])
            ]),
            None
        );
        assert_eq!(chosen(&set, "GET", "/v1/users/me"), Some(1));
        assert_eq!(chosen(&set, "GET", "/v1/USERS/ME"), Some(1));
        // The literal rule does not cover DELETE: the parameter rule does.
        assert_eq!(chosen(&set, "DELETE", "/v1/users/me"), Some(0));
        assert_eq!(chosen(&set, "GET", "/v2/users/me"), Some(2));
        assert_eq!(chosen(&set, "GET", "/v1/users/bob"), Some(0));
        assert_eq!(set.select("GET", "/v1/accounts"), Selection::Unmatched);
    }

    #[test]
    fn methods_compare_exactly() {
        let set = RuleSet::new(vec![rule("/a/{x}", &["GET"])]);
        assert_eq!(chosen(&set, "GET", "/a/1"), Some(0));
        assert_eq!(set.select("HEAD", "/a/1"), Selection::MethodNotCovered);
        assert_eq!(set.select("get", "/a/1"), Selection::MethodNotCovered);
    }

    #[test]
    fn ties_are_found_only_where_methods_overlap() {
        assert_eq!(
            first_tie(&[rule("/a/{x}/c", &["GET"]), rule("/{y}/b/c", &["*"])]),
            Some((0, 1))
        );
        assert_eq!(
            first_tie(&[rule("/a/{x}", &["GET"]), rule("/a/{y}", &["POST"])]),
            None
        );
        assert_eq!(
            first_tie(&[
                rule("/b", &["GET"]),
                rule("/a/{x}", &["GET", "PUT"]),
                rule("/A/{y}", &["PUT"])
            ]),
            Some((1, 2))
        );
        assert_eq!(
            first_tie(&[rule("/a/{x}", &["GET"]), rule("/a/b", &["GET"])]),
            None
        );
    }

    #[test]
    fn allow_entries_parse() {
        assert_eq!(Grant::parse("any"), Some(Grant::Any));
        assert_eq!(
            Grant::parse("group:support"),
            Some(Grant::Principal(Principal::Group("support".to_owned())))
        );
        assert_eq!(Grant::parse("everyone"), None);
        assert_eq!(Grant::parse("role:admin"), None);
    }
}
