//! The durable mode on Redis Cluster: every durable key carries the hash tag
//! `{switchboard}`, so all of them (registry, version, streams, their groups) live
//! in one slot, [`DURABLE_SLOT`], on one master. The connections that touch
//! them (publishing, control, durable members) connect to the node that
//! owns that slot, found with `CLUSTER SLOTS` from any reachable node of the
//! URL; a `MOVED`, `ASK`, `CLUSTERDOWN` or `TRYAGAIN` reply, or a lost
//! connection, finds the owner again (see the crate docs, "Redis Cluster").

use std::time::Duration;

use switchboard_core::{ConnectKind, Result};
use tokio::net::TcpStream;

use crate::connection::Conn;
use crate::error;
use crate::options::Target;
use crate::resp::Frame;

/// The prefix of every durable key on a cluster: the hash tag
/// `{switchboard}` puts all of them in [`DURABLE_SLOT`].
pub(crate) const PREFIX: &str = "{switchboard}:durable";

/// The slot of every durable key on a cluster: the slot of the hash tag
/// `{switchboard}`.
pub(crate) const DURABLE_SLOT: u16 = slot(b"switchboard");

/// Redis Cluster's key slot of a key without a hash tag (or of a hash
/// tag's content): CRC16 (XMODEM) mod 16384.
pub(crate) const fn slot(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    let mut i = 0;
    while i < tag.len() {
        crc ^= (tag[i] as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        i += 1;
    }
    crc % 16384
}

/// Whether an error reply means the durable slot is (now, or for the
/// moment) served elsewhere, or not at all: the connection should find the
/// owner again. `ASK` is handled in place where a reply is awaited
/// ([`asked`]); elsewhere it is a redirect like the others.
pub(crate) fn is_redirect(error: &[u8]) -> bool {
    error.starts_with(b"MOVED ")
        || error.starts_with(b"ASK ")
        || error.starts_with(b"CLUSTERDOWN")
        || error.starts_with(b"TRYAGAIN")
}

/// The node an `ASK <slot> <host>:<port>` reply names.
pub(crate) fn asked(error: &[u8]) -> Option<(String, u16)> {
    let text = std::str::from_utf8(error.strip_prefix(b"ASK ")?).ok()?;
    let endpoint = text.split(' ').nth(1)?;
    let (host, port) = endpoint.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// The master serving `slot` in a `CLUSTER SLOTS` reply: its endpoint
/// (empty when the node answering is meant), port, and host name (if the
/// node announces one).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) endpoint: String,
    pub(crate) port: u16,
    pub(crate) hostname: Option<String>,
}

pub(crate) fn owner(reply: &Frame, slot: u16) -> Option<Owner> {
    let Frame::Array(Some(ranges)) = reply else {
        return None;
    };
    for range in ranges {
        let Frame::Array(Some(parts)) = range else {
            continue;
        };
        let (Some(Frame::Integer(start)), Some(Frame::Integer(end))) =
            (parts.first(), parts.get(1))
        else {
            continue;
        };
        if !(*start..=*end).contains(&i64::from(slot)) {
            continue;
        }
        let Some(Frame::Array(Some(master))) = parts.get(2) else {
            return None;
        };
        let endpoint = master
            .first()
            .and_then(Frame::bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())?;
        let Some(Frame::Integer(port)) = master.get(1) else {
            return None;
        };
        // Redis 7: a fourth element, pairs of metadata (`hostname`, ...).
        let hostname = match master.get(3) {
            Some(Frame::Array(Some(pairs))) => pairs
                .chunks(2)
                .find(|pair| pair[0].bytes().is_some_and(|k| &k[..] == b"hostname"))
                .and_then(|pair| pair.get(1)?.bytes())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .filter(|h| !h.is_empty()),
            _ => None,
        };
        return Some(Owner {
            endpoint,
            port: u16::try_from(*port).ok()?,
            hostname,
        });
    }
    None
}

impl Target {
    /// A connection to the node that owns the durable keys: on a cluster,
    /// the master of [`DURABLE_SLOT`]; on one server, the server. All within
    /// `timeout`.
    pub(crate) async fn connect_durable(
        &self,
        timeout: Duration,
        client_name: &str,
    ) -> Result<Conn> {
        if !self.is_cluster() {
            return self.connect(timeout, client_name).await;
        }
        match tokio::time::timeout(timeout, self.connect_owner(client_name)).await {
            Ok(result) => result,
            Err(_) => Err(error::connect_timed_out(self, timeout)),
        }
    }

    async fn connect_owner(&self, client_name: &str) -> Result<Conn> {
        let (tcp, index) = self.connect_cluster_node().await?;
        let (host, port) = &self.cluster[index];
        let mut conn = self.finish(tcp, host, client_name).await?;
        let failed = |reason: String| self.error(ConnectKind::Other, reason, None);
        let reply = conn.command(&[b"CLUSTER", b"SLOTS"]).await.map_err(|e| {
            failed(format!(
                "cluster node {host}:{port} broke the connection on CLUSTER SLOTS: {e}"
            ))
        })?;
        if let Frame::Error(e) = &reply {
            return Err(failed(format!(
                "cluster node {host}:{port} answered CLUSTER SLOTS with {}; the durable mode needs it to find the node that owns its keys (allow CLUSTER SLOTS for this user)",
                String::from_utf8_lossy(e)
            )));
        }
        let Some(found) = owner(&reply, DURABLE_SLOT) else {
            return Err(failed(format!(
                "no master serves slot {DURABLE_SLOT} (the durable keys' slot) according to cluster node {host}:{port}; is the cluster down or failing over?"
            )));
        };
        let endpoint = match found.endpoint.as_str() {
            "" | "?" => host.clone(),
            other => other.to_string(),
        };
        if (endpoint.as_str(), found.port) == (host.as_str(), *port) {
            self.count_replicas(&mut conn).await;
            return Ok(conn);
        }
        drop(conn);
        // A node of the URL is reached under the URL's name (the one its
        // certificate holds); another under its announced host name, else
        // its address.
        let name = self
            .cluster
            .iter()
            .find(|(h, p)| (h.as_str(), *p) == (endpoint.as_str(), found.port))
            .map(|(h, _)| h.clone())
            .or(found.hostname)
            .unwrap_or_else(|| endpoint.clone());
        let tcp = TcpStream::connect((endpoint.as_str(), found.port))
            .await
            .map_err(|e| {
                self.error(
                    ConnectKind::Refused,
                    format!(
                        "the master of the durable keys' slot, {endpoint}:{}, does not answer ({e}); is it failing over?",
                        found.port
                    ),
                    Some(Box::new(e)),
                )
            })?;
        let mut conn = self.finish(tcp, &name, client_name).await?;
        self.count_replicas(&mut conn).await;
        Ok(conn)
    }

    /// Notes how many replicas the master on `conn` has online
    /// (`connected_slaves` of `INFO replication`; `CLUSTER SLOTS` leaves out
    /// a replica until it has replicated a write). Left as it was if the
    /// master does not say.
    async fn count_replicas(&self, conn: &mut Conn) {
        if let Ok(Frame::Bulk(Some(info))) = conn.command(&[b"INFO", b"replication"]).await {
            let count = String::from_utf8_lossy(&info)
                .lines()
                .find_map(|line| line.strip_prefix("connected_slaves:")?.trim().parse().ok());
            if let Some(count) = count {
                self.owner_replicas
                    .store(count, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }

    #[test]
    fn slots_are_redis_cluster_slots() {
        // The reference value of CRC16 XMODEM (below 16384 already), and
        // slots CLUSTER KEYSLOT gives (616 for `{switchboard}:durable`).
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(DURABLE_SLOT, 616);
    }

    /// The slot Redis gives a key: that of its hash tag's content if it has
    /// a non-empty one, else of the whole key.
    fn key_slot(key: &str) -> u16 {
        if let Some(open) = key.find('{') {
            if let Some(len) = key[open + 1..].find('}').filter(|&len| len > 0) {
                return slot(&key.as_bytes()[open + 1..open + 1 + len]);
            }
        }
        slot(key.as_bytes())
    }

    #[test]
    fn every_durable_key_of_a_cluster_is_in_the_durable_slot() {
        let target = crate::options::Target::parse(
            "redis+cluster://h1:1,h2:2",
            &mut crate::RedisOptions::new(),
        )
        .unwrap();
        let keys = crate::routing::Keys::of(&target);
        for pattern in ["a.>", "{x}.*", "}{.>", ">"] {
            let stream = keys.stream(&pattern.parse().unwrap());
            assert_eq!(key_slot(&stream), DURABLE_SLOT, "{stream}");
        }
        assert_eq!(key_slot(keys.registry()), DURABLE_SLOT);
        assert_eq!(key_slot(&keys.version()), DURABLE_SLOT);
        // One server keeps its key names.
        let one =
            crate::options::Target::parse("redis://h:1", &mut crate::RedisOptions::new()).unwrap();
        let keys = crate::routing::Keys::of(&one);
        assert_eq!(keys.registry(), "switchboard:durable");
        assert_eq!(keys.version(), "switchboard:durable:version");
        assert_eq!(
            keys.stream(&"a.>".parse().unwrap()),
            "switchboard:durable:stream:a.>"
        );
    }

    #[test]
    fn redirects_are_recognised() {
        assert!(is_redirect(b"MOVED 3999 127.0.0.1:6381"));
        assert!(is_redirect(b"ASK 3999 127.0.0.1:6381"));
        assert!(is_redirect(b"CLUSTERDOWN The cluster is down"));
        assert!(is_redirect(
            b"TRYAGAIN Multiple keys request during rehashing of slot"
        ));
        assert!(!is_redirect(b"ERR Function not found"));
        assert_eq!(
            asked(b"ASK 3999 127.0.0.1:6381"),
            Some(("127.0.0.1".to_string(), 6381))
        );
        assert_eq!(asked(b"MOVED 3999 127.0.0.1:6381"), None);
    }

    #[test]
    fn the_owner_is_read_from_cluster_slots() {
        let node = |ip: &str, port: i64, meta: Option<Frame>| {
            let mut parts = vec![bulk(ip), Frame::Integer(port), bulk("id")];
            parts.extend(meta);
            Frame::Array(Some(parts))
        };
        let reply = Frame::Array(Some(vec![
            Frame::Array(Some(vec![
                Frame::Integer(0),
                Frame::Integer(5460),
                node("10.0.0.1", 7001, None),
                node("10.0.0.4", 7004, None),
            ])),
            Frame::Array(Some(vec![
                Frame::Integer(5461),
                Frame::Integer(16383),
                node(
                    "10.0.0.2",
                    7002,
                    Some(Frame::Array(Some(vec![
                        bulk("hostname"),
                        bulk("r2.internal"),
                    ]))),
                ),
            ])),
        ]));
        assert_eq!(
            owner(&reply, 17),
            Some(Owner {
                endpoint: "10.0.0.1".into(),
                port: 7001,
                hostname: None,
            })
        );
        assert_eq!(
            owner(&reply, 9000),
            Some(Owner {
                endpoint: "10.0.0.2".into(),
                port: 7002,
                hostname: Some("r2.internal".into()),
            })
        );
        assert_eq!(owner(&Frame::Array(Some(vec![])), 17), None);
    }
}
