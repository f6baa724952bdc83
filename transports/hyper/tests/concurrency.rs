//! Many clients at once over real sockets: convergence, and a stuck reader that slows no one.
#![allow(clippy::unwrap_used)]

mod common;

use common::{stream_client, Server};
use futures_util::{SinkExt, StreamExt};
use purly::serde_json::json;
use purly::{parse_server_frame, Config, Mode, Replica, ServerMessageKind};
use purly_hyper::{Purly, ServerConfig, WsClient};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_writing_overlapping_keys_converge() {
    const CLIENTS: usize = 200;
    const UPDATES: usize = 5;
    let server = Server::start(Purly::new(common::engine())).await;
    let url = server.url("/shared/stream");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(common::within(WsClient::connect(&url)).await.unwrap());
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                for n in 0..UPDATES {
                    let key = format!("k{}", (i + n) % 10);
                    client
                        .update(json!({ key: {"by": i, "n": n}, "last": i }))
                        .await
                        .unwrap();
                }
                tokio::time::timeout(common::TIMEOUT, client.settle())
                    .await
                    .unwrap()
                    .unwrap();
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(common::within(task).await.unwrap());
    }
    let (_, state) = common::get(&server, "/shared/state", &[]).await;
    let version = server.purly.engine().read("shared", |_, v| v).unwrap();
    assert!(version > 0);
    for client in &mut clients {
        while client.replica().version() < Some(version) {
            tokio::time::timeout(common::TIMEOUT, client.recv())
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(purly::serde_json::to_string(client.state()).unwrap(), state);
    }
}

/// Three readers follow `model` while a writer sends `DIFFS` diffs of 10 KB each (20 MB in
/// all: more than loopback socket buffers hold, so a client that does not read overflows its
/// queue). Returns how long the readers took to have every diff, and the state they agree on.
///
/// The writer floods on purpose, so the server must not rate-limit it ([`flood_server`]): a
/// refused frame would leave the readers waiting for a version that never comes. The writer's
/// echoes are read, and the first refusal among them fails the test with its reason.
async fn readers_follow_a_writer(server: &Server, model: &str) -> (std::time::Duration, String) {
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut reader =
            common::within(WsClient::connect(&server.url(&format!("/{model}/stream"))))
                .await
                .unwrap();
        common::within(reader.recv()).await.unwrap(); // the snapshot: it has joined
        readers.push(reader);
    }
    // The writer reads its own echoes, as any client must, and keeps at most `WINDOW` frames
    // unconfirmed, as apps do: one that writes far ahead of what it reads has its unread
    // confirmations outgrow its queue (256 KiB here, 25 echoes), and is disconnected (1013).
    const WINDOW: u64 = 8;
    let (mut writer, mut echoes) = stream_client(server, model).await.split();
    let (refused_tx, mut refused) = tokio::sync::oneshot::channel();
    let (echoed_tx, mut echoed) = tokio::sync::watch::channel(0u64);
    let drain = tokio::spawn(async move {
        while let Some(Ok(message)) = echoes.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let batch = parse_server_frame(&text).unwrap();
            if let Some(error) = batch.iter().find(|m| m.kind() == ServerMessageKind::Error) {
                let _ = refused_tx.send(error.json().to_owned());
                return;
            }
            if let Some(seq) = batch.iter().filter_map(|m| m.seq()).max() {
                let _ = echoed_tx.send(seq);
            }
        }
    });
    let started = std::time::Instant::now();
    let readers: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                while reader.replica().version() < Some(DIFFS) {
                    let batch = tokio::time::timeout(common::TIMEOUT, reader.recv())
                        .await
                        .unwrap();
                    assert!(batch.is_some(), "a reader stopped: {:?}", reader.ended());
                }
                reader
            })
        })
        .collect();
    let padding = "p".repeat(10_000);
    let base = *echoed.borrow();
    for i in 1..=DIFFS {
        common::within(echoed.wait_for(|&seq| seq + WINDOW >= base + i))
            .await
            .expect("the writer's echoes stopped");
        let frame = common::update(&format!(
            r#"{{"row{}":{{"i":{i},"pad":"{i}{padding}"}}}}"#,
            i % 50
        ));
        writer.send(Message::text(frame)).await.unwrap();
    }
    let mut finished = Vec::new();
    for reader in readers {
        let reader = common::within(async {
            tokio::select! {
                reader = reader => reader,
                Ok(error) = &mut refused => panic!("the server refused a frame: {error}"),
            }
        });
        finished.push(reader.await.unwrap());
    }
    let took = started.elapsed();
    drain.abort();
    let (_, state) = common::get(server, &format!("/{model}/state"), &[]).await;
    for reader in &finished {
        assert!(
            purly::serde_json::to_string(reader.state()).unwrap() == state,
            "a reader diverged"
        );
    }
    (took, state)
}

const DIFFS: u64 = 2_000;

/// A server for [`readers_follow_a_writer`]: `config`, and no rate limit on the writer, which
/// sends 20 MB as fast as the socket takes it (more than the default limit's burst).
async fn flood_server(config: Config) -> Server {
    let mut server_config = ServerConfig::default();
    server_config.rate_limit = None;
    let purly = Purly::builder(common::engine_with(config))
        .config(server_config)
        .build();
    Server::start(purly).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_slow_the_others() {
    let mut config = Config::default();
    config.max_queued_bytes = 256 << 10;
    let server = flood_server(config).await;
    // The same run twice on one server, side by side: without a stuck client, then with one
    // that never reads until the end. The readers' pace is what is compared.
    let (alone, _) = readers_follow_a_writer(&server, "free").await;
    let mut stuck = stream_client(&server, "m").await;
    let (with_stuck, state) = readers_follow_a_writer(&server, "m").await;
    // A stuck client that held the others back would stall them until it read (here: never,
    // so the run would time out), or slow each diff; a generous bound leaves room for the
    // machine's noise and for the stuck client's one overflow.
    assert!(
        with_stuck <= alone * 3 + std::time::Duration::from_millis(500),
        "the readers took {with_stuck:?} with a stuck client, {alone:?} without"
    );
    // When it reads again, the stuck client converges (from a fresh snapshot).
    let mut replica = Replica::new(Mode::Stream);
    let mut snapshots = 0;
    while replica.version() < Some(DIFFS) {
        let message = tokio::time::timeout(common::TIMEOUT, stuck.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let batch = parse_server_frame(&text).unwrap();
            snapshots += batch.iter().filter(|m| m.is_snapshot()).count();
            replica.receive(&batch).unwrap();
        }
    }
    assert!(
        snapshots >= 2,
        "the stuck client should have been resynchronized"
    );
    assert!(
        purly::serde_json::to_string(replica.state()).unwrap() == state,
        "the stuck client diverged"
    );
}
