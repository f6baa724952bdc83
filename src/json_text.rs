//! Compact JSON text written straight into a `String`, byte for byte what `serde_json` writes
//! (a property test holds them to it): the engine writes every diff and header this way, in
//! place, without a serializer, a byte buffer or a UTF-8 check on the way.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Appends the compact JSON text of `value` to `out`.
pub(crate) fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // A JSON number's `Display` is its compact JSON text (itoa, or ryu for floats, which
        // are always finite in a `Value`).
        Value::Number(number) => {
            let _ = write!(out, "{number}");
        }
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain_from = 0;
    for (at, byte) in text.bytes().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `at` is an ASCII byte, so both ends of the plain run are character boundaries.
        if let Some(plain) = text.get(plain_from..at) {
            out.push_str(plain);
        }
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(short);
        }
        plain_from = at + 1;
    }
    if let Some(plain) = text.get(plain_from..) {
        out.push_str(plain);
    }
    out.push('"');
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
            prop_assert_eq!(out, serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn every_character_below_0x80_is_written_as_serde_json_writes_it() {
        for byte in 0u8..0x80 {
            let text = format!("a{}b", char::from(byte));
            let mut out = String::new();
            write_string(&text, &mut out);
            assert_eq!(out, serde_json::to_string(&text).unwrap(), "byte {byte:#x}");
        }
    }
}
