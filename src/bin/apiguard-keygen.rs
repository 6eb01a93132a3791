//! Prints a new apiguard API key and the configuration entry that accepts it.
//!
//! The key is shown once; configuration only ever holds its SHA-256 digest.

use std::process::ExitCode;

use apiguard::api_key::{self, RandomError, RandomSource};
use apiguard::policy::is_consumer_id;
use apiguard::secret::to_hex;
use apiguard::time::parse_rfc3339;

/// The operating system's CSPRNG.
struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        getrandom::getrandom(buf).map_err(|e| RandomError(e.to_string()))
    }
}

const USAGE: &str = "usage: apiguard-keygen --consumer ID [--expires-at RFC3339] [--json]";

struct Args {
    consumer: String,
    expires_at: Option<String>,
    json: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut consumer, mut expires_at, mut json) = (None, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--consumer" => consumer = Some(args.next().ok_or("--consumer needs a value")?),
            "--expires-at" => expires_at = Some(args.next().ok_or("--expires-at needs a value")?),
            "--json" => json = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let consumer = consumer.ok_or_else(|| format!("--consumer is required\n{USAGE}"))?;
    if !is_consumer_id(&consumer) {
        return Err("--consumer: must be 1-128 characters of A-Z a-z 0-9 . _ - : @".to_owned());
    }
    if let Some(at) = &expires_at {
        parse_rfc3339(at).map_err(|e| format!("--expires-at: {e}"))?;
    }
    Ok(Args {
        consumer,
        expires_at,
        json,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let key = match api_key::generate(&mut OsRandom) {
        Ok(key) => key,
        Err(e) => {
            eprintln!(
                "apiguard-keygen: no randomness from the operating system: {}",
                e.0
            );
            return ExitCode::FAILURE;
        }
    };
    let mut entry =
        serde_json::json!({"sha256": to_hex(&api_key::digest(&key)), "consumer": args.consumer});
    if let (Some(at), Some(map)) = (&args.expires_at, entry.as_object_mut()) {
        map.insert(
            "expires_at".to_owned(),
            serde_json::Value::String(at.clone()),
        );
    }
    if args.json {
        println!("{}", serde_json::json!({"key": key, "entry": entry}));
    } else {
        println!("key (give it to the consumer; it is not stored anywhere):\n  {key}\n");
        println!("configuration entry for api_keys.keys:\n  {entry}");
    }
    ExitCode::SUCCESS
}
