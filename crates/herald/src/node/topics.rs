//! A connection's life on topics: who may subscribe, joining and leaving (presence and
//! `user_joined` / `user_left`), detaching when it ends, and revoking what a principal no
//! longer allows (a member removed, a refreshed token that lost a grant).

use std::sync::Arc;

use super::Herald;
use crate::auth::Principal;
use crate::engine::{EngineError, PresenceEntry};
use crate::hub::{ConnHandle, Joined};
use crate::protocol::hooks;
use crate::protocol::replies::{PresenceChange, Reply, Unsubscribed};
use crate::publication::{Publication, Scope};
use crate::topic::{self, SubscribeCheck};

impl Herald {
    /// Whether `who` belongs to `project`, by the token's claim or the membership store.
    pub async fn is_member(&self, who: &Principal, project: &str) -> Result<bool, EngineError> {
        if who.projects.iter().any(|p| p == project) {
            return Ok(true);
        }
        self.inner
            .engines
            .membership
            .is_member(project, &who.user_id)
            .await
            .inspect_err(|_| crate::metrics::engine_error("membership"))
    }

    /// Whether `who` may subscribe to `topic` (a valid name): the namespace rules, with the
    /// membership store and the token's claims for project rules.
    pub async fn may_subscribe(&self, who: &Principal, topic: &str) -> Result<bool, EngineError> {
        self.may_subscribe_as(None, who, topic).await
    }

    /// [`may_subscribe`](Self::may_subscribe) for connection `client_id` (named to the
    /// backend when its `subscribe` hook decides).
    pub(crate) async fn may_subscribe_as(
        &self,
        client_id: Option<&str>,
        who: &Principal,
        topic: &str,
    ) -> Result<bool, EngineError> {
        match topic::subscribe_check(&self.inner.config, who, topic) {
            SubscribeCheck::Allowed => Ok(true),
            SubscribeCheck::Denied => Ok(false),
            SubscribeCheck::MemberOf(project) => self.is_member(who, &project).await,
            SubscribeCheck::Proxy => self.proxy_subscribe(client_id, who, topic).await,
        }
    }

    /// Whether the topic's namespace keeps presence, and whether it announces join/leave.
    pub(super) fn presence_features(&self, topic: &str) -> (bool, bool) {
        self.inner
            .config
            .namespace(topic::namespace(topic))
            .map_or((false, false), |ns| (ns.presence, ns.join_leave))
    }

    /// Whether the topic's namespace enables presence.
    pub fn has_presence(&self, topic: &str) -> bool {
        self.presence_features(topic).0
    }

    /// The users on a topic (its namespace must enable presence).
    pub async fn presence(&self, topic: &str) -> Result<Vec<PresenceEntry>, EngineError> {
        self.inner
            .presence
            .list(topic)
            .await
            .inspect_err(|_| crate::metrics::engine_error("presence"))
    }

    /// Records a fresh subscription in presence and, for the user's first connection on the
    /// topic, announces `user_joined` to its subscribers. Call after the `subscribed` reply, so
    /// the joining connection sees its reply first.
    pub(crate) async fn joined(&self, conn: &ConnHandle, topic: &str) {
        self.track(conn, topic, true).await;
    }

    /// Subscribes a connection to a topic without history (rules already checked); false if
    /// it already was. In cluster mode the node first tells Redis it wants the topic.
    pub(crate) async fn subscribe(
        &self,
        conn: &Arc<ConnHandle>,
        topic: &str,
    ) -> Result<bool, EngineError> {
        self.inner.broker.watch(topic).await?;
        let joined = self.inner.hub.subscribe_after(conn, topic, None);
        self.joined_webhooks(conn, topic, joined).await;
        let fresh = joined.fresh;
        if !fresh {
            self.inner.broker.unwatch(topic).await;
        }
        Ok(fresh)
    }

    /// Unsubscribes a connection from a topic, updating presence and announcing `user_left`
    /// when it was the user's last connection there. False if it was not subscribed.
    pub(crate) async fn leave_topic(&self, conn: &ConnHandle, topic: &str) -> bool {
        let left = self.inner.hub.unsubscribe(conn, topic);
        if left.was {
            self.left_webhooks(conn, topic, left.last).await;
            self.inner.broker.unwatch(topic).await;
            self.left(conn, topic).await;
        }
        left.was
    }

    /// Whether `topic.occupied` / `topic.vacated` are wanted (in a cluster, a node's first
    /// and last subscriber of a topic are then counted in Redis).
    fn wants_occupancy(&self) -> bool {
        self.wants_webhook("topic.occupied") || self.wants_webhook("topic.vacated")
    }

    /// Whether this node's first subscriber of a topic (`gained`), or its last leaving,
    /// occupies or vacates the topic: on one node always; in a cluster when no other node has
    /// subscribers of it.
    async fn occupancy_changed(&self, topic: &str, gained: bool) -> bool {
        if !self.wants_occupancy() {
            return false;
        }
        self.occupancy_in_cluster(topic, gained)
            .await
            .unwrap_or(true)
    }

    /// `topic.occupied` (its first subscriber) and `topic.subscribed`.
    pub(super) async fn joined_webhooks(&self, conn: &ConnHandle, topic: &str, joined: Joined) {
        if joined.first && self.occupancy_changed(topic, true).await {
            self.webhook("topic.occupied", hooks::TopicOccupancy { topic });
        }
        if joined.fresh {
            let who = conn.principal();
            let subscribed = hooks::TopicSubscription {
                client_id: &conn.client_id,
                user_id: &who.user_id,
                topic,
            };
            self.webhook("topic.subscribed", subscribed);
        }
    }

    /// `topic.unsubscribed` and, for its last subscriber, `topic.vacated`.
    async fn left_webhooks(&self, conn: &ConnHandle, topic: &str, last: bool) {
        let who = conn.principal();
        let unsubscribed = hooks::TopicSubscription {
            client_id: &conn.client_id,
            user_id: &who.user_id,
            topic,
        };
        self.webhook("topic.unsubscribed", unsubscribed);
        if last && self.occupancy_changed(topic, false).await {
            self.webhook("topic.vacated", hooks::TopicOccupancy { topic });
        }
    }

    /// Removes a connection that ended from the hub and from every topic it was on.
    pub(crate) async fn detach(&self, conn: &ConnHandle) {
        let detached = self.inner.hub.detach(conn);
        for topic in &detached.topics {
            let last = detached.vacated.contains(topic);
            self.left_webhooks(conn, topic, last).await;
            self.inner.broker.unwatch(topic).await;
            self.left(conn, topic).await;
        }
        // Every connection that gets here was attached (`Herald::attach`). In a cluster the
        // user is offline when no node holds them any more.
        let user_id = &conn.principal().user_id;
        let last_anywhere = self.inner.broker.detach_user(user_id).await;
        if last_anywhere.unwrap_or(detached.last_of_user) {
            self.webhook("user.offline", hooks::UserPresence { user_id });
        }
    }

    async fn left(&self, conn: &ConnHandle, topic: &str) {
        self.track(conn, topic, false).await;
    }

    /// Presence for a connection joining or leaving a topic, and `user_joined` / `user_left`
    /// when it is the user's first or last connection there (namespaces that want them).
    async fn track(&self, conn: &ConnHandle, topic: &str, joining: bool) {
        let (presence, join_leave) = self.presence_features(topic);
        if !(presence || join_leave) {
            return;
        }
        let who = conn.principal();
        let engine = &self.inner.presence;
        let changed = if joining {
            engine.join(topic, &who.user_id, &conn.client_id).await
        } else {
            engine.leave(topic, &who.user_id, &conn.client_id).await
        };
        let event = PresenceChange::event(joining);
        match changed {
            Ok(true) if join_leave => self.announce(topic, joining, &who.user_id).await,
            Ok(_) => {}
            Err(e) => {
                crate::metrics::engine_error("presence");
                tracing::warn!(topic, event, error = %e, "presence update failed");
            }
        }
    }

    /// `user_joined` (or `user_left`) `{user_id}` to the topic's subscribers.
    pub(super) async fn announce(&self, topic: &str, joined: bool, user: &str) {
        let event = PresenceChange::event(joined);
        let publication = Publication::new(
            Scope::Topic(topic.to_string()),
            event,
            PresenceChange { user_id: user }.data(),
        );
        // Presence events are live news, not part of the topic's stream: they take no offset
        // and no history slot, and a recovery does not replay stale joins.
        if let Err(e) = self.broadcast(publication).await {
            tracing::warn!(topic, event, error = %e, "announcement failed");
        }
    }

    /// Unsubscribes a live connection from every topic its principal (or the membership store)
    /// no longer allows, telling it with `unsubscribed` `{topic, reason}`. Called when a member
    /// is removed and when a refreshed token lost a grant.
    /// Returns how many topics were revoked.
    pub(crate) async fn revoke_lost_topics(&self, conn: &ConnHandle) -> usize {
        let who = conn.principal();
        let mut revoked = 0;
        for topic in conn.topics() {
            match self.may_subscribe(&who, &topic).await {
                Ok(true) => continue,
                // An engine that cannot answer revokes nothing: access is re-checked next time.
                Err(_) => continue,
                Ok(false) => {}
            }
            if self.leave_topic(conn, &topic).await {
                revoked += 1;
                let notice = Unsubscribed {
                    topic: &topic,
                    reason: Some("permission revoked"),
                };
                conn.push(notice.frame(None));
            }
        }
        revoked
    }

    /// [`Self::revoke_lost_topics`] on this node: for every connection of a user
    /// ([`Scope::User`]), or every one subscribed to a topic that needs membership of a project
    /// ([`Scope::Project`]).
    pub(crate) async fn revoke_lost_topics_in(&self, scope: &Scope) -> usize {
        let conns = match scope {
            Scope::User(_) => self.inner.hub.select(scope, &[]),
            Scope::Project(project) => {
                let config = &self.inner.config;
                let needs = SubscribeCheck::MemberOf(project.clone());
                self.inner
                    .hub
                    .select(&Scope::All, &[])
                    .into_iter()
                    .filter(|conn| {
                        let who = conn.principal();
                        conn.topics()
                            .iter()
                            .any(|topic| topic::subscribe_check(config, &who, topic) == needs)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut revoked = 0;
        for conn in conns {
            revoked += self.revoke_lost_topics(&conn).await;
        }
        revoked
    }

    /// Re-checks `user`'s live subscriptions against the rules and the membership source as
    /// they are now, on every node: each topic the user may no longer receive is revoked
    /// (`unsubscribed` with `reason: "permission revoked"`) before this returns. Call it when
    /// the app's own data about the user changed (membership it owns, a role). Returns how
    /// many subscriptions were revoked.
    pub async fn recheck(&self, user: &str) -> Result<usize, EngineError> {
        self.recheck_scope(&Scope::User(user.to_string())).await
    }

    /// [`recheck`](Self::recheck) for every connection subscribed to a topic of `project`
    /// (`project:<id>`, or a `subscribe = "members"` namespace's `<ns>:<id>`): call it when
    /// the app removed members of the project in its own store.
    pub async fn recheck_project(&self, project: &str) -> Result<usize, EngineError> {
        self.recheck_scope(&Scope::Project(project.to_string()))
            .await
    }

    /// Every node's re-check of `scope` in a cluster, this node's alone otherwise.
    async fn recheck_scope(&self, scope: &Scope) -> Result<usize, EngineError> {
        match self.recheck_everywhere(scope).await {
            Some(rechecked) => rechecked,
            None => Ok(self.revoke_lost_topics_in(scope).await),
        }
    }

    /// Removes `user` from `project` in the membership store, then revokes the project's
    /// topics from that user's live connections at once: on every node of a cluster, before
    /// this returns (at most the Redis timeout).
    pub async fn remove_member(&self, project: &str, user: &str) -> Result<bool, EngineError> {
        let removed = self.inner.engines.membership.remove(project, user).await?;
        self.recheck(user).await?;
        Ok(removed)
    }
}
