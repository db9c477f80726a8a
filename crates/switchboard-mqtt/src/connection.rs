//! The one MQTT connection of a broker handle: connecting (within the connect
//! timeout), the task that polls rumqttc's event loop, reconnects with the
//! shared [`Backoff`](switchboard_core::Backoff) and resubscribes, and the
//! bookkeeping that matches SUBSCRIBE and UNSUBSCRIBE packets with their
//! acknowledgements.
//!
//! rumqttc numbers packets itself and says which number it gave in an
//! `Outgoing` event; requests reach its event loop in the order they were
//! queued. So every SUBSCRIBE and UNSUBSCRIBE is queued under one lock
//! (`order`) together with a waiter for its acknowledgement, and each
//! `Outgoing` event hands the oldest waiter its packet number. When the
//! connection is lost, every waiter fails (the server forgot what it had not
//! answered), requests still queued are dropped before reconnecting, and new
//! requests wait until the connection is back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use switchboard_core::{Link, Message, Result};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error;
use crate::options::Target;
use crate::subscription::Registry;
use crate::KIND;

/// The largest packet MQTT can carry (its remaining length is at most
/// 268,435,455 bytes): the limit when the server announces none.
pub(crate) const MQTT_MAX_PACKET: usize = 268_435_455;

/// Requests (publishes, subscribes) the client queues for its event loop
/// before `publish` has to wait for room.
const REQUEST_QUEUE: usize = 16 * 1024;

/// The socket receive buffer asked for (see `connect`): 8 MiB.
const RECEIVE_BUFFER: u32 = 8 << 20;

/// Locks `mutex`, going on with the data of a thread that panicked holding it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A packet that the server acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Subscribe,
    Unsubscribe,
}

/// A request [`Shared::round_trip`] queues.
pub(crate) enum Request {
    /// SUBSCRIBE to a filter under a subscription identifier.
    Subscribe { filter: String, id: usize },
    /// UNSUBSCRIBE from a filter.
    Unsubscribe { filter: String },
    /// SUBSCRIBE to the connection's flush filter, again: an ordering barrier
    /// (an UNSUBSCRIBE of a filter never subscribed would do, but rumqttc
    /// logs a warning for each "no subscription existed").
    Barrier { filter: String },
}

/// What the server answered.
#[derive(Debug)]
pub(crate) enum Acked {
    Subscribed(Vec<SubscribeReasonCode>),
    Unsubscribed,
}

type Waiter = oneshot::Sender<std::result::Result<Acked, String>>;

/// The waiters for acknowledgements: queued ones (no packet number yet) per
/// kind, in queuing order, and sent ones by packet number.
#[derive(Default)]
struct Acks {
    up: bool,
    next: u64,
    subscribes: VecDeque<(u64, Waiter)>,
    unsubscribes: VecDeque<(u64, Waiter)>,
    /// rumqttc reuses packet numbers quickly (they wrap at the server's
    /// receive maximum), so several may wait under one; the server answers
    /// in order.
    sent: HashMap<(Kind, u16), VecDeque<Waiter>>,
}

impl Acks {
    fn queue(&mut self, kind: Kind) -> &mut VecDeque<(u64, Waiter)> {
        match kind {
            Kind::Subscribe => &mut self.subscribes,
            Kind::Unsubscribe => &mut self.unsubscribes,
        }
    }

    fn fail_all(&mut self, reason: &str) {
        for (_, waiter) in self.subscribes.drain(..).chain(self.unsubscribes.drain(..)) {
            let _ = waiter.send(Err(reason.to_string()));
        }
        for (_, waiters) in self.sent.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(reason.to_string()));
            }
        }
    }
}

/// What the broker handle, its subscriptions and the event-loop task share.
pub(crate) struct Shared {
    pub(crate) target: Target,
    pub(crate) client: AsyncClient,
    pub(crate) client_id: String,
    pub(crate) link: Link,
    /// The server's maximum packet size (or MQTT's).
    max_packet: AtomicUsize,
    /// Whether the server takes shared subscriptions (it says so in CONNACK).
    pub(crate) shared_subscriptions: AtomicBool,
    acks: Mutex<Acks>,
    /// Held while a SUBSCRIBE or UNSUBSCRIBE is queued with its waiter.
    order: tokio::sync::Mutex<()>,
    up: watch::Sender<bool>,
    pub(crate) registry: Mutex<Registry>,
    /// Requests waiting for their reply, by correlation data.
    pub(crate) requests: Mutex<HashMap<Bytes, oneshot::Sender<Message>>>,
    pub(crate) next_request: AtomicU64,
    /// The subscription identifier of the reply inbox, once subscribed.
    pub(crate) inbox: tokio::sync::OnceCell<usize>,
    /// Set by `close`: publishing and subscribing fail with `Closed`.
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    /// The server's maximum packet size, or MQTT's when it announced none.
    pub(crate) fn max_packet(&self) -> usize {
        self.max_packet.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the handle closed; returns whether it was open until now.
    pub(crate) fn mark_closed(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Stops the event-loop task (it ends every subscription on its way out).
    pub(crate) fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// The filter `flush` subscribes to as a barrier: no subject maps to it
    /// (its first level holds a `.`), and nothing publishes there.
    pub(crate) fn flush_filter(&self) -> String {
        format!("_switchboard.flush/{}", self.client_id)
    }

    /// The topic the replies to this connection's requests are sent to.
    pub(crate) fn inbox_topic(&self) -> String {
        format!("_INBOX/{}", self.client_id)
    }

    /// Whether the connection is up now.
    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Queues the request `prepare` returns (run under the order lock once
    /// the connection is up; `None` skips) and waits for the server's
    /// acknowledgement, all within the flush timeout. `Err` says why not.
    pub(crate) async fn round_trip(
        &self,
        kind: Kind,
        prepare: impl FnOnce() -> Option<Request>,
    ) -> std::result::Result<Option<Acked>, String> {
        let timeout = self.target.options.flush_timeout;
        let deadline = switchboard_core::deadline(timeout);
        let rx = {
            let _order = tokio::time::timeout_at(deadline, self.order.lock())
                .await
                .map_err(|_| format!("other requests held the connection for {timeout:?}"))?;
            let mut up = self.up.subscribe();
            let waited = tokio::time::timeout_at(deadline, up.wait_for(|up| *up))
                .await
                .map(|ready| ready.map(|_| ()));
            match waited {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err("the connection is closed".into()),
                Err(_) => {
                    return Err(match self.link.failure() {
                        Some(failure) => format!(
                            "the connection has been down for {timeout:?}; the last attempt to reconnect failed: {failure}"
                        ),
                        None => format!(
                            "the connection has been down for {timeout:?}; is the server running?"
                        ),
                    })
                }
            }
            let Some(request) = prepare() else {
                return Ok(None);
            };
            let (tx, rx) = oneshot::channel();
            let id = {
                let mut acks = lock(&self.acks);
                if !acks.up {
                    return Err("the connection was lost".into());
                }
                acks.next += 1;
                let id = acks.next;
                acks.queue(kind).push_back((id, tx));
                id
            };
            let queued = tokio::time::timeout_at(deadline, self.send(request)).await;
            let failed = match queued {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!(
                    "the client's request queue stayed full for {timeout:?}"
                )),
            };
            if let Some(reason) = failed {
                // Not queued: take the waiter back so the next packet gets the next one.
                lock(&self.acks)
                    .queue(kind)
                    .retain(|(queued, _)| *queued != id);
                return Err(reason);
            }
            rx
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result.map(Some),
            Ok(Err(_)) => Err("the connection closed".into()),
            Err(_) => Err(format!("the server did not answer within {timeout:?}")),
        }
    }

    async fn send(&self, request: Request) -> std::result::Result<(), String> {
        let sent = match request {
            Request::Subscribe { filter, id } => {
                let mut filter = Filter::new(filter, QoS::AtMostOnce);
                // Retained messages are old news: a subscription gets what is
                // published after it, as on every switchboard broker.
                filter.retain_forward_rule = RetainForwardRule::Never;
                let properties = SubscribeProperties {
                    id: Some(id),
                    user_properties: Vec::new(),
                };
                self.client
                    .subscribe_many_with_properties([filter], properties)
                    .await
            }
            Request::Unsubscribe { filter } => self.client.unsubscribe(filter).await,
            Request::Barrier { filter } => {
                let mut filter = Filter::new(filter, QoS::AtMostOnce);
                filter.retain_forward_rule = RetainForwardRule::Never;
                filter.nolocal = true;
                self.client.subscribe_many([filter]).await
            }
        };
        sent.map_err(|e| format!("rumqttc did not take the request ({e})"))
    }

    /// An `Outgoing` event: the oldest queued waiter of `kind` got `pkid`.
    fn sent(&self, kind: Kind, pkid: u16) {
        let mut acks = lock(&self.acks);
        if let Some((_, waiter)) = acks.queue(kind).pop_front() {
            acks.sent.entry((kind, pkid)).or_default().push_back(waiter);
        }
    }

    fn acked(&self, kind: Kind, pkid: u16, acked: Acked) {
        let waiter = {
            let mut acks = lock(&self.acks);
            let waiters = acks.sent.get_mut(&(kind, pkid));
            let waiter = waiters.and_then(VecDeque::pop_front);
            if acks.sent.get(&(kind, pkid)).is_some_and(VecDeque::is_empty) {
                acks.sent.remove(&(kind, pkid));
            }
            waiter
        };
        if let Some(waiter) = waiter {
            let _ = waiter.send(Ok(acked));
        }
    }

    fn connected(&self, connack: &ConnAck) {
        let properties = connack.properties.as_ref();
        let max = properties
            .and_then(|p| p.max_packet_size)
            .map_or(MQTT_MAX_PACKET, |max| (max as usize).min(MQTT_MAX_PACKET));
        self.max_packet.store(max, Ordering::Release);
        let shared = properties.and_then(|p| p.shared_subscription_available) != Some(0);
        self.shared_subscriptions.store(shared, Ordering::Release);
        lock(&self.acks).up = true;
        self.up.send_replace(true);
    }

    fn lost(&self, reason: &str) {
        {
            let mut acks = lock(&self.acks);
            acks.up = false;
            acks.fail_all(&format!(
                "the connection was lost before the server answered ({reason})"
            ));
        }
        self.up.send_replace(false);
        if self.link.lost(reason) {
            lock(&self.registry).lost(reason);
        }
    }

    /// The task ends: nothing more will be answered or delivered.
    fn finish(&self) {
        lock(&self.acks).fail_all("the connection is closed");
        lock(&self.acks).up = false;
        self.up.send_replace(false);
        lock(&self.registry).clear();
        lock(&self.requests).clear();
    }
}

/// Keeps the connection running: held by every broker handle and every
/// subscription stream; when the last is dropped the event-loop task stops.
pub(crate) struct Alive(pub(crate) Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Connects to `target` (within its connect timeout) and starts the task that
/// polls the connection.
pub(crate) async fn connect(target: Target) -> Result<(Arc<Shared>, JoinHandle<()>)> {
    let options = &target.options;
    let name = options.name.as_deref().unwrap_or("switchboard");
    if let Some(problem) = crate::options::name_problem(name) {
        return Err(switchboard_core::Error::invalid_url(
            &target.url,
            format!("the connection name {name:?} must be {problem}"),
        ));
    }
    let client_id = format!("{name}-{:016x}", rand::random::<u64>());
    let mut mqtt = rumqttc::v5::MqttOptions::new(&client_id, &target.host, target.port);
    mqtt.set_keep_alive(options.keep_alive_interval());
    mqtt.set_clean_start(true);
    // rumqttc's own timeout is in whole seconds; the adapter bounds the first
    // connect itself, to the millisecond.
    mqtt.set_connection_timeout(options.connect_timeout.as_secs().max(1) + 1);
    // Take packets as large as MQTT allows; the server then never drops a
    // message for being too large for this client.
    mqtt.set_max_packet_size(Some(MQTT_MAX_PACKET as u32));
    // A large receive buffer: MQTT has no flow control for QoS 0, and
    // mosquitto drops (silently, for the client) what it cannot write within
    // its 1000-packet queue, so the kernel buffer is what absorbs a reader
    // that is briefly descheduled. Linux caps it at net.core.rmem_max.
    let mut network = mqtt.network_options();
    network.set_tcp_recv_buffer_size(RECEIVE_BUFFER);
    mqtt.set_network_options(network);
    if let Some(credentials) = &target.credentials {
        mqtt.set_credentials(credentials.user.clone(), credentials.password.clone());
    }
    if let Some(config) = &target.tls {
        mqtt.set_transport(Transport::Tls(TlsConfiguration::Rustls(config.clone())));
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, REQUEST_QUEUE);
    let first = tokio::time::timeout(options.connect_timeout, eventloop.poll()).await;
    let connack = match first {
        Err(_) => return Err(error::connect_timed_out(&target, options.connect_timeout)),
        Ok(Err(e)) => return Err(error::connect_failed(&target, e)),
        Ok(Ok(Event::Incoming(Packet::ConnAck(connack)))) => connack,
        Ok(Ok(other)) => {
            return Err(error::connect_failed(
                &target,
                ConnectionError::NotConnAck(Box::new(match other {
                    Event::Incoming(packet) => packet,
                    Event::Outgoing(_) => Packet::PingResp(rumqttc::v5::mqttbytes::v5::PingResp),
                })),
            ))
        }
    };
    let shared = Arc::new(Shared {
        target,
        client,
        client_id,
        link: Link::new(KIND),
        max_packet: AtomicUsize::new(MQTT_MAX_PACKET),
        shared_subscriptions: AtomicBool::new(true),
        acks: Mutex::new(Acks::default()),
        order: tokio::sync::Mutex::new(()),
        up: watch::Sender::new(false),
        registry: Mutex::new(Registry::default()),
        requests: Mutex::new(HashMap::new()),
        next_request: AtomicU64::new(0),
        inbox: tokio::sync::OnceCell::new(),
        closed: AtomicBool::new(false),
        shutdown: watch::Sender::new(false),
    });
    shared.connected(&connack);
    let task = tokio::spawn(run(Arc::clone(&shared), eventloop));
    Ok((shared, task))
}

/// Polls the event loop until shut down: dispatches messages, matches
/// acknowledgements, and on a lost connection fails the waiters, reports the
/// loss on every subscription, waits out the backoff and reconnects, then
/// resubscribes.
async fn run(shared: Arc<Shared>, mut eventloop: EventLoop) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut attempts = shared.target.options.reconnect_backoff.attempts();
    let mut server_said: Option<String> = None;
    loop {
        let polled = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                crate::subscription::dispatch(&shared, publish)
            }
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                attempts.succeeded();
                server_said = None;
                shared.connected(&connack);
                shared.link.restored();
                tokio::spawn(crate::subscription::resubscribe(Arc::clone(&shared)));
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => shared.acked(
                Kind::Subscribe,
                ack.pkid,
                Acked::Subscribed(ack.return_codes),
            ),
            Ok(Event::Incoming(Packet::UnsubAck(ack))) => {
                shared.acked(Kind::Unsubscribe, ack.pkid, Acked::Unsubscribed)
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => shared.sent(Kind::Subscribe, pkid),
            Ok(Event::Outgoing(Outgoing::Unsubscribe(pkid))) => {
                shared.sent(Kind::Unsubscribe, pkid)
            }
            Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                server_said = Some(match disconnect.properties.and_then(|p| p.reason_string) {
                    Some(text) => format!(
                        "the server disconnected: {:?}, {text}",
                        disconnect.reason_code
                    ),
                    None => format!("the server disconnected: {:?}", disconnect.reason_code),
                });
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => break,
            Err(e) => {
                if shared.is_closed() {
                    break;
                }
                let reason = server_said.take().unwrap_or_else(|| e.to_string());
                shared.lost(&reason);
                // The server's refusal (CONNACK's code: not authorized, bad
                // user name or password...) or a TLS failure will not go
                // away by itself, unlike a broker still restarting.
                let lasting = matches!(
                    e,
                    ConnectionError::ConnectionRefused(_) | ConnectionError::Tls(_)
                );
                shared.link.attempt_failed(&reason, lasting);
                let delay = attempts.failed();
                tracing::debug!(broker = KIND, "mqtt: reconnecting in {delay:?} ({reason})");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
                // Requests queued while down belong to the lost session (their
                // waiters failed): drop them, rumqttc does so on a clean start.
                eventloop.clean();
            }
        }
    }
    shared.finish();
}

/// How long `close` waits for the server to close the connection after
/// DISCONNECT before dropping it.
pub(crate) const DISCONNECT_WAIT: Duration = Duration::from_secs(2);
