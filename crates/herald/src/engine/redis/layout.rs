//! Where the keys are: a walk over every primary's keys (`SCAN` is per node on a Redis
//! Cluster), the cluster's shape (`CLUSTER NODES`), and the one-time move of a single Redis's
//! keys from the layout before hash tags to today's.

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::AsyncCommands;

use super::conn::Conn;
use super::{keys, RedisStore, PREFIX};
use crate::engine::EngineError;

/// The layout written in `herald:layout` once a Redis holds today's keys.
const LAYOUT: &str = "2";

/// Today's name of a key for an id.
type Name = fn(&str) -> String;

/// The kinds of key before hash tags (`herald:<kind>:<id>`), each with today's name for an id.
const BEFORE_TAGS: &[(&str, Name)] = &[
    ("members", keys::members),
    ("projects-of", keys::projects_of),
    ("meta", keys::meta),
    ("stream", keys::stream),
    ("inbox", keys::inbox),
    ("online", keys::online),
    ("presence", keys::presence),
    ("joined", keys::joined),
    ("conns", keys::conns),
    ("subscribers", keys::subscribers),
    ("node-presence", keys::node_presence),
    ("node-subscribers", keys::node_subscribers),
    ("node-users", keys::node_users),
    ("webhooks", keys::webhooks),
    ("node", keys::node),
    ("reaping", keys::reaping),
];

/// Today's name of a key written before hash tags; `None` for a key that kept its name.
pub(crate) fn renamed(old: &str) -> Option<String> {
    let rest = old.strip_prefix(PREFIX)?;
    let (kind, id) = rest.split_once(':')?;
    BEFORE_TAGS
        .iter()
        .find(|(before, _)| *before == kind)
        .map(|(_, today)| today(id))
}

/// The nodes of a Redis Cluster, as `CLUSTER NODES` lists them.
pub(crate) struct ClusterNodes {
    /// The address of each primary serving slots.
    primaries: Vec<(String, u16)>,
}

impl ClusterNodes {
    fn parse(text: &str) -> Self {
        // <id> <ip:port@bus> <flags> <primary id> <ping> <pong> <epoch> <link> <slots...>
        let healthy = |flags: &str| !flags.contains("fail") && !flags.contains("handshake");
        let primaries = text
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|f| f.len() > 8 && f[2].contains("master") && healthy(f[2]))
            .filter_map(|f| {
                let address = f[1].split(['@', ',']).next()?;
                let (host, port) = address.rsplit_once(':')?;
                Some((host.to_string(), port.parse().ok()?))
            })
            .collect();
        Self { primaries }
    }
}

/// The replicas in sync with a primary, from its `INFO replication`
/// (`slave0:ip=...,port=...,state=online,...`).
pub(crate) fn replicas_online(info: &str) -> u32 {
    info.lines()
        .filter(|line| line.starts_with("slave") && line.contains("state=online"))
        .count() as u32
}

impl RedisStore {
    /// The cluster's nodes (`CLUSTER NODES`, from any of them).
    pub(crate) async fn cluster_nodes(&self) -> Result<ClusterNodes, EngineError> {
        let mut conn = self.conn();
        let text: String = self
            .run(async move {
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(ClusterNodes::parse(&text))
    }

    /// The fewest replicas in sync that any primary of the cluster has.
    pub(crate) async fn fewest_replicas_online(&self) -> Result<u32, EngineError> {
        let Conn::Cluster(mut conn) = self.conn() else {
            return Ok(0);
        };
        let mut fewest = None;
        for (host, port) in self.cluster_nodes().await?.primaries {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let mut info = redis::cmd("INFO");
            info.arg("replication");
            let value = self.run(conn.route_command(info, route)).await?;
            let text: String =
                redis::from_redis_value(value).map_err(|e| EngineError(format!("redis: {e}")))?;
            let online = replicas_online(&text);
            fewest = Some(fewest.map_or(online, |f: u32| f.min(online)));
        }
        Ok(fewest.unwrap_or(0))
    }

    /// Every key matching `pattern`, on one Redis or on every primary of a cluster.
    pub(crate) async fn scan_all(&self, pattern: &str) -> Result<Vec<String>, EngineError> {
        let targets = match self.conn() {
            Conn::Single(_) => vec![None],
            Conn::Cluster(_) => {
                let nodes = self.cluster_nodes().await?;
                nodes.primaries.into_iter().map(Some).collect()
            }
        };
        let mut found = Vec::new();
        for target in targets {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<String>) = match (self.conn(), &target) {
                    (Conn::Cluster(mut conn), Some((host, port))) => {
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        let value = self.run(conn.route_command(scan, route)).await?;
                        redis::from_redis_value(value)
                            .map_err(|e| EngineError(format!("redis: {e}")))?
                    }
                    (mut conn, _) => self.run(scan.query_async(&mut conn)).await?,
                };
                found.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found)
    }

    /// Moves a single Redis's keys written before hash tags to today's names, once (then
    /// `herald:layout` says so). A key whose new name is taken already stays where it is and
    /// is logged. A Redis Cluster never held the old layout.
    pub(crate) async fn migrate_layout(&self) -> Result<usize, EngineError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.is_on_cluster() || self.layout_checked.load(Relaxed) {
            return Ok(0);
        }
        let mut conn = self.conn();
        let layout: Option<String> = self.run(conn.get(keys::layout())).await?;
        if layout.as_deref() == Some(LAYOUT) {
            self.layout_checked.store(true, Relaxed);
            return Ok(0);
        }
        let mut moved = 0;
        for old in self.scan_all(&format!("{PREFIX}*")).await? {
            let Some(new) = renamed(&old) else {
                continue;
            };
            let mut conn = self.conn();
            match self.run(conn.rename_nx::<_, _, bool>(&old, &new)).await {
                Ok(true) => moved += 1,
                Ok(false) => tracing::warn!(old, new, "redis: a key's new name is taken; left"),
                // Gone meanwhile (another node moved it, or it expired).
                Err(_) => {}
            }
        }
        let mut conn = self.conn();
        self.run(conn.set::<_, _, ()>(keys::layout(), LAYOUT))
            .await?;
        self.layout_checked.store(true, Relaxed);
        if moved > 0 {
            tracing::info!(moved, "redis: keys moved to the hash-tagged layout");
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_before_hash_tags_get_todays_names() {
        assert_eq!(
            renamed("herald:stream:chat:1").as_deref(),
            Some("herald:{t:chat:1}:stream")
        );
        assert_eq!(
            renamed("herald:meta:#user:bob").as_deref(),
            Some("herald:{u:bob}:meta")
        );
        assert_eq!(
            renamed("herald:meta:#all").as_deref(),
            Some("herald:{s}:meta:#all")
        );
        assert_eq!(
            renamed("herald:node-users:n1").as_deref(),
            Some("herald:{n:n1}:users")
        );
        assert_eq!(renamed("herald:nodes"), None);
        assert_eq!(renamed("herald:idempotency:k"), None);
        assert_eq!(renamed("herald:{t:chat}:stream"), None);
    }

    #[test]
    fn the_cluster_shape_is_read_from_cluster_nodes() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    a2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922\n\
                    b1 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n\
                    b2 127.0.0.1:7004@17004 slave,fail a2 0 0 2 disconnected\n";
        let nodes = ClusterNodes::parse(text);
        assert_eq!(
            nodes.primaries,
            [
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001)
            ]
        );
        let info = "role:master\nconnected_slaves:2\n\
                    slave0:ip=127.0.0.1,port=7003,state=online,offset=1,lag=0\n\
                    slave1:ip=127.0.0.1,port=7004,state=wait_bgsave,offset=0,lag=0\n";
        assert_eq!(replicas_online(info), 1);
    }
}
