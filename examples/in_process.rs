//! Two in-process clients share one model: a page-like client that renders a flat-DOM model,
//! and a bot that puts a coral square on it and answers its "clicks" (signals).
//!
//! Run with `cargo run --example in_process`.
#![allow(clippy::print_stdout)]

use purly::serde_json::json;
use purly::{Engine, ServerMessageKind};
use purly_channel::{Client, ClientError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ClientError> {
    let engine = Engine::default();
    let mut page = Client::connect(&engine, "model")
        .await
        .expect("a valid model name");
    let mut bot = Client::connect(&engine, "model")
        .await
        .expect("a valid model name");

    // The bot builds the page: a root with one coral div.
    bot.update(json!({
        "root": {"tagName": "div", "children": [{"type": "ref", "ref": "square"}],
                 "attributes": {"key": "root", "parent_key": null}},
        "square": {"tagName": "div", "children": [],
                   "attributes": {"key": "square", "parent_key": "root",
                                  "style": {"height": "20px", "width": "20px",
                                            "background_color": "coral"},
                                  "onClick": {"callback": "grow", "keys": ["clientX"]}}}
    }))
    .await?;
    bot.settle().await?;

    // The page receives its snapshot and the bot's diff in one batch.
    let batch = page.recv().await.expect("the page is connected");
    println!(
        "page received {} message(s), now at version {:?}",
        batch.len(),
        page.replica().version()
    );
    println!(
        "square style: {}",
        page.state()["square"]["attributes"]["style"]
    );

    // A click on the page: the signal of PROTOCOL.md section 6.
    page.signal(json!({"square": {"callback": "grow", "event": {"clientX": 7}}}))
        .await?;
    let clicked = loop {
        let batch = bot.recv().await.expect("the bot is connected");
        if let Some(signal) = batch.iter().find(|m| m.kind() == ServerMessageKind::Signal) {
            break signal.clone();
        }
    };
    println!("bot got a click: {}", clicked.content_json());

    // The bot reacts with an update; only the changed leaf travels.
    bot.update(json!({"square": {"attributes": {"style": {"width": "40px"}}}}))
        .await?;
    bot.settle().await?;
    let batch = page.recv().await.expect("the page is connected");
    println!("diff sent to the page: {}", batch[0].content_json());
    println!(
        "square style now: {}",
        page.state()["square"]["attributes"]["style"]
    );
    assert_eq!(
        page.state(),
        &engine.state("model").expect("the model exists")
    );
    Ok(())
}
