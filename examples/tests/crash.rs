//! The real server, killed with SIGKILL at random moments while clients write, and restarted
//! on the same data directory, 20 times. After each restart: every update any client saw
//! echoed or acked is in the state; the version never goes back; the epoch is unchanged; a
//! client that resumes with `since`/`epoch` converges by applying only the diffs it missed;
//! the database opens cleanly.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{next_frame, send, stream_client, ServerProcess, TIMEOUT};
use purly::serde_json::{json, Map, Value};
use purly::{parse_server_frame, Mode, Replica};

const ROUNDS: usize = 20;
const WRITERS: usize = 4;

/// What clients were shown, across all rounds.
#[derive(Default)]
struct Shown {
    /// `(writer, n)` of every update echoed to its sender.
    confirmed: Mutex<BTreeSet<(usize, u64)>>,
    /// The highest version any client saw.
    max_seq: AtomicU64,
}

/// Writes `{"w<k>": {"n<n>": n}}` updates with ids, one at a time, until the connection dies.
async fn writer(addr: std::net::SocketAddr, k: usize, shown: Arc<Shown>, start: u64) {
    let mut ws = stream_client(addr, "/crash/stream").await;
    if next_frame(&mut ws).await.is_none() {
        return;
    }
    for n in start.. {
        let frame = json!([{"header": {"type": "update", "id": format!("{k}-{n}")},
                             "content": {format!("w{k}"): {format!("n{n}"): n}}}]);
        if !send(&mut ws, frame.to_string()).await {
            return;
        }
        loop {
            let Some(messages) = next_frame(&mut ws).await else {
                return;
            };
            let mine = messages
                .iter()
                .find(|m| m["header"]["id"] == format!("{k}-{n}"));
            for m in &messages {
                if let Some(seq) = m["header"]["seq"].as_u64() {
                    shown.max_seq.fetch_max(seq, Ordering::SeqCst);
                }
            }
            if mine.is_some() {
                shown.confirmed.lock().unwrap().insert((k, n));
                break;
            }
        }
    }
}

/// A reader that keeps a replica and follows every diff until the connection dies.
async fn follow(addr: std::net::SocketAddr, replica: &mut Replica, path: &str) -> usize {
    let mut ws = stream_client(addr, path).await;
    let mut snapshots = 0;
    while let Some(messages) = next_frame(&mut ws).await {
        let text = Value::Array(messages).to_string();
        for message in parse_server_frame(&text).unwrap() {
            snapshots += usize::from(message.is_snapshot());
            replica.apply(&message).unwrap();
        }
    }
    snapshots
}

fn resume_path(replica: &Replica) -> String {
    match (replica.version(), replica.epoch()) {
        (Some(v), Some(e)) => format!("/crash/stream?since={v}&epoch={e}"),
        _ => "/crash/stream".to_owned(),
    }
}

fn random_below(limit: u64) -> u64 {
    u64::from_str_radix(&purly::random_hex(15), 16).unwrap() % limit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_any_client_was_shown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let shown = Arc::new(Shown::default());
    let mut epoch: Option<String> = None;
    let mut replica = Replica::new(Mode::Stream);
    let mut next_n = 0u64;
    let mut resumed_with_diffs = 0;
    for round in 0..ROUNDS {
        let server = ServerProcess::start(&["--data", &data]).await;
        let addr = server.addr;

        // What a fresh client sees after the restart.
        let mut fresh = stream_client(addr, "/crash/stream").await;
        let snapshot = next_frame(&mut fresh).await.expect("a snapshot");
        let header = &snapshot[0]["header"];
        assert_eq!(header["snapshot"], true);
        let version = header["seq"].as_u64().unwrap();
        let max_seq = shown.max_seq.load(Ordering::SeqCst);
        assert!(
            version >= max_seq,
            "round {round}: version {version} < {max_seq} shown before"
        );
        let this_epoch = header["epoch"].as_str().unwrap().to_owned();
        if let Some(before) = &epoch {
            assert_eq!(&this_epoch, before, "round {round}: the epoch changed");
        }
        let state: Map<String, Value> = snapshot[0]["content"].as_object().cloned().unwrap();
        for (k, n) in shown.confirmed.lock().unwrap().iter() {
            assert_eq!(
                state
                    .get(&format!("w{k}"))
                    .and_then(|w| w.get(format!("n{n}"))),
                Some(&json!(n)),
                "round {round}: confirmed update {k}-{n} is missing"
            );
        }
        drop(fresh);

        // The follower resumes from where it was before the kill, and converges to the state.
        if replica.version().is_some() {
            let mut resumed = replica.clone();
            let path = resume_path(&resumed);
            let catch_up = async {
                let mut ws = stream_client(addr, &path).await;
                let mut snapshots = 0;
                while resumed.version() < Some(version) {
                    let messages = next_frame(&mut ws).await.expect("the missed diffs");
                    for message in parse_server_frame(&Value::Array(messages).to_string()).unwrap()
                    {
                        snapshots += usize::from(message.is_snapshot());
                        resumed.apply(&message).unwrap();
                    }
                }
                snapshots
            };
            let snapshots = tokio::time::timeout(TIMEOUT, catch_up)
                .await
                .expect("resume timed out");
            assert_eq!(
                snapshots, 0,
                "round {round}: the history covers the gap, so diffs only"
            );
            assert_eq!(
                resumed.state(),
                &state,
                "round {round}: the resumed replica diverged"
            );
            resumed_with_diffs += 1;
        }

        // Writers and the follower run; the server is killed at a random moment.
        let writers: Vec<_> = (0..WRITERS)
            .map(|k| tokio::spawn(writer(addr, k, shown.clone(), next_n)))
            .collect();
        next_n += 1_000_000;
        let mut follower = std::mem::take(&mut replica);
        let path = resume_path(&follower);
        let following = tokio::spawn(async move {
            follow(addr, &mut follower, &path).await;
            follower
        });
        tokio::time::sleep(Duration::from_millis(50 + random_below(350))).await;
        server.kill().await;
        for w in writers {
            tokio::time::timeout(TIMEOUT, w)
                .await
                .expect("a writer hung")
                .unwrap();
        }
        replica = tokio::time::timeout(TIMEOUT, following)
            .await
            .expect("the follower hung")
            .unwrap();
        if let Some(seq) = replica.version() {
            shown.max_seq.fetch_max(seq, Ordering::SeqCst);
        }
        epoch = Some(this_epoch);

        // The database opens cleanly after the kill.
        let db = rusqlite::Connection::open(dir.path().join(purly_sqlite::DATABASE_FILE)).unwrap();
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
    }
    let confirmed = shown.confirmed.lock().unwrap().len();
    assert!(
        confirmed > ROUNDS * WRITERS,
        "the writers confirmed only {confirmed} updates"
    );
    assert!(resumed_with_diffs >= ROUNDS - 1);
}
