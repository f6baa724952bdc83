//! Small JSON values built from fuzz input: few keys, so that updates overlap the model.
#![allow(dead_code)]

use arbitrary::Arbitrary;
use purly::serde_json::{Map, Value};

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Key {
    A,
    B,
    C,
    Style,
    Proto,
    /// Keys that need escaping in JSON pointers or JSON strings.
    Slash,
    Tilde,
    Quote,
    Empty,
    Unicode,
    /// The fuzz targets' models refuse an update that sets this key.
    Reject,
}

impl Key {
    pub fn name(self) -> &'static str {
        match self {
            Key::A => "a",
            Key::B => "b",
            Key::C => "c",
            Key::Style => "style",
            Key::Proto => "__proto__",
            Key::Slash => "a/b",
            Key::Tilde => "~0~1",
            Key::Quote => "q\"\\u",
            Key::Empty => "",
            Key::Unicode => "é\u{2028}",
            Key::Reject => "reject",
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i8),
    Float(i8),
    Text(Key),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

impl Json {
    pub fn value(&self, depth: usize) -> Value {
        match self {
            _ if depth == 0 => Value::Null,
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Float(f) => Value::from(f64::from(*f) / 4.0),
            Json::Text(k) => Value::from(k.name()),
            Json::Array(items) => Value::Array(items.iter().map(|j| j.value(depth - 1)).collect()),
            Json::Object(entries) => Value::Object(object(entries, depth)),
        }
    }
}

pub fn object(entries: &[(Key, Json)], depth: usize) -> Map<String, Value> {
    entries
        .iter()
        .map(|(k, j)| (k.name().to_owned(), j.value(depth.saturating_sub(1))))
        .collect()
}
