//! Checks collected audit exports: `apiguard-audit-verify --public-key KEY.jwk FILE…`.
//!
//! Each FILE is one OTLP/HTTP JSON export body as the collector received it, given in the
//! order they were collected. Prints every finding with its position (`FILE#n`: the n-th log
//! record of FILE) and exits 1 on any finding, 2 on a usage or key error, 0 when every stream
//! is whole and vouched for by valid checkpoints.

use std::process::ExitCode;

use apiguard::audit::verify::{public_key_from_jwk, verify};

const USAGE: &str = "usage: apiguard-audit-verify --public-key KEY.jwk FILE...";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut key_path = None;
    let mut files = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--public-key" => key_path = args.next(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => files.push(arg),
        }
    }
    let (Some(key_path), false) = (key_path, files.is_empty()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let key = match std::fs::read(&key_path)
        .map_err(|e| e.to_string())
        .and_then(|text| public_key_from_jwk(&text))
    {
        Ok(key) => key,
        Err(e) => {
            eprintln!("{key_path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut bodies = Vec::with_capacity(files.len());
    for file in files {
        match std::fs::read(&file) {
            Ok(bytes) => bodies.push((file, bytes)),
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let summary = verify(&bodies, &key);
    for f in &summary.findings {
        println!("{}: {}: {}", f.at, f.kind.as_str(), f.detail);
    }
    println!(
        "{} streams, {} records, {} checkpoints, {} findings",
        summary.streams,
        summary.records,
        summary.checkpoints,
        summary.findings.len()
    );
    if summary.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
