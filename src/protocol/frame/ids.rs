//! The `header.id`s of a frame the server will not apply (a frame refused by a rate limit),
//! read in one pass over its text that skips everything else: no object is built, no content
//! is read, and a refusal costs no more than that scan.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::identity::MessageId;

/// A message with only its header's `id` read.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    header: Option<HeaderId<'a>>,
}

#[derive(Deserialize)]
struct HeaderId<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// The ids of the frame's messages, in order, or none if the frame cannot be read as an array
/// of messages. Contents are skipped without recursion (serde_json ignores a value with a loop),
/// so a frame nested arbitrarily deep inside its contents still names its ids.
pub(crate) fn scan_ids(text: &str) -> Vec<MessageId> {
    serde_json::from_str::<Vec<IdOnly<'_>>>(text)
        .map(|messages| {
            messages
                .into_iter()
                .filter_map(|m| m.header?.id)
                .filter_map(|raw| MessageId::from_json(raw.get()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::protocol::frame::parse_frame_text;

    #[test]
    fn the_scan_finds_the_ids_a_full_parse_finds() {
        let frames = [
            r#"[{"header":{"type":"update","id":"a1"},"content":{"x":{"y":[1,2,{"z":null}]}}},
               {"header":{"id":7,"type":"signal"},"content":{}},
               {"header":{"type":"update"},"content":{}}]"#,
            r#"[]"#,
            r#"[{"header":{"type":"update","id":"\u00e9t\u00e9"},"content":{}}]"#,
        ];
        for text in frames {
            let parsed = parse_frame_text(text, &Limits::default()).unwrap();
            assert_eq!(scan_ids(text), parsed.ids(), "{text}");
        }
        assert!(scan_ids("not json").is_empty());
        assert!(
            scan_ids(r#"{"header":{"id":1}}"#).is_empty(),
            "not an array"
        );
        let deep = format!(
            "[{{\"header\":{{\"id\":1}},\"content\":{}{}}}]",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            scan_ids(&deep),
            vec![MessageId::number(1)],
            "deep content: the id, no overflow"
        );
    }
}
