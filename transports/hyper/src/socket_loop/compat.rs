//! Compat mode's loop (PROTOCOL.md section 3): the first frame is the state; then each client
//! frame is answered by one frame of everything queued, at most `refresh_per_second` turns a
//! second.

use std::future::poll_fn;
use std::time::Duration;

use futures_util::StreamExt;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use purly::{CloseReason, Mode};
use tokio::time::{sleep, sleep_until, Instant};

use super::{close_code, Ending, Incoming, Link, Queued, Socket, RATE_LIMIT_CLOSE};

/// Serves one compat-mode connection until it ends.
pub(super) async fn run<S: Socket>(link: &mut Link<S>) -> Ending {
    let period =
        Duration::from_secs_f64(1.0 / f64::from(link.context.config.refresh_per_second.max(1)));
    // The first frame is the state.
    loop {
        match poll_fn(|cx| link.poll_queued(cx, Mode::Compat)).await {
            Queued::Write(write) => {
                if let Err(ending) = link.send(write).await {
                    return ending;
                }
                break;
            }
            Queued::Closed(reason) => return close_for(link, &reason).await,
            Queued::Resync => break,
            // A ping due this early waits for the next one.
            Queued::Notified => {}
        }
    }
    let mut next_turn = Instant::now() + period;
    let idle_timeout = link.context.config.compat_idle_timeout;
    let idle = sleep(idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            () = poll_fn(|cx| link.session.poll_ready(cx)), if link.holding => {
                link.holding = false;
                continue;
            }
            incoming = link.ws.next(), if !link.holding => {
                match link.receive(incoming) {
                    Incoming::Frame => idle.as_mut().reset(Instant::now() + idle_timeout),
                    Incoming::Control => continue,
                    Incoming::RateLimited => return rate_limit_close(link).await,
                    Incoming::Close(code, why) => return link.close(code, &why).await,
                    Incoming::End(ending) => return ending,
                }
            }
            () = &mut idle => {
                let why = format!("no frame for {} s", idle_timeout.as_secs_f64());
                return link.close(CloseCode::Policy, &why).await;
            }
            reason = poll_fn(|cx| link.outbox.poll_closed(cx)) => {
                return close_for(link, &reason).await;
            }
            () = poll_fn(|cx| link.outbox.poll_notified(cx)) => {
                let sent = match link.ping() {
                    Ok(ping) => link.send(ping).await,
                    Err(ending) => Err(ending),
                };
                if let Err(ending) = sent {
                    return ending;
                }
                continue;
            }
        }
        sleep_until(next_turn).await;
        next_turn = Instant::now() + period;
        // Everything queued, possibly nothing (`[]`). The engine disconnects a compat
        // subscriber that lags, so no resync is ever asked for here.
        let sent = match link.try_queued(Mode::Compat, true) {
            Err(reason) => return close_for(link, &reason).await,
            Ok(Some(write)) => link.send(write).await,
            Ok(None) => Ok(()),
        };
        if let Err(ending) = sent {
            return ending;
        }
    }
}

/// Sends what is queued (the refusals so far), then closes with 1008.
async fn rate_limit_close<S: Socket>(link: &mut Link<S>) -> Ending {
    match link.try_queued(Mode::Compat, false) {
        Err(reason) => return close_for(link, &reason).await,
        Ok(Some(write)) => {
            if let Err(ending) = link.send(write).await {
                return ending;
            }
        }
        Ok(None) => {}
    }
    link.close(CloseCode::Policy, RATE_LIMIT_CLOSE).await
}

/// Closes because the engine stopped serving the connection.
async fn close_for<S: Socket>(link: &mut Link<S>, reason: &CloseReason) -> Ending {
    link.close(close_code(reason), &reason.to_string()).await
}
