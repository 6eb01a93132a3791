//! A small, bounded reader of a serialized `google.protobuf.Struct`: the bytes Envoy's
//! `get_property` returns for a Struct-valued property (dynamic metadata). It turns them into
//! JSON values; anything malformed, too deep or not representable is an error, never a panic.
//!
//! Field numbers (google/protobuf/struct.proto):
//! - `Struct    { map<string, Value> fields = 1; }`, each map entry a message `{ key = 1; value = 2; }`
//! - `Value     { oneof kind { NullValue null_value = 1; double number_value = 2;
//!   string string_value = 3; bool bool_value = 4; Struct struct_value = 5;
//!   ListValue list_value = 6; } }`
//! - `ListValue { repeated Value values = 1; }`

use std::fmt;

use serde_json::{Map, Number, Value};

/// How deep Structs and lists may nest (a JWT payload is rarely deeper than 3).
pub const MAX_DEPTH: usize = 32;

/// Why the bytes are not a Struct we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructError {
    /// A field runs past the end of its message.
    Truncated,
    /// A varint longer than 10 bytes.
    Varint,
    /// A wire type a Struct never uses (groups, or a number beyond 5).
    WireType,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A string that is not UTF-8.
    Utf8,
    /// A number JSON cannot hold (NaN or infinite).
    NotFinite,
}

impl fmt::Display for StructError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "struct field runs past its end",
            Self::Varint => "struct varint is too long",
            Self::WireType => "struct field has an unexpected wire type",
            Self::TooDeep => "struct nests too deeply",
            Self::Utf8 => "struct string is not utf-8",
            Self::NotFinite => "struct number is not finite",
        })
    }
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// One field of a message: its number and what it holds.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    /// A fixed32 field: no Struct field uses one; skipped.
    Fixed32,
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64, StructError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or(StructError::Truncated)?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(StructError::Varint)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StructError> {
        if n > self.rest.len() {
            return Err(StructError::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// The next field, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, StructError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = match tag & 7 {
            VARINT => Field::Varint(self.varint()?),
            FIXED64 => {
                let bytes = self.take(8)?;
                Field::Fixed64(bytes.try_into().map_err(|_| StructError::Truncated)?)
            }
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| StructError::Truncated)?;
                Field::Bytes(self.take(len)?)
            }
            FIXED32 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return Err(StructError::WireType),
        };
        Ok(Some((tag >> 3, field)))
    }
}

/// Decodes a serialized `google.protobuf.Struct` into a JSON object. Unknown fields are skipped
/// (protobuf's rule); a repeated map key keeps its last value, as protobuf parsers do.
pub fn decode_struct(bytes: &[u8]) -> Result<Map<String, Value>, StructError> {
    struct_at(bytes, 0)
}

fn struct_at(bytes: &[u8], depth: usize) -> Result<Map<String, Value>, StructError> {
    if depth > MAX_DEPTH {
        return Err(StructError::TooDeep);
    }
    let mut map = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((number, field)) = reader.field()? {
        match (number, field) {
            (1, Field::Bytes(entry)) => {
                let (key, value) = entry_at(entry, depth)?;
                map.insert(key, value);
            }
            (1, _) => return Err(StructError::WireType),
            _ => {}
        }
    }
    Ok(map)
}

fn entry_at(bytes: &[u8], depth: usize) -> Result<(String, Value), StructError> {
    let mut key = String::new();
    let mut value = Value::Null;
    let mut reader = Reader::new(bytes);
    while let Some((number, field)) = reader.field()? {
        match (number, field) {
            (1, Field::Bytes(text)) => key = text_of(text)?,
            (2, Field::Bytes(inner)) => value = value_at(inner, depth)?,
            (1 | 2, _) => return Err(StructError::WireType),
            _ => {}
        }
    }
    Ok((key, value))
}

/// A `Value` message. A oneof keeps the last member seen; no member set reads as null.
fn value_at(bytes: &[u8], depth: usize) -> Result<Value, StructError> {
    let mut value = Value::Null;
    let mut reader = Reader::new(bytes);
    while let Some((number, field)) = reader.field()? {
        value = match (number, field) {
            (1, Field::Varint(_)) => Value::Null,
            (2, Field::Fixed64(raw)) => {
                let n = f64::from_le_bytes(raw);
                Value::Number(Number::from_f64(n).ok_or(StructError::NotFinite)?)
            }
            (3, Field::Bytes(text)) => Value::String(text_of(text)?),
            (4, Field::Varint(flag)) => Value::Bool(flag != 0),
            (5, Field::Bytes(inner)) => Value::Object(struct_at(inner, depth + 1)?),
            (6, Field::Bytes(inner)) => Value::Array(list_at(inner, depth + 1)?),
            (1..=6, _) => return Err(StructError::WireType),
            _ => continue,
        };
    }
    Ok(value)
}

fn list_at(bytes: &[u8], depth: usize) -> Result<Vec<Value>, StructError> {
    if depth > MAX_DEPTH {
        return Err(StructError::TooDeep);
    }
    let mut values = Vec::new();
    let mut reader = Reader::new(bytes);
    while let Some((number, field)) = reader.field()? {
        match (number, field) {
            (1, Field::Bytes(inner)) => values.push(value_at(inner, depth)?),
            (1, _) => return Err(StructError::WireType),
            _ => {}
        }
    }
    Ok(values)
}

fn text_of(bytes: &[u8]) -> Result<String, StructError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StructError::Utf8)
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
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn round_trips_every_kind_of_value() {
        let m = object(json!({
            "s": "text", "n": 1.5, "i": 1_700_000_000, "neg": -3, "t": true, "f": false,
            "z": null, "list": ["a", 2, [true], {"k": "v"}], "obj": {"inner": {"deep": []}},
            "empty": {}, "unicode": "é✓"
        }));
        let decoded = decode_struct(&encode::structure(&m)).unwrap();
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
    }

    #[test]
    fn empty_bytes_are_an_empty_struct() {
        assert_eq!(decode_struct(&[]), Ok(Map::new()));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = encode::structure(&object(json!({"a": "b"})));
        // Field 9 of each wire type (varint, fixed64, bytes, fixed32) around the real one.
        let mut noisy = vec![0x48, 0x01, 0x49, 0, 0, 0, 0, 0, 0, 0, 0, 0x4a, 0x01, 0xff];
        noisy.append(&mut bytes);
        noisy.extend_from_slice(&[0x4d, 1, 2, 3, 4]);
        assert_eq!(decode_struct(&noisy).unwrap()["a"], json!("b"));
    }

    #[test]
    fn a_repeated_key_keeps_the_last_value() {
        let mut bytes = encode::structure(&object(json!({"a": "first"})));
        bytes.extend(encode::structure(&object(json!({"a": "second"}))));
        assert_eq!(decode_struct(&bytes).unwrap()["a"], json!("second"));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode::structure(&object(json!({"sub": "alice", "exp": 1, "aud": ["x"]})));
        for end in 0..bytes.len() {
            // Any prefix either decodes (it ended on a field boundary) or is refused.
            let _ = decode_struct(&bytes[..end]);
        }
        assert_eq!(
            decode_struct(&bytes[..bytes.len() - 1]),
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
            let _ = decode_struct(&bytes);
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        // Overlong varint.
        assert_eq!(
            decode_struct(
                &[0x0a; 1]
                    .iter()
                    .chain(&[0xff; 11])
                    .copied()
                    .collect::<Vec<_>>()
            ),
            Err(StructError::Varint)
        );
        // Length beyond the end.
        assert_eq!(
            decode_struct(&[0x0a, 0x05, 0x01]),
            Err(StructError::Truncated)
        );
        // A group (wire type 3).
        assert_eq!(decode_struct(&[0x0b]), Err(StructError::WireType));
        // Field 1 of a Struct as a varint.
        assert_eq!(decode_struct(&[0x08, 0x01]), Err(StructError::WireType));
        // A map key that is not UTF-8.
        assert_eq!(
            decode_struct(&[0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe]),
            Err(StructError::Utf8)
        );
        // A NaN number value: entry { key "n", value { number_value NaN } }.
        let mut nan = vec![0x0a, 0x0e, 0x0a, 0x01, b'n', 0x12, 0x09, 0x11];
        nan.extend_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(decode_struct(&nan), Err(StructError::NotFinite));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = json!("leaf");
        for _ in 0..MAX_DEPTH + 2 {
            v = json!({ "k": v });
        }
        let bytes = encode::structure(&object(v));
        assert_eq!(decode_struct(&bytes), Err(StructError::TooDeep));
        let mut l = json!(1);
        for _ in 0..MAX_DEPTH + 2 {
            l = json!([l]);
        }
        let bytes = encode::structure(&object(json!({ "l": l })));
        assert_eq!(decode_struct(&bytes), Err(StructError::TooDeep));
        let mut ok = json!("leaf");
        for _ in 0..MAX_DEPTH - 1 {
            ok = json!({ "k": ok });
        }
        assert!(decode_struct(&encode::structure(&object(ok))).is_ok());
    }
}
