//! The original purly getting-started, in Rust.
//!
//! ```text
//! cargo run --example server            # in one terminal
//! # open http://127.0.0.1:8000/model in a browser
//! cargo run --example getting_started   # in another: a 20px coral square appears
//! ```
//!
//! `cargo run --example getting_started -- ws://HOST:PORT/PATH/stream` draws elsewhere.
#![allow(clippy::print_stdout)]

use purly::Layout;
use purly_hyper::WsClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8000/model/stream".to_owned());
    let mut layout = Layout::new(WsClient::connect(&url).await?);

    let div = layout.html("div");
    div.styles([
        ("height", "20px"),
        ("width", "20px"),
        ("background_color", "coral"),
    ]);
    layout.root().append(&div);
    layout.sync().await?;

    println!("a coral square is on the page of {url}");
    layout.into_connection().close().await;
    Ok(())
}
