//! Reading protobuf's wire format (protobuf.dev, "Encoding"): fields as (number, value), every
//! read bounded by the message, never a panic. The messages themselves are read by their
//! modules: `ratelimit::rls` (the rate-limit service's answer) and `pbstruct` (dynamic metadata).

/// Wire types (the low three bits of a tag).
pub const WIRE_VARINT: u8 = 0;
pub const WIRE_FIXED64: u8 = 1;
pub const WIRE_LEN: u8 = 2;
pub const WIRE_FIXED32: u8 = 5;

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// Why the bytes are not a sequence of fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// A field runs past the end of its message.
    Truncated,
    /// A varint longer than 10 bytes.
    Varint,
    /// Field number 0, or one above 2^29 - 1.
    FieldNumber,
    /// A wire type no message here uses (groups, or a number beyond 5).
    WireType,
}

/// The fields of one message, in wire order.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or(WireError::Truncated)?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Varint)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.take_slice(N)?;
        bytes.try_into().map_err(|_| WireError::Truncated)
    }

    fn take_slice(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// The next field, or `None` at the end of the message.
    pub fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, WireError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(WireError::FieldNumber);
        }
        let field = match u8::try_from(tag & 7).unwrap_or(u8::MAX) {
            WIRE_VARINT => Field::Varint(self.varint()?),
            WIRE_FIXED64 => Field::Fixed64(self.take()?),
            WIRE_LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                Field::Bytes(self.take_slice(len)?)
            }
            WIRE_FIXED32 => Field::Fixed32(self.take()?),
            _ => return Err(WireError::WireType),
        };
        Ok(Some((number, field)))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn fields(bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>, WireError> {
        let mut r = Reader::new(bytes);
        let mut out = Vec::new();
        while let Some(f) = r.field()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn every_wire_type_reads_with_its_field_number() {
        // The encoding guide's example: field 1, varint 150 = 08 96 01.
        assert_eq!(
            fields(&[0x08, 0x96, 0x01]),
            Ok(vec![(1, Field::Varint(150))])
        );
        // field 2, "testing" = 12 07 74 65 73 74 69 6e 67
        assert_eq!(
            fields(b"\x12\x07testing"),
            Ok(vec![(2, Field::Bytes(b"testing"))])
        );
        assert_eq!(
            fields(&[0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 9, 8, 7, 6]),
            Ok(vec![
                (3, Field::Fixed64([1, 2, 3, 4, 5, 6, 7, 8])),
                (4, Field::Fixed32([9, 8, 7, 6]))
            ])
        );
        assert_eq!(fields(&[]), Ok(vec![]));
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        assert_eq!(fields(&[0x08]), Err(WireError::Truncated));
        assert_eq!(fields(&[0x12, 0x05, b'a']), Err(WireError::Truncated));
        assert_eq!(fields(&[0x19, 1, 2]), Err(WireError::Truncated));
        assert_eq!(
            fields(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(WireError::Varint)
        );
        assert_eq!(fields(&[0x00, 0x01]), Err(WireError::FieldNumber));
        // wire types 3 and 4 (groups), 6 and 7
        for tag in [0x0b, 0x0c, 0x0e, 0x0f] {
            assert_eq!(fields(&[tag, 0]), Err(WireError::WireType));
        }
    }
}
