//! The one writer of a message's `header` object: every message purly writes, client or
//! server, stream or compat, starts with it.

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
        if let Some(seq) = self.seq {
            out.push_str(r#","seq":"#);
            out.push_str(&seq.to_string());
        }
        if let Some(epoch) = &self.epoch {
            out.push_str(r#","epoch":"#);
            out.push_str(&Value::from(&**epoch).to_string());
        }
        if let Some(origin) = self.origin {
            out.push_str(r#","origin":"#);
            out.push_str(&origin.get().to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

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
