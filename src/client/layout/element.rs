//! [`Element`]: one element of a layout's flat-DOM model, as a cheap shared handle.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use serde_json::{json, Map, Value};

use super::{Event, Shared};
use crate::lock::lock;

/// What an event handler is: called with the element it is registered on and the event.
pub(crate) type Handler = Box<dyn FnMut(&Element, &Event) + Send>;

/// A child of an element: text, or another element.
#[derive(Clone)]
pub enum Child {
    /// A text node.
    Text(String),
    /// An element.
    Element(Element),
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Child::Text(text) => fmt::Debug::fmt(text, f),
            Child::Element(element) => fmt::Debug::fmt(element, f),
        }
    }
}

/// One element of a [`Layout`](crate::Layout): a handle that is cheap to clone and to move into
/// event handlers.
///
/// Every change (attribute, style, children, handler) is recorded at once and sent by the
/// layout's next [`sync`](crate::Layout::sync). When the last handle to an element is dropped,
/// and no parent holds it as a child, the element is removed from the model. An element is kept
/// alive by its parent's children, so removing it from its parent and dropping your handles
/// removes it.
#[derive(Clone)]
pub struct Element {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    key: String,
    tag: String,
    shared: Weak<Mutex<Shared>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    attributes: Map<String, Value>,
    style: Map<String, Value>,
    children: Vec<Child>,
    handlers: HashMap<String, Handler>,
    /// The element this one was last appended to (weak: parents own their children).
    parent: Option<Weak<Inner>>,
}

impl Element {
    /// A new element; `announce` records its creation in the model (the root is never
    /// announced: the page renders into its own container).
    pub(crate) fn new(
        key: String,
        tag: &str,
        shared: &Arc<Mutex<Shared>>,
        announce: bool,
    ) -> Element {
        let inner = Arc::new(Inner {
            key: key.clone(),
            tag: tag.to_owned(),
            shared: Arc::downgrade(shared),
            state: Mutex::new(State::default()),
        });
        let element = Element { inner };
        let mut shared = lock(shared);
        shared
            .elements
            .insert(key.clone(), Arc::downgrade(&element.inner));
        if announce {
            shared.changes.record(patch(
                &key,
                json!({
                    "tagName": tag,
                    "attributes": {"key": key, "parent_key": null, "style": {}},
                    "children": [],
                }),
            ));
        }
        element
    }

    pub(crate) fn upgrade(weak: &Weak<Inner>) -> Option<Element> {
        weak.upgrade().map(|inner| Element { inner })
    }

    /// The element's key in the model.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The element's tag name.
    pub fn tag(&self) -> &str {
        &self.inner.tag
    }

    /// Sets an attribute (`value`, `href`, `class`, ...). `null` removes it.
    pub fn attr(&self, name: &str, value: impl Into<Value>) -> &Self {
        let value = value.into();
        put(&mut lock(&self.inner.state).attributes, name, &value);
        self.record(json!({ "attributes": { name: value } }));
        self
    }

    /// The current value of an attribute: as set here, or as the page last reported it (an
    /// input's `value`, when a handler asked for it with `update`).
    pub fn attribute(&self, name: &str) -> Option<Value> {
        lock(&self.inner.state).attributes.get(name).cloned()
    }

    /// Sets a style property (`background_color`, `background-color` and `backgroundColor` all
    /// work). `null` removes it.
    pub fn style(&self, name: &str, value: impl Into<Value>) -> &Self {
        let value = value.into();
        put(&mut lock(&self.inner.state).style, name, &value);
        self.record(json!({ "attributes": { "style": { name: value } } }));
        self
    }

    /// Sets several style properties at once, like Python's `div.style.update(...)`.
    pub fn styles<'a>(&self, properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> &Self {
        for (name, value) in properties {
            self.style(name, value);
        }
        self
    }

    /// The current value of a style property.
    pub fn style_value(&self, name: &str) -> Option<Value> {
        lock(&self.inner.state).style.get(name).cloned()
    }

    /// Appends a text child.
    pub fn text(&self, text: impl Into<String>) -> &Self {
        self.edit_children(|children| children.push(Child::Text(text.into())));
        self
    }

    /// Replaces every child with one text.
    pub fn set_text(&self, text: impl Into<String>) -> &Self {
        let text = text.into();
        self.edit_children(|children| *children = vec![Child::Text(text)]);
        self
    }

    /// Appends an element as the last child.
    pub fn append(&self, child: &Element) -> &Self {
        lock(&child.inner.state).parent = Some(Arc::downgrade(&self.inner));
        child.record(json!({ "attributes": { "parent_key": self.key() } }));
        self.edit_children(|children| children.push(Child::Element(child.clone())));
        self
    }

    /// Removes an element from the children; returns whether it was one.
    pub fn remove(&self, child: &Element) -> bool {
        let mut removed = false;
        self.edit_children(|children| {
            let before = children.len();
            children.retain(|c| !matches!(c, Child::Element(e) if e.key() == child.key()));
            removed = children.len() != before;
        });
        if removed {
            lock(&child.inner.state).parent = None;
        }
        removed
    }

    /// Removes every child.
    pub fn clear(&self) -> &Self {
        self.edit_children(Vec::clear);
        self
    }

    /// The children, in order.
    pub fn children(&self) -> Vec<Child> {
        lock(&self.inner.state).children.clone()
    }

    /// Runs `handler` when `event` (`click`, `change`, `input`, ...) fires on the page.
    pub fn on(&self, event: &str, handler: impl FnMut(&Element, &Event) + Send + 'static) -> &Self {
        self.on_with(event, &[], &[], handler)
    }

    /// Like [`on`](Element::on), and the page also reports the event fields in `keys` (e.g.
    /// `clientX`, `key`) in [`Event::get`], and first sends the element properties in `update`
    /// (e.g. `value`, `checked`), which [`attribute`](Element::attribute) then returns.
    ///
    /// The handler gets this element as its first argument: capture other elements freely, but
    /// not this one (a handler that owns its own element keeps it alive forever).
    pub fn on_with(
        &self,
        event: &str,
        keys: &[&str],
        update: &[&str],
        handler: impl FnMut(&Element, &Event) + Send + 'static,
    ) -> &Self {
        let callback = format!("{}-{}", self.key(), event.to_ascii_lowercase());
        lock(&self.inner.state)
            .handlers
            .insert(callback.clone(), Box::new(handler));
        let spec = json!({ "callback": callback, "keys": keys, "update": update });
        self.record(json!({ "attributes": { format!("on{}", event.to_ascii_lowercase()): spec } }));
        self
    }

    /// Applies what another client changed (the page reporting an input's value) to this
    /// element's own copy, without recording it as a change of ours.
    pub(crate) fn absorb(&self, diff: &Map<String, Value>) {
        let Some(Value::Object(attributes)) = diff.get("attributes") else {
            return;
        };
        let mut state = lock(&self.inner.state);
        for (name, value) in attributes {
            match (name.as_str(), value) {
                ("style", Value::Object(style)) => {
                    for (property, value) in style {
                        put(&mut state.style, property, value);
                    }
                }
                ("key" | "parent_key" | "style", _) => {}
                (name, _) if name.starts_with("on") => {}
                (name, value) => put(&mut state.attributes, name, value),
            }
        }
    }

    /// Runs the handler registered as `callback`, outside every lock (it may change elements).
    pub(crate) fn dispatch(&self, callback: &str, event: &Event) -> bool {
        let Some(mut handler) = lock(&self.inner.state).handlers.remove(callback) else {
            return false;
        };
        handler(self, event);
        lock(&self.inner.state)
            .handlers
            .entry(callback.to_owned())
            .or_insert(handler);
        true
    }

    fn edit_children(&self, edit: impl FnOnce(&mut Vec<Child>)) {
        let serialized: Vec<Value> = {
            let mut state = lock(&self.inner.state);
            edit(&mut state.children);
            state
                .children
                .iter()
                .map(|child| match child {
                    Child::Text(text) => Value::String(text.clone()),
                    Child::Element(e) => json!({ "type": "ref", "ref": e.key() }),
                })
                .collect()
        };
        self.record(json!({ "children": serialized }));
    }

    fn record(&self, change: Value) {
        let Some(shared) = self.inner.shared.upgrade() else {
            return;
        };
        let signatures = lock(&shared).signatures;
        // Walked without the shared lock: reading a parent may drop the last handle to it.
        let signed = if signatures {
            self.lineage()
        } else {
            Vec::new()
        };
        let mut shared = lock(&shared);
        shared.changes.record(patch(self.key(), change));
        for key in signed {
            shared.next_signature += 1;
            let signature = format!("{:x}", shared.next_signature);
            shared
                .changes
                .record(patch(&key, json!({ "signature": signature })));
        }
    }

    /// This element's key and its ancestors' up to (not including) the root, whose signature
    /// the original page never reads. Bounded, in case elements were appended in a cycle.
    fn lineage(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut current = Some(self.clone());
        while let Some(element) = current.take() {
            if element.key() == "root" || keys.len() >= 1024 {
                break;
            }
            keys.push(element.key().to_owned());
            let parent = lock(&element.inner.state).parent.clone();
            current = parent.as_ref().and_then(Element::upgrade);
        }
        keys
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut shared = lock(&shared);
            shared.elements.remove(&self.key);
            let mut removal = Map::new();
            removal.insert(self.key.clone(), Value::Null);
            shared.changes.record(removal);
        }
    }
}

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} key={:?}>", self.inner.tag, self.inner.key)
    }
}

/// Sets `name` in a map the way a merge patch does: `null` removes it.
fn put(map: &mut Map<String, Value>, name: &str, value: &Value) {
    match value {
        Value::Null => map.remove(name),
        value => map.insert(name.to_owned(), value.clone()),
    };
}

fn patch(key: &str, change: Value) -> Map<String, Value> {
    let mut patch = Map::new();
    patch.insert(key.to_owned(), change);
    patch
}
