//! Redis PUBSUB (and, for durable subscriptions, Redis Streams) for
//! switchboard: publish and subscribe through Redis with the same code as on
//! NATS, AMQP or the in-memory broker.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
//! use switchboard_core::{Message, Publisher};
//! let broker = switchboard_redis::connect("redis://:secret@127.0.0.1:6379/0").await?;
//! broker.publish(Message::new("alerts.cpu", "CPU at 98%")?).await?;
//! broker.flush().await?;
//! # Ok(()) }
//! ```
//!
//! The crate has the layout of every switchboard adapter: `options` (the
//! [`RedisOptions`] builder and URL parsing), `connection` (connecting and the
//! handshake), `broker` ([`RedisBroker`]), `publisher` (the pipelined
//! publishing connection), `subscription` (the pub/sub connection every
//! subscription of a handle shares), [`wire`] (the header envelope), `error` (how connecting
//! fails) and `tls`, plus `resp`, the part of the Redis protocol it speaks;
//! [`DRIVER`] is its entry for `switchboard::connect`.
//!
//! # URLs
//!
//! - `redis://host[:port][/database]` — plain TCP, port 6379 by default;
//! - `redis://[user]:password@host[:port][/database]` — `AUTH` (with a user for ACLs);
//!   percent-encode `@`, `:` and `/` in the password;
//! - ACL users: `redis://alice:PASSWORD@host` sends `AUTH alice PASSWORD`;
//!   Redis answers a wrong password and an unknown (or disabled) user with the
//!   same `WRONGPASS` reply, so the error cannot say which of the two it was;
//!   it names the user, never the password;
//! - `redis+cluster://[user:password@]h1:7001,h2:7002,h3:7003` — a Redis
//!   Cluster: the nodes listed are entry points. The shared subscription
//!   connection and the requests' connection go to one of them, the one that
//!   answered last first; PUBSUB messages reach every node of a cluster, so
//!   a subscriber on one node receives what is published through another,
//!   and a connection whose node dies moves to the next. The durable mode
//!   works there too: its keys share one hash tag, so they live on one
//!   master, and the publishing connection, the control and routing
//!   connections and durable subscriptions go to that master, found with
//!   `CLUSTER SLOTS` (see [Redis Cluster](#redis-cluster)). Database 0 only.
//!   Tested on 3-master clusters of the test's own: the conformance suite,
//!   a killed node, and two failovers of the durable keys' master;
//! - `rediss+cluster://[user:password@]h1:7001,h2:7002?ca=/etc/redis/ca.pem` —
//!   the same over TLS, with the TLS keys below; each node's certificate is
//!   checked against that node's host name (or `tls_server_name`). Tested on
//!   a cluster whose nodes serve TLS only (`tls-cluster yes`);
//! - `redis+unix:///run/redis/redis.sock` or `unix:///run/redis/redis.sock` —
//!   a unix socket (`unixsocket` in redis.conf), credentials before the path
//!   (`redis+unix://alice:PASSWORD@/run/redis/redis.sock`), the database in the
//!   query (`?db=2`, since the path is the socket's); no TLS there;
//! - `rediss://...` — TLS, checked against the platform's trust store;
//!   `rediss://...#insecure` skips certificate verification (the handshake's
//!   signatures are still checked);
//! - options in the query, with the keys and units every switchboard adapter
//!   shares ([`switchboard_core::options`]), e.g.
//!   `redis://host?connect_timeout=2s&capacity=65536&name=billing`, and on
//!   `rediss://` the TLS keys below.
//!
//! # TLS
//!
//! The TLS query keys are the same on every switchboard adapter (see
//! [`TlsOptions`], also settable with [`RedisOptions::tls`]):
//!
//! - `rediss://host:6380?ca=/etc/redis/ca.pem`: a private CA instead of the
//!   platform's store (`ca=system` adds the store back; `ca` may be repeated);
//! - `rediss://host:6380?ca=/etc/redis/ca.pem&cert=/etc/redis/client.pem&key=/etc/redis/client-key.pem`:
//!   mutual TLS (`tls-auth-clients yes`, Redis's default);
//! - `rediss://10.0.0.7:6380?ca=…&tls_server_name=redis.internal`: verify (and
//!   send as SNI) a name the certificate holds instead of the address.
//!
//! TLS keys in a `redis://` URL are refused (write `rediss://`); settings made
//! in code apply to `rediss://` URLs only. A failed handshake is
//! one [`Error::Connect`](switchboard_core::Error::Connect) line of kind
//! [`Tls`](switchboard_core::ConnectKind::Tls) saying which:
//! the certificate is not trusted (naming the CA files or the system store), the
//! host name does not match, the server requires a client certificate or
//! refused the one given; a file that cannot be read is named. The rustls
//! configuration (ring provider) is built once per broker by `switchboard-tls`
//! and reused on every reconnection.
//!
//! An unknown query key, a fragment other than `#insecure` on `rediss://`, or
//! a `%` that is not a percent-escape is an
//! [`Error::InvalidUrl`](switchboard_core::Error::InvalidUrl) naming it.
//! Connecting is bounded by a timeout (5 s); failures are
//! [`Error::Connect`](switchboard_core::Error::Connect) with the password
//! redacted, a hint (`is redis-server running?`, check the password, ...) and
//! a [`ConnectKind`](switchboard_core::ConnectKind): a wrong or missing
//! password (`Auth`), a failed TLS handshake (`Tls`) or a database the server
//! does not have (`Protocol`) are not
//! [temporary](switchboard_core::Error::is_temporary).
//!
//! | option | URL | default | |
//! |---|---|---|---|
//! | [`connect_timeout`](RedisOptions::connect_timeout) | `connect_timeout=5s` | 5 s | TCP, TLS, `AUTH`, `SELECT` |
//! | [`tls`](RedisOptions::tls) | `ca=`, `cert=`, `key=`, `tls_server_name=` (`rediss://` only) | the platform's trust store | CA files, client certificate, server name (see [TLS](#tls)) |
//! | [`flush_timeout`](RedisOptions::flush_timeout) | `flush_timeout=10s` | 10 s | how long `flush` (and `close`) wait for Redis's replies |
//! | [`name`](RedisOptions::name) | `name=billing` | `switchboard` | the name in `CLIENT LIST` |
//! | [`capacity`](RedisOptions::capacity) | `capacity=N` | 2^20 | deliveries buffered per subscription (allocated as they come, so an idle subscription holds none) |
//! | [`keepalive`](RedisOptions::keepalive) | `keepalive=15s`, `keepalive=off` | 15 s | a connection silent this long (PING unanswered) is dropped and renewed |
//! | [`reconnect_backoff`](RedisOptions::reconnect_backoff) | | 100 ms to 5 s ([`Backoff::DEFAULT`](switchboard_core::Backoff::DEFAULT)) | delay between reconnection attempts |
//! | [`stream_maxlen`](RedisOptions::stream_maxlen) | `stream_maxlen=N` | 1,000,000 | `XADD ... MAXLEN ~ N` of durable streams (see [Durable mode](#durable-mode)) |
//!
//! Options are set with builder methods named after them and read from
//! [`RedisOptions`]' public fields, as on every switchboard adapter.
//!
//! # Capabilities
//!
//! | | |
//! |---|---|
//! | queue groups | not on PUBSUB: [`subscribe_group`](switchboard_core::Subscriber::subscribe_group) returns `Unsupported` (PUBSUB delivers every message to every subscriber); in [durable mode](#durable-mode) the members of a durable group share the work (a Redis consumer group) |
//! | headers | yes, in an envelope (see [`wire`]); not native |
//! | wildcards | `*` and `>` become a PSUBSCRIBE glob; the adapter checks every message against the pattern, so `*` never spans a dot |
//! | order | per publisher, as Redis keeps it |
//! | ack, redelivery, persistence | no: a message published while nobody subscribes is gone |
//! | request/reply | yes (see [Request/reply](#requestreply)) |
//! | durable subscriptions | yes, on Redis 7.0 or later, over Redis Streams (see [Durable mode](#durable-mode)): delivery counts, nack with a delay (up to the ack deadline); `durable_storage` is declared only where the server runs with `appendonly yes`. On Redis Cluster too (see [Redis Cluster](#redis-cluster)). On an older server (no functions), or for an ACL user without `FUNCTION`/`FCALL` or without switchboard's keys (`~switchboard:durable*`; on a cluster `~{switchboard}*`) and channels (`&switchboard:durable:*`), `subscribe_durable` returns `Unsupported` saying so, and publishing stays plain PUBLISH (so a user limited to its own channels publishes on them) |
//! | max payload | the server's `proto-max-bulk-len` (512 MiB by default), envelope included, and at most three quarters of the `client-output-buffer-limit pubsub` hard limit less 4 KiB (24 MiB by default): a message over that limit disconnects every subscriber it is sent to and is lost, while `PUBLISH` succeeds (Redis counts the buffer by its allocations, up to a quarter over the bytes) |
//!
//! # Durable mode
//!
//! [`subscribe_durable`](switchboard_core::Subscriber::subscribe_durable)
//! gives at-least-once delivery: a durable consumer keeps, while no member is
//! connected, every message published on a matching subject after it was
//! first created; a message is removed when acknowledged, delivered again
//! after a `nack` or when not acknowledged within `ack_wait`, and each
//! delivery carries its delivery count. **Publishing code and URLs do not
//! change**: a plain `publish` from any process, connected before or after
//! the consumer was created, is captured for every durable consumer whose
//! pattern matches.
//!
//! ## Mapping to Redis
//!
//! - **One stream per durable pattern** (a durable subject space),
//!   `switchboard:durable:stream:<pattern>`; messages are stored as entries
//!   with fields `s` (the subject) and `b` (the body, in the [`wire`]
//!   envelope, so headers travel). Every `XADD` is capped with
//!   `MAXLEN ~ N`, [`RedisOptions::stream_maxlen`] (`stream_maxlen=N` in the
//!   URL; default [`DEFAULT_STREAM_MAXLEN`], a million entries): entries
//!   trimmed past the cap are gone even if not yet acknowledged (they are
//!   then acknowledged and skipped, never delivered empty), so size it for
//!   the longest absence you want to survive.
//! - **One consumer group per durable consumer** on that stream, named by
//!   [`Durable::consumer`](switchboard_core::Durable::consumer) (the group if
//!   set, else the name), created at the stream's end (`$`) on first use, so
//!   it gets what is published from then on. [`Durable::name`](switchboard_core::Durable::name)
//!   is the Redis consumer inside the group: a member that comes back under
//!   its own name gets its own pending entries at once; members with
//!   different names share the work (queue groups are real in this mode).
//! - Each member has its own connection. It first reads its own pending
//!   entries (`XREADGROUP ... 0`, through a function that also reads their
//!   delivery counts from `XPENDING`), then loops: claim entries idle for at
//!   least `ack_wait` (`XAUTOCLAIM`: a member that crashed or left with
//!   unacknowledged messages, or a nacked message), else read new entries
//!   (`XREADGROUP ... BLOCK 100 >`). At most 64 entries are read ahead per
//!   member, so a member does not hoard a group's work. A member that is
//!   closed or dropped hands what it read ahead and nobody took back to the
//!   group at once (`XCLAIM ... IDLE <ack_wait> RETRYCOUNT <count - 1>
//!   JUSTID`): another member gets those entries within about 100 ms, with
//!   the delivery count they had, instead of after `ack_wait`. Only a member
//!   that crashed (or whose handle was already closed) leaves them to the ack
//!   deadline.
//! - `ack` is `XACK`. `nack` sets the entry's idle time to `ack_wait`
//!   (`XCLAIM ... IDLE ... JUSTID`), so the next claim, by any member,
//!   delivers it again (within about 100 ms) with its delivery count one
//!   higher; `nack_with_delay(d)` sets it to `ack_wait - d`, so it comes back
//!   after `d`, kept by Redis (it survives this process). A delay longer than
//!   `ack_wait` is cut to `ack_wait` (logged). `reject` acknowledges without
//!   redelivery.
//! - `max_deliver`: an entry claimed past its cap is acknowledged and not
//!   delivered again (as on NATS and the memory broker; the reaction worker
//!   dead-letters on the last delivery). It stays in the stream until trimmed.
//! - Acks and nacks go through one control connection per broker handle
//!   (a round trip each); a connection that died meanwhile (a Redis restart)
//!   is renewed and the command sent again, retried for up to the connect
//!   timeout, so an ack right after a restart still lands. An ack that fails
//!   anyway is an [`Error::Ack`](switchboard_core::Error::Ack); the message
//!   then comes again after `ack_wait`.
//! - A member whose connection breaks (or does not answer within the
//!   keepalive beyond its `BLOCK` time) reports one
//!   [`Error::Disconnected`](switchboard_core::Error::Disconnected) item,
//!   reconnects with the backoff and reads its own pending entries again
//!   first, then goes on: nothing is lost, what was in flight may come twice.
//! - [`remove_durable`](switchboard_core::Subscriber::remove_durable)
//!   destroys the group; with the last group of a pattern the stream and its
//!   registry entry go too. Members still subscribed get one error item and
//!   their stream ends.
//!
//! ## How a plain publish is captured
//!
//! Redis keeps a **registry** of the durable patterns: the hash
//! `switchboard:durable` (pattern -> stream key) and a version,
//! `switchboard:durable:version` (a number that only grows). On connect each
//! handle loads a function library (`FUNCTION LOAD REPLACE`, library
//! `switchboard_v1`), again on every reconnection of its control connection
//! and as soon as a call meets `Function not found` (a `FUNCTION FLUSH`, or a
//! restart without persistence: the durable publishes that met it failed,
//! and `flush` reports them). It holds:
//!
//! - `switchboard_v1_publish`: `XADD`s the message to the stream of every
//!   registered pattern it matches (read from the registry itself, with a
//!   matcher equivalent to [`Pattern::matches`](switchboard_core::Pattern::matches),
//!   tested against it), then `PUBLISH`es it, and replies how many streams
//!   stored it;
//! - `switchboard_v1_register` / `_unregister`: change the registry and the
//!   group atomically, bump the version and PUBLISH the new version and
//!   pattern list on `switchboard:durable:changes:<db>`, replying how many
//!   connections received it;
//! - the claim and registry-read functions used above.
//!
//! Each publisher keeps a **cache** of the pattern list. A subject that
//! matches no durable pattern is sent as a plain pipelined `PUBLISH`,
//! exactly as before (no extra cost but one check per registered pattern);
//! one that matches exactly one pattern is stored by the publisher itself:
//! `CLIENT REPLY SKIP`, `PUBLISH`, then `XADD <that pattern's stream>
//! NOMKSTREAM MAXLEN ~ <stream_maxlen>`, so the one reply it waits for is
//! the `XADD`'s (a function call costs Redis about as much as the `XADD`
//! itself; a failed `PUBLISH` is not reported on this path). One that
//! matches several patterns, or any subject while the pattern list is not
//! known, goes through `FCALL switchboard_v1_publish`, which reads the
//! registry itself. All on the same pipelined connection, so order is kept
//! and [`flush`](switchboard_core::Publisher::flush) waits for the `XADD`'s
//! or the function's reply: **`flush` means stored by Redis** for durable
//! subjects.
//!
//! The cache is kept fresh by a **routing link**, one pub/sub connection per
//! handle on the changes channel: it subscribes, then loads the registry
//! (so no change falls in between), applies every change it receives, and
//! acknowledges it on `switchboard:durable:acks:<db>`. While the link is down
//! or not yet loaded, the publisher sends **every** publish through the
//! function, which reads the authoritative registry, so it misses nothing.
//!
//! ## The window, and how it is closed
//!
//! `subscribe_durable` connects the member, then changes the registry as
//! its last step, and returns only once as many handles acknowledged the
//! change as Redis said received it (this handle's own publisher applies it
//! at once). So when it returns, every publisher connected to that Redis
//! stores matching subjects (by itself or through the function): a publish made afterwards,
//! by any process, is captured. This is tested with a second, separately
//! connected handle publishing right after `subscribe_durable` returned, 20
//! times with no retry (the test fails when the acknowledgement wait is
//! taken out). It costs one round trip to every publisher: a
//! `subscribe_durable` that creates a new pattern took 0.75 ms (median; 13 ms
//! at most, two handles, debug build) on loopback. Resuming an existing
//! pattern changes nothing and waits for nobody.
//!
//! What remains:
//!
//! - a publish made *while* `subscribe_durable` runs (neither before nor
//!   after it) may or may not be captured, as on any broker;
//! - a publisher whose routing link is dead without anybody knowing yet
//!   (a host gone, a frozen network) cannot acknowledge: `subscribe_durable`
//!   then waits at most the keepalive plus one second (16 s by default; the
//!   flush timeout with `keepalive=off`) and logs a warning naming how many
//!   did not confirm. Such a publisher gives its link up after the keepalive
//!   without a frame and from then on sends everything through the function,
//!   so it, too, is captured once `subscribe_durable` returned — provided
//!   its process is scheduled. With `keepalive=off` that bound is gone;
//! - a handle that closes, or whose process dies, between receiving a change
//!   and acknowledging it makes `subscribe_durable` wait the same bound (a
//!   closing handle acknowledges what it already received first, so a clean
//!   close does not);
//! - the registry lives in the URL's database, the changes channel carries
//!   the database number: publishers and durable consumers must use the
//!   same database;
//! - the publish function writes to streams whose keys it reads from the
//!   registry rather than being given them; on Redis Cluster every one of
//!   them carries the same hash tag as the registry, so it is in the
//!   declared slot, as Redis requires.
//!
//! ## What is kept, and for how long
//!
//! Per durable pattern one stream of at most about `stream_maxlen` entries,
//! kept until `remove_durable`; acknowledged entries stay in the stream
//! (Redis Streams keep entries for every group) until trimmed by the cap.
//! The registry hash goes with its last pattern; the version key
//! (`switchboard:durable:version`, one number) stays, so versions keep
//! growing. Per handle three extra connections (`<name>-control`, `<name>-routing`,
//! and one `<name>-durable` per durable subscription; on a cluster, all on
//! the master of the durable keys' slot). Whether the streams
//! survive a Redis restart is the server's persistence: with `appendonly
//! yes` [`Capabilities::durable_storage`](switchboard_core::Capabilities::durable_storage)
//! is true; with RDB snapshots only, what was written since the last
//! snapshot is lost in a crash.
//!
//! ## Redis Cluster
//!
//! On `redis+cluster://` and `rediss+cluster://` every durable key starts
//! with the hash tag `{switchboard}`: the registry is
//! `{switchboard}:durable`, its version `{switchboard}:durable:version`,
//! the streams `{switchboard}:durable:stream:<pattern>` (their consumer
//! groups live inside them). So all of them are in one slot (616), on one
//! master, and the functions, which touch the registry and the streams in
//! one call, stay within one slot as Redis Cluster requires. On one server
//! the key names are unchanged (no tag), so existing data keeps working.
//!
//! The connections that touch these keys go to the master of that slot:
//! the publishing connection (a durable publish is an `XADD` there, and a
//! `PUBLISH` reaches every node from any node), the control connection
//! (where the function library is loaded: `FUNCTION LOAD` is per node), the
//! routing link and the acknowledgement listener (on a cluster, `PUBLISH`
//! counts the receivers on its own node only, so every routing link must
//! be on the node where the registry changes are published), and each
//! durable member. The master is found by asking any reachable node of the
//! URL `CLUSTER SLOTS` (an ACL user needs it, as every cluster client
//! does), then reached under the URL's host name when it is a listed node,
//! else under the host name it announces, else its address (the TLS
//! certificate is checked against that name, or `tls_server_name`).
//!
//! When the slot moves:
//!
//! - **Failover** (the master dies, a replica takes over, after
//!   `cluster-node-timeout` and an election): the connections to the dead
//!   master break; each reconnects with the backoff, asking for the owner
//!   again, and reaches the promoted replica once the cluster agrees on it.
//!   The function library replicates, so the new master has it (and it is
//!   loaded again wherever a call meets `Function not found`). Durable
//!   members report one [`Error::Disconnected`](switchboard_core::Error::Disconnected)
//!   item and resume with their own pending entries; publishes made while
//!   there was no master fail (`publish` or `flush` says so) and should be
//!   published again, as on one server during a restart.
//! - **Resharding** (the slot migrated to another master): a command on the
//!   old master gets `MOVED` (or `CLUSTERDOWN`, `TRYAGAIN`). The control
//!   connection reconnects to the new owner and sends the command again
//!   (for up to the connect timeout); during the migration an `ASK` reply
//!   sends that one command, after `ASKING`, to the node it names. A
//!   durable member treats these replies, and its stream vanishing under a
//!   blocked read (the key migrated), as a lost connection (reconnect, find
//!   the owner; a removed consumer is told by the next read's `NOGROUP`).
//!   The publishing connection fails the publishes that got the reply
//!   (`flush` reports them), reconnects to the new owner, and tells the
//!   routing link and the control connection to move too (the control
//!   connection loads the function library on the new owner, which may not
//!   have it; a member meeting `Function not found` loads it on its own
//!   connection). Routing links of handles that
//!   publish nothing durable stay on the old node until their connection
//!   breaks; they still receive every change (pub/sub spans the cluster),
//!   but `subscribe_durable` does not count them among the receivers it
//!   waits for, so for them the window of the previous section is open
//!   until they move.
//!
//! **Replication is asynchronous** in Redis: a write the master answered
//! is lost if the master dies before a replica has it. So on a cluster,
//! when the master of the durable slot had replicas online when the
//! publishing connection reached it (`connected_slaves` of `INFO
//! replication`), `flush` sends `WAIT 1 <ms>` behind the durable publishes
//! it covers and returns once a replica confirmed them; if none confirms
//! within a second (or half the flush timeout, if shorter), `flush` fails
//! saying so, and the publisher should publish them again (at-least-once:
//! they may then be stored twice). Each flush that follows durable
//! publishes costs that round trip. What this does not cover: publishes
//! never flushed; a master that had no replica when the publishing
//! connection reached it (a replica that joins later is waited for after
//! the next reconnection); and the failover choosing a replica other than
//! the one that confirmed, when the master has several. Acks, nacks and
//! consumer-group positions replicate the same way, unwaited: a failover
//! may forget an ack or a delivery, so a message comes again (a duplicate,
//! with at-least-once delivery that is allowed); it does not lose a message
//! a replica had.
//!
//! Why the hand-written connection rather than a cluster client
//! (redis-rs `cluster-async`, fred): the durable mode needs one slot on
//! one master, not routing per key over 16,384 slots, so what a cluster
//! client adds is reduced here to one `CLUSTER SLOTS` on connect and a
//! reconnect on a redirect. Keeping the connection keeps what the one-server
//! mode measured (pipelined publishes, the `CLIENT REPLY SKIP` path, one
//! reply counted per publish, bounded buffers) on a cluster too; a second
//! client would have meant a second implementation of all of it. No
//! cluster client was benchmarked against it. What was measured (release
//! build, 2-core machine shared with other builds, all servers on loopback,
//! 16 B publishes on a subject one durable pattern matches, flushed every
//! 1,000; three rounds in one run, `durable_publish_rate_on_a_cluster_and_on_one_server`
//! in `tests/cluster.rs`, `--ignored`): one server 462,835 / 469,323 /
//! 471,094 msg/s; a 3-master cluster without replicas 195,554 / 252,247 /
//! 198,025 (0.42x, 0.54x, 0.42x); with a replica per master, so each flush
//! also waits for a replica, 87,336 / 81,149 / 96,544 (0.19x, 0.17x,
//! 0.20x; six redis-servers then share the two cores). The gap without
//! replicas is Redis Cluster's, not the client's: a `PUBLISH` on a cluster
//! node is sent to every other node over the cluster bus —
//! `redis-benchmark -c 1 -P 256 -n 300000` measured `PUBLISH` at 373,639
//! and 378,828 req/s on a cluster node against 2,752,587 and 2,884,923 on
//! a lone server, while `XADD` was the same (869,658 and 923,175 against
//! 917,529 and 926,025) — and a cluster client would send the same
//! `PUBLISH`.
//!
//! Tested (`tests/cluster.rs`) on clusters of the test's own, 3 masters:
//! the conformance suite with its durable cases; over TLS (`tls-cluster
//! yes`) a durable round trip; the durable slot resharded by hand to
//! another master (`CLUSTER SETSLOT ... IMPORTING`/`MIGRATING`, `MIGRATE`
//! of the stream, an ack of a held delivery then answered `ASK`, `MIGRATE`
//! of the rest, `SETSLOT ... NODE`): the publisher, the member and the
//! control connection follow `MOVED`, every message arrives and nothing
//! stays pending; and with one replica per master and
//! `cluster-node-timeout 2000`: `flush` waits for the replica (`WAIT`
//! counted on the master) and fails while the replica is stopped; then the
//! restart drill (6,000 numbered messages at a steady rate, batches of 100
//! flushed, a consumer reading throughout and one away until the end)
//! while the master of the durable slot is killed (its replica took over
//! after about 4 s), and later the old master comes back as a replica,
//! syncs, and the new master is killed in turn: every message reached both
//! consumers, with one or two duplicates per run.
//!
//! ## Numbers
//!
//! Release build, Redis 7.0.15 on loopback (a private server, `--save ''
//! --appendonly no`), on a 2-core machine shared with other builds (load 5
//! to 7, so absolute numbers are low and noisy; the ratios are what counts):
//!
//! | | 16 B | 1 KiB |
//! |---|---|---|
//! | at-most-once `publish` (no durable pattern matches), switchboard | 866,180 msg/s | 391,734 msg/s |
//! | the same, raw redis-rs (256 in flight) | 183,997 | 141,852 |
//! | durable `publish` (every subject matches; `flush` = stored), switchboard | 124,332 | 64,911 |
//! | `FCALL switchboard_v1_publish`, `redis-benchmark -c 1 -P 256` | 103,781 | 57,286 |
//! | raw `XADD ... MAXLEN ~`, `redis-benchmark -c 1 -P 256` | 398,268 | 172,076 |
//! | raw `PUBLISH`, `redis-benchmark -c 1 -P 256` | 1,629,394 | 522,700 |
//!
//! At-most-once publishing before this mode (commit `e7ad9c4`) and after,
//! same command with `--no-raw`, alternated on the same server: before
//! 649,160, 961,723 and 992,202 msg/s (16 B), after 722,011, 964,392 and
//! 668,765, and 688,038 with one durable pattern registered that the
//! subjects do not match; client CPU per million 16 B publishes 0.48 to
//! 0.52 s before, 0.44 to 0.54 s after. The spread is the shared machine's
//! (Redis, single-threaded, sets the pace); no difference shows beyond it.
//!
//! The durable path is bounded by the function on the server: 9.8 µs per
//! call (`INFO commandstats`), of which `XADD` is 1.75 µs and `PUBLISH`
//! 0.2 µs; the rest is the Lua call, reading the registry and matching.
//! switchboard's durable publishes reach the function's own ceiling (1.2x
//! and 1.1x what `redis-benchmark` gets from it) and are 0.31x (16 B) and
//! 0.38x (1 KiB) of raw pipelined `XADD`: short of the issue's 0.95x target;
//! a function call alone costs Redis about what an `XADD` does, so no lighter
//! function closes that gap. Since then a subject matching exactly one known
//! pattern skips the function (`CLIENT REPLY SKIP`, `PUBLISH`, `XADD`, see
//! above): Redis pays the `XADD` and the `PUBLISH`, about 0.85x raw `XADD`
//! by these per-command costs (BENCHMARKS.md, "Durable mode", has the bench
//! runs; the numbers in this table are from before). At-most-once subjects
//! pay one check per registered pattern on the client and nothing on the
//! server. Commands:
//!
//! ```text
//! switchboard bench --broker redis://127.0.0.1:6391 --mode pub --size 16,1024 \
//!     --msgs 1000000 --repeat 3 --redis-benchmark
//! # a durable consumer over `>`, so every publish is durable:
//! redis-cli -p 6391 FCALL switchboard_v1_register 3 switchboard:durable \
//!     switchboard:durable:version 'switchboard:durable:stream:>' '>' bench \
//!     switchboard:durable:changes:0
//! switchboard bench --broker 'redis://127.0.0.1:6391?stream_maxlen=100000' \
//!     --mode pub --size 16,1024 --msgs 1000000 --repeat 3
//! redis-benchmark -p 6391 -c 1 -P 256 -n 500000 FCALL switchboard_v1_publish 1 \
//!     switchboard:durable bench.x <payload> 100000
//! redis-benchmark -p 6391 -c 1 -P 256 -n 500000 XADD rawstream MAXLEN '~' 100000 '*' \
//!     s bench.x b <payload>
//! ```
//!
//! `subscribe_durable` of a new pattern, publishers' confirmations included,
//! took 0.75 ms (median of 20; debug build, two handles, shared Redis).
//!
//! # Request/reply
//!
//! [`request`](switchboard_core::Broker::request) subscribes to an inbox
//! channel of its own (`_INBOX.<random>`), publishes the request with the
//! inbox in the envelope's [`REPLY_TO`] header, and returns the first message
//! on the inbox. PUBLISH answers with how many subscribers got the request,
//! so a request nobody listens to fails at once with
//! [`Error::NoResponders`](switchboard_core::Error::NoResponders); otherwise
//! the wait is bounded by the timeout given. A delivery carrying the header
//! is a request ([`Delivery::is_request`](switchboard_core::Delivery::is_request));
//! the adapter takes the header out of its headers, so handlers see the same
//! headers on every broker, and [`Delivery::reply`](switchboard_core::Delivery::reply)
//! publishes the reply to the inbox. A plain Redis client answers a
//! switchboard request by publishing to the channel named in that header,
//! and asks one by setting it in the envelope. Each request opens one
//! connection for its inbox (its PUBLISH goes through a connection the
//! broker keeps for requests): fine for commands and queries, not meant for a
//! stream of thousands of requests a second.
//!
//! # Connections
//!
//! One connection publishes. `publish` appends the encoded PUBLISH (or, for a
//! durable subject, `FCALL`: see [Durable mode](#durable-mode)) to a buffer
//! and returns without waiting for Redis; one writer task sends everything that
//! accumulated in one write, so publishes pipeline, and a reader task counts
//! the replies. `flush` waits until every PUBLISH made before it is answered,
//! and reports those that failed. On a cluster this connection is on the
//! master of the durable keys' slot (see [Redis Cluster](#redis-cluster)).
//!
//! Every PUBSUB subscription of a handle (and every request's inbox) shares
//! one pub/sub connection (`<name>-sub` in `CLIENT LIST`), opened by the
//! first subscription: 10,000 subscriptions are one connection, not 10,000
//! (Redis's default `maxclients` is 10,000). A channel or glob is subscribed
//! once, however many subscriptions want it; each message goes to every
//! subscription on its channel or glob, each checking it against its own
//! pattern. Subscribing resolves once Redis confirmed the SUBSCRIBE (literal
//! patterns) or PSUBSCRIBE; dropping a subscription UNSUBSCRIBEs when it was
//! the last on its channel, and [`Subscription::close`](switchboard_core::Subscription::close)
//! waits for Redis to confirm that. An idle subscription costs well under
//! 2 KiB of this process's memory. The connection speaks RESP directly
//! rather than through redis-rs, whose pub/sub buffers without bound, which
//! would hide a subscriber falling behind. Durable subscriptions keep a
//! connection each (see [Durable mode](#durable-mode)).
//!
//! # Slow subscribers and reconnecting
//!
//! A subscription buffers a bounded number of deliveries
//! ([`RedisOptions::capacity`]). The shared connection is never stalled for
//! one slow reader (that would hold up every other subscription of the
//! handle): when a subscription's buffer is full, what comes for it is
//! dropped and counted, and its stream yields one
//! [`Error::Lost`](switchboard_core::Error::Lost) item with the exact count,
//! in the place of the messages it stands for. Whenever the shared
//! connection breaks (`CLIENT KILL`, a restart, the network, a dead link, or
//! Redis's `client-output-buffer-limit pubsub` if this process cannot read
//! as fast as Redis sends), every subscription's stream yields one
//! [`Error::Disconnected`](switchboard_core::Error::Disconnected) item saying
//! the connection was lost and is being renewed, then the adapter reconnects
//! and subscribes every channel and glob again with a backoff
//! (100 ms doubling to 5 s), logging one line when it is back
//! (`redis: resubscribed to 'switchboard-sub' after 1.2s`; failed attempts only at
//! debug level), and the streams go on. Messages published meanwhile are
//! lost: PUBSUB keeps nothing. Nothing is ever dropped silently on the client
//! side: a message on a channel that is not a valid subject (a plain client
//! can `PUBLISH 'a.bad subject' x`) is an
//! [`Error::InvalidSubject`](switchboard_core::Error::InvalidSubject) item
//! naming the channel, and the stream goes on.
//!
//! The publishing connection reconnects too: publishes in flight when it broke
//! are reported by the next `flush`; while reconnecting fails, `publish`
//! returns [`Error::Publish`](switchboard_core::Error::Publish).
//!
//! ## Connections that die silently
//!
//! A connection can stop passing bytes without Redis or the kernel saying so:
//! the host vanishes, a NAT or firewall forgets the connection, a proxy hangs.
//! With `keepalive=D` (15 s by default), the subscriptions' connection sends
//! `PING` after `D/3` without a frame and is given up when nothing came for
//! `D`; the publishing connection PINGs when idle the same way, and gives up
//! when replies are owed and nothing came for `D`. Either is then handled as
//! above: the subscriptions report `Disconnected` and resubscribe, the
//! publishes awaiting replies are reported by `flush`, and
//! [`Broker::status`] says disconnected
//! until the publishing connection is back. With
//! `keepalive=off`, only TCP keepalive is left (on every connection: first
//! probe after 15 s of silence, then every 5 s, 3 unanswered probes), which
//! notices a vanished host after about 30 s but never a peer that is up and
//! silent.
//!
//! `flush` waits at most [`RedisOptions::flush_timeout`] (10 s by default),
//! then fails with [`Error::Timeout`](switchboard_core::Error::Timeout); the
//! publishes it waited for stay counted, so a later `flush` waits for them
//! again and reports those that failed (e.g. when the keepalive has meanwhile
//! given the connection up).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod broker;
mod cluster;
mod connection;
mod control;
mod durable;
mod error;
mod options;
mod publisher;
mod request;
mod resp;
mod routing;
mod subscription;
mod tls;
pub mod wire;

use std::sync::Arc;

pub use broker::RedisBroker;
pub use options::DB;
pub use options::{
    RedisOptions, DEFAULT_CAPACITY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_KEEPALIVE, DEFAULT_NAME, DEFAULT_STREAM_MAXLEN, QUERY_KEYS, STREAM_MAXLEN,
};
pub use request::REPLY_TO;
/// TLS settings for [`tls`](RedisOptions::tls), the same on every adapter.
pub use switchboard_tls::TlsOptions;

use switchboard_core::{Broker, Driver, Result};

/// The broker kind, as [`Broker::kind`] returns it.
pub const KIND: &str = "redis";

/// The URL schemes this adapter accepts: `redis`, `rediss` (TLS),
/// `redis+unix` and `unix` (a unix socket), and `redis+cluster` /
/// `rediss+cluster` (the nodes of a Redis Cluster, plain or over TLS).
pub const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis+unix",
    "unix",
    "redis+cluster",
    "rediss+cluster",
];

/// The URL the bare kind `redis` stands for: the local server on its usual port.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// This adapter's entry for the `switchboard` facade's registry (registered
/// there when its `redis` feature is on).
pub const DRIVER: Driver = Driver::new(KIND, SCHEMES, DEFAULT_URL, |url| {
    Box::pin(async move { Ok(Arc::new(connect(url).await?) as Arc<dyn Broker>) })
})
.with_locate(locate);

/// Where a Redis URL leads: its server (port 6379 where none is written),
/// every seed node of a cluster URL, or a unix socket's path. The database
/// number is left out: PUBSUB channels span every database. `None` for a
/// URL [`connect`] would refuse.
fn locate(url: &str) -> Option<switchboard_core::Location> {
    let target = options::Target::parse(url, &mut RedisOptions::default()).ok()?;
    Some(match (&target.socket, target.cluster.is_empty()) {
        (Some(socket), _) => switchboard_core::Location::place(
            std::fs::canonicalize(socket)
                .unwrap_or_else(|_| socket.clone())
                .to_string_lossy(),
        ),
        (None, true) => switchboard_core::Location::servers([(target.host, target.port)]),
        (None, false) => switchboard_core::Location::servers(target.cluster),
    })
}

/// Connects to a `redis://` or `rediss://` URL with the default [`RedisOptions`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> switchboard_core::Result<()> {
/// let broker = switchboard_redis::connect("redis://127.0.0.1:6379").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<RedisBroker> {
    RedisOptions::new().connect(url).await
}
