//! [`Layout`]: build a live web page from Rust, as the original purly `Layout` did.
//!
//! A layout owns a [`ClientConnection`] to a model rendered by purly's page. Elements made with
//! [`Layout::html`] record every change; [`Layout::sync`] sends them as merge patches and waits
//! until the server confirmed them; [`Layout::serve`] runs event handlers when the page reports
//! events. The layout works over any transport (in process or WebSocket) and has no global
//! state: two layouts are two independent pages.

mod changes;
mod element;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use serde_json::{Map, Value};
use thiserror::Error;

use super::connection::ClientConnection;
use crate::lock::lock;
use crate::protocol::{ServerMessage, ServerMessageKind};
use crate::token::random_hex;

use changes::Changes;
pub use element::{Child, Element};

/// Why a layout stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LayoutError<E: std::error::Error + 'static> {
    /// Sending failed.
    #[error(transparent)]
    Connection(E),
    /// The connection closed before the changes were confirmed.
    #[error("the connection closed")]
    Closed,
}

/// An event the page reported: the fields its handler asked for (`keys`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    key: String,
    callback: String,
    fields: Map<String, Value>,
}

impl Event {
    /// The key of the element the event fired on.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The id of the handler it is for.
    pub fn callback(&self) -> &str {
        &self.callback
    }

    /// A field of the DOM event (`clientX`, `key`, ...), if the handler asked for it.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// Every field reported.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

/// What elements share with their layout: recorded changes, and how to find an element by key.
#[derive(Default)]
pub(crate) struct Shared {
    changes: Changes,
    elements: HashMap<String, Weak<element::Inner>>,
    next_key: u64,
    /// Whether changes bump `signature`s (see [`Layout::with_signatures`]).
    signatures: bool,
    next_signature: u64,
}

/// A page built from Rust over a [`ClientConnection`] (PROTOCOL.md section 6).
///
/// ```
/// use purly::{Engine, Layout};
/// use purly_channel::Client;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::default();
/// let mut layout = Layout::new(Client::connect(&engine, "model").await?);
///
/// let div = layout.html("div");
/// div.styles([("height", "20px"), ("width", "20px"), ("background_color", "coral")]);
/// layout.root().append(&div);
/// layout.sync().await?;
///
/// let state = engine.state("model").unwrap();
/// assert_eq!(state[div.key()]["attributes"]["style"]["background_color"], "coral");
/// assert_eq!(state["root"]["children"][0]["ref"], div.key());
/// # Ok(())
/// # }
/// ```
pub struct Layout<C: ClientConnection> {
    connection: C,
    shared: Arc<Mutex<Shared>>,
    root: Element,
    prefix: String,
}

impl<C: ClientConnection> Layout<C> {
    /// A layout that draws on the model behind `connection`. Its root is the page itself:
    /// append to [`root`](Layout::root) to put elements on the page.
    pub fn new(connection: C) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let root = Element::new("root".to_owned(), "div", &shared, false);
        // Keys unique to this layout, so that several layouts can share one model.
        let prefix = random_hex(12);
        Layout {
            connection,
            shared,
            root,
            prefix,
        }
    }

    /// Like [`new`](Layout::new), and every change also gives the changed element and each of
    /// its ancestors a new `signature`, as the original purly `Layout` did. The original purly
    /// page (its compiled React page) re-renders an element only when its signature changes;
    /// purly's own page does not need signatures, which only make diffs larger.
    pub fn with_signatures(connection: C) -> Self {
        let layout = Layout::new(connection);
        lock(&layout.shared).signatures = true;
        layout
    }

    /// Creates an element (`"div"`, `"button"`, `"input"`...). It is in the model once synced,
    /// and on the page once appended to the root or to an element on the page.
    pub fn html(&self, tag: &str) -> Element {
        let key = {
            let mut shared = lock(&self.shared);
            shared.next_key += 1;
            format!("{}{}", self.prefix, shared.next_key)
        };
        Element::new(key, tag, &self.shared, true)
    }

    /// The page's top-level element list (the model's `root`).
    pub fn root(&self) -> &Element {
        &self.root
    }

    /// Who has the page open: the other connections' presences, by presence id (PROTOCOL.md
    /// section 11), as of the last batch received. Pages that set no presence are not in it.
    pub fn presences(&self) -> &Map<String, Value> {
        self.connection.presences()
    }

    /// The connection underneath.
    pub fn connection(&self) -> &C {
        &self.connection
    }

    /// Gives the connection back (e.g. to close it). Changes not synced are not sent.
    pub fn into_connection(self) -> C {
        self.connection
    }

    /// Sends every recorded change and waits until the server confirmed them all. Events that
    /// arrive meanwhile are handled, and what their handlers change is sent too.
    pub async fn sync(&mut self) -> Result<(), LayoutError<C::Error>> {
        loop {
            let patches = lock(&self.shared).changes.take();
            for patch in patches {
                self.connection
                    .update(Value::Object(patch))
                    .await
                    .map_err(LayoutError::Connection)?;
            }
            if self.connection.replica().pending() == 0 && lock(&self.shared).changes.is_empty() {
                return Ok(());
            }
            let batch = self.connection.recv().await.ok_or(LayoutError::Closed)?;
            self.handle(&batch);
        }
    }

    /// Handles events until the connection closes: each handler runs when the page reports its
    /// event, and what it changed is synced right after.
    pub async fn serve(&mut self) -> Result<(), LayoutError<C::Error>> {
        loop {
            self.sync().await?;
            match self.connection.recv().await {
                Some(batch) => self.handle(&batch),
                None => return Ok(()),
            }
        }
    }

    /// Like [`serve`](Layout::serve), until `stop` completes (e.g. Ctrl-C) or the connection
    /// closes.
    pub async fn serve_until(
        &mut self,
        stop: impl Future<Output = ()>,
    ) -> Result<(), LayoutError<C::Error>> {
        let mut stop = std::pin::pin!(stop);
        loop {
            self.sync().await?;
            let received = {
                let next = std::pin::pin!(self.connection.recv());
                match first_of(next, stop.as_mut()).await {
                    Either::Left(received) => received,
                    Either::Right(()) => return Ok(()),
                }
            };
            match received {
                Some(batch) => self.handle(&batch),
                None => return Ok(()),
            }
        }
    }

    /// Applies one received batch: others' changes to our elements' attributes, then events.
    fn handle(&mut self, batch: &[ServerMessage]) {
        for message in batch {
            // A message this layout cannot read carries nothing for its elements.
            let Ok(content) = message.content() else {
                continue;
            };
            match message.kind() {
                ServerMessageKind::Update => {
                    for (key, diff) in content {
                        if let (Some(element), Value::Object(diff)) = (self.element(key), diff) {
                            element.absorb(diff);
                        }
                    }
                }
                ServerMessageKind::Signal => {
                    for (key, signal) in content {
                        let Some(callback) = signal.get("callback").and_then(Value::as_str) else {
                            continue;
                        };
                        let Some(element) = self.element(key) else {
                            continue;
                        };
                        let event = Event {
                            key: key.clone(),
                            callback: callback.to_owned(),
                            fields: match signal.get("event") {
                                Some(Value::Object(fields)) => fields.clone(),
                                _ => Map::new(),
                            },
                        };
                        element.dispatch(callback, &event);
                    }
                }
                _ => {}
            }
        }
    }

    fn element(&self, key: &str) -> Option<Element> {
        let weak = lock(&self.shared).elements.get(key).cloned()?;
        Element::upgrade(&weak)
    }
}

impl<C: ClientConnection> fmt::Debug for Layout<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("root", &self.root)
            .field("elements", &lock(&self.shared).elements.len())
            .finish_non_exhaustive()
    }
}

enum Either<L, R> {
    Left(L),
    Right(R),
}

/// Waits for whichever of two futures finishes first (the core crate has no runtime).
async fn first_of<L: Future + Unpin, R: Future + Unpin>(
    mut left: L,
    mut right: R,
) -> Either<L::Output, R::Output> {
    std::future::poll_fn(|cx| {
        use std::pin::Pin;
        use std::task::Poll;
        if let Poll::Ready(value) = Pin::new(&mut left).poll(cx) {
            return Poll::Ready(Either::Left(value));
        }
        if let Poll::Ready(value) = Pin::new(&mut right).poll(cx) {
            return Poll::Ready(Either::Right(value));
        }
        Poll::Pending
    })
    .await
}
