//! The life of each request in one VM: Deciding → (Waiting →) Forwarded | Replied.
//!
//! A request whose decision must wait for an outbound answer is paused. If it starts the call,
//! the answer comes back to its own context; the answer is handed to the [`Guard`], and every
//! request of this VM waiting for the same topic is resumed with it. Requests that wait for a
//! call another VM makes are resumed by the root's tick once the topic is settled, and every
//! waiting request by the tick once its time is up. A request whose client went away is simply
//! forgotten; if it had started the call, the root starts it again for those still waiting.
//!
//! A request held for its own call (the rate-limit service's answer about its global quota) is
//! finished with that call's answer alone: any number of them wait at once, each on its call.
//!
//! The SDK delivers an answer to the context whose callback started the call, whatever context
//! was made effective. A request's own call is therefore started only from its own callback or
//! the root's: one that another request's answer resumed (a JWKS refetch it waited for) has its
//! call started by the root's next tick, so its answer never goes to a context that may be gone.
//!
//! Pure apart from the [`Host`] trait, so the state machine is unit-tested natively.

use std::collections::{BTreeMap, HashMap};

use crate::audit::Outcome;
use crate::denial::LocalReply;
use crate::pipeline::{Decision, Env, Forward, Guard, Held, Topic, Wait};
use crate::ports::{Call, CallFailure, CallReply, Outbound};
use crate::request::RequestFacts;

/// What the flow needs from the proxy, for whichever request is current.
pub trait Host: Outbound {
    /// Makes `context` the request that later calls act on; false when it is gone.
    fn switch_to(&mut self, context: u32) -> bool;
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    fn send_reply(&mut self, reply: &LocalReply);
    /// Lets a paused request go on upstream.
    fn resume_request(&mut self);
    /// Shows the decision to Envoy (request properties for the access log).
    fn expose_outcome(&mut self, _outcome: &Outcome) {}
}

/// What the request-headers callback answers Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// A paused request.
#[derive(Debug)]
struct Waiting {
    facts: RequestFacts,
    topic: Topic,
    until_ms: i64,
    /// Held for its own call: finished with that call's answer, not decided again.
    held: Option<Box<Held>>,
    /// Its own call, to be started by the root's next tick.
    deferred: Option<Call>,
}

/// A call in flight: what it is for and who receives its answer.
#[derive(Debug)]
struct InFlight {
    topic: Topic,
    call: Call,
    /// The context Envoy delivers the answer to.
    context: u32,
    /// The call of one held request (answered to that request only).
    own: bool,
}

/// Every request state of one VM.
#[derive(Debug, Default)]
pub struct Flows {
    waiting: BTreeMap<u32, Waiting>,
    calls: HashMap<u32, InFlight>,
    /// Calls whose starting request went away while others still wait for them: the root
    /// starts them again on its next tick.
    orphaned: Vec<(Topic, Call)>,
    /// The headers each forwarded request's response gets (HSTS, RateLimit fields).
    response_headers: HashMap<u32, Vec<(String, String)>>,
    /// The context whose callback is running (calls started now are answered to it).
    caller: u32,
    /// The root context, once it ticked.
    root: Option<u32>,
    /// Each decided request's outcome, until its audit record is written.
    outcomes: HashMap<u32, Outcome>,
    /// No audit log: outcomes are shown to Envoy and not kept.
    no_audit: bool,
}

impl Flows {
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Flows whose decided requests' outcomes are kept for an audit log only if there is one.
    pub fn new(audit: bool) -> Self {
        Self {
            no_audit: !audit,
            ..Self::default()
        }
    }

    /// Whether the request of `context` is paused, waiting for its decision.
    pub fn is_waiting(&self, context: u32) -> bool {
        self.waiting.contains_key(&context)
    }

    /// What the call `token` was started for, while it is in flight.
    pub fn call_topic(&self, token: u32) -> Option<Topic> {
        self.calls.get(&token).map(|c| c.topic)
    }

    /// Request headers arrived for `context`.
    pub fn on_request(
        &mut self,
        context: u32,
        facts: RequestFacts,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) -> Action {
        self.caller = context;
        let decision = guard.decide(&facts, env);
        match self.apply(context, decision, host) {
            Ok(action) => {
                self.keep_outcome(context, guard, host);
                action
            }
            Err(wait) => self.wait(context, facts, *wait, guard, env, host),
        }
    }

    /// Pauses the current request `context` for `wait`, starting its call if it has one.
    fn wait(
        &mut self,
        context: u32,
        facts: RequestFacts,
        wait: Wait,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) -> Action {
        let mut call = wait.call;
        let defer = wait.held.is_some() && !self.answered_to_lasting(context);
        if let Some(call) = call.take_if(|_| defer) {
            self.waiting.insert(
                context,
                Waiting {
                    facts,
                    topic: wait.topic,
                    until_ms: wait.until_ms,
                    held: wait.held,
                    deferred: Some(call),
                },
            );
            return Action::Pause;
        }
        if let Some(call) = call {
            match host.dispatch(&call) {
                Ok(token) => {
                    let own = wait.held.is_some();
                    let topic = wait.topic;
                    if matches!(topic, Topic::JwksKeys { .. }) {
                        env.events.emit(crate::ports::Event::JwksFetchStarted);
                    }
                    self.calls.insert(
                        token,
                        InFlight {
                            topic,
                            call,
                            context,
                            own,
                        },
                    );
                }
                Err(failure) => {
                    // Nothing to wait for: decide now with what we have.
                    let failed = CallReply::Failed(failure);
                    if let Some(held) = wait.held {
                        let decision = guard.finish(*held, Some(&failed), env);
                        return self.apply_final(context, decision, guard, host);
                    }
                    guard.on_reply(wait.topic, &failed, env);
                    return self.decide_again(context, facts, guard, env, host);
                }
            }
        }
        let waiting = Waiting {
            facts,
            topic: wait.topic,
            until_ms: wait.until_ms,
            held: wait.held,
            deferred: None,
        };
        self.waiting.insert(context, waiting);
        Action::Pause
    }

    /// Whether a call started now is answered to a context that outlives it: the request's own
    /// (if it goes away, so does the need for the answer) or the root's.
    fn answered_to_lasting(&self, context: u32) -> bool {
        self.caller == context || Some(self.caller) == self.root
    }

    /// Starts, from the root, the calls of requests that were resumed in another request's
    /// callback; each one's time counts from now.
    fn start_deferred(&mut self, guard: &mut Guard, env: &mut Env<'_>, host: &mut dyn Host) {
        let contexts: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deferred.is_some())
            .map(|(id, _)| *id)
            .collect();
        for context in contexts {
            let Some(mut waiting) = self.waiting.remove(&context) else {
                continue;
            };
            let Some(call) = waiting.deferred.take() else {
                continue;
            };
            waiting.until_ms = env
                .now_ms
                .saturating_add(i64::try_from(call.timeout_ms()).unwrap_or(i64::MAX));
            match host.dispatch(&call) {
                Ok(token) => {
                    let topic = waiting.topic;
                    self.calls.insert(
                        token,
                        InFlight {
                            topic,
                            call,
                            context,
                            own: true,
                        },
                    );
                    self.waiting.insert(context, waiting);
                }
                Err(failure) => {
                    self.waiting.insert(context, waiting);
                    let failed = CallReply::Failed(failure);
                    self.resume_with(context, Some(&failed), false, guard, env, host);
                }
            }
        }
    }

    /// The answer to call `token` arrived at `context` (the current one).
    pub fn on_call_reply(
        &mut self,
        context: u32,
        token: u32,
        reply: &CallReply,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) {
        self.caller = context;
        let Some(call) = self.calls.remove(&token) else {
            return;
        };
        let timed_out = matches!(reply, CallReply::Failed(CallFailure::NoResponse));
        if call.own {
            // Its request alone waits for it (unless it went away or its time ran out).
            self.resume_with(call.context, Some(reply), timed_out, guard, env, host);
        } else {
            guard.on_reply(call.topic, reply, env);
            self.resume_topic(call.topic, timed_out, guard, env, host);
        }
        host.switch_to(context);
    }

    /// The root's periodic turn: start due fetches and orphaned calls, resume requests whose
    /// topic another VM settled, and requests whose time is up.
    pub fn on_tick(
        &mut self,
        root: u32,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) {
        self.caller = root;
        self.root = Some(root);
        self.start_deferred(guard, env, host);
        let mut to_start: Vec<(Topic, Call)> = std::mem::take(&mut self.orphaned);
        match guard.tick(env) {
            Ok(due) => to_start.extend(due),
            Err(_) => env.events.emit(crate::ports::Event::StoreFailed),
        }
        for (topic, call) in to_start {
            self.start_from_root(root, topic, call, guard, env, host);
        }
        let mut topics: Vec<Topic> = Vec::new();
        for w in self.waiting.values().filter(|w| w.held.is_none()) {
            if !topics.contains(&w.topic) {
                topics.push(w.topic);
            }
        }
        for topic in topics {
            let ours = self.calls.values().any(|c| c.topic == topic);
            if !ours && guard.settled(topic, env) {
                self.resume_topic(topic, false, guard, env, host);
            }
        }
        let late: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.until_ms <= env.now_ms)
            .map(|(id, _)| *id)
            .collect();
        for context in late {
            self.resume(context, true, guard, env, host);
        }
        host.switch_to(root);
    }

    /// The request of `context` ended (answered, or its client went away).
    pub fn on_done(&mut self, context: u32, guard: &mut Guard, env: &mut Env<'_>) {
        self.waiting.remove(&context);
        self.response_headers.remove(&context);
        let tokens: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, c)| c.context == context)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            let Some(call) = self.calls.remove(&token) else {
                continue;
            };
            // Envoy cancels a gone request's calls; its own call concerned nobody else.
            if call.own {
                continue;
            }
            if self
                .waiting
                .values()
                .any(|w| w.held.is_none() && w.topic == call.topic)
            {
                self.orphaned.push((call.topic, call.call));
            } else {
                let gone = CallReply::Failed(CallFailure::NoResponse);
                guard.on_reply(call.topic, &gone, env);
            }
        }
    }

    /// The headers for `context`'s response, if it was forwarded.
    pub fn take_response_headers(&mut self, context: u32) -> Vec<(String, String)> {
        self.response_headers.remove(&context).unwrap_or_default()
    }

    fn start_from_root(
        &mut self,
        root: u32,
        topic: Topic,
        call: Call,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) {
        match host.dispatch(&call) {
            Ok(token) => {
                if matches!(topic, Topic::JwksKeys { .. }) {
                    env.events.emit(crate::ports::Event::JwksFetchStarted);
                }
                self.calls.insert(
                    token,
                    InFlight {
                        topic,
                        call,
                        context: root,
                        own: false,
                    },
                );
            }
            Err(failure) => {
                guard.on_reply(topic, &CallReply::Failed(failure), env);
                self.resume_topic(topic, false, guard, env, host);
            }
        }
    }

    fn resume_topic(
        &mut self,
        topic: Topic,
        timed_out: bool,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) {
        let contexts: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.held.is_none() && w.topic == topic)
            .map(|(id, _)| *id)
            .collect();
        for context in contexts {
            self.resume(context, timed_out, guard, env, host);
        }
    }

    /// The wait of `context` is over (time is up, or its topic settled).
    fn resume(
        &mut self,
        context: u32,
        timed_out: bool,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) {
        self.resume_with(context, None, timed_out, guard, env, host);
    }

    /// Ends the wait of `context`: a held request is finished with `answer` (its own call's;
    /// `None`: none came in time), any other is decided again.
    fn resume_with(
        &mut self,
        context: u32,
        answer: Option<&CallReply>,
        timed_out: bool,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) {
        let Some(waiting) = self.waiting.remove(&context) else {
            return;
        };
        env.events
            .emit(crate::ports::Event::WaitEnded { timed_out });
        if !host.switch_to(context) {
            return;
        }
        let action = match waiting.held {
            Some(held) => {
                let decision = guard.finish(*held, answer, env);
                self.apply_final(context, decision, guard, host)
            }
            None => self.decide_again(context, waiting.facts, guard, env, host),
        };
        if action == Action::Continue {
            host.resume_request();
        }
    }

    /// Decides a paused request again and applies the outcome; it may wait once more, for a
    /// call of its own (the rate-limit service), never for a shared fetch again.
    fn decide_again(
        &mut self,
        context: u32,
        facts: RequestFacts,
        guard: &mut Guard,
        env: &mut Env<'_>,
        host: &mut dyn Host,
    ) -> Action {
        let decision = guard.resume(&facts, env);
        match self.apply(context, decision, host) {
            Ok(action) => {
                self.keep_outcome(context, guard, host);
                action
            }
            Err(wait) if wait.held.is_some() => self.wait(context, facts, *wait, guard, env, host),
            // `resume` never waits for a shared fetch; should it ever, refuse rather than hang.
            Err(_) => {
                host.send_reply(&LocalReply::internal_error());
                Action::Pause
            }
        }
    }

    /// Applies a decision that cannot be a wait ([`Guard::finish`]'s).
    fn apply_final(
        &mut self,
        context: u32,
        decision: Decision,
        guard: &mut Guard,
        host: &mut dyn Host,
    ) -> Action {
        let action = self.apply(context, decision, host).unwrap_or_else(|_| {
            host.send_reply(&LocalReply::internal_error());
            Action::Pause
        });
        self.keep_outcome(context, guard, host);
        action
    }

    fn keep_outcome(&mut self, context: u32, guard: &mut Guard, host: &mut dyn Host) {
        if let Some(outcome) = guard.take_outcome() {
            host.expose_outcome(&outcome);
            if !self.no_audit {
                self.outcomes.insert(context, outcome);
            }
        }
    }

    /// The outcome of `context`'s decision, once (for its audit record; `None` when it was
    /// never decided).
    pub fn take_outcome(&mut self, context: u32) -> Option<Outcome> {
        self.outcomes.remove(&context)
    }

    /// Applies a forward or a reply to the current request; a wait is handed back.
    fn apply(
        &mut self,
        context: u32,
        decision: Decision,
        host: &mut dyn Host,
    ) -> Result<Action, Box<Wait>> {
        match decision {
            Decision::Forward(forward) => {
                self.apply_forward(context, &forward, host);
                Ok(Action::Continue)
            }
            Decision::Reply(reply) => {
                host.send_reply(&reply);
                Ok(Action::Pause)
            }
            Decision::Wait(wait) => Err(wait),
        }
    }

    fn apply_forward(&mut self, context: u32, forward: &Forward, host: &mut dyn Host) {
        for name in &forward.remove_headers {
            host.set_request_header(name, None);
        }
        for (name, value) in &forward.set_headers {
            host.set_request_header(name, Some(value));
        }
        if !forward.response_headers.is_empty() {
            self.response_headers
                .insert(context, forward.response_headers.clone());
        }
    }
}

#[cfg(test)]
mod tests;
