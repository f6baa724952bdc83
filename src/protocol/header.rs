//! The one writer of a message's `header` object: every message purly writes, client or
//! server, stream or compat, starts with it.

use std::sync::Arc;

use super::identity::{ClientId, MessageId, PROTOCOL_VERSION};
use crate::json_text::{string_len, write_integer, write_string};

/// The header fields of a message besides `type` and `version` (absent ones are not written).
#[derive(Default)]
pub(crate) struct Header {
    pub(crate) snapshot: bool,
    pub(crate) seq: Option<u64>,
    pub(crate) epoch: Option<Arc<str>>,
    pub(crate) origin: Option<ClientId>,
    pub(crate) id: Option<MessageId>,
    pub(crate) ids: Vec<MessageId>,
    /// An `ack` answering a resend under a client key (PROTOCOL.md section 9).
    pub(crate) duplicate: bool,
    /// The receiving connection's own presence id (PROTOCOL.md section 11): on the snapshots
    /// a joiner gets.
    pub(crate) presence_id: Option<Arc<str>>,
}

impl Header {
    /// The length of what [`write_prefix`](Header::write_prefix) writes for a message of type
    /// `kind`, to size the message's text exactly (one allocation, which a transport then
    /// shares without another).
    pub(crate) fn prefix_len(&self, kind: &str) -> usize {
        let ids = if self.ids.is_empty() {
            0
        } else {
            r#","ids":[]"#.len() + self.ids.len() - 1
                + self.ids.iter().map(|id| id.as_json().len()).sum::<usize>()
        };
        r#"{"header":{"type":"","version":""},"content":"#.len()
            + kind.len()
            + PROTOCOL_VERSION.len()
            + self
                .seq
                .map_or(0, |seq| r#","seq":"#.len() + decimal_len(seq))
            + self
                .epoch
                .as_ref()
                .map_or(0, |epoch| r#","epoch":"#.len() + string_len(epoch))
            + self.origin.map_or(0, |origin| {
                r#","origin":"#.len() + decimal_len(origin.get())
            })
            + self
                .id
                .as_ref()
                .map_or(0, |id| r#","id":"#.len() + id.as_json().len())
            + ids
            + if self.snapshot {
                r#","snapshot":true"#.len()
            } else {
                0
            }
            + if self.duplicate {
                r#","duplicate":true"#.len()
            } else {
                0
            }
            + self
                .presence_id
                .as_ref()
                .map_or(0, |id| r#","presence_id":"#.len() + string_len(id))
    }

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
            write_integer(seq, out);
        }
        if let Some(epoch) = &self.epoch {
            out.push_str(r#","epoch":"#);
            write_string(epoch, out);
        }
        if let Some(origin) = self.origin {
            out.push_str(r#","origin":"#);
            write_integer(origin.get(), out);
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
        if self.duplicate {
            out.push_str(r#","duplicate":true"#);
        }
        if let Some(id) = &self.presence_id {
            out.push_str(r#","presence_id":"#);
            write_string(id, out);
        }
        out.push_str(r#"},"content":"#);
    }
}

/// The number of decimal digits of `n`.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
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
            duplicate: true,
            presence_id: Some("n-1".into()),
        }
        .write_prefix("ack", &mut out);
        assert_eq!(
            out,
            r#"{"header":{"type":"ack","version":"0.1","seq":3,"epoch":"e\"1","origin":7,"id":"x","ids":[1,2],"snapshot":true,"duplicate":true,"presence_id":"n-1"},"content":"#
        );
    }

    #[test]
    fn decimal_lengths() {
        for n in [0, 1, 9, 10, 99, 100, 999_999, 1_000_000, u64::MAX] {
            assert_eq!(decimal_len(n), n.to_string().len(), "{n}");
        }
    }

    #[test]
    fn the_prefix_length_is_what_is_written() {
        let full = || Header {
            snapshot: true,
            seq: Some(u64::MAX),
            epoch: Some("0123456789abcdef".into()),
            origin: Some(ClientId(u64::MAX)),
            id: Some(MessageId::string("an id")),
            ids: vec![MessageId::number(u64::MAX), MessageId::string("b")],
            duplicate: true,
            presence_id: Some("0a1b-\"7".into()),
        };
        let headers = [
            Header::default(),
            full(),
            Header {
                ids: Vec::new(),
                snapshot: false,
                duplicate: false,
                ..full()
            },
            Header {
                seq: Some(0),
                origin: Some(ClientId(9)),
                epoch: Some("a\"\u{1}".into()),
                ids: vec![MessageId::number(10)],
                ..Header::default()
            },
        ];
        for header in headers {
            for kind in ["update", "signal", "snapshot", "error", "ack"] {
                let mut out = String::new();
                header.write_prefix(kind, &mut out);
                assert_eq!(header.prefix_len(kind), out.len(), "{out}");
            }
        }
    }
}
