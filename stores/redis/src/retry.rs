//! Another try after a failure that says nothing about the command: the connection broke
//! (Redis restarted, the network reset it), the reply did not come in time, or a cluster
//! connection had no node to send it to. The connection
//! manager makes a new connection meanwhile, so a retry never reuses the dead one. Safe for
//! every command this store sends: reads, the creation (which checks first) and the append
//! (which recognizes its own token) may all run twice.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Whether `error` leaves the command's fate unknown or undone, and a new try may tell.
pub(crate) fn worth_retrying(error: &redis::RedisError) -> bool {
    error.is_connection_dropped()
        || error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        // A cluster connection with no node to send the command to: it was not sent.
        || error.kind() == redis::ErrorKind::ClusterConnectionNotFound
}

/// Runs `attempt` until it succeeds, fails for good, or `budget` is spent (then its last error),
/// waiting 50 ms, 100 ms, ... (at most 1 s) between tries.
pub(crate) async fn retrying<T, F, Fut>(budget: Duration, mut attempt: F) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(error) if worth_retrying(&error) && Instant::now() + pause < deadline => {
                tracing::debug!(%error, "redis: trying again");
                metrics::counter!(crate::telemetry::RETRIES).increment(1);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            result => return result,
        }
    }
}

/// Runs a script through [`retrying`], each try on the manager's current connection.
pub(crate) async fn invoke<T: redis::FromRedisValue>(
    budget: Duration,
    commands: &crate::connection::Commands,
    invocation: &redis::ScriptInvocation<'_>,
) -> redis::RedisResult<T> {
    retrying(budget, || {
        let mut connection = commands.clone();
        async move { invocation.invoke_async(&mut connection).await }
    })
    .await
}
