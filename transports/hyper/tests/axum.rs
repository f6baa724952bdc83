//! purly mounted under a prefix inside an axum app: the app's own routes keep working.
#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::get;
use axum::Router;
use common::{get_from, next_frame, raw, send, update};
use purly_hyper::Purly;

#[tokio::test]
async fn mounted_under_sync_beside_the_apps_routes() {
    let purly = Purly::new(common::engine());
    let app = Router::new()
        .route("/api/hello", get(|| async { "hello from the app" }))
        .nest_service("/sync", purly.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut ws = raw(
        &format!("ws://{addr}/sync/m/stream"),
        Some("purly.stream"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(next_frame(&mut ws).await[0]["header"]["snapshot"], true);
    send(&mut ws, &update(r#"{"a":1}"#)).await;
    assert_eq!(next_frame(&mut ws).await[0]["content"]["a"], 1);

    let (status, body) = get_from(addr, "/api/hello", &[]).await;
    assert_eq!((status, body.as_str()), (200, "hello from the app"));
    let (status, body) = get_from(addr, "/sync/m/state", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"a":1}"#));
    let (status, _) = get_from(addr, "/api/nope", &[]).await;
    assert_eq!(status, 404);
    server.abort();
}
