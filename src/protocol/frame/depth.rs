//! Nesting depth: of text, measured without recursion so that hostile input cannot overflow the
//! stack, and of values already read.

use serde_json::{Map, Value};

/// The result of scanning JSON text for its nesting depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextDepth {
    /// The deepest nesting seen, up to the first point beyond the limit.
    pub(crate) depth: usize,
    /// The index of the top-level array element where the scan stopped beyond the limit.
    pub(crate) deepest_element: Option<usize>,
}

/// Scans JSON text for its nesting depth (arrays and objects), stopping as soon as it
/// exceeds `limit`. Strings are skipped with their escapes; the text need not be valid JSON.
pub(crate) fn text_depth(text: &[u8], limit: usize) -> TextDepth {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut element = 0usize;
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        at += 1;
        match byte {
            b'"' => {
                // A string: straight to its closing quote, stepping over escapes.
                while let Some(&byte) = text.get(at) {
                    at += match byte {
                        b'"' => {
                            at += 1;
                            break;
                        }
                        b'\\' => 2,
                        _ => 1,
                    };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > limit {
                        return TextDepth {
                            depth: deepest,
                            deepest_element: (depth > 1).then_some(element),
                        };
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => element += 1,
            _ => {}
        }
    }
    TextDepth {
        depth: deepest,
        deepest_element: None,
    }
}

/// The nesting depth of an object (1 for an object of scalars), counting no further than
/// `limit + 1`. Recursive, no deeper than `limit + 1` calls: a parsed value is at most
/// serde_json's 128 levels deep, and a value built in code deeper than the limit is cut off
/// there.
pub(crate) fn map_depth(map: &Map<String, Value>, limit: usize) -> usize {
    nested_depth(map.values(), limit)
}

/// The depth of an array or object whose members are `children`.
fn nested_depth<'a>(children: impl Iterator<Item = &'a Value>, limit: usize) -> usize {
    let Some(inner_limit) = limit.checked_sub(1) else {
        // Past the limit: this level is not looked into.
        return 1;
    };
    let mut deepest = 0;
    for child in children {
        deepest = deepest.max(match child {
            Value::Object(map) => nested_depth(map.values(), inner_limit),
            Value::Array(items) => nested_depth(items.iter(), inner_limit),
            _ => 0,
        });
        if deepest > inner_limit {
            break;
        }
    }
    1 + deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_depth_ignores_brackets_in_strings() {
        let scan = text_depth(br#"[{"a":"[[[{{\"]]"}]"#, 10);
        assert_eq!(scan.depth, 2);
    }

    #[test]
    fn text_depth_names_the_element() {
        let scan = text_depth(br#"[{}, {"a":[[[]]]}]"#, 3);
        assert_eq!(scan.deepest_element, Some(1));
    }

    /// The byte-at-a-time scan this module used first: the oracle for the faster one.
    fn reference_depth(text: &[u8], limit: usize) -> TextDepth {
        let (mut depth, mut deepest, mut element) = (0usize, 0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for &byte in text {
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > deepest {
                        deepest = depth;
                        if deepest > limit {
                            return TextDepth {
                                depth: deepest,
                                deepest_element: (depth > 1).then_some(element),
                            };
                        }
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b',' if depth == 1 => element += 1,
                _ => {}
            }
        }
        TextDepth {
            depth: deepest,
            deepest_element: None,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4_000, ..Default::default() })]

        /// Strings, escapes (a trailing backslash too), brackets and commas in any order.
        #[test]
        fn text_depth_agrees_with_the_byte_at_a_time_scan(
            text in proptest::collection::vec(
                proptest::sample::select(br#"[]{}",\a"#.to_vec()),
                0..200,
            ),
            limit in 0usize..8,
        ) {
            proptest::prop_assert_eq!(text_depth(&text, limit), reference_depth(&text, limit));
        }
    }

    #[test]
    fn map_depth_counts_nesting() {
        let Value::Object(map) = json!({"a": 1, "b": {"c": [1, {"d": 2}]}}) else {
            unreachable!()
        };
        assert_eq!(map_depth(&map, 64), 4);
        for limit in 0..8 {
            let depth = map_depth(&map, limit);
            if limit >= 4 {
                assert_eq!(depth, 4, "limit {limit}");
            } else {
                assert!(
                    depth > limit && depth <= limit + 1,
                    "limit {limit}: {depth}"
                );
            }
        }
    }
}
