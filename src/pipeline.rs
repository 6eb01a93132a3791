//! The decision for one request, cheapest checks first: exemptions → query credentials → HTTPS →
//! credential extraction (missing → 401 at once) → API key → JWT → binding → local quota → ACL
//! (enumeration guard, rule, object) → global quota (the rate-limit service) → forward.
//! Pure: the host hands in the request's headers, the time and the ports, and applies the
//! [`Decision`]: forward, reply, or wait for an outbound answer, then decide again (a shared
//! fetch) or finish with the answer (the request's own call to the rate-limit service).

use std::rc::Rc;

use crate::acl::enforce::{claim_groups, enforce, AclEnv, AclRequest};
use crate::acl::{AclCaller, EnumerationGuard};
use crate::api_key::{KeyRecord, KeyRejection, KeyStore, Lookup};
use crate::audit::{key_fingerprint, Outcome, Verdict};
use crate::config::CredentialPolicy;
use crate::credentials::with_scheme;
use crate::denial::{Challenges, Denial, LocalReply};
use crate::identity::{
    read_as_prefix, CONSUMER_HEADER, IDENTITY_HEADER_PREFIX, SUBJECT_HEADER, WOULD_DENY_HEADER,
};
use crate::jwt::{JwtVerifier, Refetch, VerifiedJwt};
use crate::key_entry::KnownPlans;
use crate::live::document::DocumentRules;
use crate::live::{rules_digest, DataUnavailable, PolicyData, SharedAclData};
use crate::paths::is_canonical;
use crate::policy::Policy;
use crate::ports::{Call, CallReply, Event, Events, GrpcCall, KeySpace, SharedStore, StoreError};
use crate::ratelimit::rls;
use crate::ratelimit::{
    BucketBy, BucketOwner, DescriptorFacts, FailureMode, GlobalVerdict, Limiter, OnContention,
    Plan, Quota, RateLimits,
};
use crate::request::RequestFacts;
use crate::secret::Secret;
use crate::transport::PlainHttp;

/// Who the caller was verified to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The API key's consumer, or the token's subject when only a token was required.
    pub consumer: Option<Rc<str>>,
    /// The verified JWT `sub`.
    pub subject: Option<String>,
    /// The issuer of the verified JWT.
    pub issuer: Option<String>,
}

/// Header edits for a request that goes on to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    pub remove_headers: Vec<String>,
    pub set_headers: Vec<(String, String)>,
    pub caller: Caller,
    /// Headers its response gets: HSTS (the request came over HTTPS), RateLimit fields.
    pub response_headers: Vec<(String, String)>,
    /// In report-only mode, the denial that was not enforced.
    pub unenforced: Option<Denial>,
}

/// The largest JWKS document a VM reads (a provider's key set is a few KiB).
const MAX_JWKS_ANSWER_BYTES: usize = 1024 * 1024;

/// What the request waits for; its answer comes back to [`Guard::on_reply`] under this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A JWT provider's key set: a token named a key the set does not have yet.
    JwksKeys { provider: usize },
    /// The live policy document (fetched on the root's tick; no request waits for it).
    PolicyData,
    /// The rate-limit service's answer about this request's global quota: every request asks
    /// with a call of its own and is finished with its answer ([`Wait::held`]).
    GlobalQuota,
}

/// A request that cannot be decided before an outbound answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub topic: Topic,
    /// The call this request starts; `None` when it joins one already under way (in this VM or
    /// another one of the proxy).
    pub call: Option<Call>,
    /// When the request goes on without the answer (Unix milliseconds).
    pub until_ms: i64,
    /// A wait on the request's own call: what was decided so far, finished by
    /// [`Guard::finish`] with the call's answer (or without one when the time is up). `None`:
    /// the request is decided again ([`Guard::resume`]) once the topic settles.
    pub held: Option<Box<Held>>,
}

/// A request that passed every local check, held while the rate-limit service is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The request as it goes on when the service admits it.
    admitted: Forward,
    /// Without what the checks established (report-only forwards of a refusal).
    base: Forward,
    request_id: Option<String>,
    hsts: Option<String>,
    /// What the checks established, for the audit record.
    noted: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Forward(Forward),
    Reply(LocalReply),
    Wait(Box<Wait>),
}

/// The ports a decision may use, and the time.
pub struct Env<'a> {
    pub now_ms: i64,
    pub store: &'a dyn SharedStore,
    pub events: &'a mut dyn Events,
}

impl Env<'_> {
    fn now_secs(&self) -> i64 {
        self.now_ms.div_euclid(1000)
    }

    fn now_ns(&self) -> i64 {
        self.now_ms.saturating_mul(1_000_000)
    }
}

/// Why the checks stopped short of forwarding the request.
enum Stop<'p> {
    Refuse(Refusal<'p>),
    /// Plain HTTP, to be redirected to this `https://` URL.
    Redirect(String),
    Wait(Box<Wait>),
}

/// A refusal with the challenges its route calls for.
struct Refusal<'p> {
    denial: Denial,
    challenges: Challenges<'p>,
}

impl From<Denial> for Refusal<'_> {
    fn from(denial: Denial) -> Self {
        Self {
            denial,
            challenges: Challenges {
                api_key: None,
                bearer: false,
            },
        }
    }
}

/// What the checks established about a request that passes them.
#[derive(Default)]
struct Passed {
    caller: Caller,
    /// Verified claims for the upstream (`forward_claims`).
    claim_headers: Vec<(String, String)>,
    /// For the client's response (RateLimit fields).
    response_headers: Vec<(String, String)>,
    /// The question for the rate-limit service, when a global limit applies.
    ask: Option<GrpcCall>,
    /// For the upstream: the caller's groups, and in ACL shadow mode what would be refused.
    acl_headers: Vec<(String, String)>,
}

/// Per-worker state: the shared policy, the JWT verifier's keys and caches, and this VM's
/// identity in proxy-wide leases.
pub struct Guard {
    policy: Rc<Policy>,
    jwt: Option<JwtVerifier>,
    /// This VM's lease-holder id (random, non-zero).
    vm_id: u64,
    limiter: Limiter,
    /// The live policy document, when `data_source` is configured.
    data: Option<PolicyData>,
    /// The configuration's ACL data (`acl.groups`, `acl.owners`) in shared data.
    acl_data: Option<PolicyData>,
    /// What the last evaluation decided, for the audit record (none while a request waits).
    outcome: Option<Outcome>,
    /// The ACL's enumeration guard, when configured.
    acl_guard: Option<EnumerationGuard>,
}

impl Guard {
    pub fn new(policy: Rc<Policy>, space: &KeySpace, vm_id: u64) -> Self {
        let jwt = policy.jwt.clone().map(|s| JwtVerifier::new(s, space));
        let configured_acl = policy.acl.as_ref().and_then(|a| a.configured_data.clone());
        // Hashes every configured key digest: only for a configuration that publishes data.
        let rules = (policy.data_source.is_some() || configured_acl.is_some()).then(|| {
            let plans: Vec<&str> = policy
                .rate_limits
                .iter()
                .flat_map(|l| l.plans())
                .map(|p| p.name.as_ref())
                .collect();
            rules_digest(&document_rules(&policy), &plans)
        });
        let data = policy
            .data_source
            .clone()
            .zip(rules)
            .map(|(source, rules)| PolicyData::new(source, space, rules));
        let acl_data = configured_acl
            .zip(rules)
            .map(|(json, rules)| PolicyData::configured(json, space, rules));
        let acl_guard = policy
            .acl
            .as_ref()
            .and_then(|a| a.guard)
            .map(|_| EnumerationGuard::new(space.clone()));
        Self {
            policy,
            jwt,
            vm_id: vm_id.max(1),
            limiter: Limiter::new(space.clone(), vm_id),
            data,
            acl_data,
            outcome: None,
            acl_guard,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn jwt_verifier(&mut self) -> Option<&mut JwtVerifier> {
        self.jwt.as_mut()
    }

    /// Creates the shared-data keys this configuration uses (at start-up).
    pub fn create_shared_keys(&mut self, store: &dyn SharedStore) -> Result<(), StoreError> {
        if self.policy.rate_limits.is_some() || self.policy.failed_auth.is_some() {
            self.limiter.prepare(store)?;
        }
        for data in [&self.data, &self.acl_data].into_iter().flatten() {
            data.create(store)?;
        }
        if let Some(guard) = self.acl_guard.as_mut() {
            guard.prepare(store)?;
        }
        self.jwt.as_ref().map_or(Ok(()), |j| j.create_feeds(store))
    }

    /// Publishes what the configuration itself puts in shared data (the ACL's data), once per
    /// proxy: at start-up, after [`Guard::create_shared_keys`], then on every tick until it is
    /// in force.
    pub fn start(&mut self, env: &mut Env<'_>) -> Result<(), StoreError> {
        let Some(data) = self.acl_data.as_mut() else {
            return Ok(());
        };
        // The configuration was read whole already: no size bound applies to its data.
        let rules = DocumentRules {
            max_bytes: usize::MAX,
            ..document_rules(&self.policy)
        };
        data.publish_configured(&rules, env.store, self.vm_id, env.now_ms, env.events)?;
        data.tick(env.store, self.vm_id, env.now_ms, env.events)
            .map(|_| ())
    }

    /// The periodic work: load what other VMs published, and the fetches due now (this VM took
    /// their leases; the host starts them and hands the answers to [`Guard::on_reply`]).
    pub fn tick(&mut self, env: &mut Env<'_>) -> Result<Vec<(Topic, Call)>, StoreError> {
        // One document's shared-data failure must not cost the other its fetch (a lease taken
        // and its call never started would hold every VM off until the lease expires).
        let mut due = Vec::new();
        let mut failed = self.start(env).err();
        if let Some(data) = self.data.as_mut() {
            match data.tick(env.store, self.vm_id, env.now_ms, env.events) {
                Ok(Some(call)) => due.push((Topic::PolicyData, call)),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        if let Some(jwt) = self.jwt.as_mut() {
            match jwt.jwks_tick(env.store, self.vm_id, env.now_ms, env.events) {
                Ok(fetches) => due.extend(fetches.into_iter().map(|f| {
                    let topic = Topic::JwksKeys {
                        provider: f.provider,
                    };
                    (topic, Call::Http(f.call))
                })),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if due.is_empty() => Err(e),
            Some(_) => {
                env.events.emit(Event::StoreFailed);
                Ok(due)
            }
            None => Ok(due),
        }
    }

    /// The largest answer body a call for `topic` may bring into the VM (a bigger one is not
    /// read: wasm memory never shrinks).
    pub fn max_answer_bytes(&self, topic: Option<Topic>) -> usize {
        match (topic, &self.policy.data_source) {
            (Some(Topic::PolicyData), Some(source)) => source.max_document_bytes,
            _ => MAX_JWKS_ANSWER_BYTES,
        }
    }

    /// The answer to a call started for `topic` (by a waiting request or by [`Guard::tick`]).
    pub fn on_reply(&mut self, topic: Topic, reply: &CallReply, env: &mut Env<'_>) {
        let stored = match topic {
            Topic::JwksKeys { provider } => self.jwt.as_mut().map_or(Ok(()), |jwt| {
                jwt.on_jwks_reply(provider, reply, env.store, env.now_ms, env.events)
            }),
            // Each held request is finished with its own answer (see `finish`).
            Topic::GlobalQuota => Ok(()),
            Topic::PolicyData => {
                let rules = document_rules(&self.policy);
                self.data.as_mut().map_or(Ok(()), |data| {
                    data.on_reply(reply, &rules, env.store, env.now_ms, env.events)
                })
            }
        };
        if stored.is_err() {
            env.events.emit(Event::StoreFailed);
        }
    }

    /// Whether requests waiting for `topic` may go on: what they wait for has arrived, or
    /// nothing is under way any more. Called while they wait for another VM's call.
    pub fn settled(&mut self, topic: Topic, env: &mut Env<'_>) -> bool {
        let Topic::JwksKeys { provider } = topic else {
            return true;
        };
        let Some(jwt) = self.jwt.as_mut() else {
            return true;
        };
        let loaded = jwt.load_published(env.store, env.events);
        let underway = jwt.fetch_underway(provider, env.store, env.now_ms);
        match (loaded, underway) {
            (Ok(changed), Ok(underway)) => changed || !underway,
            _ => {
                env.events.emit(Event::StoreFailed);
                true
            }
        }
    }

    /// What the last decision (forward or reply) established, once.
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Decides a new request; it may have to wait for an outbound answer.
    pub fn decide(&mut self, req: &RequestFacts, env: &mut Env<'_>) -> Decision {
        self.evaluate(req, env, true)
    }

    /// Decides a request again after its wait for a shared fetch: this time without waiting for
    /// one (it may still wait for its own call to the rate-limit service).
    pub fn resume(&mut self, req: &RequestFacts, env: &mut Env<'_>) -> Decision {
        self.evaluate(req, env, false)
    }

    /// Finishes a request held for the rate-limit service with the service's answer (`None`: no
    /// answer in time). Never waits.
    pub fn finish(
        &mut self,
        held: Held,
        answer: Option<&CallReply>,
        env: &mut Env<'_>,
    ) -> Decision {
        let policy = Rc::clone(&self.policy);
        let Held {
            admitted,
            base,
            request_id,
            hsts,
            mut noted,
        } = held;
        self.outcome = None;
        let Some(global) = policy.global_rate_limit.as_ref() else {
            env.events.emit(Event::Allowed);
            self.outcome = Some(noted);
            return Decision::Forward(admitted);
        };
        let verdict = match answer {
            Some(CallReply::Message(bytes)) => rls::decode_response(bytes)
                .map(|response| global.verdict(&response))
                .map_err(|e| e.to_string()),
            Some(CallReply::Failed(failure)) => Err(failure.to_string()),
            Some(CallReply::Answered { status, .. }) => {
                Err(format!("an HTTP answer ({status}) to a gRPC call"))
            }
            None => Err(format!("no answer within {} ms", global.timeout_ms)),
        };
        let (denial, response_headers) = match verdict {
            Ok(GlobalVerdict::Admitted {
                request_headers,
                response_headers,
                dropped,
            }) => {
                if dropped > 0 {
                    env.events
                        .emit(Event::RateLimitServiceHeadersDropped { count: dropped });
                }
                let mut forward = admitted;
                forward.set_headers.extend(request_headers);
                forward.response_headers.extend(response_headers);
                env.events.emit(Event::Allowed);
                self.outcome = Some(noted);
                return Decision::Forward(forward);
            }
            Ok(GlobalVerdict::OverLimit {
                denial,
                response_headers,
                dropped,
            }) => {
                if dropped > 0 {
                    env.events
                        .emit(Event::RateLimitServiceHeadersDropped { count: dropped });
                }
                (denial, response_headers)
            }
            Err(reason) => {
                env.events.emit(Event::RateLimitServiceFailed { reason });
                match global.failure_mode {
                    FailureMode::Allow => {
                        env.events.emit(Event::Allowed);
                        self.outcome = Some(noted);
                        return Decision::Forward(admitted);
                    }
                    FailureMode::Deny => (Denial::RateLimitUnavailable, Vec::new()),
                }
            }
        };
        if policy.report_only {
            noted.verdict = Verdict::ReportOnly;
            noted.code = Some(denial.code());
            self.outcome = Some(noted);
            return report_only(base, denial, request_id.as_deref(), env);
        }
        env.events.emit(Event::Denied {
            code: denial.code(),
        });
        noted.verdict = Verdict::Denied;
        noted.code = Some(denial.code());
        self.outcome = Some(noted);
        let no_challenge = Challenges {
            api_key: None,
            bearer: false,
        };
        let mut reply =
            LocalReply::denial(&denial, no_challenge, &policy.realm, request_id.as_deref());
        reply.headers.extend(response_headers);
        if let Some(hsts) = hsts {
            reply
                .headers
                .push(("strict-transport-security".to_owned(), hsts));
        }
        Decision::Reply(reply)
    }

    fn evaluate(&mut self, req: &RequestFacts, env: &mut Env<'_>, may_wait: bool) -> Decision {
        let policy = Rc::clone(&self.policy);
        let is_https = policy.https.is_https(req);
        let hsts = policy.https.hsts.as_ref().filter(|_| is_https);
        let mut forward = Forward {
            remove_headers: spoofable_headers(req, &policy),
            response_headers: hsts
                .map(|h| ("strict-transport-security".to_owned(), h.clone()))
                .into_iter()
                .collect(),
            ..Forward::default()
        };
        // Credentials are stripped whatever follows: exempt paths and report-only mode included.
        mark_for_stripping(&policy, req, &mut forward);
        let mut noted = Outcome::new(Verdict::Allowed);
        self.outcome = None;
        let checks = Checks {
            noted: &mut noted,
            policy: &policy,
            jwt: self.jwt.as_mut(),
            limiter: &mut self.limiter,
            data: self.data.as_mut(),
            acl_data: self.acl_data.as_mut(),
            acl_guard: self.acl_guard.as_mut(),
            vm_id: self.vm_id,
            may_wait,
        };
        let outcome = checks.run(req, env);
        if let (Err(Stop::Refuse(refusal)), Some(limit)) = (&outcome, &policy.failed_auth) {
            if refusal.denial.is_failed_authentication() {
                let now_ns = env.now_ns();
                if self
                    .limiter
                    .record_failure(limit, req, env.store, now_ns)
                    .is_err()
                {
                    env.events.emit(Event::RateLimitContention);
                }
            }
        }
        let unenforced = match outcome {
            Ok(mut passed) => {
                let ask = passed.ask.take();
                let base = ask.as_ref().map(|_| forward.clone());
                forward.set_headers = passed.claim_headers;
                forward.set_headers.extend(passed.acl_headers);
                forward.response_headers.extend(passed.response_headers);
                if let Some(consumer) = &passed.caller.consumer {
                    forward
                        .set_headers
                        .push((CONSUMER_HEADER.to_owned(), String::from(&**consumer)));
                }
                if let Some(subject) = &passed.caller.subject {
                    forward
                        .set_headers
                        .push((SUBJECT_HEADER.to_owned(), subject.clone()));
                }
                forward.caller = passed.caller;
                if let (Some(call), Some(base)) = (ask, base) {
                    env.events.emit(Event::WaitStarted);
                    let wait_ms = i64::try_from(call.timeout_ms).unwrap_or(i64::MAX);
                    return Decision::Wait(Box::new(Wait {
                        topic: Topic::GlobalQuota,
                        call: Some(Call::Grpc(call)),
                        until_ms: env.now_ms.saturating_add(wait_ms),
                        held: Some(Box::new(Held {
                            admitted: forward,
                            base,
                            request_id: req.request_id().map(str::to_owned),
                            hsts: hsts.cloned(),
                            noted,
                        })),
                    }));
                }
                env.events.emit(Event::Allowed);
                self.outcome = Some(noted);
                return Decision::Forward(forward);
            }
            Err(Stop::Wait(wait)) => {
                env.events.emit(Event::WaitStarted);
                return Decision::Wait(wait);
            }
            Err(Stop::Redirect(location)) if !policy.report_only => {
                env.events.emit(Event::Denied {
                    code: "https_redirect",
                });
                noted.verdict = Verdict::Redirected;
                noted.code = Some("https_redirect");
                self.outcome = Some(noted);
                return Decision::Reply(LocalReply::redirect(location));
            }
            Err(Stop::Redirect(_)) => Denial::HttpsRequired,
            Err(Stop::Refuse(refusal)) if policy.report_only => {
                if matches!(refusal.denial, Denial::CredentialInQuery { .. }) {
                    // Reported, but never forwarded either: the pairs leave the URL.
                    let path = policy.query_credentials.strip(req.path_and_query());
                    forward.set_headers.push((":path".to_owned(), path));
                }
                refusal.denial
            }
            Err(Stop::Refuse(refusal)) => {
                env.events.emit(Event::Denied {
                    code: refusal.denial.code(),
                });
                noted.verdict = Verdict::Denied;
                noted.code = Some(refusal.denial.code());
                self.outcome = Some(noted);
                let mut reply = LocalReply::denial(
                    &refusal.denial,
                    refusal.challenges,
                    &policy.realm,
                    req.request_id(),
                );
                if let Some(hsts) = hsts {
                    reply
                        .headers
                        .push(("strict-transport-security".to_owned(), hsts.clone()));
                }
                return Decision::Reply(reply);
            }
        };
        noted.verdict = Verdict::ReportOnly;
        noted.code = Some(unenforced.code());
        self.outcome = Some(noted);
        report_only(forward, unenforced, req.request_id(), env)
    }
}

/// Report-only: forward, naming what would have been refused; no identity is claimed.
fn report_only(
    mut forward: Forward,
    unenforced: Denial,
    request_id: Option<&str>,
    env: &mut Env<'_>,
) -> Decision {
    env.events.emit(Event::ReportOnly {
        code: unenforced.code(),
        status: unenforced.status(),
        request_id: request_id.map(str::to_owned),
    });
    forward
        .set_headers
        .push((WOULD_DENY_HEADER.to_owned(), unenforced.code().to_owned()));
    forward.unenforced = Some(unenforced);
    Decision::Forward(forward)
}

/// What a fetched policy document is checked against.
fn document_rules(policy: &Policy) -> DocumentRules<'_> {
    DocumentRules {
        max_bytes: policy
            .data_source
            .as_ref()
            .map_or(0, |d| d.max_document_bytes),
        config_keys: policy.api_keys.as_ref().map(|k| &k.store),
        plans: KnownPlans::Configured(policy.rate_limits.as_ref()),
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method` and no body (a
/// body would be a real request dressed as a preflight, for upstreams that route `OPTIONS`).
fn is_cors_preflight(req: &RequestFacts) -> bool {
    req.method() == "OPTIONS"
        && req.end_of_stream()
        // Frameworks that honour a method override would run another method than OPTIONS.
        && !METHOD_OVERRIDE_HEADERS.iter().any(|h| req.header(h).is_some())
        && req.header("origin").is_some()
        && req
            .header("access-control-request-method")
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|c| c.is_ascii_alphabetic()))
}

/// Headers through which frameworks let a request claim another method.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The checks proper, for one evaluation of one request.
struct Checks<'p, 'j> {
    /// Facts for the audit record, whatever the outcome.
    noted: &'j mut Outcome,
    policy: &'p Policy,
    jwt: Option<&'j mut JwtVerifier>,
    limiter: &'j mut Limiter,
    data: Option<&'j mut PolicyData>,
    /// The configuration's ACL data.
    acl_data: Option<&'j mut PolicyData>,
    acl_guard: Option<&'j mut EnumerationGuard>,
    vm_id: u64,
    may_wait: bool,
}

impl<'p> Checks<'p, '_> {
    fn run(mut self, req: &RequestFacts, env: &mut Env<'_>) -> Result<Passed, Stop<'p>> {
        let policy = self.policy;
        // An upstream could resolve such a path to one that another rule covers.
        if policy.matches_paths() && !is_canonical(req.path()) {
            return Err(Stop::Refuse(Denial::NonCanonicalPath.into()));
        }
        // On every path, exempt ones included.
        if let Some(found) = req.query().and_then(|q| policy.query_credentials.find(q)) {
            return Err(Stop::Refuse(
                Denial::CredentialInQuery { param: found.param }.into(),
            ));
        }
        if policy.exempt.iter().any(|p| p.matches(req.path())) {
            return Ok(Passed::default());
        }
        match policy.https.check(req) {
            None => {}
            Some(PlainHttp::Refuse) => return Err(Stop::Refuse(Denial::HttpsRequired.into())),
            Some(PlainHttp::Redirect(location)) => return Err(Stop::Redirect(location)),
        }
        if policy.allow_cors_preflight && is_cors_preflight(req) {
            return Ok(Passed::default());
        }
        // A client that keeps failing authentication is refused before any credential costs
        // anything (a stream of forged tokens stops costing signature checks).
        if let Some(limit) = &policy.failed_auth {
            if self.limiter.first_forwarded_connection_address(limit, req) {
                env.events.emit(Event::ClientAddressForwarded);
            }
            match self.limiter.throttled(limit, req, env.store, env.now_ns()) {
                Ok(None) => {}
                Ok(Some(denial)) => return Err(Stop::Refuse(denial.into())),
                Err(StoreError) => env.events.emit(Event::StoreFailed),
            }
        }
        let route = policy.route_for(req.path());
        self.noted.route = route.map(|r| r.prefix.as_str().to_owned());
        let rule = route.map_or(policy.credentials, |r| r.credentials);
        let challenges = Challenges {
            api_key: policy
                .api_keys
                .as_ref()
                .filter(|_| rule.accepts_api_key())
                .map(|k| k.header.as_str()),
            bearer: rule.accepts_jwt(),
        };
        let refuse = |denial: Denial| Err(Stop::Refuse(Refusal { denial, challenges }));

        let presented = match policy.sources.extract(req) {
            Ok(p) => p,
            Err(ambiguous) => {
                return refuse(Denial::MultipleCredentials {
                    header: ambiguous.header,
                })
            }
        };
        let api_key = presented.api_key.filter(|_| rule.accepts_api_key());
        let bearer = presented.bearer.filter(|_| rule.accepts_jwt());
        let missing = match rule {
            CredentialPolicy::ApiKey => api_key.is_none(),
            CredentialPolicy::Jwt => bearer.is_none(),
            CredentialPolicy::Either => api_key.is_none() && bearer.is_none(),
            CredentialPolicy::Both => api_key.is_none() || bearer.is_none(),
        };
        if missing {
            return refuse(Denial::MissingCredential);
        }

        let mut passed = Passed::default();
        let mut key_record = None;
        if let (Some(key), Some(keys)) = (api_key, &policy.api_keys) {
            match verify_api_key(&keys.store, self.data.as_deref_mut(), key, env) {
                Ok(record) => {
                    passed.caller.consumer = Some(Rc::clone(&record.consumer));
                    self.noted.consumer = Some(Rc::clone(&record.consumer));
                    self.noted.key_fingerprint = Some(key_fingerprint(record.digest()));
                    key_record = Some(record);
                }
                Err(denial) => return refuse(denial),
            }
        }
        let mut token: Option<VerifiedJwt> = None;
        if let (Some(bearer), Some(verifier)) = (bearer, self.jwt) {
            let presented = Presented {
                token: bearer.expose(),
                jwt_authn: req.dynamic_metadata(),
            };
            match verify_token(verifier, presented, self.vm_id, self.may_wait, env) {
                Ok(verified) => {
                    passed
                        .claim_headers
                        .extend(verified.forward_headers.iter().cloned());
                    passed.caller.subject = Some(verified.subject.clone());
                    passed.caller.issuer = Some(verified.issuer.clone());
                    self.noted.subject = Some(verified.subject.clone());
                    self.noted.issuer = Some(verified.issuer.clone());
                    self.noted.jti = verified.claim_str("jti");
                    token = Some(verified);
                }
                Err(TokenOutcome::Wait(wait)) => return Err(Stop::Wait(wait)),
                Err(TokenOutcome::Refused(e)) => {
                    return refuse(Denial::Jwt {
                        code: e.code(),
                        description: e.description(),
                        retryable: e.retryable(),
                    })
                }
            }
        }
        if let (Some(claim), Some(token)) = (route.and_then(|r| r.bind_claim.as_deref()), &token) {
            let bound = passed
                .caller
                .consumer
                .as_deref()
                .is_some_and(|c| token.claim_str(claim).as_deref() == Some(c));
            if !bound {
                return refuse(Denial::BindingMismatch {
                    claim: claim.to_owned(),
                });
            }
        }
        if passed.caller.consumer.is_none() {
            passed.caller.consumer = passed.caller.subject.as_deref().map(Rc::from);
            self.noted.consumer.clone_from(&passed.caller.consumer);
        }
        let cost = route.map_or(1, |r| r.cost);
        let mut plan = None;
        if let Some(limits) = &policy.rate_limits {
            let caller = RateLimitedCaller {
                key: key_record.as_ref(),
                consumer: passed.caller.consumer.as_deref(),
                token: token.as_ref(),
            };
            plan = plan_of(limits, &caller);
            if let Some(plan) = &plan {
                match take_quota(limits, plan, self.limiter, &caller, cost, self.noted, env) {
                    Ok(fields) => passed.response_headers.extend(fields),
                    Err(denial) => return refuse(denial),
                }
            }
        }
        // A refusal here costs no call to the rate-limit service.
        if let Some(acl) = &policy.acl {
            let caller = AclCaller {
                consumer: passed.caller.consumer.as_deref().unwrap_or(""),
                subject: passed.caller.subject.as_deref(),
            };
            let groups = token.as_ref().map_or_else(Vec::new, |t| {
                claim_groups(acl.group_claims.iter().flat_map(|c| t.claim_strings(c)))
            });
            let request = AclRequest {
                method: req.method(),
                path: req.path(),
                caller,
                request_id: req.request_id(),
            };
            let acl_env = AclEnv {
                store: env.store,
                events: &mut *env.events,
                now_ms: env.now_ms,
            };
            let mut data = SharedAclData {
                configured: self.acl_data,
                live: self.data.as_deref_mut(),
                store: env.store,
                now_ms: env.now_ms,
            };
            match enforce(
                acl,
                request,
                groups,
                &mut data,
                self.acl_guard,
                acl_env,
                self.noted,
            ) {
                Ok(headers) => passed.acl_headers = headers,
                Err(denial) => return refuse(denial),
            }
        }
        // Only a request that the local checks admit costs a call to the rate-limit service.
        if let Some(global) = &policy.global_rate_limit {
            let facts = DescriptorFacts {
                consumer: passed.caller.consumer.as_deref(),
                plan: plan.as_ref().map(|p| &*p.name),
                route: route.map_or("/", |r| r.prefix.as_str()),
            };
            passed.ask = global.call(&global.descriptors_for(req, &facts), cost);
        }
        Ok(passed)
    }
}

/// Checks an API key: its form, then the configured keys, then the live document's.
fn verify_api_key(
    configured: &KeyStore,
    data: Option<&mut PolicyData>,
    key: Secret<'_>,
    env: &mut Env<'_>,
) -> Result<KeyRecord, Denial> {
    let now = env.now_secs();
    let digest = match configured.lookup(key, now).map_err(Denial::ApiKey)? {
        Lookup::Configured(record) => return Ok(record.clone()),
        Lookup::NotConfigured(digest) => digest,
    };
    let Some(data) = data else {
        return Err(Denial::ApiKey(KeyRejection::Unknown));
    };
    let entry = match data.lookup(&digest, env.store, env.now_ms) {
        Ok(Some(entry)) => entry,
        Ok(None) => return Err(Denial::ApiKey(KeyRejection::Unknown)),
        Err(unavailable) => {
            if unavailable == DataUnavailable::StoreFailed {
                env.events.emit(Event::StoreFailed);
            }
            return Err(Denial::PolicyNotLoaded {
                stale: unavailable == DataUnavailable::Stale,
            });
        }
    };
    let record = KeyRecord::new(
        entry.digest,
        Rc::from(entry.consumer),
        entry.expires_at,
        entry.revoked,
    )
    .with_plan(entry.plan.map(Rc::from));
    record.check(now).map_err(Denial::ApiKey)?;
    Ok(record)
}

/// What the rate limits need to know of an authenticated caller.
struct RateLimitedCaller<'a> {
    key: Option<&'a KeyRecord>,
    consumer: Option<&'a str>,
    token: Option<&'a VerifiedJwt>,
}

/// The caller's plan (`None`: not limited locally).
fn plan_of(limits: &RateLimits, caller: &RateLimitedCaller<'_>) -> Option<Rc<Plan>> {
    let claim = match (&limits.plan_claim, caller.token) {
        (Some(name), Some(token)) => token.claim_str(name),
        _ => None,
    };
    let key_plan = caller.key.and_then(|k| k.plan.as_deref());
    limits.plan_for(key_plan, caller.consumer, claim.as_deref())
}

/// Takes the request's cost from its caller's bucket of `plan`. Returns the RateLimit response
/// fields (when configured), or the refusal.
fn take_quota(
    limits: &RateLimits,
    plan: &Plan,
    limiter: &mut Limiter,
    caller: &RateLimitedCaller<'_>,
    cost: u64,
    noted: &mut Outcome,
    env: &mut Env<'_>,
) -> Result<Vec<(String, String)>, Denial> {
    let owner = match (caller.key, caller.token, limits.bucket_by) {
        (Some(key), _, BucketBy::Consumer) => BucketOwner::Consumer(&key.consumer),
        (Some(key), _, BucketBy::Key) => BucketOwner::Key(key.digest()),
        (None, Some(token), _) => BucketOwner::Subject {
            issuer: &token.issuer,
            subject: &token.subject,
        },
        // Authenticated without key or token cannot happen; a consumer name is all there is.
        (None, None, _) => BucketOwner::Consumer(caller.consumer.unwrap_or("")),
    };
    noted.plan = Some(Rc::clone(&plan.name));
    let quota = limiter.take_quota(plan, owner, cost, env.store, env.now_ns());
    noted.tokens_left = match &quota {
        Ok(Quota::Admitted(fields))
        | Ok(Quota::Refused(Denial::RateLimited {
            fields: Some(fields),
            ..
        })) => Some(fields.remaining),
        _ => None,
    };
    match quota {
        Ok(Quota::Admitted(fields)) if limits.response_headers => Ok(fields.headers().to_vec()),
        Ok(Quota::Admitted(_)) => Ok(Vec::new()),
        Ok(Quota::Refused(denial)) => Err(denial),
        Err(_) => {
            env.events.emit(Event::RateLimitContention);
            match limits.on_store_contention {
                OnContention::Allow => Ok(Vec::new()),
                OnContention::Deny => Err(Denial::RateLimited {
                    retry_after: 1,
                    fields: None,
                }),
            }
        }
    }
}

/// A bearer token and what the proxy said of it (its dynamic metadata, where the jwt_authn filter
/// puts what it verified, when read).
#[derive(Clone, Copy)]
struct Presented<'r> {
    token: &'r str,
    jwt_authn: Option<&'r [u8]>,
}

enum TokenOutcome {
    Refused(crate::jwt::JwtError),
    Wait(Box<Wait>),
}

/// Verifies a bearer token. A token whose key the provider's set lacks may wait for a refetch
/// (a key rotation at the identity provider), once, for at most `unknown_kid_wait_ms`.
fn verify_token(
    verifier: &mut JwtVerifier,
    presented: Presented<'_>,
    vm_id: u64,
    may_wait: bool,
    env: &mut Env<'_>,
) -> Result<VerifiedJwt, TokenOutcome> {
    let now = env.now_secs();
    let Presented { token, jwt_authn } = presented;
    let refusal = match verifier.verify_or_await_keys(token, jwt_authn, now) {
        Ok(verified) => return Ok(verified),
        Err(refusal) => refusal,
    };
    let Some(provider) = refusal.awaits_keys_of.filter(|_| may_wait) else {
        return Err(TokenOutcome::Refused(refusal.error));
    };
    let wait_ms = verifier.unknown_kid_wait_ms(provider);
    if wait_ms == 0 {
        return Err(TokenOutcome::Refused(refusal.error));
    }
    let until_ms = env
        .now_ms
        .saturating_add(i64::try_from(wait_ms).unwrap_or(i64::MAX));
    let topic = Topic::JwksKeys { provider };
    match verifier.refetch(provider, env.store, vm_id, env.now_ms, env.events) {
        Ok(Refetch::Reloaded) => verifier
            .verify_with(token, jwt_authn, now)
            .map_err(TokenOutcome::Refused),
        Ok(Refetch::Start(fetch)) => {
            let mut call = fetch.call;
            // The request's own call ends by its wait bound: its answer resumes the request.
            call.timeout_ms = call.timeout_ms.min(wait_ms);
            Err(TokenOutcome::Wait(Box::new(Wait {
                topic,
                call: Some(Call::Http(call)),
                until_ms,
                held: None,
            })))
        }
        Ok(Refetch::Underway) => Err(TokenOutcome::Wait(Box::new(Wait {
            topic,
            call: None,
            until_ms,
            held: None,
        }))),
        Ok(Refetch::Refuse) => Err(TokenOutcome::Refused(refusal.error)),
        Err(StoreError) => {
            env.events.emit(Event::StoreFailed);
            Err(TokenOutcome::Refused(refusal.error))
        }
    }
}

/// Credential headers present in the request are stripped (when configured) whatever the
/// outcome, so that report-only mode never forwards a credential either.
fn mark_for_stripping(policy: &Policy, req: &RequestFacts, forward: &mut Forward) {
    if let Some(keys) = policy.api_keys.as_ref().filter(|k| k.strip) {
        if req.header(&keys.header).is_some() {
            forward.remove_headers.push(keys.header.clone());
        }
        // An ApiKey credential is stripped even where that scheme is not accepted: it is ours.
        let apikey_scheme = req
            .header_values("authorization")
            .any(|v| with_scheme(v, "ApiKey").is_some());
        if apikey_scheme {
            forward.remove_headers.push("authorization".to_owned());
        }
    }
    // An apiguard key under any scheme (`Bearer agk_…`) or none is ours too: it never reaches the
    // upstream, whether API keys or JWTs are configured or not (unless the operator asked for
    // keys to be forwarded: `api_keys.strip_credential: false`).
    let strip_keys = !matches!(&policy.api_keys, Some(k) if !k.strip);
    let key_in_authorization = strip_keys
        && req.header_values("authorization").any(|v| {
            v.split([' ', '\t', ','])
                .any(|part| crate::api_key::is_well_formed(part.trim()))
        });
    if key_in_authorization {
        forward.remove_headers.push("authorization".to_owned());
    }
    if let Some(jwt) = policy.jwt.as_ref().filter(|j| j.strip_token()) {
        if req.header(jwt.header()).is_some() {
            forward.remove_headers.push(jwt.header().to_owned());
        }
    }
    forward.remove_headers.sort_unstable();
    forward.remove_headers.dedup();
}

/// Client-sent headers that only the plugin may set: every `x-apiguard-*` header and the targets
/// of forwarded claims, in any spelling an upstream reads as theirs: CGI, WSGI and PHP turn
/// `x_apiguard_consumer` into `HTTP_X_APIGUARD_CONSUMER`, the same as `x-apiguard-consumer`.
fn spoofable_headers(req: &RequestFacts, policy: &Policy) -> Vec<String> {
    let forwarded = policy
        .jwt
        .as_ref()
        .map_or(&[][..], |j| j.forwarded_header_names());
    let mut names: Vec<String> = req
        .header_names()
        .filter(|name| {
            read_as_prefix(name, IDENTITY_HEADER_PREFIX)
                || forwarded
                    .iter()
                    .any(|f| f.len() == name.len() && read_as_prefix(name, f))
        })
        .map(str::to_owned)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::api_key;
    use crate::api_key::test_support::key;
    use crate::request::test_support::TestRequest;
    use crate::secret::to_hex;

    const NOW: i64 = 1_800_000_000;

    fn guard_of(policy: Rc<Policy>) -> Guard {
        Guard::new(policy, &KeySpace::new("apiguard"), 1)
    }

    /// Decisions at `now` (seconds) with fresh in-memory ports.
    trait DecideAt {
        fn decide_at(&mut self, req: &RequestFacts, now: i64) -> Decision;
    }

    impl DecideAt for Guard {
        fn decide_at(&mut self, req: &RequestFacts, now: i64) -> Decision {
            let store = crate::ports::fakes::MemoryStore::default();
            let mut events = crate::ports::fakes::RecordedEvents::default();
            let mut env = Env {
                now_ms: now * 1000,
                store: &store,
                events: &mut events,
            };
            self.decide(req, &mut env)
        }
    }

    fn entry(key: &str, consumer: &str, extra: &str) -> String {
        format!(
            r#"{{"sha256": "{}", "consumer": "{consumer}"{extra}}}"#,
            to_hex(&api_key::digest(key))
        )
    }

    /// A guard for keys 1 (alice), 2 (revoked), 3 (expired), with `extra` top-level fields.
    fn guard(extra: &str) -> Guard {
        let json = format!(
            r#"{{"api_keys": {{"keys": [{}, {}, {}]}}, "exempt_paths": ["/healthz"]{extra}}}"#,
            entry(&key(1), "alice", ""),
            entry(&key(2), "bob", r#", "revoked": true"#),
            entry(
                &key(3),
                "carol",
                r#", "expires_at": "2020-01-01T00:00:00Z""#
            ),
        );
        guard_of(Rc::new(Policy::from_json(json.as_bytes()).unwrap()))
    }

    fn denial_code(decision: &Decision) -> Option<&'static str> {
        match decision {
            Decision::Reply(reply) => reply.code,
            Decision::Forward(_) | Decision::Wait(_) => None,
        }
    }

    fn forwarded(decision: Decision) -> Forward {
        match decision {
            Decision::Forward(f) => f,
            Decision::Reply(r) => panic!("expected forward, got {} {:?}", r.status, r.code),
            Decision::Wait(w) => panic!("expected forward, got a wait for {:?}", w.topic),
        }
    }

    #[test]
    fn valid_key_forwards_with_identity_and_without_the_key() {
        let mut g = guard("");
        let f = forwarded(
            g.decide_at(
                &TestRequest::get("/v1")
                    .set_header("x-api-key", &key(1))
                    .set_header("x-apiguard-consumer", "admin")
                    .build(),
                NOW,
            ),
        );
        assert_eq!(
            f.set_headers,
            [(CONSUMER_HEADER.to_owned(), "alice".to_owned())]
        );
        assert!(f.remove_headers.contains(&"x-api-key".to_owned()));
        assert!(f.remove_headers.contains(&"x-apiguard-consumer".to_owned()));
        assert!(f
            .response_headers
            .iter()
            .any(|(n, _)| n == "strict-transport-security"));
        assert_eq!(f.caller.consumer.as_deref(), Some("alice"));
    }

    #[test]
    fn each_key_problem_has_its_own_code() {
        let mut g = guard("");
        let mut typo = key(1);
        typo.pop();
        typo.push('!');
        let cases = [
            (TestRequest::get("/v1").build(), "missing_credential"),
            (
                TestRequest::get("/v1")
                    .set_header("x-api-key", &typo)
                    .build(),
                "malformed_api_key",
            ),
            (
                TestRequest::get("/v1")
                    .set_header("x-api-key", &key(9))
                    .build(),
                "unknown_api_key",
            ),
            (
                TestRequest::get("/v1")
                    .set_header("x-api-key", &key(2))
                    .build(),
                "revoked_api_key",
            ),
            (
                TestRequest::get("/v1")
                    .set_header("x-api-key", &key(3))
                    .build(),
                "expired_api_key",
            ),
            (
                TestRequest::get("/v1?access_token=x")
                    .set_header("x-api-key", &key(1))
                    .build(),
                "credential_in_query",
            ),
            (
                TestRequest::get("/v1")
                    .set_header("x-api-key", &key(1))
                    .add_header("x-api-key", &key(9))
                    .build(),
                "multiple_credentials",
            ),
            (
                TestRequest::get("/v1")
                    .set_header(":scheme", "http")
                    .set_header("x-api-key", &key(1))
                    .build(),
                "https_required",
            ),
        ];
        for (request, code) in cases {
            assert_eq!(
                denial_code(&g.decide_at(&request, NOW)),
                Some(code),
                "{request:?}"
            );
        }
    }

    #[test]
    fn denials_never_echo_the_key() {
        let mut g = guard("");
        for k in [key(9), key(2), format!("{}x", key(1))] {
            let Decision::Reply(reply) = g.decide_at(
                &TestRequest::get(&format!("/v1?token={k}"))
                    .set_header("x-api-key", &k)
                    .build(),
                NOW,
            ) else {
                panic!("expected a denial")
            };
            let all = format!(
                "{:?}{}",
                reply.headers,
                String::from_utf8_lossy(&reply.body)
            );
            assert!(!all.contains(&k));
            let Decision::Reply(reply) = g.decide_at(
                &TestRequest::get("/v1").set_header("x-api-key", &k).build(),
                NOW,
            ) else {
                panic!()
            };
            assert!(!String::from_utf8_lossy(&reply.body).contains(&k));
        }
    }

    #[test]
    fn exempt_paths_and_preflights_skip_credentials_but_not_spoof_removal() {
        let mut g = guard("");
        let f = forwarded(
            g.decide_at(
                &TestRequest::get("/healthz/live")
                    .set_header("x-apiguard-consumer", "admin")
                    .build(),
                NOW,
            ),
        );
        assert_eq!(f.remove_headers, ["x-apiguard-consumer"]);
        assert!(f.set_headers.is_empty());
        assert_eq!(
            denial_code(&g.decide_at(&TestRequest::get("/healthzz").build(), NOW)),
            Some("missing_credential")
        );
        assert_eq!(
            denial_code(&g.decide_at(&TestRequest::get("/healthz/../admin").build(), NOW)),
            Some("non_canonical_path")
        );
        let preflight = [
            (":method", "OPTIONS"),
            ("origin", "https://app.test"),
            ("access-control-request-method", "POST"),
        ];
        forwarded(g.decide_at(
            &TestRequest::get("/v1").set_headers(&preflight).build(),
            NOW,
        ));
        assert_eq!(
            denial_code(
                &g.decide_at(
                    &TestRequest::get("/v1")
                        .set_header(":method", "OPTIONS")
                        .build(),
                    NOW
                )
            ),
            Some("missing_credential")
        );
        let mut strict = guard(r#", "allow_cors_preflight": false"#);
        assert_eq!(
            denial_code(&strict.decide_at(
                &TestRequest::get("/v1").set_headers(&preflight).build(),
                NOW
            )),
            Some("missing_credential")
        );
    }

    #[test]
    fn paths_an_upstream_could_read_differently_are_refused_when_rules_match_paths() {
        let mut g = guard("");
        for sneaky in [
            "/healthz/..;/admin",
            "/healthz/../admin",
            "/%68ealthz",
            "/v1;x=y",
            "/v1%00",
        ] {
            assert_eq!(
                denial_code(&g.decide_at(&TestRequest::get(sneaky).build(), NOW)),
                Some("non_canonical_path"),
                "{sneaky}"
            );
        }
        // Without exemptions or routes nothing is matched on the path, so nothing to confuse.
        let json = format!(
            r#"{{"api_keys": {{"keys": [{}]}}}}"#,
            entry(&key(1), "alice", "")
        );
        let mut plain = guard_of(Rc::new(Policy::from_json(json.as_bytes()).unwrap()));
        forwarded(
            plain.decide_at(
                &TestRequest::get("/v1;x=y")
                    .set_header("x-api-key", &key(1))
                    .build(),
                NOW,
            ),
        );
    }

    #[test]
    fn credentials_are_stripped_on_exempt_paths_and_in_any_spelling() {
        let mut g = guard("");
        let with_tab = format!("ApiKey\t{}", key(1));
        let f = forwarded(
            g.decide_at(
                &TestRequest::get("/healthz")
                    .set_header("x-api-key", &key(1))
                    .set_header("authorization", &with_tab)
                    .build(),
                NOW,
            ),
        );
        assert_eq!(f.remove_headers, ["authorization", "x-api-key"]);
    }

    #[test]
    fn preflights_with_a_body_or_over_plain_http_are_not_preflights() {
        let mut g = guard("");
        let preflight = [
            (":method", "OPTIONS"),
            ("origin", "https://app.test"),
            ("access-control-request-method", "POST"),
        ];
        let with_body = TestRequest::get("/v1")
            .set_headers(&preflight)
            .end_of_stream(false)
            .build();
        assert_eq!(
            denial_code(&g.decide_at(&with_body, NOW)),
            Some("missing_credential")
        );
        let mut plain = preflight.to_vec();
        plain.push((":scheme", "http"));
        assert_eq!(
            denial_code(&g.decide_at(&TestRequest::get("/v1").set_headers(&plain).build(), NOW)),
            Some("https_required")
        );
    }

    #[test]
    fn report_only_forwards_and_names_what_it_would_deny() {
        let mut g = guard(r#", "report_only": true"#);
        let f = forwarded(
            g.decide_at(
                &TestRequest::get("/v1")
                    .set_header("x-api-key", &key(2))
                    .build(),
                NOW,
            ),
        );
        assert_eq!(
            f.set_headers,
            [(WOULD_DENY_HEADER.to_owned(), "revoked_api_key".to_owned())]
        );
        assert!(f.remove_headers.contains(&"x-api-key".to_owned()));
        assert_eq!(
            f.unenforced,
            Some(Denial::ApiKey(crate::api_key::KeyRejection::Revoked))
        );
        let f = forwarded(
            g.decide_at(
                &TestRequest::get("/v1")
                    .set_header(":scheme", "http")
                    .set_header("x-api-key", &key(1))
                    .build(),
                NOW,
            ),
        );
        assert_eq!(f.unenforced, Some(Denial::HttpsRequired));
        assert!(f.remove_headers.contains(&"x-api-key".to_owned()));
        for refused_early in [
            TestRequest::get("/v1?token=1")
                .set_header("x-api-key", &key(1))
                .build(),
            TestRequest::get("/v1")
                .set_header("x-api-key", &key(1))
                .add_header("x-api-key", &key(2))
                .build(),
        ] {
            let f = forwarded(g.decide_at(&refused_early, NOW));
            assert!(f.unenforced.is_some());
            assert!(
                f.remove_headers.contains(&"x-api-key".to_owned()),
                "{refused_early:?}"
            );
            assert!(!f.set_headers.iter().any(|(n, _)| n == CONSUMER_HEADER));
        }
    }

    #[test]
    fn plain_http_gets_redirected_when_configured() {
        let mut g = guard(r#", "https": {"redirect": true}"#);
        let Decision::Reply(reply) = g.decide_at(
            &TestRequest::get("/v1?a=1")
                .set_header(":scheme", "http")
                .build(),
            NOW,
        ) else {
            panic!()
        };
        assert_eq!(reply.status, 308);
        assert_eq!(
            reply.headers,
            [("location".to_owned(), "https://api.test/v1?a=1".to_owned())]
        );
    }

    #[test]
    fn hsts_only_for_https_requests() {
        let mut g = guard(r#", "https": {"required": false}"#);
        assert!(forwarded(
            g.decide_at(
                &TestRequest::get("/v1")
                    .set_header(":scheme", "http")
                    .set_header("x-api-key", &key(1))
                    .build(),
                NOW
            )
        )
        .response_headers
        .is_empty());
        let Decision::Reply(reply) = g.decide_at(&TestRequest::get("/v1").build(), NOW) else {
            panic!()
        };
        assert!(reply
            .headers
            .iter()
            .any(|(n, _)| n == "strict-transport-security"));
    }

    mod tokens {
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        use super::*;
        use crate::jwt::test_keys::{ec_public_jwk, mint};
        use crate::jwt::Alg;

        const ISS: &str = "https://idp.test";

        /// Key 1 belongs to consumer "alice"; `/bound` needs both, bound by `azp`.
        fn jwt_guard(credentials: &str) -> Guard {
            let mut jwk = ec_public_jwk();
            jwk["kid"] = serde_json::json!("ec");
            let json = serde_json::json!({
                "credentials": credentials,
                "api_keys": {"keys": [serde_json::from_str::<serde_json::Value>(&entry(&key(1), "alice", "")).unwrap()]},
                "jwt": {"providers": [{"issuer": ISS, "audiences": ["api"], "jwks": {"keys": [jwk]}}]},
                "routes": [{"prefix": "/bound", "credentials": "both", "bind_claim": "azp"},
                           {"prefix": "/keys-only", "credentials": "api_key"}],
            });
            guard_of(Rc::new(
                Policy::from_json(json.to_string().as_bytes()).unwrap(),
            ))
        }

        fn token(sub: &str, azp: &str) -> String {
            let claims = serde_json::json!({"iss": ISS, "aud": "api", "sub": sub, "azp": azp, "iat": NOW, "exp": NOW + 300});
            format!("Bearer {}", mint(Alg::Es256, Some("ec"), &claims))
        }

        #[test]
        fn jwt_only_makes_the_subject_the_consumer_and_strips_the_token() {
            let mut g = jwt_guard("jwt");
            let f = forwarded(
                g.decide_at(
                    &TestRequest::get("/v1")
                        .set_header("authorization", &token("user-7", "x"))
                        .set_header("x-apiguard-subject", "root")
                        .build(),
                    NOW,
                ),
            );
            assert!(f
                .set_headers
                .contains(&(SUBJECT_HEADER.to_owned(), "user-7".to_owned())));
            assert!(f
                .set_headers
                .contains(&(CONSUMER_HEADER.to_owned(), "user-7".to_owned())));
            assert!(f.remove_headers.contains(&"authorization".to_owned()));
            assert!(f.remove_headers.contains(&"x-apiguard-subject".to_owned()));
            // An API key alone does not satisfy a JWT-only policy.
            assert_eq!(
                denial_code(
                    &g.decide_at(
                        &TestRequest::get("/v1")
                            .set_header("x-api-key", &key(1))
                            .build(),
                        NOW
                    )
                ),
                Some("missing_credential")
            );
        }

        /// The same policy, its provider verified by Envoy's jwt_authn filter.
        fn jwt_authn_guard() -> Guard {
            let json = serde_json::json!({
                "credentials": "jwt",
                "api_keys": {"keys": [serde_json::from_str::<serde_json::Value>(&entry(&key(1), "alice", "")).unwrap()]},
                "jwt": {"providers": [{"issuer": ISS, "audiences": ["api"], "verified_by": "envoy_jwt_authn",
                                       "forward_claims": {"azp": "x-azp"}}]},
                "routes": [{"prefix": "/bound", "credentials": "both", "bind_claim": "azp"}],
            });
            guard_of(Rc::new(
                Policy::from_json(json.to_string().as_bytes()).unwrap(),
            ))
        }

        /// A request with `token` and, when given, jwt_authn's metadata vouching for `claims`.
        fn vouched_request(
            path: &str,
            token: &str,
            claims: Option<&serde_json::Value>,
        ) -> RequestFacts {
            let req = TestRequest::get(path)
                .set_header("authorization", token)
                .set_header("x-api-key", &key(1))
                .build();
            let metadata = claims.map(|c| {
                let mut ns = serde_json::Map::new();
                ns.insert(ISS.to_owned(), c.clone());
                crate::pbstruct::encode::metadata(crate::jwt::JWT_AUTHN_NAMESPACE, &ns)
            });
            req.with_dynamic_metadata(metadata)
        }

        #[test]
        fn a_token_jwt_authn_verified_passes_with_its_identity_and_every_rule() {
            let mut g = jwt_authn_guard();
            let claims = serde_json::json!({"iss": ISS, "aud": "api", "sub": "alice", "azp": "alice", "iat": NOW, "exp": NOW + 300});
            // No key of ours could verify this signature: jwt_authn did.
            let token = format!("Bearer {}", mint(Alg::Es256, Some("unknown"), &claims));
            let req = vouched_request("/v1", &token, Some(&claims));
            assert!(g.policy().wants_jwt_authn_metadata(&req));
            let f = forwarded(g.decide_at(&req, NOW));
            assert!(f
                .set_headers
                .contains(&(SUBJECT_HEADER.to_owned(), "alice".to_owned())));
            assert!(f
                .set_headers
                .contains(&("x-azp".to_owned(), "alice".to_owned())));
            assert!(f.remove_headers.contains(&"authorization".to_owned()));
            // Binding still applies: key 1 is alice's.
            assert!(matches!(
                g.decide_at(&vouched_request("/bound", &token, Some(&claims)), NOW),
                Decision::Forward(_)
            ));
            let bob = serde_json::json!({"iss": ISS, "aud": "api", "sub": "bob", "azp": "bob", "iat": NOW, "exp": NOW + 300});
            let bob_token = format!("Bearer {}", mint(Alg::Es256, None, &bob));
            assert_eq!(
                denial_code(&g.decide_at(&vouched_request("/bound", &bob_token, Some(&bob)), NOW)),
                Some("credential_binding_mismatch")
            );
            // Without the metadata (jwt_authn missing or skipped): refused, never trusted.
            let Decision::Reply(reply) = g.decide_at(&vouched_request("/v1", &token, None), NOW)
            else {
                panic!("forwarded without jwt_authn's metadata");
            };
            assert_eq!(reply.status, 401);
            assert_eq!(
                denial_code(&Decision::Reply(reply)),
                Some("not_verified_by_jwt_authn")
            );
            // jwt_authn accepted it, apiguard's lifetime rule does not.
            let long = serde_json::json!({"iss": ISS, "aud": "api", "sub": "alice", "iat": NOW, "exp": NOW + 86_400});
            let long_token = format!("Bearer {}", mint(Alg::Es256, None, &long));
            assert_eq!(
                denial_code(&g.decide_at(&vouched_request("/v1", &long_token, Some(&long)), NOW)),
                Some("token_lifetime_too_long")
            );
            // Requests without a token never need the metadata.
            let bare = TestRequest::get("/v1")
                .set_header("x-api-key", &key(1))
                .build();
            assert!(!g.policy().wants_jwt_authn_metadata(&bare));
            assert!(!jwt_guard("jwt").policy().wants_jwt_authn_metadata(&req));
        }

        #[test]
        fn bad_tokens_get_a_bearer_challenge_with_the_reason() {
            let mut g = jwt_guard("jwt");
            let Decision::Reply(reply) = g.decide_at(
                &TestRequest::get("/v1")
                    .set_header("authorization", "Bearer not.a.token")
                    .build(),
                NOW,
            ) else {
                panic!()
            };
            assert_eq!(reply.code, Some("malformed_token"));
            let challenge = reply
                .headers
                .iter()
                .find(|(n, _)| n == "www-authenticate")
                .map(|(_, v)| v.as_str());
            assert!(
                challenge.is_some_and(
                    |c| c.starts_with("Bearer realm=\"apiguard\", error=\"invalid_token\"")
                ),
                "{challenge:?}"
            );
            let expired = token("u", "x");
            assert_eq!(
                denial_code(
                    &g.decide_at(
                        &TestRequest::get("/v1")
                            .set_header("authorization", &expired)
                            .build(),
                        NOW + 3600
                    )
                ),
                Some("token_expired")
            );
        }

        #[test]
        fn either_accepts_one_but_refuses_any_bad_one_presented() {
            let mut g = jwt_guard("either");
            forwarded(
                g.decide_at(
                    &TestRequest::get("/v1")
                        .set_header("x-api-key", &key(1))
                        .build(),
                    NOW,
                ),
            );
            forwarded(
                g.decide_at(
                    &TestRequest::get("/v1")
                        .set_header("authorization", &token("u", "x"))
                        .build(),
                    NOW,
                ),
            );
            let bad_key_good_token = [("x-api-key", key(9)), ("authorization", token("u", "x"))];
            let pairs: Vec<(&str, &str)> = bad_key_good_token
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect();
            assert_eq!(
                denial_code(
                    &g.decide_at(&TestRequest::get("/v1").set_headers(&pairs).build(), NOW)
                ),
                Some("unknown_api_key")
            );
            let Decision::Reply(missing) = g.decide_at(&TestRequest::get("/v1").build(), NOW)
            else {
                panic!()
            };
            assert_eq!(
                missing
                    .headers
                    .iter()
                    .filter(|(n, _)| n == "www-authenticate")
                    .count(),
                2
            );
        }

        #[test]
        fn both_requires_both_and_binding_ties_them() {
            let mut g = jwt_guard("both");
            let (k, t_alice, t_bob) = (key(1), token("u", "alice"), token("u", "bob"));
            assert_eq!(
                denial_code(&g.decide_at(
                    &TestRequest::get("/v1").set_header("x-api-key", &k).build(),
                    NOW
                )),
                Some("missing_credential")
            );
            let f = forwarded(
                g.decide_at(
                    &TestRequest::get("/v1")
                        .set_header("x-api-key", &k)
                        .set_header("authorization", &t_bob)
                        .build(),
                    NOW,
                ),
            );
            assert_eq!(f.caller.consumer.as_deref(), Some("alice"));
            assert_eq!(f.caller.subject.as_deref(), Some("u"));
            forwarded(
                g.decide_at(
                    &TestRequest::get("/bound/x")
                        .set_header("x-api-key", &k)
                        .set_header("authorization", &t_alice)
                        .build(),
                    NOW,
                ),
            );
            assert_eq!(
                denial_code(
                    &g.decide_at(
                        &TestRequest::get("/bound/x")
                            .set_header("x-api-key", &k)
                            .set_header("authorization", &t_bob)
                            .build(),
                        NOW
                    )
                ),
                Some("credential_binding_mismatch")
            );
            // Routes override the default policy.
            forwarded(
                g.decide_at(
                    &TestRequest::get("/keys-only")
                        .set_header("x-api-key", &k)
                        .build(),
                    NOW,
                ),
            );
        }

        #[test]
        fn keys_not_yet_fetched_are_waited_for_then_a_retryable_503() {
            let json = serde_json::json!({"credentials": "jwt",
                "jwt": {"providers": [{"issuer": ISS, "remote_jwks": {"cluster": "idp", "unknown_kid_wait_ms": 1500}}]}});
            let mut g = guard_of(Rc::new(
                Policy::from_json(json.to_string().as_bytes()).unwrap(),
            ));
            let store = crate::ports::fakes::MemoryStore::default();
            let mut events = crate::ports::fakes::RecordedEvents::default();
            let mut env = Env {
                now_ms: NOW * 1000,
                store: &store,
                events: &mut events,
            };
            let request = TestRequest::get("/v1")
                .set_header("authorization", &token("u", "x"))
                .build();
            // The first such request makes the fetch, bounded by the wait.
            let Decision::Wait(wait) = g.decide(&request, &mut env) else {
                panic!()
            };
            let call = wait.call.unwrap();
            assert_eq!((call.cluster(), call.timeout_ms()), ("idp", 1500));
            assert_eq!(wait.until_ms, NOW * 1000 + 1500);
            assert_eq!(wait.topic, Topic::JwksKeys { provider: 0 });
            // The next one joins it.
            let Decision::Wait(joined) = g.decide(&request, &mut env) else {
                panic!()
            };
            assert_eq!(joined.call, None);
            // Resumed without keys: what it was before waits existed.
            let Decision::Reply(reply) = g.resume(&request, &mut env) else {
                panic!()
            };
            assert_eq!(
                (reply.status, reply.code),
                (503, Some("no_verification_key"))
            );
            assert!(reply
                .headers
                .contains(&("retry-after".to_owned(), "5".to_owned())));
            // Without a wait bound, refused at once.
            let json = serde_json::json!({"credentials": "jwt",
                "jwt": {"providers": [{"issuer": ISS, "remote_jwks": {"cluster": "idp", "unknown_kid_wait_ms": 0}}]}});
            let mut no_wait = guard_of(Rc::new(
                Policy::from_json(json.to_string().as_bytes()).unwrap(),
            ));
            assert_eq!(
                denial_code(&no_wait.decide_at(&request, NOW)),
                Some("no_verification_key")
            );
        }
    }

    #[test]
    fn authorization_apikey_scheme_only_when_enabled() {
        let json = format!(
            r#"{{"api_keys": {{"allow_authorization_header": true, "keys": [{}]}}}}"#,
            entry(&key(1), "alice", "")
        );
        let mut g = guard_of(Rc::new(Policy::from_json(json.as_bytes()).unwrap()));
        let value = format!("ApiKey {}", key(1));
        let f = forwarded(
            g.decide_at(
                &TestRequest::get("/v1")
                    .set_header("authorization", &value)
                    .build(),
                NOW,
            ),
        );
        assert!(f.remove_headers.contains(&"authorization".to_owned()));
        let mut off = guard("");
        assert_eq!(
            denial_code(
                &off.decide_at(
                    &TestRequest::get("/v1")
                        .set_header("authorization", &value)
                        .build(),
                    NOW
                )
            ),
            Some("missing_credential")
        );
    }

    /// Findings of a security review, each as a class of spellings.
    mod hardening {
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        use super::*;

        #[test]
        fn identity_headers_are_removed_in_every_spelling_an_upstream_reads_as_ours() {
            let mut g = guard("");
            let req = TestRequest::get("/v1")
                .set_header("x-api-key", &key(1))
                .add_header("x_apiguard_consumer", "admin")
                .add_header("X_APIGUARD_SUBJECT", "root")
                .add_header("x-apiguard_would-deny", "x")
                .add_header("x_api_key_hint", "kept")
                .build();
            let f = forwarded(g.decide_at(&req, NOW));
            for spoof in [
                "x_apiguard_consumer",
                "X_APIGUARD_SUBJECT",
                "x-apiguard_would-deny",
            ] {
                assert!(f.remove_headers.contains(&spoof.to_owned()), "{spoof}");
            }
            assert!(!f.remove_headers.contains(&"x_api_key_hint".to_owned()));
        }

        #[test]
        fn an_options_request_with_a_method_override_is_not_a_preflight() {
            let mut g = guard("");
            for header in [
                "x-http-method-override",
                "x-http-method",
                "x-method-override",
            ] {
                let req = TestRequest::get("/v1")
                    .set_header(":method", "OPTIONS")
                    .set_header("origin", "https://app.test")
                    .set_header("access-control-request-method", "POST")
                    .set_header(header, "DELETE")
                    .build();
                assert_eq!(
                    denial_code(&g.decide_at(&req, NOW)),
                    Some("missing_credential"),
                    "{header}"
                );
            }
        }

        #[test]
        fn an_apiguard_key_in_authorization_is_stripped_under_any_scheme_everywhere() {
            let jwt_only = serde_json::json!({"credentials": "jwt", "jwt": {"providers": [
                {"issuer": "https://idp.test", "jwks": {"keys": [crate::jwt::test_keys::ec_public_jwk()]}}]},
                "exempt_paths": ["/healthz"]});
            let mut no_keys = guard_of(Rc::new(
                Policy::from_json(jwt_only.to_string().as_bytes()).unwrap(),
            ));
            let mut report_only = guard(r#", "report_only": true"#);
            for value in [
                format!("Bearer {}", key(1)),
                format!("Basic {}", key(1)),
                key(1),
                format!("Token  {}", key(1)),
            ] {
                for (which, path) in [(0, "/healthz"), (1, "/v1"), (1, "/healthz")] {
                    let g = if which == 0 {
                        &mut no_keys
                    } else {
                        &mut report_only
                    };
                    let req = TestRequest::get(path)
                        .set_header("authorization", &value)
                        .build();
                    let f = forwarded(g.decide_at(&req, NOW));
                    assert!(
                        f.remove_headers.contains(&"authorization".to_owned()),
                        "{path}"
                    );
                }
            }
        }

        #[test]
        fn query_credentials_are_refused_on_exempt_paths_and_never_forwarded_in_report_only() {
            let mut g = guard("");
            let req = TestRequest::get("/healthz?Api-Key%5B%5D=x").build();
            assert_eq!(
                denial_code(&g.decide_at(&req, NOW)),
                Some("credential_in_query")
            );
            let by_value = TestRequest::get(&format!("/healthz?q={}", key(1))).build();
            assert_eq!(
                denial_code(&g.decide_at(&by_value, NOW)),
                Some("credential_in_query")
            );
            let mut report = guard(r#", "report_only": true"#);
            let req = TestRequest::get(&format!("/v1?a=1&token=x;b=2&q={}", key(1)))
                .set_header("x-api-key", &key(1))
                .build();
            let f = forwarded(report.decide_at(&req, NOW));
            assert!(f
                .set_headers
                .contains(&(":path".to_owned(), "/v1?a=1&b=2".to_owned())));
            assert!(f.set_headers.contains(&(
                WOULD_DENY_HEADER.to_owned(),
                "credential_in_query".to_owned()
            )));
        }

        #[test]
        fn format_suffixes_fall_under_their_route() {
            let json = format!(
                r#"{{"api_keys": {{"keys": [{}]}}, "jwt": {{"providers": [{{"issuer": "https://idp.test",
                    "jwks": {{"keys": [{}]}}}}]}},
                    "routes": [{{"prefix": "/payments", "credentials": "jwt"}}]}}"#,
                entry(&key(1), "alice", ""),
                crate::jwt::test_keys::ec_public_jwk()
            );
            let mut g = guard_of(Rc::new(Policy::from_json(json.as_bytes()).unwrap()));
            for path in [
                "/payments.json",
                "/Payments.XML",
                "/payments:batch",
                "/payments.json/1",
            ] {
                let req = TestRequest::get(path)
                    .set_header("x-api-key", &key(1))
                    .build();
                assert_eq!(
                    denial_code(&g.decide_at(&req, NOW)),
                    Some("missing_credential"),
                    "{path}: the route asks for a JWT, an API key does not do"
                );
            }
            let elsewhere = TestRequest::get("/paymentsx.json")
                .set_header("x-api-key", &key(1))
                .build();
            forwarded(g.decide_at(&elsewhere, NOW));
        }

        #[test]
        fn configurations_that_switch_enforcement_off_are_refused() {
            let keys = r#""api_keys": {"keys": []}"#;
            for (extra, path) in [
                (r#""exempt_paths": ["/"]"#, "exempt_paths[0]"),
                (r#""exempt_paths": ["//"]"#, "exempt_paths[0]"),
                (
                    r#""exempt_paths": ["/api"], "routes": [{"prefix": "/api/admin", "credentials": "api_key"}]"#,
                    "exempt_paths[0]",
                ),
                (
                    r#""exempt_paths": ["/api"], "routes": [{"prefix": "/API", "credentials": "api_key"}]"#,
                    "exempt_paths[0]",
                ),
                (r#""routes": [{"prefix": "/"}]"#, "routes[0]"),
            ] {
                let json = format!("{{{keys}, {extra}}}");
                let err = Policy::from_json(json.as_bytes()).unwrap_err();
                assert_eq!(err.path, path, "{extra}: {err}");
            }
            // An exemption inside a route is the usual health check: fine.
            let ok = format!(
                r#"{{{keys}, "exempt_paths": ["/api/health"], "routes": [{{"prefix": "/api", "credentials": "api_key"}}]}}"#
            );
            assert!(Policy::from_json(ok.as_bytes()).is_ok());
        }
    }

    mod live_data {
        use super::*;

        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        fn live_guard(extra: &str) -> Guard {
            let json = format!(
                r#"{{"api_keys": {{"keys": [{}]}}, "data_source": {{"cluster": "apiguard-control"}}{extra}}}"#,
                entry(&key(1), "alice", "")
            );
            guard_of(Rc::new(Policy::from_json(json.as_bytes()).unwrap()))
        }

        fn with_key(seed: u8) -> RequestFacts {
            TestRequest::get("/v1")
                .set_header("x-api-key", &key(seed))
                .build()
        }

        #[test]
        fn keys_come_from_the_document_once_loaded_and_configured_keys_work_before() {
            let mut g = live_guard("");
            let store = crate::ports::fakes::MemoryStore::default();
            let mut events = crate::ports::fakes::RecordedEvents::default();
            let mut env = Env {
                now_ms: NOW * 1000,
                store: &store,
                events: &mut events,
            };
            g.create_shared_keys(env.store).unwrap();
            let Decision::Reply(reply) = g.decide(&with_key(4), &mut env) else {
                panic!("an unknown key cannot be decided before the document")
            };
            assert_eq!((reply.status, reply.code), (503, Some("policy_not_loaded")));
            assert!(reply.headers.iter().any(|(n, _)| n == "retry-after"));
            let configured = forwarded(g.decide(&with_key(1), &mut env));
            assert_eq!(configured.caller.consumer.as_deref(), Some("alice"));

            let due = g.tick(&mut env).unwrap();
            let [(Topic::PolicyData, call)] = &due[..] else {
                panic!("{due:?}")
            };
            assert_eq!(call.cluster(), "apiguard-control");
            let body = format!(
                r#"{{"version": "v1", "api_keys": [{}, {}]}}"#,
                entry(&key(4), "dave", ""),
                entry(&key(6), "erin", r#", "revoked": true"#)
            );
            let reply = CallReply::Answered {
                status: 200,
                headers: vec![],
                body: body.into_bytes(),
            };
            g.on_reply(Topic::PolicyData, &reply, &mut env);
            let live = forwarded(g.decide(&with_key(4), &mut env));
            assert_eq!(live.caller.consumer.as_deref(), Some("dave"));
            assert!(live
                .set_headers
                .contains(&(CONSUMER_HEADER.to_owned(), "dave".to_owned())));
            assert_eq!(
                denial_code(&g.decide(&with_key(6), &mut env)),
                Some("revoked_api_key")
            );
            assert_eq!(
                denial_code(&g.decide(&with_key(5), &mut env)),
                Some("unknown_api_key")
            );
        }

        #[test]
        fn a_document_key_takes_its_plan() {
            let mut g = live_guard(
                r#", "rate_limits": {"plans": {"one": {"rate": 1, "per": "minute", "burst": 1}}}"#,
            );
            let store = crate::ports::fakes::MemoryStore::default();
            let mut events = crate::ports::fakes::RecordedEvents::default();
            let mut env = Env {
                now_ms: NOW * 1000,
                store: &store,
                events: &mut events,
            };
            g.create_shared_keys(env.store).unwrap();
            g.tick(&mut env).unwrap();
            let body = format!(
                r#"{{"version": "v1", "api_keys": [{}]}}"#,
                entry(&key(4), "dave", r#", "plan": "one""#)
            );
            let reply = CallReply::Answered {
                status: 200,
                headers: vec![],
                body: body.into_bytes(),
            };
            g.on_reply(Topic::PolicyData, &reply, &mut env);
            forwarded(g.decide(&with_key(4), &mut env));
            assert_eq!(
                denial_code(&g.decide(&with_key(4), &mut env)),
                Some("rate_limited")
            );
        }

        #[test]
        fn a_data_source_needs_api_keys() {
            let mut jwk = crate::jwt::test_keys::ec_public_jwk();
            jwk["kid"] = serde_json::json!("ec");
            let json = serde_json::json!({
                "credentials": "jwt",
                "jwt": {"providers": [{"issuer": "https://issuer.example", "jwks": {"keys": [jwk]}}]},
                "data_source": {"cluster": "apiguard-control"},
            });
            let err = Policy::from_json(json.to_string().as_bytes()).unwrap_err();
            assert_eq!(err.path, "data_source", "{err}");
        }
    }
}
