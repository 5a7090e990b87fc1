//! The one message loop every service runs: [`Worker`].
//!
//! A service names the durable consumers it pulls from ([`ConsumerSpec`]) and says how it
//! handles one message ([`Handler::handle`]); the worker does the rest, the same way in
//! every service:
//!
//! - **Pull.** One message at a time, from the consumers in the order they were given (an
//!   earlier consumer's message first when several wait), in one `select!` with the
//!   shutdown signal, the handler's optional tick ([`Handler::tick`], before messages when
//!   due) and the rebind timer.
//! - **Keep alive.** While a message is handled its ack deadline is renewed every third of
//!   the consumer's `ack_wait` (`AckKind::Progress`), so long work is not handed to a
//!   second replica.
//! - **Settle.** A message is acknowledged (double ack) only after `handle` returned `Ok`:
//!   its effect is recorded. It is handed back with a delay (`Nak`) when `handle` failed,
//!   or asked for it ([`Delivery::retry_after`]). One the handler cannot use goes to the
//!   dead-letter stream with the reason ([`Delivery::decode`], [`Delivery::dead_letter`])
//!   and is counted in `keysync_dead_letters_total{service}`.
//! - **Rebind.** When a consumer's message stream ends or fails (the consumer or its
//!   stream was deleted, the server restarted), the service turns unready (`/readyz` 503)
//!   and binds the consumer again — creating it, and its stream, if they are gone — with a
//!   bounded backoff ([`REBIND_BACKOFF_MIN`] doubling to [`REBIND_BACKOFF_MAX`]). The
//!   worker never gives up while the process should run. A consumer made again on the
//!   stream it was bound to resumes after the last message this worker settled, so what
//!   was handled is not handled again.
//! - **Health and lag.** `/readyz` is ready while every consumer is bound and the service
//!   is not stopping ([`crate::health`]); the consumers' lag is recorded
//!   ([`crate::lag`]).
//! - **Drain.** When `shutdown` completes nothing more is pulled: the message in hand is
//!   finished and settled first, then the health endpoints close.
//!
//! Tests drive a service one message at a time with [`Worker::step`], which handles and
//! settles a message exactly as the loop does.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_nats::datetime::DateTime;
use async_nats::jetstream::{
    self, AckKind,
    consumer::{self, DeliverPolicy, PullConsumer},
    stream::RetentionPolicy,
};
use futures::StreamExt;
use opentelemetry::{KeyValue, metrics::Counter};
use tokio::time::Instant;

use crate::health::{Health, HealthError, HealthServer, HealthSettings};
use crate::lag::ConsumerLag;
use crate::{Bus, BusMessage, Error};

/// The first pause before a consumer is bound again.
pub const REBIND_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between two attempts to bind a consumer again.
pub const REBIND_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a message whose handling failed waits before it comes again, unless the
/// service says otherwise ([`Worker::with_retry_delay`]).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long one pull request waits on the server, and how often the server says it is
/// alive meanwhile: a pull stream that misses two heartbeats is bound again.
///
/// The expiry is long because of how async-nats keeps a pull stream: its task sends a new
/// pull request every `expires + 5 s` whether or not the stream is polled. While a message
/// is in hand (a full fetch holds one for minutes) nobody polls it, so those requests, their
/// expiries and their heartbeats pile up unread, and once polled again the stream's count of
/// outstanding pulls disagrees with the server's: it waited for a pull the server had let
/// expire, until two missed heartbeats had it bound again (seen in `make bench-events`;
/// `a_long_message_leaves_the_stream_whole` reproduced it with a 10 s expiry). A message
/// held for less than the expiry leaves nothing behind. The heartbeat still finds a dead
/// stream within 2 s; an idle consumer costs the server one pull request every 5 minutes.
const PULL_EXPIRES: Duration = Duration::from_secs(300);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// The name of the dead-letter counter.
pub const DEAD_LETTERS: &str = "keysync_dead_letters_total";
/// The name of the counter of message streams bound again ([`Rebinds`]).
pub const REBINDS: &str = "keysync_consumer_rebinds_total";

/// A durable pull consumer a service reads: on `stream`, the messages of
/// `filter_subjects`, shared by every replica that uses the same `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSpec {
    pub stream: String,
    pub name: String,
    pub filter_subjects: Vec<String>,
    /// How long a replica may go silent on a message before JetStream gives it to another.
    pub ack_wait: Duration,
}

impl ConsumerSpec {
    pub(crate) fn error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Consumer {
            stream: self.stream.clone(),
            consumer: self.name.clone(),
            source,
        }
    }

    pub(crate) fn config(&self, deliver_policy: DeliverPolicy) -> consumer::pull::Config {
        let (filter_subject, filter_subjects) = match self.filter_subjects.as_slice() {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        consumer::pull::Config {
            durable_name: Some(self.name.clone()),
            filter_subject,
            filter_subjects,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            deliver_policy,
            ..Default::default()
        }
    }

    /// How often a message in hand is said to be alive.
    fn keepalive(&self) -> Duration {
        (self.ack_wait / 3).max(Duration::from_millis(200))
    }
}

/// What a service does with one message.
pub trait Handler: Send + Sync {
    /// What handling one message did, for tests and logs.
    type Outcome: Send;
    /// Why a message could not be handled now; it comes again after the retry delay.
    type Error: std::error::Error + From<Error> + Send + Sync + 'static;

    /// Handles one message. `Ok` means its effect is recorded and it may be acknowledged,
    /// unless the handler dead-lettered it or asked for it again through `delivery`.
    fn handle(
        &self,
        delivery: &Delivery<'_>,
    ) -> impl Future<Output = Result<Self::Outcome, Self::Error>> + Send;

    /// How often [`Handler::tick`] runs between messages; `None` (the default): never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work of the service (the planner's state deadlines), run between messages.
    fn tick(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// How a handled message is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    Ack,
    Retry(Duration),
    /// Dead-lettered, which acknowledges it.
    Done,
}

/// One message in hand, with what the handler may do with it besides handling it.
pub struct Delivery<'a> {
    message: &'a jetstream::Message,
    consumer: &'a str,
    shared: &'a Shared,
    settle: Mutex<Settle>,
}

impl Delivery<'_> {
    pub fn message(&self) -> &jetstream::Message {
        self.message
    }

    /// The name of the consumer it came from.
    pub fn consumer(&self) -> &str {
        self.consumer
    }

    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    /// The message decoded as `M`; one that does not decode (or has a schema version this
    /// build does not know) is dead-lettered and counted, and `None` is answered.
    pub async fn decode<M: BusMessage>(&self) -> Result<Option<M>, Error> {
        match crate::decode::<M>(&self.message.payload) {
            Ok(decoded) => Ok(Some(decoded)),
            Err(error) => {
                self.dead_letter_as(&error.to_string(), Some(M::KIND))
                    .await?;
                Ok(None)
            }
        }
    }

    /// Moves the message to the dead-letter stream with `reason` (which acknowledges it)
    /// and counts it.
    pub async fn dead_letter(&self, reason: &str) -> Result<(), Error> {
        self.dead_letter_as(reason, None).await
    }

    async fn dead_letter_as(&self, reason: &str, kind: Option<&'static str>) -> Result<(), Error> {
        self.shared.bus.dead_letter(self.message, reason).await?;
        self.set(Settle::Done);
        let mut labels = self.shared.labels.clone();
        if let Some(kind) = kind {
            labels.push(KeyValue::new("kind", kind));
        }
        self.shared.dead_letters.add(1, &labels);
        tracing::warn!(
            subject = %self.message.subject,
            consumer = self.consumer,
            reason,
            "Dead-lettered a message."
        );
        Ok(())
    }

    /// Hands the message back after `delay` instead of acknowledging it, once `handle`
    /// returns (it is not done yet, e.g. it waits for another one).
    pub fn retry_after(&self, delay: Duration) {
        self.set(Settle::Retry(delay));
    }

    fn set(&self, settle: Settle) {
        *self
            .settle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settle;
    }

    fn settle(&self) -> Settle {
        *self
            .settle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What every delivery of one worker shares.
struct Shared {
    bus: Bus,
    service: String,
    labels: Vec<KeyValue>,
    dead_letters: Counter<u64>,
    retry_delay: Duration,
    rebinds: Rebinds,
}

/// How many times a worker's message streams failed or ended and were bound again
/// (also the `keysync_consumer_rebinds_total{service}` counter). Clones count together.
#[derive(Clone, Debug)]
pub struct Rebinds {
    count: Arc<AtomicU64>,
    counter: Counter<u64>,
}

impl Rebinds {
    /// The count so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn add(&self, labels: &[KeyValue]) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.counter.add(1, labels);
    }
}

/// One consumer of the worker and where it stands.
struct Lane {
    spec: ConsumerSpec,
    consumer: PullConsumer,
    messages: Option<consumer::pull::Stream>,
    /// When the stream the consumer was made on was created: a stream made again starts
    /// its sequence over.
    stream_created: Option<DateTime>,
    /// What this worker settled, for a consumer made again.
    settled: Settled,
    backoff: Duration,
    rebind_at: Instant,
}

/// The stream sequences a worker settled on one consumer: where a consumer made again on
/// the same stream resumes.
#[derive(Debug, Default)]
struct Settled {
    /// The highest stream sequence acknowledged.
    acked: Option<u64>,
    /// Stream sequences handed back and not acknowledged since.
    retried: BTreeSet<u64>,
}

impl Settled {
    /// Where a consumer made again should start: after what was acknowledged, unless a
    /// message handed back is older.
    fn resume_from(&self) -> Option<u64> {
        let after_acked = self.acked.map(|acked| acked + 1);
        match (after_acked, self.retried.first().copied()) {
            (Some(after), Some(retried)) => Some(after.min(retried)),
            (after, retried) => after.or(retried),
        }
    }

    fn record(&mut self, sequence: u64, settle: Settle) {
        match settle {
            Settle::Ack | Settle::Done => {
                self.retried.remove(&sequence);
                self.acked = Some(self.acked.map_or(sequence, |acked| acked.max(sequence)));
            }
            Settle::Retry(_) => {
                self.retried.insert(sequence);
            }
        }
    }
}

/// A service's message loop over its durable consumers; see the module doc.
pub struct Worker {
    shared: Shared,
    lanes: Vec<Lane>,
    health: Health,
    health_server: Option<HealthServer>,
}

impl Worker {
    /// Binds every consumer (creating it if missing) and the health endpoints' port, so a
    /// problem shows at start. `service` names the service in the dead-letter counter.
    pub async fn bind(
        bus: &Bus,
        service: &str,
        specs: Vec<ConsumerSpec>,
        health: &HealthSettings,
    ) -> Result<Worker, WorkerError> {
        let readiness = Health::new(bus.client().clone());
        let mut lanes = Vec::with_capacity(specs.len());
        for spec in specs {
            readiness.expect(&spec.name);
            let (consumer, stream_created) = consumer(bus, &spec, None).await?;
            lanes.push(Lane {
                spec,
                consumer,
                messages: None,
                stream_created,
                settled: Settled::default(),
                backoff: REBIND_BACKOFF_MIN,
                rebind_at: Instant::now(),
            });
        }
        let health_server = HealthServer::bind(health).await?;
        let labels = vec![KeyValue::new("service", service.to_owned())];
        let dead_letters = opentelemetry::global::meter("keysync")
            .u64_counter(DEAD_LETTERS)
            .with_description("Messages that went to the dead-letter stream, by service.")
            .build();
        dead_letters.add(0, &labels);
        let rebinds = Rebinds {
            count: Arc::default(),
            counter: opentelemetry::global::meter("keysync")
                .u64_counter(REBINDS)
                .with_description(
                    "Consumer message streams that failed or ended and were bound again.",
                )
                .build(),
        };
        // Exported from the start, as zero, like the dead letters.
        rebinds.counter.add(0, &labels);
        Ok(Worker {
            shared: Shared {
                bus: bus.clone(),
                service: service.to_owned(),
                labels,
                dead_letters,
                retry_delay: DEFAULT_RETRY_DELAY,
                rebinds,
            },
            lanes,
            health: readiness,
            health_server,
        })
    }

    /// Labels added to the dead-letter and rebind counters besides `service` (e.g. the
    /// product).
    pub fn with_labels(mut self, labels: impl IntoIterator<Item = KeyValue>) -> Worker {
        self.shared.labels.extend(labels);
        self.shared.dead_letters.add(0, &self.shared.labels);
        self.shared.rebinds.counter.add(0, &self.shared.labels);
        self
    }

    /// Starts the dead-letter counter at zero for each message kind the service decodes,
    /// so a dashboard shows 0, not "no data", before the first one.
    pub fn counting_kinds(self, kinds: &[&'static str]) -> Worker {
        for kind in kinds {
            let mut labels = self.shared.labels.clone();
            labels.push(KeyValue::new("kind", *kind));
            self.shared.dead_letters.add(0, &labels);
        }
        self
    }

    /// How long a message whose handling failed waits before it comes again.
    pub fn with_retry_delay(mut self, delay: Duration) -> Worker {
        self.shared.retry_delay = delay;
        self
    }

    /// Whether the service can take work, as `/readyz` answers it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The address of the health endpoints, when `[health] listen` is set; they are served
    /// while [`Worker::run`] runs.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_server.as_ref().map(HealthServer::local_addr)
    }

    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    /// The count of message streams bound again, which goes on counting while the worker runs.
    pub fn rebinds(&self) -> Rebinds {
        self.shared.rebinds.clone()
    }

    /// The consumers, in the order they were given (to read their info).
    pub fn consumers(&self) -> Vec<PullConsumer> {
        self.lanes
            .iter()
            .map(|lane| lane.consumer.clone())
            .collect()
    }

    /// Takes at most one message, from the first consumer that has one within `wait`
    /// (each consumer is asked in turn), handles and settles it as [`Worker::run`] does.
    /// `Ok(None)`: no message came.
    pub async fn step<H: Handler>(
        &self,
        handler: &H,
        wait: Duration,
    ) -> Result<Option<H::Outcome>, H::Error> {
        for lane in &self.lanes {
            let mut batch = lane
                .consumer
                .fetch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
                .map_err(|error| Error::pull(&lane.spec.name, Box::new(error)))?;
            match batch.next().await {
                None => continue,
                Some(Err(error)) => return Err(Error::pull(&lane.spec.name, error).into()),
                Some(Ok(message)) => {
                    let (result, _, acked) = self.process(&lane.spec, handler, &message).await;
                    acked.map_err(Error::Ack)?;
                    return result.map(Some);
                }
            }
        }
        Ok(None)
    }

    /// Handles messages until `shutdown` completes, then finishes the message in hand and
    /// stops: serves the health endpoints and records the consumers' lag meanwhile. Never
    /// stops on a problem of the bus; an error is only the health endpoints'.
    pub async fn run<H: Handler>(
        mut self,
        handler: &H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        let health = self
            .health_server
            .take()
            .map(|server| server.spawn(self.health.clone()));
        let lag = ConsumerLag::spawn(self.consumers(), crate::lag::DEFAULT_INTERVAL);
        tracing::info!(
            service = %self.shared.service,
            consumers = ?self.lanes.iter().map(|lane| &lane.spec.name).collect::<Vec<_>>(),
            "Waiting for messages."
        );
        self.serve(handler, shutdown).await;
        self.health.set_stopping();
        lag.stop().await;
        if let Some(health) = health {
            health.stop().await?;
        }
        tracing::info!(service = %self.shared.service, "Stopped.");
        Ok(())
    }

    async fn serve<H: Handler>(&mut self, handler: &H, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticker = handler.tick_interval().map(|interval| {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        });
        loop {
            self.rebind_due().await;
            let rebind_at = self
                .lanes
                .iter()
                .filter(|lane| lane.messages.is_none())
                .map(|lane| lane.rebind_at)
                .min();
            // A due tick goes before messages, so a steady stream of them cannot put the
            // service's periodic work off.
            let event = tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tick(&mut ticker) => Event::Tick,
                (index, message) = next_message(&mut self.lanes) => Event::Message(index, message),
                () = sleep_until(rebind_at) => continue,
            };
            match event {
                Event::Tick => handler.tick().await,
                Event::Message(index, Some(Ok(message))) => {
                    let lane = &self.lanes[index];
                    let (result, settle, acked) = self.process(&lane.spec, handler, &message).await;
                    if let Err(error) = result {
                        tracing::warn!(
                            consumer = %lane.spec.name,
                            error = %telemetry::error_chain(&error),
                            "Handling a message failed; it comes again."
                        );
                    }
                    let sequence = message.info().ok().map(|info| info.stream_sequence);
                    match acked {
                        Ok(()) => {
                            if let Some(sequence) = sequence {
                                self.lanes[index].settled.record(sequence, settle);
                            }
                        }
                        Err(error) => tracing::warn!(
                            error = %error,
                            "Acknowledging a message failed; it comes again."
                        ),
                    }
                }
                Event::Message(index, ended) => {
                    let lane = &mut self.lanes[index];
                    match ended {
                        Some(Err(error)) => tracing::warn!(
                            consumer = %lane.spec.name,
                            error = %error,
                            "The consumer's message stream failed; binding it again."
                        ),
                        _ => tracing::warn!(
                            consumer = %lane.spec.name,
                            "The consumer's message stream ended; binding it again."
                        ),
                    }
                    lane.messages = None;
                    lane.rebind_at = Instant::now() + lane.backoff;
                    self.health.set_ready(&lane.spec.name, false);
                    self.shared.rebinds.add(&self.shared.labels);
                }
            }
        }
    }

    /// Binds every unbound consumer whose time has come; one that fails waits twice as
    /// long as before (up to [`REBIND_BACKOFF_MAX`]).
    async fn rebind_due(&mut self) {
        let now = Instant::now();
        for lane in &mut self.lanes {
            if lane.messages.is_some() || lane.rebind_at > now {
                continue;
            }
            match bind(&self.shared.bus, lane).await {
                Ok(messages) => {
                    lane.messages = Some(messages);
                    lane.backoff = REBIND_BACKOFF_MIN;
                    self.health.set_ready(&lane.spec.name, true);
                }
                Err(error) => {
                    lane.backoff = (lane.backoff * 2).min(REBIND_BACKOFF_MAX);
                    lane.rebind_at = Instant::now() + lane.backoff;
                    self.health.set_ready(&lane.spec.name, false);
                    tracing::warn!(
                        consumer = %lane.spec.name,
                        error = %telemetry::error_chain(&error),
                        retry_in = ?lane.backoff,
                        "Cannot bind the consumer; trying again."
                    );
                }
            }
        }
    }

    /// Handles one message under a keep-alive and settles it. Answers the handler's
    /// result, how the message was settled and whether settling reached the server.
    async fn process<H: Handler>(
        &self,
        spec: &ConsumerSpec,
        handler: &H,
        message: &jetstream::Message,
    ) -> (Result<H::Outcome, H::Error>, Settle, Result<(), AckError>) {
        let delivery = Delivery {
            message,
            consumer: &spec.name,
            shared: &self.shared,
            settle: Mutex::new(Settle::Ack),
        };
        let result = keep_alive(message, spec.keepalive(), handler.handle(&delivery)).await;
        let settle = match &result {
            Ok(_) => delivery.settle(),
            Err(_) if delivery.settle() == Settle::Done => Settle::Done,
            Err(_) => Settle::Retry(self.shared.retry_delay),
        };
        let acked = match settle {
            Settle::Ack => message.double_ack().await,
            Settle::Retry(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            Settle::Done => Ok(()),
        };
        (result, settle, acked)
    }
}

type AckError = Box<dyn std::error::Error + Send + Sync>;

/// Why a worker could not start, or its health endpoints failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Bus(#[from] Error),
    #[error(transparent)]
    Health(#[from] HealthError),
}

enum Event {
    Tick,
    Message(usize, Pulled),
}

/// What a consumer's message stream gave: a message, an error, or its end.
type Pulled = Option<Result<Box<jetstream::Message>, consumer::pull::MessagesError>>;

/// The next item of the first bound consumer's stream that has one; pending while none
/// has (or none is bound).
async fn next_message(lanes: &mut [Lane]) -> (usize, Pulled) {
    std::future::poll_fn(|context| {
        for (index, lane) in lanes.iter_mut().enumerate() {
            if let Some(messages) = lane.messages.as_mut()
                && let Poll::Ready(item) = messages.poll_next_unpin(context)
            {
                return Poll::Ready((index, item.map(|result| result.map(Box::new))));
            }
        }
        Poll::Pending
    })
    .await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The consumer `spec` names, bound if it exists, else created: from the start of the
/// stream, or from `resume` when given. Makes the stream if it is gone. Answers when the
/// stream was created.
async fn consumer(
    bus: &Bus,
    spec: &ConsumerSpec,
    resume: Option<(Option<DateTime>, Option<u64>)>,
) -> Result<(PullConsumer, Option<DateTime>), Error> {
    let stream = match bus.jetstream().get_stream(&spec.stream).await {
        Ok(stream) => stream,
        Err(_) => {
            bus.ensure_streams().await?;
            bus.jetstream()
                .get_stream(&spec.stream)
                .await
                .map_err(|error| spec.error(Box::new(error)))?
        }
    };
    let info = stream.cached_info();
    let created = Some(info.created);
    if let Ok(existing) = stream
        .get_consumer::<consumer::pull::Config>(&spec.name)
        .await
    {
        return Ok((refreshed(&stream, spec, existing).await, created));
    }
    let deliver_policy = match resume {
        // A work queue holds only what is not acknowledged: all of it is still to do.
        _ if info.config.retention == RetentionPolicy::WorkQueue => DeliverPolicy::All,
        Some((was_created, Some(start_sequence))) if was_created == created => {
            DeliverPolicy::ByStartSequence { start_sequence }
        }
        _ => DeliverPolicy::All,
    };
    match stream.create_consumer(spec.config(deliver_policy)).await {
        Ok(created_consumer) => Ok((created_consumer, created)),
        // Another replica made it first.
        Err(create_error) => match stream.get_consumer(&spec.name).await {
            Ok(existing) => Ok((existing, created)),
            Err(_) => Err(spec.error(Box::new(create_error))),
        },
    }
}

/// `existing` with the subjects and ack wait `spec` asks for: a newer release may follow
/// more subjects than the one that made the consumer (the control plane's
/// `EventsObserved`), and a bound consumer keeps its filter otherwise. Only those are
/// changed; where the server refuses, the consumer is used as it is, with a warning.
async fn refreshed(
    stream: &jetstream::stream::Stream,
    spec: &ConsumerSpec,
    existing: PullConsumer,
) -> PullConsumer {
    let config = &existing.cached_info().config;
    let mut found: Vec<&str> = config.filter_subjects.iter().map(String::as_str).collect();
    if !config.filter_subject.is_empty() {
        found.push(&config.filter_subject);
    }
    found.sort_unstable();
    let mut wanted: Vec<&str> = spec.filter_subjects.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    if found == wanted && config.ack_wait == spec.ack_wait {
        return existing;
    }
    let (filter_subject, filter_subjects) = match spec.filter_subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    use consumer::FromConsumer as _;
    let Ok(current) = consumer::pull::Config::try_from_consumer_config(config.clone()) else {
        return existing;
    };
    let updated = consumer::pull::Config {
        filter_subject,
        filter_subjects,
        ack_wait: spec.ack_wait,
        ..current
    };
    match stream.update_consumer(updated).await {
        Ok(consumer) => {
            tracing::info!(
                consumer = %spec.name,
                subjects = ?spec.filter_subjects,
                "Updated the consumer to the subjects this release follows."
            );
            consumer
        }
        Err(error) => {
            tracing::warn!(
                consumer = %spec.name,
                error = %error,
                "Could not update the consumer to the subjects this release follows; \
                 using it as it is."
            );
            existing
        }
    }
}

/// Binds `lane` again (its consumer made again where it is gone) and opens its stream.
async fn bind(bus: &Bus, lane: &mut Lane) -> Result<consumer::pull::Stream, Error> {
    let resume = (lane.stream_created, lane.settled.resume_from());
    let (consumer, created) = consumer(bus, &lane.spec, Some(resume)).await?;
    if created != lane.stream_created {
        // A new stream numbers its messages from 1 again.
        lane.settled = Settled::default();
    }
    lane.consumer = consumer;
    lane.stream_created = created;
    messages(&lane.consumer, &lane.spec.name).await
}

async fn messages(consumer: &PullConsumer, name: &str) -> Result<consumer::pull::Stream, Error> {
    consumer
        .stream()
        .max_messages_per_batch(1)
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(|error| Error::pull(name, Box::new(error)))
}

/// Runs `work`, telling JetStream every `interval` that `message` is still in hand.
pub async fn keep_alive<T>(
    message: &jetstream::Message,
    interval: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticker.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %error, "Renewing a message's ack deadline failed.");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume_after(events: &[(u64, Settle)]) -> Option<u64> {
        let mut settled = Settled::default();
        for &(sequence, settle) in events {
            settled.record(sequence, settle);
        }
        settled.resume_from()
    }

    #[test]
    fn a_consumer_made_again_resumes_after_what_was_settled_or_at_what_was_handed_back() {
        assert_eq!(resume_after(&[]), None);
        assert_eq!(
            resume_after(&[(3, Settle::Ack), (5, Settle::Done)]),
            Some(6)
        );
        let retry = Settle::Retry(Duration::from_secs(1));
        assert_eq!(resume_after(&[(3, retry), (5, Settle::Ack)]), Some(3));
        assert_eq!(
            resume_after(&[(3, retry), (5, Settle::Ack), (3, Settle::Ack)]),
            Some(6)
        );
    }
}
