//! Per-stage timings of apiguard's pure pipeline, natively, with `std::time::Instant`.
//!
//! `bench/run.py` writes the input (configurations, the API key, the ES256 token and the request
//! headers of the load test) and reads the output: one JSON object per line,
//! `{"name": ..., "ns_per_op": ..., "iterations": ...}`.

use std::hint::black_box;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use apiguard::api_key::Lookup;
use apiguard::pipeline::{Decision, Env, Guard};
use apiguard::ports::fakes::MemoryStore;
use apiguard::ports::{Event, Events, KeySpace};
use apiguard::policy::Policy;
use apiguard::request::RequestFacts;
use apiguard::secret::Secret;
use serde_json::Value;

/// Events go nowhere: the host's counters are measured in Envoy.
struct Discard;

impl Events for Discard {
    fn emit(&mut self, _event: Event) {}
}

struct Input {
    key: String,
    token: String,
    now: i64,
    headers: Vec<(String, String)>,
    doc: Value,
    budget: Duration,
}

fn read_input(path: &str) -> Result<Input, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned).ok_or(format!("input lacks {k}"));
    let headers = doc
        .get("headers")
        .and_then(Value::as_array)
        .ok_or("input lacks headers")?
        .iter()
        .filter_map(|h| Some((h.get(0)?.as_str()?.to_owned(), h.get(1)?.as_str()?.to_owned())))
        .collect();
    Ok(Input {
        key: s("key")?,
        token: s("token")?,
        now: doc.get("now").and_then(Value::as_i64).ok_or("input lacks now")?,
        headers,
        budget: Duration::from_millis(doc.get("budget_ms").and_then(Value::as_u64).unwrap_or(1500)),
        doc,
    })
}

fn policy(input: &Input, name: &str) -> Result<Rc<Policy>, String> {
    let cfg = input.doc.get("configs").and_then(|c| c.get(name)).ok_or(format!("no config {name}"))?;
    let text = serde_json::to_vec(cfg).map_err(|e| e.to_string())?;
    Policy::from_json(&text).map(Rc::new).map_err(|e| format!("config {name}: {e}"))
}

/// Runs `op` in batches until `budget` is spent; reports the median batch's time per operation.
fn bench(name: &str, budget: Duration, mut op: impl FnMut()) {
    // Calibrate: a batch should take about 1/50 of the budget.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            op();
        }
        let took = t.elapsed();
        if took >= budget / 50 || batch >= 1 << 30 {
            break;
        }
        batch = if took.is_zero() { batch * 16 } else { (batch * 2).max((batch as f64 * (budget / 50).as_secs_f64() / took.as_secs_f64()) as u64) };
    }
    let mut per_op = Vec::new();
    let mut iterations = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget || per_op.len() < 3 {
        let t = Instant::now();
        for _ in 0..batch {
            op();
        }
        per_op.push(t.elapsed().as_nanos() as f64 / batch as f64);
        iterations += batch;
    }
    per_op.sort_by(|a, b| a.total_cmp(b));
    let median = per_op[per_op.len() / 2];
    println!("{}", serde_json::json!({"name": name, "ns_per_op": median, "iterations": iterations, "batches": per_op.len()}));
}

fn forwarded(decision: &Decision) -> bool {
    matches!(decision, Decision::Forward(f) if f.unenforced.is_none())
}

fn run(input: &Input) -> Result<(), String> {
    let budget = input.budget;
    let keys_only = policy(input, "keys_only")?;
    let everything = policy(input, "everything")?;
    let nocache = policy(input, "everything_nocache")?;
    let now = input.now;

    // Stage: building the request facts from the header list (what the host adapter does per request).
    bench("request facts: copy 9 headers", budget, || {
        black_box(RequestFacts::new(black_box(&input.headers).clone()));
    });
    let facts = RequestFacts::new(input.headers.clone());

    // Stage: API key.
    bench("api key: sha256 of the key", budget, || {
        black_box(apiguard::api_key::digest(black_box(&input.key)));
    });
    let store = &keys_only.api_keys.as_ref().ok_or("keys_only has no api_keys")?.store;
    match store.lookup(Secret::new(&input.key), now) {
        Ok(Lookup::Configured(_)) => {}
        other => return Err(format!("api key refused: {other:?}")),
    }
    bench("api key: lookup (format, sha256, configured record; its checksum verdict remembered)", budget, || {
        black_box(store.lookup(Secret::new(black_box(&input.key)), now).is_ok());
    });

    let space = KeySpace::new("apiguard");

    // Stage: JWT ES256.
    let mut uncached = Guard::new(Rc::clone(&nocache), &space, 1);
    let verifier = uncached.jwt_verifier().ok_or("everything_nocache has no jwt")?;
    verifier.verify(&input.token, now).map_err(|e| format!("token refused: {e:?}"))?;
    bench("jwt ES256: verify, uncached", budget, || {
        black_box(verifier.verify(black_box(&input.token), now).is_ok());
    });
    let mut cached = Guard::new(Rc::clone(&everything), &space, 1);
    let verifier = cached.jwt_verifier().ok_or("everything has no jwt")?;
    verifier.verify(&input.token, now).map_err(|e| format!("token refused: {e:?}"))?;
    bench("jwt ES256: verify, cached", budget, || {
        black_box(verifier.verify(black_box(&input.token), now).is_ok());
    });

    // The whole decision.
    for (name, policy) in [("decide(): api key only (c)", &keys_only), ("decide(): everything, cached (d)", &everything), ("decide(): everything, uncached (f)", &nocache)] {
        let mut guard = Guard::new(Rc::clone(policy), &space, 1);
        // The ports as an in-memory store: what shared data costs is measured in Envoy, not here.
        let shared = MemoryStore::default();
        let mut events = Discard;
        let mut env = Env { now_ms: now * 1000, store: &shared, events: &mut events };
        let first = guard.decide(&facts, &mut env);
        if !forwarded(&first) {
            return Err(format!("{name}: the benchmark request is not forwarded: {first:?}"));
        }
        bench(name, budget, || {
            black_box(guard.decide(black_box(&facts), &mut env));
        });
    }

    // Start-up: compiling configurations with many keys.
    if let Some(scale) = input.doc.get("scale").and_then(Value::as_object) {
        for (n, cfg) in scale {
            let text = serde_json::to_vec(cfg).map_err(|e| e.to_string())?;
            bench(&format!("config: parse and compile, {n} keys"), budget, || {
                black_box(Policy::from_json(black_box(&text)).is_ok());
            });
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: apiguard-pipeline-bench INPUT.json");
        return ExitCode::from(2);
    };
    match read_input(&path).and_then(|input| run(&input)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
