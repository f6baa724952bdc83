//! The transaction step: one frame and a model's state in, the frame's effects or its refusal
//! out. Pure: no lock, no thread, no subscriber; the live model runs it under its lock.

use std::sync::Arc;

use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::error::{ErrorCode, FrameError};
use crate::merge::{merge_diff, Change};
use crate::model::Model;
use crate::protocol::{
    ClientId, ClientKey, Content, Header, Message, MessageId, MessageKind, Mode, ServerMessage,
    ServerMessageKind,
};

/// A server-side change: the patch to merge, computed from the state it applies to.
pub(crate) type Modify = dyn FnMut(&Map<String, Value>) -> Option<Map<String, Value>> + Send;

/// What a writer wants applied: a frame's messages, or a change computed from the state.
pub(crate) enum Write {
    Messages(Vec<Message>),
    Modify(Box<Modify>),
}

impl Write {
    /// The messages to apply to `state`.
    pub(crate) fn into_messages(self, state: &Map<String, Value>) -> Vec<Message> {
        match self {
            Write::Messages(messages) => messages,
            Write::Modify(mut change) => patch(&mut change, state),
        }
    }
}

/// The update a modification makes of `state` (none if it declines).
pub(crate) fn patch(change: &mut Box<Modify>, state: &Map<String, Value>) -> Vec<Message> {
    change(state).map(Message::update).into_iter().collect()
}

/// A model's state as the transaction sees it: the object, its serialized size and its version.
pub(crate) struct Working<'a> {
    pub(crate) state: &'a mut Map<String, Value>,
    pub(crate) size: &'a mut i64,
    pub(crate) model: &'a dyn Model,
    pub(crate) max_model_bytes: usize,
}

/// What one message of an accepted frame does.
#[derive(Debug)]
pub(crate) enum Effect {
    /// An update, merged: its change (possibly empty).
    Update {
        id: Option<MessageId>,
        change: Change,
    },
    /// A signal, relayed as it came.
    Signal {
        id: Option<MessageId>,
        content: Content,
    },
    /// The sender's presence, as JSON text (`null` clears it).
    Presence { json: String },
}

/// The effects of a frame's messages, in order: on the stack for the usual frame of one message.
pub(crate) type Effects = SmallVec<[Effect; 1]>;

/// What a frame's effects send, in order: on the stack for the usual frame of one message.
pub(crate) type Outcomes = SmallVec<[Outcome; 1]>;

/// A refused frame: the error and the ids of all its messages (none of them was applied).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) error: FrameError,
    pub(crate) ids: Vec<MessageId>,
}

/// What a committed effect sends, and to whom.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// To every subscriber (a diff, with the version it made; or a signal, with `None`).
    Broadcast(ServerMessage),
    /// To the sender only (an `ack`).
    Reply(ServerMessage),
    /// The sender's new presence (JSON text, `null` to clear it): the last of its frame.
    Presence(String),
}

/// Merges every update of a frame into the working state, or none: on a refusal the updates
/// already merged are reverted, the size is restored and the error names the offending message.
pub(crate) fn apply(working: &mut Working<'_>, messages: Vec<Message>) -> Result<Effects, Refusal> {
    let size_before = *working.size;
    let mut effects = Effects::with_capacity(messages.len());
    let mut messages = messages.into_iter().enumerate();
    while let Some((index, Message { kind, id, content })) = messages.next() {
        let error = match kind {
            MessageKind::Signal => {
                effects.push(Effect::Signal { id, content });
                continue;
            }
            MessageKind::Presence => {
                let json = match content {
                    Content::Raw(raw) => raw.get().to_owned(),
                    Content::Object(map) => crate::protocol::object_json(&map),
                };
                effects.push(Effect::Presence { json });
                continue;
            }
            MessageKind::Update => match merge_update(working, index, content) {
                Ok(change) => {
                    effects.push(Effect::Update { id, change });
                    continue;
                }
                Err(error) => error,
            },
        };
        // Gathered only on a refusal, off the path of frames that apply.
        let ids = effects
            .iter()
            .filter_map(Effect::id)
            .cloned()
            .chain(id)
            .chain(messages.filter_map(|(_, message)| message.id))
            .collect();
        for effect in effects.into_iter().rev() {
            if let Effect::Update { change, .. } = effect {
                change.revert(working.state);
            }
        }
        *working.size = size_before;
        return Err(Refusal { error, ids });
    }
    Ok(effects)
}

fn merge_update(
    working: &mut Working<'_>,
    index: usize,
    content: Content,
) -> Result<Change, FrameError> {
    let Content::Object(content) = content else {
        // `parse_frame` and `Frame::validate` read every update into its object first.
        return Err(FrameError::at(
            ErrorCode::InvalidMessage,
            index,
            "unreadable content: an update's content was not read before it was applied",
        ));
    };
    working
        .model
        .check(working.state, &content)
        .map_err(|rejection| FrameError::at(ErrorCode::Rejected, index, rejection.0))?;
    let change = merge_diff(working.state, content);
    let size = *working.size + change.size_delta();
    if size > i64::try_from(working.max_model_bytes).unwrap_or(i64::MAX) {
        change.revert(working.state);
        return Err(FrameError::at(
            ErrorCode::ModelTooLarge,
            index,
            format!(
                "the update would make the model {size} bytes, more than the limit of {}",
                working.max_model_bytes
            ),
        ));
    }
    *working.size = size;
    Ok(change)
}

impl Effect {
    fn id(&self) -> Option<&MessageId> {
        match self {
            Effect::Update { id, .. } | Effect::Signal { id, .. } => id.as_ref(),
            Effect::Presence { .. } => None,
        }
    }
}

/// Who committed a frame: the sender's id, delivery mode and client key (stream mode, if it
/// named one: PROTOCOL.md section 9).
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    pub(crate) id: ClientId,
    pub(crate) mode: Mode,
    pub(crate) key: Option<ClientKey>,
}

/// Turns accepted effects into the messages they send, advancing `version` by one per diff:
/// an empty change is answered with an `ack` (stream mode, with an `id`) and sent to nobody
/// else; a change becomes a diff for everyone; a signal is relayed.
/// With `undo`, every change is kept there (in order) so that it can be reverted later.
pub(crate) fn commit(
    effects: Effects,
    from: &Sender,
    version: &mut u64,
    epoch: &Arc<str>,
    mut undo: Option<&mut Vec<Change>>,
) -> Outcomes {
    let mut outcomes = Outcomes::with_capacity(effects.len());
    // Several presences in one frame: the last wins (PROTOCOL.md section 11).
    let last_presence = effects
        .iter()
        .rposition(|e| matches!(e, Effect::Presence { .. }));
    for (index, effect) in effects.into_iter().enumerate() {
        match effect {
            Effect::Presence { json } => {
                if Some(index) == last_presence {
                    outcomes.push(Outcome::Presence(json));
                }
            }
            Effect::Update { id, change } if change.is_empty() => {
                if let (Mode::Stream, Some(id)) = (from.mode, id) {
                    outcomes.push(Outcome::Reply(ServerMessage::ack(
                        id,
                        *version,
                        epoch.clone(),
                    )));
                }
            }
            Effect::Update { id, change } => {
                *version += 1;
                let header = Header {
                    seq: Some(*version),
                    epoch: Some(epoch.clone()),
                    origin: Some(from.id),
                    id,
                    ..Header::default()
                };
                outcomes.push(Outcome::Broadcast(ServerMessage::update_json(
                    header,
                    change.diff_json(),
                )));
                if let Some(kept) = undo.as_deref_mut() {
                    kept.push(change);
                }
            }
            Effect::Signal { id, content } => {
                let header = Header {
                    origin: Some(from.id),
                    id,
                    ..Header::default()
                };
                let message = match content {
                    Content::Raw(raw) => {
                        ServerMessage::new(ServerMessageKind::Signal, header, raw.get(), None)
                    }
                    Content::Object(map) => {
                        ServerMessage::object(ServerMessageKind::Signal, header, map)
                    }
                };
                outcomes.push(Outcome::Broadcast(message));
            }
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DefaultModel, Rejection};
    use crate::protocol::Frame;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test objects are objects"),
        }
    }

    struct NoLocked;
    impl Model for NoLocked {
        fn check(
            &self,
            _: &Map<String, Value>,
            update: &Map<String, Value>,
        ) -> Result<(), Rejection> {
            match update.contains_key("locked") {
                true => Err(Rejection::new("locked")),
                false => Ok(()),
            }
        }
    }

    fn run(
        model: &dyn Model,
        state: &mut Map<String, Value>,
        size: &mut i64,
        max: usize,
        messages: Vec<Message>,
    ) -> Result<Effects, Refusal> {
        let mut working = Working {
            state,
            size,
            model,
            max_model_bytes: max,
        };
        apply(&mut working, messages)
    }

    fn sizes(state: &Map<String, Value>) -> i64 {
        serde_json::to_string(state)
            .map(|s| s.len() as i64)
            .unwrap_or(-1)
    }

    #[test]
    fn a_refused_message_reverts_the_whole_frame() {
        let mut state = obj(json!({"a": 1, "keep": {"x": 1}}));
        let before = state.clone();
        let mut size = sizes(&state);
        let messages = vec![
            Message::update(obj(json!({"a": 2, "keep": {"x": null}})))
                .with_id(MessageId::number(1)),
            Message::signal(obj(json!({"s": 1}))),
            Message::update(obj(json!({"locked": true}))).with_id(MessageId::string("z")),
            Message::update(obj(json!({"b": 1}))).with_id(MessageId::number(3)),
        ];
        let refusal = run(&NoLocked, &mut state, &mut size, usize::MAX, messages).unwrap_err();
        assert_eq!(refusal.error.code, ErrorCode::Rejected);
        assert_eq!(refusal.error.index, Some(2));
        assert_eq!(
            refusal.ids,
            vec![
                MessageId::number(1),
                MessageId::string("z"),
                MessageId::number(3)
            ]
        );
        assert_eq!(state, before);
        assert_eq!(size, sizes(&before));
    }

    #[test]
    fn size_accounting_follows_the_state_and_refuses_past_the_limit() {
        let mut state = Map::new();
        let mut size = sizes(&state);
        let frame = vec![Message::update(obj(
            json!({"a": "xyz", "b": {"c": [1, 2]}}),
        ))];
        run(
            &DefaultModel::default(),
            &mut state,
            &mut size,
            1 << 20,
            frame,
        )
        .unwrap();
        assert_eq!(size, sizes(&state));
        let frame = vec![Message::update(obj(json!({"b": null})))];
        run(
            &DefaultModel::default(),
            &mut state,
            &mut size,
            1 << 20,
            frame,
        )
        .unwrap();
        assert_eq!(size, sizes(&state));
        let limit = size as usize + 10;
        let before = state.clone();
        let frame = vec![
            Message::update(obj(json!({"d": 1}))),
            Message::update(obj(json!({"e": "a long value"}))),
        ];
        let refusal = run(
            &DefaultModel::default(),
            &mut state,
            &mut size,
            limit,
            frame,
        )
        .unwrap_err();
        assert_eq!(refusal.error.code, ErrorCode::ModelTooLarge);
        assert_eq!(refusal.error.index, Some(1));
        assert_eq!((state, size), (before.clone(), sizes(&before)));
    }

    #[test]
    fn no_op_updates_ack_with_an_id_and_diffs_advance_the_version() {
        let mut state = obj(json!({"a": 1}));
        let mut size = sizes(&state);
        let messages = vec![
            Message::update(obj(json!({"a": 1}))).with_id(MessageId::string("same")),
            Message::update(obj(json!({"a": 1}))),
            Message::update(obj(json!({"a": 2}))).with_id(MessageId::string("new")),
            Message::signal(obj(json!({"ping": true}))),
        ];
        let effects = run(
            &DefaultModel::default(),
            &mut state,
            &mut size,
            usize::MAX,
            messages,
        )
        .unwrap();
        let mut version = 7;
        let from = Sender {
            id: ClientId(4),
            mode: Mode::Stream,
            key: None,
        };
        let outcomes = commit(effects, &from, &mut version, &Arc::from("e"), None);
        assert_eq!(version, 8);
        let texts: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Reply(m) => format!("reply {}", m.json()),
                Outcome::Broadcast(m) => format!("all {}", m.json()),
                Outcome::Presence(json) => format!("presence {json}"),
            })
            .collect();
        assert_eq!(
            texts,
            vec![
                r#"reply {"header":{"type":"ack","version":"0.1","seq":7,"epoch":"e","id":"same"},"content":{}}"#,
                r#"all {"header":{"type":"update","version":"0.1","seq":8,"epoch":"e","origin":4,"id":"new"},"content":{"a":2}}"#,
                r#"all {"header":{"type":"signal","version":"0.1","origin":4},"content":{"ping":true}}"#,
            ]
        );
    }

    #[test]
    fn compat_senders_get_no_acks() {
        let mut state = Map::new();
        let mut size = 2;
        let frame = Frame::new(vec![
            Message::update(Map::new()).with_id(MessageId::number(1))
        ]);
        let effects = run(
            &DefaultModel::default(),
            &mut state,
            &mut size,
            usize::MAX,
            frame.messages,
        )
        .unwrap();
        let from = Sender {
            id: ClientId(1),
            mode: Mode::Compat,
            key: None,
        };
        assert!(commit(effects, &from, &mut 0, &Arc::from("e"), None).is_empty());
    }
}
