//! Compact JSON text written straight into a `String`, byte for byte what `serde_json` writes
//! (a property test holds them to it): the engine writes every diff and header this way, in
//! place, without a serializer, a byte buffer or a UTF-8 check on the way.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// Appends the compact JSON text of `value` to `out`.
pub(crate) fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// Appends the compact JSON text of an object to `out`.
pub(crate) fn write_object(map: &Map<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(key, out);
        out.push(':');
        write_value(value, out);
    }
    out.push('}');
}

/// Appends `text` as a JSON string: `"` and `\` escaped, control characters as `\n`, `\t`… or
/// `\u00XX`, everything else (non-ASCII included) as it is.
pub(crate) fn write_string(text: &str, out: &mut String) {
    out.push('"');
    let mut rest = text;
    while let Some(at) = first_escaped(rest.as_bytes()) {
        // `at` is an ASCII byte, so both sides of it are character boundaries.
        let (plain, escaped) = rest.split_at(at);
        out.push_str(plain);
        let byte = escaped.as_bytes()[0];
        push_escape(byte, out);
        rest = &escaped[1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// The length of `text`'s JSON string (what [`write_string`] appends), without writing it.
pub(crate) fn string_len(text: &str) -> usize {
    let mut len = text.len() + 2;
    let mut rest = text.as_bytes();
    while let Some(at) = first_escaped(rest) {
        len += escape_text(rest[at]).map_or(6, str::len) - 1;
        rest = &rest[at + 1..];
    }
    len
}

/// Appends the escape sequence of `byte`, one that [`needs_escape`] names.
fn push_escape(byte: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match escape_text(byte) {
        Some(short) => out.push_str(short),
        None => {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

/// The two-character escape of `byte`, for those that have one (others are `\u00XX`).
fn escape_text(byte: u8) -> Option<&'static str> {
    Some(match byte {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        0x08 => "\\b",
        0x0c => "\\f",
        _ => return None,
    })
}

/// Whether a JSON string must escape `byte`: `"`, `\` and the control characters.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The index of the first byte of `bytes` that a JSON string must escape. Eight bytes are
/// tested at a time (strings are mostly plain, and a byte-by-byte test is the cost of writing
/// them).
fn first_escaped(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bits set where a byte is zero (and maybe above such a byte, where a borrow ran):
    // exact as a yes-or-no answer.
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    let mut offset = 0;
    for chunk in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk).map(u64::from_le_bytes) else {
            break;
        };
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            break;
        }
        offset += 8;
    }
    bytes[offset..]
        .iter()
        .position(|&byte| needs_escape(byte))
        .map(|at| offset + at)
}

/// Appends an integer's decimal text.
pub(crate) fn write_integer(value: impl itoa::Integer, out: &mut String) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// The length of `value`'s compact JSON text (what [`write_value`] appends), without writing
/// it.
pub(crate) fn value_len(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(number) => number_len(number),
        Value::String(text) => string_len(text),
        Value::Array(items) => {
            2 + items.iter().map(value_len).sum::<usize>() + items.len().saturating_sub(1)
        }
        Value::Object(map) => object_len(map),
    }
}

/// The length of an object's compact JSON text.
pub(crate) fn object_len(map: &Map<String, Value>) -> usize {
    2 + map
        .iter()
        .map(|(key, value)| string_len(key) + 1 + value_len(value))
        .sum::<usize>()
        + map.len().saturating_sub(1)
}

fn write_number(number: &Number, out: &mut String) {
    if let Some(n) = number.as_u64() {
        write_integer(n, out);
    } else if let Some(n) = number.as_i64() {
        write_integer(n, out);
    } else {
        // A float's `Display` is its compact JSON text (ryu; always finite in a `Value`).
        let _ = write!(out, "{number}");
    }
}

fn number_len(number: &Number) -> usize {
    if let Some(n) = number.as_u64() {
        itoa::Buffer::new().format(n).len()
    } else if let Some(n) = number.as_i64() {
        itoa::Buffer::new().format(n).len()
    } else {
        let mut text = String::new();
        let _ = write!(text, "{number}");
        text.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value, nested a few levels, with strings over the whole of Unicode (control
    /// characters, quotes and backslashes made likely) and numbers of every kind.
    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        let text = prop_oneof!["\\PC*", "[\"\\\\/\u{0}-\u{1f}\u{7f}a-zé]*", any::<String>()];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn writes_what_serde_json_writes(value in any_value()) {
            let mut out = String::new();
            write_value(&value, &mut out);
            let expected = serde_json::to_string(&value).unwrap();
            prop_assert_eq!(value_len(&value), expected.len());
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn strings_are_written_as_serde_json_writes_them(text in "[\"\\\\\u{0}-\u{1f}a-zé]{0,40}") {
            let mut out = String::from("x");
            write_string(&text, &mut out);
            let expected = serde_json::to_string(&text).unwrap();
            prop_assert_eq!(string_len(&text), expected.len());
            prop_assert_eq!(&out[1..], expected);
        }
    }

    #[test]
    fn every_character_below_0x80_is_written_as_serde_json_writes_it() {
        for byte in 0u8..0x80 {
            let text = format!("a{}b", char::from(byte));
            let mut out = String::new();
            write_string(&text, &mut out);
            assert_eq!(out, serde_json::to_string(&text).unwrap(), "byte {byte:#x}");
            assert_eq!(string_len(&text), out.len(), "byte {byte:#x}");
            // At every place in a run long enough for the eight-byte test.
            for at in 0..17 {
                let mut long = "a".repeat(17);
                long.insert(at, char::from(byte));
                let mut out = String::new();
                write_string(&long, &mut out);
                assert_eq!(
                    out,
                    serde_json::to_string(&long).unwrap(),
                    "byte {byte:#x} at {at}"
                );
            }
        }
    }
}
