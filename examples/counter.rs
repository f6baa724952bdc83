//! An interactive page driven from Rust: a button that counts its clicks, and a text field
//! echoed into a heading as you type. Handlers run in this program; the page only reports events.
//!
//! ```text
//! cargo run --example server            # in one terminal
//! cargo run --example counter           # in another; then open http://127.0.0.1:8000/counter
//! ```
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use purly::Layout;
use purly_hyper::WsClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8000/counter/stream".to_owned());
    let mut layout = Layout::new(WsClient::connect(&url).await?);

    let title = layout.html("h1");
    title.set_text("clicked 0 times");
    let button = layout.html("button");
    button
        .text("click me")
        .styles([("font_size", "18px"), ("padding", "6px 14px")]);
    let clicks = Arc::new(AtomicU32::new(0));
    let shown = title.clone();
    button.on("click", move |_, _| {
        let n = clicks.fetch_add(1, Ordering::SeqCst) + 1;
        shown.set_text(format!("clicked {n} time{}", if n == 1 { "" } else { "s" }));
    });

    let input = layout.html("input");
    input.attr("placeholder", "type here");
    let echo = layout.html("h2");
    echo.style("color", "coral");
    let mirror = echo.clone();
    input.on_with("change", &[], &["value"], move |input, _| {
        let text = input
            .attribute("value")
            .and_then(|v| v.as_str().map(str::to_owned));
        mirror.set_text(text.unwrap_or_default());
    });

    let root = layout.root();
    root.append(&title)
        .append(&button)
        .append(&input)
        .append(&echo);
    layout.sync().await?;
    println!(
        "open {} in a browser; Ctrl-C to stop",
        url.trim_end_matches("/stream").replace("ws", "http")
    );
    layout
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
