//! Scope streams (docs/PROTOCOL.md section 15): every publication to `all`, a role, a project
//! or a live user is appended to its scope's stream, so a client that drops for a moment
//! resumes from its last offsets and misses nothing.
//!
//! Architecture invariant: on one node, a publication to a scope stream is appended and
//! delivered under the stream's stripe; in cluster mode it is delivered (from Redis) under that
//! stripe. A connection reads its streams and registers in the hub holding all of its streams'
//! stripes (and its user's), so every message of a stream is either before the welcome's
//! position (replayed when resumed) or delivered live after it, never both and never neither.
//! In cluster mode a message can arrive after the read that placed it: the connection's floors
//! (the positions it was given) make the hub skip it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::Herald;
use crate::auth::Principal;
use crate::engine::{stream_key, Retention, StreamPosition};
use crate::hub::ConnHandle;
use crate::protocol::replies::{Resumed, StreamAt};
use crate::protocol::{Frame, Resume, RESUME_MAX_STREAMS};
use crate::publication::Publication;

/// A connection's scope streams as it registers: where each stands, how each resumed stream
/// went, and the messages to replay (stream by stream, oldest first).
#[derive(Debug, Default)]
pub struct ConnectStreams {
    /// Each of the connection's streams and its newest position.
    pub positions: Vec<(String, StreamPosition)>,
    /// Each stream the client resumed: its position (`None` when the connection does not
    /// receive it) and whether everything after the client's offset follows.
    pub resumed: Vec<(String, Option<StreamPosition>, bool)>,
    /// The missed messages.
    pub replay: Vec<Publication>,
}

impl ConnectStreams {
    /// The welcome's `streams` field.
    pub fn streams_field(&self) -> BTreeMap<&str, StreamAt<'_>> {
        self.positions
            .iter()
            .map(|(stream, at)| (stream.as_str(), stream_at(at)))
            .collect()
    }

    /// The welcome's `resumed` field, when the client resumed.
    pub fn resumed_field(&self) -> Option<BTreeMap<&str, Resumed<'_>>> {
        (!self.resumed.is_empty()).then(|| {
            self.resumed
                .iter()
                .map(|(stream, at, recovered)| {
                    let resumed = Resumed {
                        recovered: *recovered,
                        at: at.as_ref().map(stream_at),
                    };
                    (stream.as_str(), resumed)
                })
                .collect()
        })
    }
}

fn stream_at(at: &StreamPosition) -> StreamAt<'_> {
    StreamAt {
        offset: at.offset,
        epoch: &at.epoch,
    }
}

impl Herald {
    /// How much each scope stream keeps, or `None` when `[recovery] window` is `0s`.
    pub fn scope_retention(&self) -> Option<Retention> {
        let recovery = &self.inner.config.recovery;
        (!recovery.window.is_zero() && recovery.max_messages > 0).then_some(Retention {
            size: recovery.max_messages,
            ttl: recovery.window,
        })
    }

    /// The scope streams a connection of `who` receives: `all`, its role's, its user's, then
    /// its projects: the token's, the membership store's, and any resumed project stream the
    /// store lists it in now (a membership is judged at the resume: docs/GUARANTEES.md). At
    /// most [`RESUME_MAX_STREAMS`], so a client can always resume every one it was given.
    pub(crate) async fn streams_of(&self, who: &Principal, resume: Option<&Resume>) -> Vec<String> {
        let mut streams = vec![
            "all".to_string(),
            format!("role:{}", who.role),
            format!("user:{}", who.user_id),
        ];
        let membership = self.inner.engines.membership.as_ref();
        let stored = membership.projects_of(&who.user_id).await;
        let stored = stored.unwrap_or_else(|e| {
            crate::metrics::engine_error("membership");
            tracing::warn!(user = %who.user_id, error = %e, "a user's projects could not be read");
            Vec::new()
        });
        let mut projects: Vec<&str> = who.projects.iter().map(String::as_str).collect();
        projects.extend(stored.iter().map(String::as_str));
        for stream in resume.into_iter().flat_map(|r| r.keys()) {
            let Some(project) = stream.strip_prefix("project:") else {
                continue;
            };
            if projects.contains(&project) {
                continue;
            }
            match membership.is_member(project, &who.user_id).await {
                Ok(true) => projects.push(project),
                Ok(false) => {}
                Err(e) => {
                    crate::metrics::engine_error("membership");
                    tracing::warn!(project, error = %e, "membership check at resume failed");
                }
            }
        }
        for project in projects {
            let stream = format!("project:{project}");
            if streams.len() >= RESUME_MAX_STREAMS {
                break;
            }
            if !streams.contains(&stream) {
                streams.push(stream);
            }
        }
        streams
    }

    /// Reads the connection's streams (under their stripes): each one's position and, for the
    /// resumed ones, what the client missed. Messages the inbox already holds (`inbox`) are
    /// not replayed again.
    async fn read_streams(
        &self,
        streams: &[String],
        resume: Option<&Resume>,
        retention: Retention,
        inbox: &[Publication],
    ) -> ConnectStreams {
        let engine = self.inner.streams.as_ref();
        let since = |stream: &str| resume.and_then(|r| r.get(stream));
        let reads = streams.iter().map(|stream| {
            let after = since(stream).map_or(u64::MAX, |s| s.offset);
            let key = stream_key(stream);
            async move { engine.read(&key, after, retention.size, retention).await }
        });
        let pages = self
            .timed("streams_read", futures_util::future::join_all(reads))
            .await;
        let in_inbox: HashSet<&str> = inbox.iter().map(|p| p.id.as_str()).collect();
        let mut read = ConnectStreams::default();
        for (stream, page) in streams.iter().zip(pages) {
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    crate::metrics::engine_error("streams");
                    tracing::warn!(stream, error = %e, "scope stream read failed");
                    if since(stream).is_some() {
                        read.resumed.push((stream.clone(), None, false));
                    }
                    continue;
                }
            };
            if let Some(since) = since(stream) {
                let recovered = page.continues(since.offset, &since.epoch);
                if recovered {
                    let missed = page.messages.into_iter();
                    read.replay
                        .extend(missed.filter(|p| !in_inbox.contains(p.id.as_str())));
                }
                let at = Some(page.position.clone());
                read.resumed.push((stream.clone(), at, recovered));
            }
            read.positions.push((stream.clone(), page.position));
        }
        // A stream the connection does not receive resumes nothing.
        for stream in resume.into_iter().flat_map(|r| r.keys()) {
            if !streams.contains(stream) {
                read.resumed.push((stream.clone(), None, false));
            }
        }
        read
    }

    /// Registers an authenticated connection: queues its welcome (built by `welcome` from
    /// its scope streams), its offline inbox and, when it resumes, every scope message it
    /// missed, all before it is visible to publishers. Everything is done under the stripes
    /// of its streams and its user, so a publication to any of them is either in what was
    /// queued or delivered live after it. Returns how many inbox and replayed messages were
    /// queued.
    pub(crate) async fn attach(
        &self,
        conn: &Arc<ConnHandle>,
        resume: Option<&Resume>,
        welcome: impl FnOnce(Option<&ConnectStreams>) -> Frame,
    ) -> usize {
        let who = conn.principal();
        let retention = self.scope_retention();
        let streams = match retention {
            Some(_) => self.streams_of(&who, resume).await,
            None => Vec::new(),
        };
        let user_key = format!("user:{}", who.user_id);
        let keys = streams.iter().chain(std::iter::once(&user_key));
        let _held = self.inner.stripes.lock_all(keys.map(String::as_str)).await;
        let (pending, first_anywhere) = self.inbox_at_attach(&who.user_id).await;
        let read = match retention {
            Some(retention) => Some(
                self.read_streams(&streams, resume, retention, &pending)
                    .await,
            ),
            None => None,
        };
        // Queued before the connection is visible: nothing live comes before them.
        conn.push_uncounted([welcome(read.as_ref())]);
        conn.push_uncounted(pending.iter().map(Publication::offline_frame));
        let mut queued = pending.len();
        let mut floors = Vec::new();
        if let Some(read) = read {
            conn.push_uncounted(read.replay.iter().map(Publication::frame));
            queued += read.replay.len();
            if self.inner.broker.is_remote() {
                floors = read
                    .positions
                    .into_iter()
                    .map(|(stream, at)| (stream, at.offset))
                    .collect();
            }
        }
        let first_here = self.inner.hub.attach_after(conn, floors);
        self.attached_webhooks(conn, first_anywhere.unwrap_or(first_here));
        queued
    }
}
