//! The client side of the protocol: a [`Replica`] of one model ("server state + my pending
//! changes"), the [`ClientConnection`] every client transport offers, and the [`Layout`] that
//! drives purly's page from Rust. Nothing here imports the server side.

mod connection;
mod layout;
mod replica;

pub use connection::ClientConnection;
pub use layout::{Child, Element, Event, Layout, LayoutError};
pub use replica::{Replica, ReplicaError};
