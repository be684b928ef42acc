//! The Subscription root: a session's live timeline.
//!
//! `sessionEvents` reads the log itself, from the last seq it delivered, so it
//! never skips or repeats an event whatever happens around it. Commits of this
//! process wake it at once (and, when they follow on directly, are delivered
//! without a read); a poll tick wakes it anyway, which is how events appended by
//! another server process on the same database reach it.

use std::collections::VecDeque;
use std::time::Duration;

use async_graphql::{Context, Result, Subscription as SubscriptionRoot};
use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use super::error::from_engine;
use super::query::parse_uid;
use super::types::{non_negative, Event};
use super::{config, engine};
use crate::domain::{self, SessionUid};
use crate::engine::Committed;
use crate::Engine;

/// Most events read from the log at once while catching up.
const BATCH: u64 = 500;

/// Live streams.
pub struct Subscription;

/// Live streams, over WebSocket on `/graphql` (`graphql-transport-ws` or
/// `graphql-ws`).
#[SubscriptionRoot]
impl Subscription {
    /// The session's events with seq > `afterVersion` (default 0: the whole
    /// timeline), first those already in the log, then each new one as it commits.
    async fn session_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID.")] session: String,
        #[graphql(desc = "Send only events with a greater seq (default 0: the whole timeline).")]
        after_version: Option<i64>,
    ) -> Result<impl Stream<Item = Result<Event>>> {
        let uid = parse_uid(&session)?;
        let after = non_negative(after_version.unwrap_or(0), "afterVersion")?;
        let follow = Follow {
            rx: engine(ctx).subscribe(),
            engine: engine(ctx).clone(),
            session: uid,
            last: after,
            buffer: VecDeque::new(),
            poll: config(ctx).subscription_poll,
            failed: false,
        };
        Ok(futures::stream::unfold(follow, |mut follow| async move {
            let item = follow.next().await?;
            Some((item, follow))
        }))
    }
}

/// The state of one `sessionEvents` stream.
struct Follow {
    engine: Engine,
    session: SessionUid,
    /// The seq of the last event delivered.
    last: u64,
    /// Read or received, not yet delivered; ascending from `last + 1`.
    buffer: VecDeque<domain::Event>,
    rx: broadcast::Receiver<std::sync::Arc<Committed>>,
    poll: Duration,
    /// A read failed and the error was delivered: the stream ends.
    failed: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Result<Event>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.last = event.seq;
                return Some(Ok(Event::from(event)));
            }
            match self
                .engine
                .events(&self.session, self.last, Some(BATCH))
                .await
            {
                Ok(events) if !events.is_empty() => {
                    self.buffer.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(err) => {
                    self.failed = true;
                    return Some(Err(from_engine(&err)));
                }
            }
            self.wait().await;
        }
    }

    /// Returns once there may be something new: a commit of this session in this
    /// process, a missed notification, or the poll tick.
    async fn wait(&mut self) {
        let tick = tokio::time::sleep(self.poll);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                () = &mut tick => return,
                received = self.rx.recv() => match received {
                    Ok(committed) if committed.session == self.session.as_str() => {
                        let fresh: Vec<&domain::Event> =
                            committed.events.iter().filter(|e| e.seq > self.last).collect();
                        // Deliver straight from the commit only if it follows on from
                        // what was delivered; otherwise read the log.
                        let follows_on = fresh
                            .iter()
                            .zip(self.last + 1..)
                            .all(|(event, expected)| event.seq == expected);
                        if follows_on {
                            self.buffer.extend(fresh.into_iter().cloned());
                        }
                        return;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => {
                        (&mut tick).await;
                        return;
                    }
                },
            }
        }
    }
}
