//! Incoming frames: the types a client sends and the one parse-and-validate entry point.

mod depth;
mod ids;

pub(crate) use ids::scan_ids;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::header::Header;
use super::identity::{MessageId, PROTOCOL_VERSION};
use crate::config::Limits;
use crate::error::{ErrorCode, FrameError};

/// What a client's message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Nested-merge the content into the model and fan the difference out.
    Update,
    /// Relay the content unmodified to the other clients; the model does not change.
    Signal,
    /// Set (an object) or clear (`null`) the connection's presence (PROTOCOL.md section 11):
    /// not part of the model, never stored.
    Presence,
}

impl MessageKind {
    /// The `header.type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Update => "update",
            MessageKind::Signal => "signal",
            MessageKind::Presence => "presence",
        }
    }
}

/// The content of a client's message: a JSON object (a presence's may also be `null`).
#[derive(Debug, Clone)]
pub enum Content {
    /// A parsed object.
    Object(Map<String, Value>),
    /// The exact JSON text of an object (or of a presence's `null`), as it arrived (signals
    /// are relayed as is).
    Raw(Box<RawValue>),
}

impl Content {
    /// The JSON text of the content (serializes a parsed object).
    pub fn to_json(&self) -> String {
        match self {
            Content::Object(map) => Value::Object(map.clone()).to_string(),
            Content::Raw(raw) => raw.get().to_owned(),
        }
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Content::Raw(a), Content::Raw(b)) => a.get() == b.get(),
            _ => {
                let parse = |c: &Content| match c {
                    Content::Object(m) => Some(Value::Object(m.clone())),
                    Content::Raw(r) => serde_json::from_str(r.get()).ok(),
                };
                parse(self) == parse(other)
            }
        }
    }
}

/// One message from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Update or signal.
    pub kind: MessageKind,
    /// The client's `header.id`, echoed back with the resulting diff or `ack` (stream mode).
    pub id: Option<MessageId>,
    /// The content object.
    pub content: Content,
}

impl Message {
    /// An update that merges `content` into the model.
    pub fn update(content: Map<String, Value>) -> Self {
        Message {
            kind: MessageKind::Update,
            id: None,
            content: Content::Object(content),
        }
    }

    /// A signal that relays `content` to the other clients.
    pub fn signal(content: Map<String, Value>) -> Self {
        Message {
            kind: MessageKind::Signal,
            id: None,
            content: Content::Object(content),
        }
    }

    /// The message's nesting depth within a frame: the frame array (1) and the message object
    /// (2) enclose its header and content (3), and the content's nesting adds to that. Counted
    /// no further than just past `limit`.
    fn depth(&self, limit: usize) -> usize {
        2 + match &self.content {
            Content::Object(map) => depth::map_depth(map, limit),
            Content::Raw(raw) => depth::text_depth(raw.get().as_bytes(), limit).depth,
        }
    }

    /// A presence that sets the connection's presence to `content`, or clears it (`None`).
    pub fn presence(content: Option<Map<String, Value>>) -> Self {
        let content = match content {
            Some(map) => Content::Object(map),
            // "null" is valid JSON: the conversion cannot fail.
            None => Content::Raw(
                RawValue::from_string("null".to_owned())
                    .unwrap_or_else(|_| unreachable!("null is JSON")),
            ),
        };
        Message {
            kind: MessageKind::Presence,
            id: None,
            content,
        }
    }

    /// Sets the message's `id`.
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }
}

/// A validated array of messages, as one WebSocket text frame carries it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// The messages, in the order they are applied.
    pub messages: Vec<Message>,
}

impl Frame {
    /// A frame of the given messages (not yet validated against limits; the engine does that).
    pub fn new(messages: Vec<Message>) -> Self {
        Frame { messages }
    }

    /// Checks a frame built in code against `limits` (message count and nesting depth), as
    /// [`parse_frame`] does for text, and reads every update whose content is still JSON text
    /// into its object (`invalid_message` if it cannot be read), so that the engine merges
    /// objects only.
    pub fn validate(&mut self, limits: &Limits) -> Result<(), FrameError> {
        for (index, message) in self.messages.iter_mut().enumerate() {
            if let (MessageKind::Update, Content::Raw(raw)) = (message.kind, &message.content) {
                message.content = Content::Object(read_object(raw.get(), index)?);
            }
        }
        check_count(self.messages.len(), limits)?;
        for (index, message) in self.messages.iter().enumerate() {
            if message.depth(limits.max_depth) > limits.max_depth {
                return Err(too_deep(limits, Some(index)));
            }
        }
        Ok(())
    }

    /// The frame's nesting depth as the text of [`to_json`](Frame::to_json) has it, counted no
    /// further than just past `limit`.
    fn depth(&self, limit: usize) -> usize {
        self.messages
            .iter()
            .map(|message| message.depth(limit))
            .max()
            .unwrap_or(1)
    }

    /// The ids of the messages that have one, in order.
    pub fn ids(&self) -> Vec<MessageId> {
        self.messages.iter().filter_map(|m| m.id.clone()).collect()
    }

    /// The frame as JSON text, in the wire format of PROTOCOL.md section 2.
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        for (i, message) in self.messages.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let header = Header {
                id: message.id.clone(),
                ..Header::default()
            };
            header.write_prefix(message.kind.as_str(), &mut out);
            out.push_str(&message.content.to_json());
            out.push('}');
        }
        out.push(']');
        out
    }
}

/// A message as it arrives: an object with at most one `header` and one `content`. Read from a
/// JSON object only (never from an array, as a derived struct would).
struct WireMessage<'a> {
    header: Option<WireHeaderField<'a>>,
    content: Option<WireContent<'a>>,
}

/// A message's `header` as the first pass over the frame read it.
enum WireHeaderField<'a> {
    /// Kept as text, to be checked and read once the whole message is.
    Text(&'a RawValue),
    /// Read straight into its fields: it was an object with at most one of each.
    Fields(WireHeader<'a>),
}

impl WireHeaderField<'_> {
    fn is_object(&self) -> bool {
        match self {
            WireHeaderField::Text(raw) => raw.get().starts_with('{'),
            WireHeaderField::Fields(_) => true,
        }
    }
}

/// A message's `content` as the first pass over the frame read it.
enum WireContent<'a> {
    /// Kept as text, to be checked and read once the header is known.
    Text(&'a RawValue),
    /// Read straight into the object an update merges: the header came first and declared an
    /// update, and the content parsed as an object.
    Object(Map<String, Value>),
}

impl WireContent<'_> {
    fn is_object(&self) -> bool {
        match self {
            WireContent::Text(raw) => raw.get().starts_with('{'),
            WireContent::Object(_) => true,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, WireContent::Text(raw) if raw.get() == "null")
    }
}

/// A message of the usual frame ([`read_messages_at_once`]): its header is read into its fields,
/// and when the header comes before the content and declares an update, the content is read
/// into its object, all in the same pass (no second parse of any text). Anything that does not
/// read that way fails here, and the frame is read again one message at a time, which names
/// the problem.
struct UsualMessage<'a>(WireMessage<'a>);

/// A message's field name, read without allocating.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Header,
    Content,
    #[serde(other)]
    Other,
}

/// Reads a message object's fields; with `objects`, reads the header into its fields and an
/// update's content into its object.
struct Fields {
    objects: bool,
}

impl<'de> serde::de::Visitor<'de> for Fields {
    type Value = WireMessage<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut wire = WireMessage {
            header: None,
            content: None,
        };
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Header if wire.header.is_none() => {
                    wire.header = Some(if self.objects {
                        WireHeaderField::Fields(map.next_value::<ScalarHeader<'_>>()?.0)
                    } else {
                        WireHeaderField::Text(map.next_value()?)
                    });
                }
                Field::Content if wire.content.is_none() => {
                    let update = matches!(
                        &wire.header,
                        Some(WireHeaderField::Fields(header)) if header.declares_update()
                    );
                    wire.content = Some(if update {
                        WireContent::Object(map.next_value()?)
                    } else {
                        WireContent::Text(map.next_value()?)
                    });
                }
                Field::Header | Field::Content => {
                    return Err(serde::de::Error::custom("a duplicate field"));
                }
                Field::Other if self.objects => {
                    scalar(map.next_value()?)?;
                }
                Field::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(wire)
    }
}

impl<'de> Deserialize<'de> for WireMessage<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Fields { objects: false })
    }
}

impl<'de> Deserialize<'de> for UsualMessage<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(Fields { objects: true })
            .map(UsualMessage)
    }
}

/// The header fields the server reads, kept as text. Read from a JSON object only, with at
/// most one of each; other fields are skipped.
struct WireHeader<'a> {
    kind: Option<&'a RawValue>,
    version: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
}

/// A header's field name, read without allocating.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum HeaderField {
    Type,
    Version,
    Id,
    #[serde(other)]
    Other,
}

/// A header read for the usual frame: every field a scalar, so that the frame's depth is that
/// of its contents.
struct ScalarHeader<'a>(WireHeader<'a>);

impl<'de> Deserialize<'de> for WireHeader<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeaderFields { scalars: false })
    }
}

impl<'de> Deserialize<'de> for ScalarHeader<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(HeaderFields { scalars: true })
            .map(ScalarHeader)
    }
}

/// Reads a header object's fields; with `scalars`, fails on any field that is an object or an
/// array.
struct HeaderFields {
    scalars: bool,
}

impl<'de> serde::de::Visitor<'de> for HeaderFields {
    type Value = WireHeader<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a header object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut header = WireHeader {
            kind: None,
            version: None,
            id: None,
        };
        while let Some(field) = map.next_key::<HeaderField>()? {
            let slot = match field {
                HeaderField::Type => &mut header.kind,
                HeaderField::Version => &mut header.version,
                HeaderField::Id => &mut header.id,
                HeaderField::Other if self.scalars => {
                    scalar(map.next_value()?)?;
                    continue;
                }
                HeaderField::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(serde::de::Error::custom("a duplicate header field"));
            }
            let value = map.next_value()?;
            *slot = Some(if self.scalars { scalar(value)? } else { value });
        }
        Ok(header)
    }
}

/// `raw` if it is neither an object nor an array.
fn scalar<E: serde::de::Error>(raw: &RawValue) -> Result<&RawValue, E> {
    if raw.get().starts_with(['{', '[']) {
        return Err(E::custom("a nested value"));
    }
    Ok(raw)
}

impl WireHeader<'_> {
    /// Whether `type` is `"update"` (the rest of the header is checked by
    /// [`message_from_wire`]).
    fn declares_update(&self) -> bool {
        self.kind
            .and_then(read_str)
            .is_some_and(|kind| kind == "update")
    }
}

/// Parses and validates one incoming frame (text or bytes) against `limits`.
///
/// Checks, in this order: size (`frame_too_large`), UTF-8 and JSON syntax (`invalid_json`),
/// nesting depth (`too_deep`; the JSON parser never recurses past serde_json's own limit of
/// 128 levels, whatever the input), top-level array
/// (`not_an_array`), message count (`too_many_messages`), then each message: an object with an
/// object `header` and an object `content` (`invalid_message`), a known `header.type`
/// (`unknown_type`), `header.version` absent or `"0.1"` (`unsupported_version`), `header.id`
/// absent, a string or a number (`invalid_message`). Unknown header fields are ignored and
/// dropped. Never panics, whatever the input.
pub fn parse_frame(input: &[u8], limits: &Limits) -> Result<Frame, FrameError> {
    check_size(input.len(), limits)?;
    let text = std::str::from_utf8(input)
        .map_err(|_| FrameError::new(ErrorCode::InvalidJson, "the frame is not valid UTF-8"))?;
    parse_sized_text(text, limits)
}

/// [`parse_frame`] for text already known to be UTF-8 (a WebSocket text frame, checked by the
/// transport): the same checks but that one, with the same answers.
pub(crate) fn parse_frame_text(text: &str, limits: &Limits) -> Result<Frame, FrameError> {
    check_size(text.len(), limits)?;
    parse_sized_text(text, limits)
}

fn check_size(len: usize, limits: &Limits) -> Result<(), FrameError> {
    if len > limits.max_frame_bytes {
        return Err(FrameError::new(
            ErrorCode::FrameTooLarge,
            format!(
                "the frame is {len} bytes, more than the limit of {}",
                limits.max_frame_bytes
            ),
        ));
    }
    Ok(())
}

/// The checks of [`parse_frame`] after size and UTF-8.
fn parse_sized_text(text: &str, limits: &Limits) -> Result<Frame, FrameError> {
    // The usual frame is read first and its depth measured on what was read: every header
    // field and every field skipped is a scalar there, so that depth is the text's.
    // serde_json's own recursion limit (128) bounds the stack meanwhile.
    let usual = read_messages_at_once(text, limits);
    if let Some(Ok(frame)) = usual {
        if frame.depth(limits.max_depth) <= limits.max_depth {
            return Ok(frame);
        }
        return Err(too_deep_text(text, limits).unwrap_or_else(|| too_deep(limits, None)));
    }
    // Anything else is checked in the documented order: depth on the text first.
    if let Some(error) = too_deep_text(text, limits) {
        return Err(error);
    }
    usual.unwrap_or_else(|| read_messages_one_by_one(text, limits))
}

/// `too_deep`, naming the first element that goes past the limit, if the text nests deeper
/// than the limit.
fn too_deep_text(text: &str, limits: &Limits) -> Option<FrameError> {
    let scan = depth::text_depth(text.as_bytes(), limits.max_depth);
    (scan.depth > limits.max_depth).then(|| too_deep(limits, scan.deepest_element))
}

/// The usual frame, where every element is a message object: the messages are read in the
/// pass that checks the syntax. `None` for anything else, which
/// [`read_messages_one_by_one`] then names exactly (both give the same answer; a property test
/// holds them to it).
fn read_messages_at_once(text: &str, limits: &Limits) -> Option<Result<Frame, FrameError>> {
    let usual = serde_json::from_str::<UsualFrame>(text).ok()?;
    let frame = match usual.refusal {
        Some(refusal) => Err(refusal),
        None => Ok(Frame {
            messages: usual.messages,
        }),
    };
    Some(check_count(usual.count, limits).and(frame))
}

/// The usual frame as one pass reads it: each message checked and read as it comes (no list
/// of the wire messages in between), the first refusal kept, and the messages counted.
struct UsualFrame {
    messages: Vec<Message>,
    count: usize,
    refusal: Option<FrameError>,
}

impl<'de> Deserialize<'de> for UsualFrame {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements;
        impl<'de> serde::de::Visitor<'de> for Elements {
            type Value = UsualFrame;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of messages")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut frame = UsualFrame {
                    messages: Vec::new(),
                    count: 0,
                    refusal: None,
                };
                while let Some(UsualMessage(wire)) = seq.next_element()? {
                    if frame.refusal.is_none() {
                        match message_from_wire(wire, frame.count) {
                            Ok(message) => frame.messages.push(message),
                            Err(refusal) => frame.refusal = Some(refusal),
                        }
                    }
                    frame.count += 1;
                }
                Ok(frame)
            }
        }
        deserializer.deserialize_seq(Elements)
    }
}

/// Reads the frame as an array of any JSON values, then each as a message: the first problem
/// found, in the order [`parse_frame`] documents, is the one reported.
fn read_messages_one_by_one(text: &str, limits: &Limits) -> Result<Frame, FrameError> {
    let elements: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(elements) => elements,
        Err(error) => {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => {
                    FrameError::new(ErrorCode::NotAnArray, "a frame is a JSON array of messages")
                }
                Err(_) => FrameError::new(ErrorCode::InvalidJson, error.to_string()),
            })
        }
    };
    read_each(elements, limits, parse_message)
}

/// Checks the message count, then reads each element as a message, in order: the first
/// refusal is the frame's.
fn read_each<T>(
    elements: Vec<T>,
    limits: &Limits,
    read: impl Fn(T, usize) -> Result<Message, FrameError>,
) -> Result<Frame, FrameError> {
    check_count(elements.len(), limits)?;
    let messages = elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| read(element, index))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Frame { messages })
}

fn parse_message(raw: &RawValue, index: usize) -> Result<Message, FrameError> {
    let invalid = |what: &str| FrameError::at(ErrorCode::InvalidMessage, index, what);
    if !raw.get().starts_with('{') {
        return Err(invalid("a message is a JSON object"));
    }
    let wire: WireMessage<'_> = serde_json::from_str(raw.get())
        .map_err(|_| invalid("a message has at most one `header` and one `content`"))?;
    message_from_wire(wire, index)
}

/// Checks a message's header and reads its content.
fn message_from_wire(wire: WireMessage<'_>, index: usize) -> Result<Message, FrameError> {
    let invalid = |what: &str| FrameError::at(ErrorCode::InvalidMessage, index, what);
    let header = wire
        .header
        .filter(WireHeaderField::is_object)
        .ok_or_else(|| invalid("a message has a `header` object"))?;
    let header = match header {
        WireHeaderField::Fields(fields) => fields,
        WireHeaderField::Text(raw) => serde_json::from_str(raw.get())
            .map_err(|_| invalid("a header has at most one `type`, `version` and `id`"))?,
    };
    let kind_text = header.kind.and_then(read_str);
    // A presence may be `null` (it clears the connection's presence); any other content is an
    // object.
    let presence = kind_text.as_deref() == Some("presence");
    let content = wire
        .content
        .filter(|c| c.is_object() || (presence && c.is_null()))
        .ok_or_else(|| invalid("a message has a `content` object"))?;
    let kind = match (header.kind, kind_text) {
        (None, _) => return Err(invalid("a header has a `type`")),
        (Some(_), None) => return Err(invalid("`type` is a string")),
        (Some(_), Some(kind)) => kind,
    };
    let kind = match &*kind {
        "update" => MessageKind::Update,
        "signal" => MessageKind::Signal,
        "presence" => MessageKind::Presence,
        other => {
            return Err(FrameError::at(
                ErrorCode::UnknownType,
                index,
                format!(
                "unknown message type {other:?}: a client sends `update`, `signal` or `presence`"
            ),
            ))
        }
    };
    if let Some(version) = header.version {
        if read_str(version).as_deref() != Some(PROTOCOL_VERSION) {
            return Err(FrameError::at(
                ErrorCode::UnsupportedVersion,
                index,
                format!(
                    "unsupported version {}: this server speaks {PROTOCOL_VERSION:?}",
                    version.get()
                ),
            ));
        }
    }
    let id = match header.id {
        None => None,
        Some(raw) => Some(
            MessageId::from_json(raw.get())
                .ok_or_else(|| invalid("`id` is a string or a number"))?,
        ),
    };
    let content = match (kind, content) {
        (_, WireContent::Object(object)) => Content::Object(object),
        (MessageKind::Update, WireContent::Text(raw)) => {
            Content::Object(read_object(raw.get(), index)?)
        }
        (MessageKind::Signal | MessageKind::Presence, WireContent::Text(raw)) => {
            Content::Raw(raw.to_owned())
        }
    };
    Ok(Message { kind, id, content })
}

/// A JSON string's value: borrowed unless it holds escapes.
fn read_str(raw: &RawValue) -> Option<std::borrow::Cow<'_, str>> {
    // A raw value is valid JSON: between the quotes of a string without a backslash is its
    // value, as is.
    if let Some(plain) = raw
        .get()
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|inner| !inner.contains('\\'))
    {
        return Some(plain.into());
    }
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Some(text.into()),
        Err(_) => serde_json::from_str::<String>(raw.get())
            .ok()
            .map(Into::into),
    }
}

/// An update's content as the object the engine merges: read here, once, outside any lock.
fn read_object(json: &str, index: usize) -> Result<Map<String, Value>, FrameError> {
    serde_json::from_str(json).map_err(|e| {
        FrameError::at(
            ErrorCode::InvalidMessage,
            index,
            format!("unreadable content: {e}"),
        )
    })
}

fn check_count(count: usize, limits: &Limits) -> Result<(), FrameError> {
    if count > limits.max_messages {
        return Err(FrameError::new(
            ErrorCode::TooManyMessages,
            format!(
                "the frame holds {count} messages, more than the limit of {}",
                limits.max_messages
            ),
        ));
    }
    Ok(())
}

fn too_deep(limits: &Limits, index: Option<usize>) -> FrameError {
    FrameError {
        code: ErrorCode::TooDeep,
        message: format!(
            "the frame nests deeper than the limit of {}",
            limits.max_depth
        ),
        index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(input: &str) -> (ErrorCode, Option<usize>) {
        let error = parse_frame(input.as_bytes(), &Limits::default()).unwrap_err();
        (error.code, error.index)
    }

    /// Found by the `frame` fuzz target: without exact float parsing, a long integer literal
    /// was read one unit in the last place off, so the model held a number the client never
    /// sent and the frame did not survive a round trip.
    #[test]
    fn long_numbers_are_read_exactly_and_round_trip() {
        let input = r#"[{"header":{"type":"update"},"content":{"n":44444404000000000000000000000000000000000000000001}}]"#;
        let frame = parse_frame(input.as_bytes(), &Limits::default()).unwrap();
        let again = parse_frame(frame.to_json().as_bytes(), &Limits::default()).unwrap();
        assert_eq!(again, frame);
        let Content::Object(content) = &frame.messages[0].content else {
            panic!("an update's content is read into an object");
        };
        let n = content["n"].as_f64().unwrap();
        assert_eq!(n, "4.4444404e49".parse::<f64>().unwrap());
    }

    #[test]
    fn parses_the_original_clients_frames() {
        let frame = parse_frame(
            br#"[{"header":{"type":"update","version":"0.1"},"content":{"a":1}},
                 {"header":{"type":"signal"},"content":{"b": [1, 2]}}]"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(frame.messages.len(), 2);
        assert_eq!(frame.messages[0].kind, MessageKind::Update);
        assert_eq!(frame.messages[1].kind, MessageKind::Signal);
        assert!(
            matches!(&frame.messages[0].content, Content::Object(map) if map["a"] == 1),
            "update content is read into its object once, here"
        );
        match &frame.messages[1].content {
            Content::Raw(raw) => assert_eq!(raw.get(), r#"{"b": [1, 2]}"#),
            other => panic!("signal content should stay raw, got {other:?}"),
        }
    }

    #[test]
    fn empty_frame_is_valid() {
        assert!(parse_frame(b"[]", &Limits::default())
            .unwrap()
            .messages
            .is_empty());
    }

    #[test]
    fn ids_are_kept_exactly() {
        let frame = parse_frame(
            br#"[{"header":{"type":"update","id":"x\"1"},"content":{}},{"header":{"type":"update","id":1.50},"content":{}}]"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            frame.messages[0].id.as_ref().unwrap().as_json(),
            r#""x\"1""#
        );
        assert_eq!(frame.messages[1].id.as_ref().unwrap().as_json(), "1.50");
    }

    #[test]
    fn refusals_carry_their_code_and_index() {
        let cases: &[(&str, ErrorCode, Option<usize>)] = &[
            ("not json", ErrorCode::InvalidJson, None),
            ("[", ErrorCode::InvalidJson, None),
            (r#"{"header":{}}"#, ErrorCode::NotAnArray, None),
            ("[1]", ErrorCode::InvalidMessage, Some(0)),
            (r#"[{"content":{}}]"#, ErrorCode::InvalidMessage, Some(0)),
            (
                r#"[{"header":{"type":"update"},"content":{}},{"header":{"type":"update"},"content":[]}]"#,
                ErrorCode::InvalidMessage,
                Some(1),
            ),
            (
                r#"[{"header":{"type":"x"},"content":{}}]"#,
                ErrorCode::UnknownType,
                Some(0),
            ),
            (
                r#"[{"header":{"type":"ack"},"content":{}}]"#,
                ErrorCode::UnknownType,
                Some(0),
            ),
            (
                r#"[{"header":{"type":"update","version":"0.2"},"content":{}}]"#,
                ErrorCode::UnsupportedVersion,
                Some(0),
            ),
            (
                r#"[{"header":{"type":"update","id":{}},"content":{}}]"#,
                ErrorCode::InvalidMessage,
                Some(0),
            ),
        ];
        for (input, expected, index) in cases {
            assert_eq!(code(input), (*expected, *index), "{input}");
        }
    }

    #[test]
    fn depth_and_count_limits() {
        let limits = Limits {
            max_depth: 5,
            max_messages: 2,
            max_frame_bytes: 200,
            ..Limits::default()
        };
        let ok = r#"[{"header":{"type":"update"},"content":{"a":{"b":1}}}]"#;
        assert!(parse_frame(ok.as_bytes(), &limits).is_ok());
        let deep = r#"[{"header":{"type":"update"},"content":{"a":{"b":{"c":{"d":1}}}}}]"#;
        let e = parse_frame(deep.as_bytes(), &limits).unwrap_err();
        assert_eq!((e.code, e.index), (ErrorCode::TooDeep, Some(0)));
        let many = "[[],[],[]]";
        assert_eq!(
            parse_frame(many.as_bytes(), &limits).unwrap_err().code,
            ErrorCode::TooManyMessages
        );
        let big = format!("[{}]", " ".repeat(300));
        assert_eq!(
            parse_frame(big.as_bytes(), &limits).unwrap_err().code,
            ErrorCode::FrameTooLarge
        );
        let nested = "[".repeat(100_000);
        assert_eq!(code(&nested).0, ErrorCode::TooDeep);
    }

    #[test]
    fn typed_frames_are_validated_too() {
        let limits = Limits {
            max_depth: 4,
            ..Limits::default()
        };
        let content = serde_json::json!({"a": {"b": 1}});
        let Value::Object(map) = content else {
            unreachable!()
        };
        let mut frame = Frame::new(vec![Message::update(map)]);
        assert_eq!(frame.validate(&limits), Ok(()));
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        assert_eq!(
            frame.validate(&limits).unwrap_err().code,
            ErrorCode::TooDeep
        );
    }

    /// One element of a generated frame: message objects right and wrong in every part the
    /// parser checks, and elements that are not objects at all (an array of two objects is the
    /// shape a derived struct would wrongly accept as a message).
    fn element() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let kind = prop::sample::select(vec![
            r#""type":"update""#,
            r#""type":"signal""#,
            r#""type":"upd\u0061te""#,
            r#""type":"bogus""#,
            r#""type":3"#,
            r#""type":"update","type":"update""#,
            "",
        ]);
        let version = prop::sample::select(vec![
            "",
            r#","version":"0.1""#,
            r#","version":"0\u002e1""#,
            r#","version":"0.2""#,
            r#","version":1"#,
        ]);
        let id = prop::sample::select(vec![
            "",
            r#","id":7"#,
            r#","id":"a""#,
            r#","id":true"#,
            r#","id":[[7]]"#,
        ]);
        let content = prop::sample::select(vec![
            r#","content":{"a":1}"#,
            r#","content":{"a":{"b":[1,null]}}"#,
            r#","content":[1]"#,
            r#","content":{"a":1},"content":{"b":2}"#,
            r#","extra":0,"content":{}"#,
            r#","content":"text""#,
            r#","content":{"a":1,"a":{"c":"\u00e9\n"}}"#,
            r#","content":{"a":{"b":{"c":{"d":[{}]}}}}"#,
            r#","extra":{"a":[[{}]]},"content":{"a":{}}"#,
            "",
        ]);
        let header_extra = prop::sample::select(vec![
            "",
            r#","other":{"x":1}"#,
            r#","other":"x""#,
            r#","deep":[[[[1]]]]"#,
        ]);
        let message = (kind, version, id, header_extra, content).prop_map(
            |(kind, version, id, extra, content)| {
                let fields = format!("{kind}{version}{id}{extra}");
                let fields = fields.strip_prefix(',').unwrap_or(&fields);
                format!(r#"{{"header":{{{fields}}}{content}}}"#)
            },
        );
        prop_oneof![
            6 => message,
            1 => prop::sample::select(vec![
                "1".to_owned(),
                "null".to_owned(),
                r#"[{"type":"update"},{"a":1}]"#.to_owned(),
                r#"{"content":{}}"#.to_owned(),
                r#"{"content":{"a":1},"header":{"type":"update"}}"#.to_owned(),
                r#"{"content":[],"header":{"type":"update"}}"#.to_owned(),
                r#"{"header":[],"content":{}}"#.to_owned(),
                r#"{"header":{"type":"update"},"header":{"type":"update"},"content":{}}"#.to_owned(),
            ]),
        ]
    }

    #[test]
    fn the_usual_frame_is_read_at_once_and_anything_else_one_by_one() {
        let limits = Limits::default();
        let usual = r#"[{"header":{"type":"update","id":1},"content":{"a":1}},{"header":{"type":"nope"},"content":{}}]"#;
        assert_eq!(
            read_messages_at_once(usual, &limits)
                .unwrap()
                .unwrap_err()
                .code,
            ErrorCode::UnknownType
        );
        for other in [
            "[1]",
            r#"[[{"type":"update"},{"a":1}]]"#,
            r#"[{"header":{"type":"update"},"content":{},"content":{}}]"#,
            r#"{"header":{"type":"update"},"content":{}}"#,
        ] {
            assert!(read_messages_at_once(other, &limits).is_none(), "{other}");
            assert!(parse_frame(other.as_bytes(), &limits).is_err(), "{other}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2_000, ..Default::default() })]

        /// The one-pass reading of a frame gives exactly the answer of the element-by-element
        /// one, whatever is wrong with which message.
        #[test]
        fn reading_at_once_agrees_with_reading_one_by_one(
            elements in proptest::collection::vec(element(), 0..5),
            max_messages in 1usize..5,
        ) {
            let text = format!("[{}]", elements.join(","));
            let limits = Limits { max_messages, ..Limits::default() };
            if let Some(at_once) = read_messages_at_once(&text, &limits) {
                proptest::prop_assert_eq!(at_once, read_messages_one_by_one(&text, &limits));
            }
        }

        /// Measuring the usual frame's depth on what was read gives the answer of measuring it
        /// on the text first, as the parser did before (and does for anything else).
        #[test]
        fn depth_on_what_was_read_agrees_with_depth_on_the_text(
            elements in proptest::collection::vec(element(), 0..5),
            max_depth in 1usize..9,
        ) {
            let text = format!("[{}]", elements.join(","));
            let limits = Limits { max_depth, ..Limits::default() };
            let text_first = too_deep_text(&text, &limits).map_or_else(
                || read_messages_one_by_one(&text, &limits),
                Err,
            );
            proptest::prop_assert_eq!(parse_frame(text.as_bytes(), &limits), text_first);
        }

        /// Text the transport checked for UTF-8 gets the answer its bytes get, size limit
        /// included.
        #[test]
        fn text_and_its_bytes_get_the_same_answer(
            elements in proptest::collection::vec(element(), 0..5),
            max_frame_bytes in 1usize..400,
        ) {
            let text = format!("[{}]", elements.join(","));
            let limits = Limits { max_frame_bytes, ..Limits::default() };
            proptest::prop_assert_eq!(
                parse_frame_text(&text, &limits),
                parse_frame(text.as_bytes(), &limits)
            );
        }
    }

    proptest::proptest! {
        /// A string's value is read the same with or without the shortcut for strings that
        /// hold no escape.
        #[test]
        fn strings_are_read_as_json_reads_them(text in "\\PC*|[\"\\\\/\u{0}-\u{1f}a-z]*") {
            let json = serde_json::to_string(&text).unwrap();
            let raw = RawValue::from_string(json).unwrap();
            let read = read_str(&raw);
            proptest::prop_assert_eq!(read.as_deref(), Some(text.as_str()));
        }
    }

    #[test]
    fn to_json_round_trips() {
        let input = br#"[{"header":{"type":"signal","version":"0.1","id":7},"content":{"z":1,"a":[true]}}]"#;
        let frame = parse_frame(input, &Limits::default()).unwrap();
        assert_eq!(frame.to_json().as_bytes(), input);
    }
}
