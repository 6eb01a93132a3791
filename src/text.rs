//! Small encodings more than one module writes by hand: JSON string literals, and digests of
//! several parts.

use sha2::{Digest, Sha256};

/// Appends `text` as a JSON string literal (RFC 8259 escaping).
pub fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// SHA-256 of `parts`, each followed by a zero byte (so `["ab", "c"]` and `["a", "bc"]` differ
/// for parts without a NUL).
pub fn parts_digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
        h.update([0]);
    }
    h.finalize().into()
}
