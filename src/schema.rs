//! The configuration's JSON Schema (feature `schema`), derived from the serde DTOs of
//! [`config`](crate::config), `jwt` and `ratelimit`: the same field names, defaults, enums and
//! `deny_unknown_fields` (`additionalProperties: false`) the parser applies, so editors and CI can
//! check mesh YAML before it reaches a proxy. It describes the shape (fields, types, required
//! fields, enum values); the rules between values (ranges, digests, plan names, one provider per
//! issuer, ...) are checked when the plugin starts, which stays the final judge.
//!
//! Checked in as `schema/apiguard-config.schema.json`; `apiguard-schema` prints it and the test
//! suite keeps the two in sync. JSON Schema draft 7, the draft editors and validators support best.

use schemars::generate::SchemaSettings;
use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::Value;

use crate::config::PluginConfig;

/// The whole schema, as checked in.
pub fn plugin_config_schema() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<PluginConfig>();
    schema.insert(
        "title".to_owned(),
        Value::from("apiguard plugin configuration"),
    );
    schema.insert(
        "$comment".to_owned(),
        Value::from(
            "Generated from the Rust configuration types by `make schema` (apiguard-schema); do not edit. \
             The shape only: value rules (ranges, digests, plan names) are checked by the plugin at start-up.",
        ),
    );
    schema.to_value()
}

/// `jwt.providers[].jwks`: the parser takes any JSON value there and the provider's compile step
/// accepts a JWKS object (`keys`: a non-empty array of JWK objects; other members are ignored)
/// or a string holding that JSON text; `null` is the same as leaving it out.
pub fn inline_jwks(_generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Inline keys: a JWKS object, or a string holding the JWKS JSON text.",
        "anyOf": [
            {
                "type": "object",
                "required": ["keys"],
                "properties": {
                    "keys": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "object", "required": ["kty"]}
                    }
                }
            },
            {"type": "string"},
            {"type": "null"}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `make schema` writes the file; a change to the configuration types must come with it.
    #[test]
    fn checked_in_schema_is_up_to_date() {
        let checked_in: Value =
            serde_json::from_str(include_str!("../schema/apiguard-config.schema.json")).unwrap();
        assert!(
            checked_in == plugin_config_schema(),
            "schema/apiguard-config.schema.json is stale: run `make schema`"
        );
    }

    #[test]
    fn unknown_fields_are_refused_everywhere() {
        let schema = plugin_config_schema();
        assert_eq!(schema["additionalProperties"], Value::Bool(false));
        for (name, def) in schema["definitions"].as_object().unwrap() {
            if def["type"] == "object" {
                assert_eq!(def["additionalProperties"], Value::Bool(false), "{name}");
            }
        }
    }
}
