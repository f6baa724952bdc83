//! The one writer of a message's `header` object: every message purly writes, client or
//! server, stream or compat, starts with it.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use super::identity::{ClientId, MessageId, PROTOCOL_VERSION};

/// The header fields of a message besides `type` and `version` (absent ones are not written).
#[derive(Default)]
pub(crate) struct Header {
    pub(crate) snapshot: bool,
    pub(crate) seq: Option<u64>,
    pub(crate) epoch: Option<Arc<str>>,
    pub(crate) origin: Option<ClientId>,
    pub(crate) id: Option<MessageId>,
    pub(crate) ids: Vec<MessageId>,
}

impl Header {
    /// Writes `{"header":{...},"content":` for a message of type `kind`: what follows is the
    /// content's JSON text and the closing `}`.
    pub(crate) fn write_prefix(&self, kind: &str, out: &mut String) {
        out.push_str(r#"{"header":{"type":""#);
        out.push_str(kind);
        out.push_str(r#"","version":""#);
        out.push_str(PROTOCOL_VERSION);
        out.push('"');
        // Written in place: a header is written for every diff, and each temporary string
        // would be an allocation.
        if let Some(seq) = self.seq {
            out.push_str(r#","seq":"#);
            let _ = write!(out, "{seq}");
        }
        if let Some(epoch) = &self.epoch {
            out.push_str(r#","epoch":"#);
            write_json_string(epoch, out);
        }
        if let Some(origin) = self.origin {
            out.push_str(r#","origin":"#);
            let _ = write!(out, "{}", origin.get());
        }
        if let Some(id) = &self.id {
            out.push_str(r#","id":"#);
            out.push_str(id.as_json());
        }
        if !self.ids.is_empty() {
            out.push_str(r#","ids":["#);
            for (i, id) in self.ids.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(id.as_json());
            }
            out.push(']');
        }
        if self.snapshot {
            out.push_str(r#","snapshot":true"#);
        }
        out.push_str(r#"},"content":"#);
    }
}

/// Appends `text` as a JSON string. Epochs are plain ASCII and are copied as they are; anything
/// that needs escaping goes through serde_json.
fn write_json_string(text: &str, out: &mut String) {
    let plain = text
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f);
    if plain {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&Value::from(text).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_written_as_json_strings_whatever_they_hold() {
        for epoch in [
            "0123abcd",
            "e\"1",
            "back\\slash",
            "line\nbreak",
            "é",
            "\u{7f}",
            "",
        ] {
            let mut out = String::new();
            write_json_string(epoch, &mut out);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), epoch);
            assert_eq!(out, Value::from(epoch).to_string());
        }
    }

    #[test]
    fn writes_only_the_fields_present() {
        let mut out = String::new();
        Header::default().write_prefix("update", &mut out);
        assert_eq!(
            out,
            r#"{"header":{"type":"update","version":"0.1"},"content":"#
        );
        let mut out = String::new();
        Header {
            snapshot: true,
            seq: Some(3),
            epoch: Some("e\"1".into()),
            origin: Some(ClientId(7)),
            id: Some(MessageId::string("x")),
            ids: vec![MessageId::number(1), MessageId::number(2)],
        }
        .write_prefix("ack", &mut out);
        assert_eq!(
            out,
            r#"{"header":{"type":"ack","version":"0.1","seq":3,"epoch":"e\"1","origin":7,"id":"x","ids":[1,2],"snapshot":true},"content":"#
        );
    }
}
