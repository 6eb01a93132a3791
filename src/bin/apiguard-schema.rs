//! Prints the JSON Schema of apiguard's configuration (draft 7), derived from the configuration
//! types. Built only with the `schema` feature; `make schema` writes its output to
//! schema/apiguard-config.schema.json, which the test suite keeps in sync.

use std::process::ExitCode;

fn main() -> ExitCode {
    match serde_json::to_string_pretty(&apiguard::schema::plugin_config_schema()) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("apiguard-schema: {e}");
            ExitCode::FAILURE
        }
    }
}
