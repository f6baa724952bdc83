//! Writes and reads the Redis fault tests share: receiving with a timeout, following a model
//! to a version, and writers on two nodes whose every echoed update is checked to be in
//! exactly one version.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;

use purly::serde_json::{json, Map, Value};
use purly::{merge_diff, Engine, ServerMessage};
use purly_channel::Client;

use crate::common::TIMEOUT;

pub(crate) async fn recv(client: &mut Client) -> Vec<ServerMessage> {
    tokio::time::timeout(TIMEOUT, client.recv())
        .await
        .expect("timed out waiting for a batch")
        .expect("the client closed")
}

/// Receives until `client` holds `version`, recording every diff as (seq, content).
pub(crate) async fn follow(
    client: &mut Client,
    version: u64,
    diffs: &mut Vec<(u64, Map<String, Value>)>,
) {
    while client.replica().version() < Some(version) {
        for message in recv(client).await {
            if let (Some(seq), false) = (message.seq(), message.is_snapshot()) {
                diffs.push((seq, message.content().unwrap().clone()));
            }
        }
    }
}

/// Writers of `model` on two nodes, each update waiting for its answer; afterwards, from a reader's
/// diffs: every echoed update in exactly one version, and every node equal to the replay.
pub(crate) async fn write_through(
    nodes: [&Engine; 2],
    model: &str,
    reader: &mut Client,
    fault: impl std::future::Future<Output = ()>,
) -> usize {
    const WRITERS: usize = 4;
    const EACH: usize = 50;
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| {
            let node = nodes[k % 2].clone();
            let model = model.to_owned();
            tokio::spawn(async move {
                let mut client = Client::connect(&node, &model).await.unwrap();
                let mut echoed = Vec::new();
                for i in 0..EACH {
                    let tag = format!("{k}-{i}");
                    if client
                        .update(json!({ "last": tag, "log": { tag.clone(): true } }))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    match tokio::time::timeout(TIMEOUT, client.settle()).await {
                        Ok(Ok(())) => echoed.push(tag),
                        // The model was given up (its store failed): a new connection.
                        _ => client = Client::connect(&node, &model).await.unwrap(),
                    }
                }
                echoed
            })
        })
        .collect();
    fault.await;
    let mut echoed = Vec::new();
    for writer in writers {
        echoed.extend(
            tokio::time::timeout(TIMEOUT * 3, writer)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // The last version either node has made (the other may still be catching up).
    let version = nodes
        .iter()
        .filter_map(|node| node.read(model, |_, v| v))
        .max()
        .unwrap();
    let mut diffs = Vec::new();
    follow(reader, version, &mut diffs).await;
    let mut versions_of: HashMap<String, usize> = HashMap::new();
    for (_, diff) in &diffs {
        for tag in diff
            .get("log")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            *versions_of.entry(tag.0.clone()).or_default() += 1;
        }
    }
    assert!(
        versions_of.values().all(|n| *n == 1),
        "an update in two versions"
    );
    for tag in &echoed {
        assert_eq!(
            versions_of.get(tag),
            Some(&1),
            "{tag} echoed, not in the log once"
        );
    }
    let mut replay = Map::new();
    for (_, diff) in diffs {
        merge_diff(&mut replay, diff);
    }
    assert_eq!(reader.state(), &replay);
    echoed.len()
}
