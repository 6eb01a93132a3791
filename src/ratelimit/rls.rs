//! Envoy's rate-limit service protocol on the wire: `envoy.service.ratelimit.v3.RateLimitService`
//! `/ShouldRateLimit`, one `RateLimitRequest` in, one `RateLimitResponse` out (unary gRPC).
//!
//! Protobuf's wire format is small enough to write by hand for the few fields involved, so the
//! plugin carries no protobuf library. The layouts follow `envoy/service/ratelimit/v3/rls.proto`,
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`, `envoy/config/core/v3/base.proto`
//! (`HeaderValue`), `envoy/config/core/v3/grpc_service.proto` and `google/protobuf/duration.proto`.
//! The tests check both directions against bytes made by the published message classes
//! (`tests/data/rls_wire_vectors.json`; `tests/test_rls_wire.py` makes them again from the
//! `envoy-data-plane` package and fails if they differ).
//!
//! Decoding never panics and skips fields it does not know (`raw_body`, `dynamic_metadata`,
//! `quota`, fields added to the protocol later), as protobuf requires.

use std::fmt;

use crate::protowire::{Field, Reader, WireError, WIRE_LEN, WIRE_VARINT};

/// The gRPC service and method apiguard calls.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// Bounds on what a response may hold (a real one has one status per descriptor sent).
const MAX_STATUSES: usize = 256;
const MAX_HEADERS: usize = 64;

// ---------------------------------------------------------------------------------------------
// encoding

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Truncation intended: the low seven bits, with the continuation bit.
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A string field; proto3 leaves out empty ones (so do the reference encoders).
fn put_string(out: &mut Vec<u8>, field: u32, value: &str) {
    if !value.is_empty() {
        put_bytes(out, field, value.as_bytes());
    }
}

/// One `RateLimitDescriptor`: its entries, in order (`key` → `value`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
}

/// `RateLimitRequest { domain = 1; descriptors = 2; hits_addend = 3 }`, each descriptor
/// `RateLimitDescriptor { entries = 1 }`, each entry `Entry { key = 1; value = 2 }`.
pub fn encode_request(domain: &str, descriptors: &[Descriptor], hits_addend: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_string(&mut out, 1, domain);
    let mut descriptor = Vec::new();
    let mut entry = Vec::new();
    for d in descriptors {
        descriptor.clear();
        for (key, value) in &d.entries {
            entry.clear();
            put_string(&mut entry, 1, key);
            put_string(&mut entry, 2, value);
            put_bytes(&mut descriptor, 1, &entry);
        }
        put_bytes(&mut out, 2, &descriptor);
    }
    if hits_addend != 0 {
        put_tag(&mut out, 3, WIRE_VARINT);
        put_varint(&mut out, u64::from(hits_addend));
    }
    out
}

/// `GrpcService { envoy_grpc = 1 { cluster_name = 1 } }`: what Envoy's `proxy_grpc_call` takes to
/// name the cluster. A bare cluster name works too, unless its bytes happen to parse as a
/// `GrpcService` message (Envoy tries that first); the message is never misread.
pub fn encode_grpc_service(cluster: &str) -> Vec<u8> {
    let mut envoy_grpc = Vec::with_capacity(cluster.len() + 4);
    put_string(&mut envoy_grpc, 1, cluster);
    let mut out = Vec::with_capacity(envoy_grpc.len() + 4);
    put_bytes(&mut out, 1, &envoy_grpc);
    out
}

// ---------------------------------------------------------------------------------------------
// decoding

/// A response that is not a well-formed `RateLimitResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed RateLimitResponse: {}", self.0)
    }
}

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Code {
    #[default]
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn from_wire(value: u64) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::OverLimit,
            _ => Self::Unknown,
        }
    }
}

/// `RateLimitResponse.RateLimit.Unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unit {
    #[default]
    Unknown,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    fn from_wire(value: u64) -> Self {
        match value {
            1 => Self::Second,
            2 => Self::Minute,
            3 => Self::Hour,
            4 => Self::Day,
            5 => Self::Month,
            6 => Self::Year,
            7 => Self::Week,
            _ => Self::Unknown,
        }
    }

    /// The unit's length (a month as 30 days, a year as 365), or `None` when unknown.
    pub fn seconds(self) -> Option<u64> {
        match self {
            Self::Unknown => None,
            Self::Second => Some(1),
            Self::Minute => Some(60),
            Self::Hour => Some(3600),
            Self::Day => Some(86_400),
            Self::Week => Some(7 * 86_400),
            Self::Month => Some(30 * 86_400),
            Self::Year => Some(365 * 86_400),
        }
    }
}

/// `RateLimitResponse.RateLimit { requests_per_unit = 1; unit = 2; name = 3 }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limit {
    pub name: String,
    pub requests_per_unit: u32,
    pub unit: Unit,
}

/// `RateLimitResponse.DescriptorStatus { code = 1; current_limit = 2; limit_remaining = 3;
/// duration_until_reset = 4 }` (`quota = 5` is skipped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescriptorStatus {
    pub code: Code,
    pub current_limit: Option<Limit>,
    pub limit_remaining: u32,
    /// `google.protobuf.Duration` in nanoseconds (negative durations read as 0).
    pub duration_until_reset_ns: Option<u64>,
}

/// `RateLimitResponse { overall_code = 1; statuses = 2; response_headers_to_add = 3;
/// request_headers_to_add = 4 }` (`raw_body = 5`, `dynamic_metadata = 6`, `quota = 7` skipped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub overall_code: Code,
    pub statuses: Vec<DescriptorStatus>,
    pub response_headers_to_add: Vec<(String, String)>,
    pub request_headers_to_add: Vec<(String, String)>,
}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        DecodeError(match e {
            WireError::Truncated => "truncated",
            WireError::Varint => "varint longer than ten bytes",
            WireError::FieldNumber => "invalid field number",
            WireError::WireType => "unsupported wire type",
        })
    }
}

/// A field of ours with the wrong wire type.
const WRONG_TYPE: DecodeError = DecodeError("a field has the wrong wire type");

fn varint_of(value: Field<'_>) -> Result<u64, DecodeError> {
    match value {
        Field::Varint(v) => Ok(v),
        _ => Err(WRONG_TYPE),
    }
}

fn bytes_of(value: Field<'_>) -> Result<&[u8], DecodeError> {
    match value {
        Field::Bytes(b) => Ok(b),
        _ => Err(WRONG_TYPE),
    }
}

fn string_of(value: Field<'_>) -> Result<String, DecodeError> {
    std::str::from_utf8(bytes_of(value)?)
        .map(str::to_owned)
        .map_err(|_| DecodeError("a string field is not UTF-8"))
}

/// A uint32 field: protobuf keeps the low 32 bits of a wider varint.
fn u32_of(value: Field<'_>) -> Result<u32, DecodeError> {
    varint_of(value).map(|v| (v & 0xffff_ffff) as u32)
}

/// Decodes a `RateLimitResponse`.
pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    let mut response = Response::default();
    let mut r = Reader::new(bytes);
    while let Some((number, value)) = r.field()? {
        match number {
            1 => response.overall_code = Code::from_wire(varint_of(value)?),
            2 => {
                if response.statuses.len() == MAX_STATUSES {
                    return Err(DecodeError("too many statuses"));
                }
                response.statuses.push(decode_status(bytes_of(value)?)?);
            }
            3 | 4 => {
                let header = decode_header(bytes_of(value)?)?;
                let list = if number == 3 {
                    &mut response.response_headers_to_add
                } else {
                    &mut response.request_headers_to_add
                };
                if list.len() == MAX_HEADERS {
                    return Err(DecodeError("too many headers"));
                }
                list.push(header);
            }
            _ => {}
        }
    }
    Ok(response)
}

fn decode_status(bytes: &[u8]) -> Result<DescriptorStatus, DecodeError> {
    let mut status = DescriptorStatus::default();
    let mut r = Reader::new(bytes);
    while let Some((number, value)) = r.field()? {
        match number {
            1 => status.code = Code::from_wire(varint_of(value)?),
            2 => status.current_limit = Some(decode_limit(bytes_of(value)?)?),
            3 => status.limit_remaining = u32_of(value)?,
            4 => status.duration_until_reset_ns = Some(decode_duration(bytes_of(value)?)?),
            _ => {}
        }
    }
    Ok(status)
}

fn decode_limit(bytes: &[u8]) -> Result<Limit, DecodeError> {
    let mut limit = Limit::default();
    let mut r = Reader::new(bytes);
    while let Some((number, value)) = r.field()? {
        match number {
            1 => limit.requests_per_unit = u32_of(value)?,
            2 => limit.unit = Unit::from_wire(varint_of(value)?),
            3 => limit.name = string_of(value)?,
            _ => {}
        }
    }
    Ok(limit)
}

/// `google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2 }` in nanoseconds.
fn decode_duration(bytes: &[u8]) -> Result<u64, DecodeError> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut r = Reader::new(bytes);
    while let Some((number, value)) = r.field()? {
        match number {
            // int64 and int32 travel as two's complement varints.
            1 => seconds = varint_of(value)? as i64,
            2 => nanos = i64::from(varint_of(value)? as i32),
            _ => {}
        }
    }
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    Ok(u64::try_from(total.max(0)).unwrap_or(u64::MAX))
}

/// `HeaderValue { key = 1; value = 2; raw_value = 3 }`: `raw_value` stands in for an empty
/// `value` (it must be UTF-8 here: header values become strings).
fn decode_header(bytes: &[u8]) -> Result<(String, String), DecodeError> {
    let (mut key, mut value, mut raw) = (String::new(), String::new(), Vec::new());
    let mut r = Reader::new(bytes);
    while let Some((number, v)) = r.field()? {
        match number {
            1 => key = string_of(v)?,
            2 => value = string_of(v)?,
            3 => raw = bytes_of(v)?.to_vec(),
            _ => {}
        }
    }
    if value.is_empty() && !raw.is_empty() {
        value =
            String::from_utf8(raw).map_err(|_| DecodeError("a raw header value is not UTF-8"))?;
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// Wire vectors made by the published message classes (see the file's `source`).
    const VECTORS: &str = include_str!("../../tests/data/rls_wire_vectors.json");

    fn vectors() -> serde_json::Value {
        serde_json::from_str(VECTORS).unwrap()
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(v: &serde_json::Value) -> Vec<(String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_owned(),
                    p[1].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn code(v: &serde_json::Value) -> Code {
        match v.as_str().unwrap() {
            "OK" => Code::Ok,
            "OVER_LIMIT" => Code::OverLimit,
            _ => Code::Unknown,
        }
    }

    fn unit(v: &serde_json::Value) -> Unit {
        match v.as_str().unwrap() {
            "SECOND" => Unit::Second,
            "MINUTE" => Unit::Minute,
            "HOUR" => Unit::Hour,
            "DAY" => Unit::Day,
            "WEEK" => Unit::Week,
            "MONTH" => Unit::Month,
            "YEAR" => Unit::Year,
            _ => Unit::Unknown,
        }
    }

    #[test]
    fn requests_encode_to_the_reference_bytes() {
        let v = vectors();
        let requests = v["requests"].as_array().unwrap();
        assert!(requests.len() >= 4);
        for case in requests {
            let name = case["name"].as_str().unwrap();
            let descriptors: Vec<Descriptor> = case["apiguard"]["descriptors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| Descriptor { entries: pairs(d) })
                .collect();
            let hits = u32::try_from(case["apiguard"]["hits_addend"].as_u64().unwrap()).unwrap();
            let bytes = encode_request(
                case["apiguard"]["domain"].as_str().unwrap(),
                &descriptors,
                hits,
            );
            assert_eq!(bytes, hex(case["hex"].as_str().unwrap()), "{name}");
        }
    }

    #[test]
    fn responses_decode_from_the_reference_bytes() {
        let v = vectors();
        let responses = v["responses"].as_array().unwrap();
        assert!(responses.len() >= 4);
        for case in responses {
            let name = case["name"].as_str().unwrap();
            let want = &case["apiguard"];
            let expected = Response {
                overall_code: code(&want["overall_code"]),
                statuses: want["statuses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| DescriptorStatus {
                        code: code(&s["code"]),
                        current_limit: s["current_limit"].as_object().map(|l| Limit {
                            name: l["name"].as_str().unwrap().to_owned(),
                            requests_per_unit: u32::try_from(
                                l["requests_per_unit"].as_u64().unwrap(),
                            )
                            .unwrap(),
                            unit: unit(&l["unit"]),
                        }),
                        limit_remaining: u32::try_from(s["limit_remaining"].as_u64().unwrap())
                            .unwrap(),
                        duration_until_reset_ns: s["duration_until_reset_ns"].as_u64(),
                    })
                    .collect(),
                response_headers_to_add: pairs(&want["response_headers_to_add"]),
                request_headers_to_add: pairs(&want["request_headers_to_add"]),
            };
            let bytes = hex(case["hex"].as_str().unwrap());
            assert_eq!(decode_response(&bytes), Ok(expected), "{name}");
        }
    }

    #[test]
    fn the_grpc_service_names_the_cluster() {
        // GrpcService{envoy_grpc: {cluster_name: "ratelimit"}}: 0a 0b (0a 09 "ratelimit").
        let mut expected = vec![0x0a, 0x0b, 0x0a, 0x09];
        expected.extend_from_slice(b"ratelimit");
        assert_eq!(encode_grpc_service("ratelimit"), expected);
        let long = "c".repeat(200);
        let bytes = encode_grpc_service(&long);
        // Lengths over 127 take two varint bytes.
        assert_eq!(&bytes[..6], &[0x0a, 0xcb, 0x01, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn an_empty_message_is_all_defaults() {
        assert_eq!(decode_response(&[]), Ok(Response::default()));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            &[0x08][..],         // a tag without its value
            &[0x12, 0x05, 0x08], // a length past the end
            &[0x0b],             // a group (wire type 3)
            &[0x00, 0x01],       // field number 0
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[0x0a, 0x01, 0x00],                   // overall_code as bytes
            &[0x12, 0x02, 0x12, 0x00, 0x12, 0x01], // a nested message cut short
            &[0x1a, 0x04, 0x0a, 0x02, 0xff, 0xfe], // a header name that is not UTF-8
        ] {
            assert!(decode_response(bad).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn negative_and_huge_durations_are_clamped() {
        // seconds = -5
        let mut status = vec![0x22, 0x0b, 0x08];
        status.extend_from_slice(&[0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let mut msg = vec![0x12, status.len() as u8];
        msg.extend_from_slice(&status);
        let r = decode_response(&msg).unwrap();
        assert_eq!(r.statuses[0].duration_until_reset_ns, Some(0));
    }

    #[test]
    fn too_many_statuses_are_refused() {
        let mut msg = Vec::new();
        for _ in 0..=MAX_STATUSES {
            msg.extend_from_slice(&[0x12, 0x02, 0x08, 0x01]);
        }
        assert!(decode_response(&msg).is_err());
        msg.truncate(4 * MAX_STATUSES);
        assert_eq!(decode_response(&msg).unwrap().statuses.len(), MAX_STATUSES);
    }

    #[test]
    fn unknown_enum_values_read_as_unknown() {
        let r = decode_response(&[0x08, 0x09]).unwrap();
        assert_eq!(r.overall_code, Code::Unknown);
        assert_eq!(Unit::from_wire(99).seconds(), None);
        assert_eq!(Unit::from_wire(7), Unit::Week);
    }
}
