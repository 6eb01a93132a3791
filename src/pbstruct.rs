//! A small, bounded, zero-copy reader of serialized `google.protobuf.Struct`s and of the
//! `envoy.config.core.v3.Metadata` that holds them: the bytes Envoy's `get_property(["metadata"])`
//! returns for a request's dynamic metadata. It hands out views into the bytes (map entries, list
//! items, the kind of a value) and builds nothing; anything malformed is an error, never a panic.
//!
//! (A deeper property path, such as `["metadata", "filter_metadata", <filter>]`, is no good:
//! Envoy 1.40 answers it in the proxy-wasm pairs encoding, where strings, numbers and nested
//! maps are bare bytes without their types. The whole message keeps them.)
//!
//! Field numbers (envoy/config/core/v3/base.proto):
//! - `Metadata  { map<string, google.protobuf.Struct> filter_metadata = 1;
//!   map<string, google.protobuf.Any> typed_filter_metadata = 2; }`
//!
//! (google/protobuf/struct.proto):
//! - `Struct    { map<string, Value> fields = 1; }`, each map entry a message `{ key = 1; value = 2; }`
//! - `Value     { oneof kind { NullValue null_value = 1; double number_value = 2;
//!   string string_value = 3; bool bool_value = 4; Struct struct_value = 5;
//!   ListValue list_value = 6; } }`
//! - `ListValue { repeated Value values = 1; }`
//!
//! Both maps are field 1 of their message with string keys, so one [`Entries`] reads either.

use crate::protowire::{Field, Reader, WireError};

/// Why the bytes are not a message we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructError {
    /// A field runs past the end of its message.
    Truncated,
    /// A varint longer than 10 bytes.
    Varint,
    /// A wire type these messages never use (groups, or a number beyond 5), or a known field
    /// with the wrong one.
    WireType,
    /// A string that is not UTF-8.
    Utf8,
}

impl From<WireError> for StructError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => Self::Truncated,
            WireError::Varint => Self::Varint,
            WireError::FieldNumber | WireError::WireType => Self::WireType,
        }
    }
}

/// The entries of a `map<string, _>` that is field 1 of its message (`Struct.fields`,
/// `Metadata.filter_metadata`), in wire order: (key, the value message's bytes).
pub struct Entries<'a> {
    reader: Reader<'a>,
}

impl<'a> Entries<'a> {
    pub fn of(message: &'a [u8]) -> Self {
        Self {
            reader: Reader::new(message),
        }
    }

    /// The next entry; other fields of the message are skipped.
    pub fn next_entry(&mut self) -> Result<Option<(&'a str, &'a [u8])>, StructError> {
        while let Some((number, field)) = self.reader.field()? {
            match (number, field) {
                (1, Field::Bytes(entry)) => {
                    let mut key: &[u8] = &[];
                    let mut value: &[u8] = &[];
                    let mut inner = Reader::new(entry);
                    while let Some((n, f)) = inner.field()? {
                        match (n, f) {
                            (1, Field::Bytes(k)) => key = k,
                            (2, Field::Bytes(v)) => value = v,
                            (1 | 2, _) => return Err(StructError::WireType),
                            _ => {}
                        }
                    }
                    let key = std::str::from_utf8(key).map_err(|_| StructError::Utf8)?;
                    return Ok(Some((key, value)));
                }
                (1, _) => return Err(StructError::WireType),
                _ => {}
            }
        }
        Ok(None)
    }
}

/// The value under `key` in a map read by [`Entries`]; a key seen twice keeps its last value,
/// as protobuf parsers do.
pub fn find<'a>(message: &'a [u8], key: &str) -> Result<Option<&'a [u8]>, StructError> {
    let mut found = None;
    let mut entries = Entries::of(message);
    while let Some((k, value)) = entries.next_entry()? {
        if k == key {
            found = Some(value);
        }
    }
    Ok(found)
}

/// The items of a `ListValue`: each a `Value` message's bytes.
pub struct Items<'a> {
    reader: Reader<'a>,
}

impl<'a> Items<'a> {
    pub fn of(list: &'a [u8]) -> Self {
        Self {
            reader: Reader::new(list),
        }
    }

    pub fn next_item(&mut self) -> Result<Option<&'a [u8]>, StructError> {
        while let Some((number, field)) = self.reader.field()? {
            match (number, field) {
                (1, Field::Bytes(value)) => return Ok(Some(value)),
                (1, _) => return Err(StructError::WireType),
                _ => {}
            }
        }
        Ok(None)
    }
}

/// What a `Value` holds. Nested messages stay bytes, read with [`Entries`] and [`Items`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind<'a> {
    Null,
    Number(f64),
    Text(&'a str),
    Bool(bool),
    Struct(&'a [u8]),
    List(&'a [u8]),
}

impl<'a> Kind<'a> {
    /// Reads a `Value` message. A oneof keeps the last member seen; none set reads as null.
    pub fn of(value: &'a [u8]) -> Result<Self, StructError> {
        let mut kind = Kind::Null;
        let mut reader = Reader::new(value);
        while let Some((number, field)) = reader.field()? {
            kind = match (number, field) {
                (1, Field::Varint(_)) => Kind::Null,
                (2, Field::Fixed64(raw)) => Kind::Number(f64::from_le_bytes(raw)),
                (3, Field::Bytes(text)) => {
                    Kind::Text(std::str::from_utf8(text).map_err(|_| StructError::Utf8)?)
                }
                (4, Field::Varint(flag)) => Kind::Bool(flag != 0),
                (5, Field::Bytes(inner)) => Kind::Struct(inner),
                (6, Field::Bytes(inner)) => Kind::List(inner),
                (1..=6, _) => return Err(StructError::WireType),
                _ => continue,
            };
        }
        Ok(kind)
    }
}

#[cfg(test)]
pub(crate) mod encode {
    //! A test-only encoder, the mirror of the reader, for building Struct bytes.
    use serde_json::{Map, Value};

    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn bytes_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    pub fn value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => {
                varint(1 << 3, &mut out);
                varint(0, &mut out);
            }
            Value::Number(n) => {
                varint(2 << 3 | 1, &mut out);
                out.extend_from_slice(&n.as_f64().unwrap().to_le_bytes());
            }
            Value::String(s) => bytes_field(3, s.as_bytes(), &mut out),
            Value::Bool(b) => {
                varint(4 << 3, &mut out);
                varint(u64::from(*b), &mut out);
            }
            Value::Object(m) => bytes_field(5, &structure(m), &mut out),
            Value::Array(items) => {
                let mut list = Vec::new();
                for item in items {
                    bytes_field(1, &value(item), &mut list);
                }
                bytes_field(6, &list, &mut out);
            }
        }
        out
    }

    /// An `envoy.config.core.v3.Metadata` with one `filter_metadata` namespace.
    pub fn metadata(namespace: &str, m: &Map<String, Value>) -> Vec<u8> {
        let mut entry = Vec::new();
        bytes_field(1, namespace.as_bytes(), &mut entry);
        bytes_field(2, &structure(m), &mut entry);
        let mut out = Vec::new();
        bytes_field(1, &entry, &mut out);
        out
    }

    pub fn structure(m: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in m {
            let mut entry = Vec::new();
            bytes_field(1, k.as_bytes(), &mut entry);
            bytes_field(2, &value(v), &mut entry);
            bytes_field(1, &entry, &mut out);
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::{json, Map, Number, Value};

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The whole Struct as JSON, through the readers (test-only: the plugin builds nothing).
    pub(crate) fn to_json(bytes: &[u8]) -> Result<Map<String, Value>, StructError> {
        let mut map = Map::new();
        let mut entries = Entries::of(bytes);
        while let Some((key, value)) = entries.next_entry()? {
            map.insert(key.to_owned(), value_json(value)?);
        }
        Ok(map)
    }

    fn value_json(bytes: &[u8]) -> Result<Value, StructError> {
        Ok(match Kind::of(bytes)? {
            Kind::Null => Value::Null,
            Kind::Number(n) => Number::from_f64(n).map_or(Value::Null, Value::Number),
            Kind::Text(t) => Value::String(t.to_owned()),
            Kind::Bool(b) => Value::Bool(b),
            Kind::Struct(inner) => Value::Object(to_json(inner)?),
            Kind::List(inner) => {
                let mut items = Vec::new();
                let mut list = Items::of(inner);
                while let Some(item) = list.next_item()? {
                    items.push(value_json(item)?);
                }
                Value::Array(items)
            }
        })
    }

    /// What Envoy 1.40 answered `get_property(["metadata"])` with, after its jwt_authn filter
    /// (`payload_in_metadata: https://idp.apiguard.test/`) verified a token with these claims
    /// (captured from tests/test_jwt_authn_chain.py's chain).
    pub(crate) const ENVOY_METADATA_HEX: &str = "0a91020a1c656e766f792e66696c746572732e687474702e6a77745f617574686e12f0010aed010a1a68747470733a2f2f6964702e61706967756172642e746573742f12ce012acb010a100a0674656e616e7412061a0461636d650a160a0667726f757073120c320a0a031a01610a031a01620a130a03617564120c1a0a6f72646572732d6170690a130a03637478120c2a0a0a080a016b12031a01760a100a03657870120911000040d5e8c2da410a120a03737562120b1a096d6573682d757365720a0e0a016e120911000000000000f83f0a230a03697373121c1a1a68747470733a2f2f6964702e61706967756172642e746573742f0a080a026f6b120220010a100a036961741209110000403fe8c2da41";

    pub(crate) fn envoy_metadata() -> Vec<u8> {
        crate::jwt::test_keys::unhex(ENVOY_METADATA_HEX)
    }

    pub(crate) fn envoy_metadata_claims() -> Value {
        json!({"iss": "https://idp.apiguard.test/", "aud": "orders-api", "sub": "mesh-user",
               "iat": 1_795_924_221, "exp": 1_795_924_821, "tenant": "acme", "n": 1.5, "ok": true,
               "groups": ["a", "b"], "ctx": {"k": "v"}})
    }

    const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";

    #[test]
    fn envoys_real_metadata_bytes_read_as_the_verified_payload() {
        let bytes = envoy_metadata();
        let ns = find(&bytes, JWT_AUTHN).unwrap().unwrap();
        let ns = to_json(ns).unwrap();
        assert_eq!(ns.len(), 1);
        let payload = ns["https://idp.apiguard.test/"].as_object().unwrap();
        let want = envoy_metadata_claims();
        assert_eq!(payload.len(), want.as_object().unwrap().len());
        for (k, v) in want.as_object().unwrap() {
            match v {
                Value::Number(n) => assert_eq!(payload[k].as_f64(), n.as_f64(), "{k}"),
                other => assert_eq!(&payload[k], other, "{k}"),
            }
        }
        assert_eq!(find(&bytes, "envoy.lb"), Ok(None));
        // No dynamic metadata at all: Envoy's empty message.
        assert_eq!(find(&[], JWT_AUTHN), Ok(None));
        // Every truncation of the real bytes is refused or reads short, never a panic.
        for end in 0..bytes.len() {
            if let Ok(Some(ns)) = find(&bytes[..end], JWT_AUTHN) {
                let _ = to_json(ns);
            }
        }
    }

    #[test]
    fn a_key_seen_twice_keeps_the_last_value() {
        let entry = |ns: &str, body: Vec<u8>| {
            let mut e = vec![0x0a, ns.len() as u8];
            e.extend_from_slice(ns.as_bytes());
            e.push(0x12);
            e.push(body.len() as u8);
            e.extend(body);
            let mut out = vec![0x0a, e.len() as u8];
            out.extend(e);
            out
        };
        let mut bytes = entry("f", encode::structure(&object(json!({"a": "1"}))));
        bytes.extend(entry("g", encode::structure(&object(json!({"a": "2"})))));
        bytes.extend(entry("f", encode::structure(&object(json!({"a": "3"})))));
        // typed_filter_metadata (field 2) is skipped.
        bytes.extend_from_slice(&[0x12, 0x02, 0x0a, 0x00]);
        let f = find(&bytes, "f").unwrap().unwrap();
        assert_eq!(to_json(f).unwrap()["a"], json!("3"));
        let g = find(&bytes, "g").unwrap().unwrap();
        assert_eq!(to_json(g).unwrap()["a"], json!("2"));
        assert_eq!(find(&[0x08, 0x01], "f"), Err(StructError::WireType));

        let mut twice = encode::structure(&object(json!({"a": "first"})));
        twice.extend(encode::structure(&object(json!({"a": "second"}))));
        assert_eq!(to_json(&twice).unwrap()["a"], json!("second"));
    }

    #[test]
    fn every_kind_of_value_reads_back() {
        let m = object(json!({
            "s": "text", "n": 1.5, "i": 1_700_000_000, "neg": -3, "t": true, "f": false,
            "z": null, "list": ["a", 2, [true], {"k": "v"}], "obj": {"inner": {"deep": []}},
            "empty": {}, "unicode": "é✓"
        }));
        let decoded = to_json(&encode::structure(&m)).unwrap();
        assert_eq!(decoded.len(), m.len());
        assert_eq!(decoded["s"], json!("text"));
        assert_eq!(decoded["i"].as_f64(), Some(1_700_000_000.0));
        assert_eq!(decoded["neg"].as_f64(), Some(-3.0));
        assert_eq!(decoded["t"], json!(true));
        assert_eq!(decoded["z"], Value::Null);
        assert_eq!(decoded["list"][0], json!("a"));
        assert_eq!(decoded["list"][2], json!([true]));
        assert_eq!(decoded["list"][3], json!({"k": "v"}));
        assert_eq!(decoded["obj"], json!({"inner": {"deep": []}}));
        assert_eq!(decoded["empty"], json!({}));
        assert_eq!(decoded["unicode"], json!("é✓"));
        // A Value with no member set, and one whose oneof is set twice (the last wins).
        assert_eq!(Kind::of(&[]), Ok(Kind::Null));
        assert_eq!(
            Kind::of(&[0x20, 0x01, 0x1a, 0x01, b'x']),
            Ok(Kind::Text("x"))
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = encode::structure(&object(json!({"a": "b"})));
        // Field 9 of each wire type (varint, fixed64, bytes, fixed32) around the real one.
        let mut noisy = vec![0x48, 0x01, 0x49, 0, 0, 0, 0, 0, 0, 0, 0, 0x4a, 0x01, 0xff];
        noisy.append(&mut bytes);
        noisy.extend_from_slice(&[0x4d, 1, 2, 3, 4]);
        assert_eq!(to_json(&noisy).unwrap()["a"], json!("b"));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode::structure(&object(json!({"sub": "alice", "exp": 1, "aud": ["x"]})));
        for end in 0..bytes.len() {
            // Any prefix either reads (it ended on a field boundary) or is refused.
            let _ = to_json(&bytes[..end]);
        }
        assert_eq!(
            to_json(&bytes[..bytes.len() - 1]),
            Err(StructError::Truncated)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = to_json(&bytes);
            let _ = Kind::of(&bytes);
            let _ = find(&bytes, "a");
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        // Overlong varint.
        let overlong: Vec<u8> = [0x0a].iter().chain(&[0xff; 11]).copied().collect();
        assert_eq!(to_json(&overlong), Err(StructError::Varint));
        // Length beyond the end.
        assert_eq!(to_json(&[0x0a, 0x05, 0x01]), Err(StructError::Truncated));
        // A group (wire type 3).
        assert_eq!(to_json(&[0x0b]), Err(StructError::WireType));
        // Field 1 of a Struct as a varint.
        assert_eq!(to_json(&[0x08, 0x01]), Err(StructError::WireType));
        // A map key that is not UTF-8.
        assert_eq!(
            to_json(&[0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe]),
            Err(StructError::Utf8)
        );
        // A string value that is not UTF-8; a number as a varint.
        assert_eq!(Kind::of(&[0x1a, 0x01, 0xff]), Err(StructError::Utf8));
        assert_eq!(Kind::of(&[0x10, 0x01]), Err(StructError::WireType));
        // A truncated fixed64.
        assert_eq!(Kind::of(&[0x11, 0, 0, 0]), Err(StructError::Truncated));
    }
}
