//! One OTLP log record as the audit log writes it, its canonical bytes (what the hash chain
//! covers) and its OTLP/HTTP JSON form. The verifier parses the JSON back into the same type,
//! so writer and verifier hash exactly the same bytes whatever a collector did to the spacing
//! or the order of the attributes.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::text::push_json_str;

/// An attribute value: the two OTLP `AnyValue` kinds the audit log uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
}

/// A log record: time, body and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub time_unix_nano: u64,
    /// What kind of record this is (`apiguard.request`, `apiguard.gap`, `apiguard.checkpoint`).
    pub body: String,
    pub attributes: Vec<(String, AttrValue)>,
}

/// Bumped whenever the canonical form changes.
const CANONICAL_TAG: &[u8] = b"apiguard-audit-record/1\n";

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Entry {
    pub fn new(time_unix_nano: u64, body: &str) -> Self {
        Self {
            time_unix_nano,
            body: body.to_owned(),
            attributes: Vec::new(),
        }
    }

    pub fn push_str(&mut self, key: &str, value: impl Into<String>) {
        self.attributes
            .push((key.to_owned(), AttrValue::Str(value.into())));
    }

    pub fn push_int(&mut self, key: &str, value: i64) {
        self.attributes
            .push((key.to_owned(), AttrValue::Int(value)));
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find_map(|(k, v)| match v {
            AttrValue::Str(s) if k == key => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.attributes.iter().find_map(|(k, v)| match v {
            AttrValue::Int(i) if k == key => Some(*i),
            _ => None,
        })
    }

    /// Length-prefixed time, body and attributes sorted by key: no two records share it.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(CANONICAL_TAG);
        out.extend_from_slice(&self.time_unix_nano.to_be_bytes());
        put(&mut out, self.body.as_bytes());
        let mut attributes: Vec<&(String, AttrValue)> = self.attributes.iter().collect();
        attributes.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in attributes {
            put(&mut out, key.as_bytes());
            match value {
                AttrValue::Str(s) => {
                    out.push(b's');
                    put(&mut out, s.as_bytes());
                }
                AttrValue::Int(i) => {
                    out.push(b'i');
                    out.extend_from_slice(&i.to_be_bytes());
                }
            }
        }
        out
    }

    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical()).into()
    }

    /// The OTLP JSON `LogRecord` (proto3 JSON mapping: 64-bit integers as strings).
    pub fn to_json(&self) -> Value {
        let attributes: Vec<Value> = self
            .attributes
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    AttrValue::Str(s) => json!({ "stringValue": s }),
                    AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
                };
                json!({ "key": key, "value": value })
            })
            .collect();
        json!({
            "timeUnixNano": self.time_unix_nano.to_string(),
            "observedTimeUnixNano": self.time_unix_nano.to_string(),
            "severityNumber": 9,
            "severityText": "INFO",
            "body": { "stringValue": self.body },
            "attributes": attributes,
        })
    }

    /// [`Entry::to_json`] as text, written directly (no intermediate tree: this runs once per
    /// request).
    pub fn to_json_text(&self) -> String {
        let mut out = String::with_capacity(96 + self.attributes.len() * 64);
        let nanos = self.time_unix_nano;
        out.push_str("{\"timeUnixNano\":\"");
        out.push_str(&nanos.to_string());
        out.push_str("\",\"observedTimeUnixNano\":\"");
        out.push_str(&nanos.to_string());
        out.push_str(
            "\",\"severityNumber\":9,\"severityText\":\"INFO\",\"body\":{\"stringValue\":",
        );
        push_json_str(&mut out, &self.body);
        out.push_str("},\"attributes\":[");
        for (i, (key, value)) in self.attributes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"key\":");
            push_json_str(&mut out, key);
            match value {
                AttrValue::Str(s) => {
                    out.push_str(",\"value\":{\"stringValue\":");
                    push_json_str(&mut out, s);
                }
                AttrValue::Int(i) => {
                    out.push_str(",\"value\":{\"intValue\":\"");
                    out.push_str(&i.to_string());
                    out.push('"');
                }
            }
            out.push_str("}}");
        }
        out.push_str("]}");
        out
    }

    /// Reads a `LogRecord` back; `None` when it is not one this log could have written.
    pub fn from_json(value: &Value) -> Option<Self> {
        let record = value.as_object()?;
        let time_unix_nano = u64_field(record.get("timeUnixNano")?)?;
        let body = record.get("body")?.get("stringValue")?.as_str()?.to_owned();
        let mut attributes = Vec::new();
        for attribute in record
            .get("attributes")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
        {
            let key = attribute.get("key")?.as_str()?.to_owned();
            let value = attribute.get("value")?.as_object()?;
            attributes.push((key, any_value(value)?));
        }
        Some(Self {
            time_unix_nano,
            body,
            attributes,
        })
    }
}

fn any_value(value: &Map<String, Value>) -> Option<AttrValue> {
    if let Some(s) = value.get("stringValue") {
        return Some(AttrValue::Str(s.as_str()?.to_owned()));
    }
    let i = value.get("intValue")?;
    match i {
        Value::String(s) => s.parse().ok().map(AttrValue::Int),
        Value::Number(n) => n.as_i64().map(AttrValue::Int),
        _ => None,
    }
}

fn u64_field(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// An `ExportLogsServiceRequest` body around `LogRecord`s already written as JSON text.
pub fn export_body(version: &str, records: &[&str]) -> Vec<u8> {
    let mut head = String::from(
        "{\"resourceLogs\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\
         \"value\":{\"stringValue\":\"apiguard\"}}]},\"scopeLogs\":[{\"scope\":{\"name\":\
         \"apiguard.audit\",\"version\":",
    );
    push_json_str(&mut head, version);
    head.push_str("},\"logRecords\":[");
    let size = head.len() + records.iter().map(|r| r.len() + 1).sum::<usize>() + 8;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(head.as_bytes());
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record.as_bytes());
    }
    body.extend_from_slice(b"]}]}]}");
    body
}

/// Every `LogRecord` of an `ExportLogsServiceRequest` body, in order; `None` when the body is
/// not one.
pub fn records_of(body: &[u8]) -> Option<Vec<Value>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let mut out = Vec::new();
    for resource in doc.get("resourceLogs")?.as_array()? {
        for scope in resource.get("scopeLogs")?.as_array()? {
            if let Some(records) = scope.get("logRecords").and_then(Value::as_array) {
                out.extend(records.iter().cloned());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn sample() -> Entry {
        let mut e = Entry::new(1_700_000_000_123_000_000, "apiguard.request");
        e.push_str("http.request.method", "GET");
        e.push_int("http.response.status_code", 200);
        e.push_str("apiguard.consumer", "alice\n\"x\"");
        e
    }

    #[test]
    fn json_round_trips_and_keeps_the_hash() {
        let e = sample();
        let back = Entry::from_json(&e.to_json()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.hash(), e.hash());
    }

    #[test]
    fn attribute_order_does_not_change_the_hash_but_any_value_does() {
        let e = sample();
        let mut reordered = e.clone();
        reordered.attributes.reverse();
        assert_eq!(reordered.hash(), e.hash());
        let mut changed = e.clone();
        changed.attributes[1].1 = AttrValue::Int(201);
        assert_ne!(changed.hash(), e.hash());
        let mut retyped = e.clone();
        retyped.attributes[1].1 = AttrValue::Str("200".into());
        assert_ne!(retyped.hash(), e.hash());
        let mut later = e.clone();
        later.time_unix_nano += 1;
        assert_ne!(later.hash(), e.hash());
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let mut a = Entry::new(1, "b");
        a.push_str("k", "ab");
        let mut b = Entry::new(1, "b");
        b.push_str("ka", "b");
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn integers_may_come_back_as_numbers() {
        let mut v = sample().to_json();
        v["timeUnixNano"] = json!(1_700_000_000_123_000_000u64);
        v["attributes"][1]["value"] = json!({"intValue": 200});
        assert_eq!(Entry::from_json(&v).unwrap(), sample());
    }

    #[test]
    fn the_written_text_is_the_json_value() {
        let mut e = sample();
        e.push_str(
            "odd",
            "tab\t cr\r nl\n bell\u{7} quote\" backslash\\ é \u{2028}",
        );
        e.push_int("negative", -5);
        let text = e.to_json_text();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, e.to_json());
    }

    #[test]
    fn export_bodies_list_their_records() {
        let (a, b) = (sample().to_json(), Entry::new(2, "x").to_json());
        let texts = [sample().to_json_text(), Entry::new(2, "x").to_json_text()];
        let body = export_body("0.1.\"0", &[&texts[0], &texts[1]]);
        assert_eq!(records_of(&body).unwrap(), vec![a, b]);
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            doc["resourceLogs"][0]["scopeLogs"][0]["scope"]["version"],
            "0.1.\"0"
        );
        assert_eq!(
            doc["resourceLogs"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "apiguard"
        );
        assert!(records_of(b"{}").is_none());
        assert!(records_of(b"not json").is_none());
    }
}
