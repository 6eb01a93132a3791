//! Prints a new apiguard API key and the configuration entry that accepts it; with `--into`,
//! writes the entry into a live policy document file instead, or revokes keys there.
//!
//! The key is shown once; configuration and documents only ever hold its SHA-256 digest.

mod policy_file;

use std::path::PathBuf;
use std::process::ExitCode;

use apiguard::api_key::{self, RandomError, RandomSource};
use apiguard::policy::is_consumer_id;
use apiguard::ratelimit::is_plan_name;
use apiguard::secret::to_hex;
use apiguard::time::parse_rfc3339;
use policy_file::PolicyFile;

/// The operating system's CSPRNG.
struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        getrandom::getrandom(buf).map_err(|e| RandomError(e.to_string()))
    }
}

const USAGE: &str = "usage: apiguard-keygen --consumer ID [--expires-at RFC3339] [--plan NAME] [--into FILE] [--json]
       apiguard-keygen --revoke CONSUMER|FINGERPRINT --into FILE
       apiguard-keygen --check FILE

  --into FILE  add the new key's entry to the live policy document FILE (created if missing)
               and bump its version, instead of printing a configuration entry
  --revoke X   mark revoked, in FILE, every key of consumer X, or the key whose fingerprint
               (the digest's first hex digits, at least 8) starts with X
  --check FILE check a live policy document with the plugin's rules (exit 1 and the field
               path when it would be refused)";

enum Command {
    Generate {
        consumer: String,
        expires_at: Option<String>,
        plan: Option<String>,
    },
    Revoke(String),
    Check(PathBuf),
}

struct Args {
    command: Command,
    into: Option<PathBuf>,
    json: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut consumer, mut expires_at, mut plan, mut revoke, mut into, mut json) =
        (None, None, None, None, None, false);
    let mut check = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--consumer" => consumer = Some(value("--consumer")?),
            "--expires-at" => expires_at = Some(value("--expires-at")?),
            "--plan" => plan = Some(value("--plan")?),
            "--revoke" => revoke = Some(value("--revoke")?),
            "--into" => into = Some(PathBuf::from(value("--into")?)),
            "--check" => check = Some(PathBuf::from(value("--check")?)),
            "--json" => json = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if let Some(path) = check {
        if revoke.is_some() || consumer.is_some() || into.is_some() {
            return Err(format!("--check takes no other argument\n{USAGE}"));
        }
        return Ok(Args {
            command: Command::Check(path),
            into: None,
            json,
        });
    }
    let command = match (revoke, consumer) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "--revoke and --consumer exclude each other\n{USAGE}"
            ))
        }
        (Some(selector), None) => {
            if into.is_none() {
                return Err(format!("--revoke needs --into FILE\n{USAGE}"));
            }
            if expires_at.is_some() || plan.is_some() {
                return Err(format!("--revoke takes no --expires-at or --plan\n{USAGE}"));
            }
            Command::Revoke(selector)
        }
        (None, None) => return Err(format!("--consumer is required\n{USAGE}")),
        (None, Some(consumer)) => {
            if !is_consumer_id(&consumer) {
                return Err(
                    "--consumer: must be 1-128 characters of A-Z a-z 0-9 . _ - : @".to_owned(),
                );
            }
            if let Some(at) = &expires_at {
                parse_rfc3339(at).map_err(|e| format!("--expires-at: {e}"))?;
            }
            if plan.as_deref().is_some_and(|p| !is_plan_name(p)) {
                return Err("--plan: must be 1-64 characters of A-Z a-z 0-9 . _ -".to_owned());
            }
            Command::Generate {
                consumer,
                expires_at,
                plan,
            }
        }
    };
    Ok(Args {
        command,
        into,
        json,
    })
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn revoke(selector: &str, into: &std::path::Path, json: bool) -> Result<(), String> {
    let mut file = PolicyFile::load(into)?;
    let revoked = file.revoke(selector)?;
    file.bump_version(now_unix());
    file.save(into)?;
    if json {
        println!("{}", serde_json::json!({"revoked": revoked}));
    } else {
        println!("revoked in {}: {}", into.display(), revoked.join(", "));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let (consumer, expires_at, plan) = match args.command {
        Command::Check(path) => {
            let checked = PolicyFile::load(&path).and_then(|f| f.check(&path));
            return match checked {
                Ok(_) => {
                    println!("{}: a valid policy document", path.display());
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("apiguard-keygen: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Revoke(selector) => {
            let into = args.into.unwrap_or_default();
            return match revoke(&selector, &into, args.json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("apiguard-keygen: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Generate {
            consumer,
            expires_at,
            plan,
        } => (consumer, expires_at, plan),
    };
    // Read the document before making a key: a file that cannot be edited costs no key.
    let mut file = match args.into.as_deref().map(PolicyFile::load).transpose() {
        Ok(file) => file,
        Err(message) => {
            eprintln!("apiguard-keygen: {message}");
            return ExitCode::FAILURE;
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
    let digest = api_key::digest(&key);
    let fingerprint = api_key::fingerprint(&digest);
    let mut entry = serde_json::json!({"sha256": to_hex(&digest), "consumer": consumer});
    if let Some(map) = entry.as_object_mut() {
        for (name, value) in [("expires_at", expires_at), ("plan", plan)] {
            if let Some(value) = value {
                map.insert(name.to_owned(), serde_json::Value::String(value));
            }
        }
    }
    if let (Some(file), Some(into)) = (file.as_mut(), args.into.as_deref()) {
        let saved = file.add(entry.clone()).and_then(|()| {
            file.bump_version(now_unix());
            file.save(into)
        });
        if let Err(message) = saved {
            eprintln!("apiguard-keygen: {message} (no key was issued)");
            return ExitCode::FAILURE;
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"key": key, "entry": entry, "fingerprint": fingerprint})
        );
    } else {
        println!("key (give it to the consumer; it is not stored anywhere):\n  {key}\n");
        println!("fingerprint (names the key in logs and in --revoke):\n  {fingerprint}\n");
        match &args.into {
            Some(into) => println!("entry written into {}:\n  {entry}", into.display()),
            None => println!("configuration entry for api_keys.keys:\n  {entry}"),
        }
    }
    ExitCode::SUCCESS
}
