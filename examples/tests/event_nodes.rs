//! An event stream's POSTs may reach any node (PROTOCOL.md section 10): two real server
//! processes on one real Redis; the stream is opened on one, frames are POSTed to both, and
//! the node that does not hold the session forwards each through Redis to the one that does,
//! answering only once it was handed over, so one client's frames keep their order.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../stores/redis/tests/common/mod.rs"]
mod redis_server;

use common::events::{open, post, Event};
use common::ServerProcess;
use purly::serde_json::{json, Value};
use redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_any_node_reach_the_session_in_order() {
    let Some(redis) = RedisServer::start("everysec") else {
        return;
    };
    let one = ServerProcess::start(&["--redis", &redis.url()]).await;
    let two = ServerProcess::start(&["--redis", &redis.url()]).await;
    let mut events = open(one.addr, "/m/events?client=events-key-01", &[]).await;
    assert_eq!(events.status, 200);
    let token = events.session().await;
    assert!(token.contains('.'), "a token names its node: {token}");
    events.message().await;
    // Alternating nodes, one POST after the other, as the client library sends them.
    for id in 1..=10u64 {
        let node = if id % 2 == 0 { &two } else { &one };
        let frame = json!([{"header": {"type": "update", "id": id}, "content": {"n": id}}]);
        let (status, body) = post(
            node.addr,
            &format!("/m/send?session={token}"),
            frame.to_string(),
        )
        .await;
        assert_eq!(
            status,
            202,
            "POST {id} to node {}: {body}",
            if id % 2 == 0 { 2 } else { 1 }
        );
    }
    let mut echoed = Vec::new();
    while echoed.len() < 10 {
        let Event::Message { data, .. } = events.message().await else {
            continue;
        };
        for message in purly::serde_json::from_str::<Value>(&data)
            .unwrap()
            .as_array()
            .unwrap()
        {
            if let Some(id) = message["header"]["id"].as_u64() {
                echoed.push(id);
            }
        }
    }
    assert_eq!(echoed, (1..=10).collect::<Vec<_>>(), "in the order sent");
    // Through the other node too: another model's route, an unknown node, an unknown session.
    let other_model = format!("/other/send?session={token}");
    assert_eq!(post(two.addr, &other_model, "[]").await.0, 404);
    assert_eq!(
        post(two.addr, "/m/send?session=nonode.abc", "[]").await.0,
        404
    );
    let (node, _) = token.split_once('.').unwrap();
    assert_eq!(
        post(two.addr, &format!("/m/send?session={node}.nothing"), "[]")
            .await
            .0,
        404
    );
}
