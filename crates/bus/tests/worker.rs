//! The worker loop every service runs, against a real nats-server: each message handled
//! once and acknowledged after its effect, handed back on failure, dead-lettered when it
//! does not decode, kept alive while it takes long, drained on shutdown, and — when its
//! consumer or its stream is deleted under it — bound again, unready meanwhile, losing
//! nothing and handling nothing twice.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bus::{
    Bus, Topology,
    health::HealthSettings,
    worker::{ConsumerSpec, Delivery, Handler, Worker},
};
use proto::v1::{self, RunMode, RunRequested};
use test_support::nats::NatsServer;
use tokio::sync::{Notify, oneshot};

const WAIT: Duration = Duration::from_secs(20);

fn run_requested(run_id: &str) -> RunRequested {
    RunRequested {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        mode: RunMode::Simulate as i32,
        ..RunRequested::default()
    }
}

/// Records every run id it handles; fails a run id's first `fail_first` attempts; waits
/// for `release` when handling a run id named `hold*`; works `slow` for `slow*` ones.
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<String>>,
    attempts: Mutex<BTreeMap<String, u32>>,
    fail_first: u32,
    holding: Notify,
    release: Notify,
    slow: Duration,
}

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("failed on purpose")]
    OnPurpose,
}

impl Handler for Recorder {
    type Outcome = Option<String>;
    type Error = TestError;

    async fn handle(&self, delivery: &Delivery<'_>) -> Result<Option<String>, TestError> {
        let Some(request) = delivery.decode::<RunRequested>().await? else {
            return Ok(None);
        };
        let run_id = request.run_id;
        let attempt = {
            let mut attempts = self.attempts.lock().expect("lock");
            let attempt = attempts.entry(run_id.clone()).or_default();
            *attempt += 1;
            *attempt
        };
        if attempt <= self.fail_first {
            return Err(TestError::OnPurpose);
        }
        if run_id.starts_with("hold") {
            self.holding.notify_one();
            self.release.notified().await;
        }
        if run_id.starts_with("slow") {
            tokio::time::sleep(self.slow).await;
        }
        self.handled.lock().expect("lock").push(run_id.clone());
        Ok(Some(run_id))
    }
}

impl Recorder {
    fn handled(&self) -> Vec<String> {
        self.handled.lock().expect("lock").clone()
    }

    /// Waits until `run_id` was handled, for at most [`WAIT`].
    async fn wait_for(&self, run_id: &str) {
        self.wait_for_within(run_id, WAIT).await;
    }

    /// Waits until `run_id` was handled, for at most `wait`.
    async fn wait_for_within(&self, run_id: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.handled().iter().any(|handled| handled == run_id) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{run_id} was not handled: {:?}",
                self.handled()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Setup {
    _nats: NatsServer,
    bus: Bus,
    spec: ConsumerSpec,
}

async fn setup(prefix: &str, ack_wait: Duration) -> Setup {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new(prefix))
        .await
        .expect("bus");
    let topology = bus.topology();
    let spec = ConsumerSpec {
        stream: topology.events_stream(),
        name: "worker-test".to_owned(),
        filter_subjects: vec![topology.run_requested()],
        ack_wait,
    };
    Setup {
        _nats: nats,
        bus,
        spec,
    }
}

impl Setup {
    async fn publish(&self, run_id: &str) {
        self.bus
            .publish(
                &self.bus.topology().run_requested(),
                &run_requested(run_id),
                run_id,
            )
            .await
            .expect("publish");
    }

    async fn worker(&self) -> Worker {
        Worker::bind(
            &self.bus,
            "test",
            vec![self.spec.clone()],
            &HealthSettings {
                listen: Some("127.0.0.1:0".parse().expect("address")),
            },
        )
        .await
        .expect("binds")
    }

    async fn consumer_info(&self) -> async_nats::jetstream::consumer::Info {
        let mut consumer = self
            .bus
            .jetstream()
            .get_stream(&self.spec.stream)
            .await
            .expect("stream")
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&self.spec.name)
            .await
            .expect("consumer");
        consumer.info().await.expect("info").clone()
    }
}

/// Runs `worker` with `handler` on a task until the answered sender is used.
fn spawn(
    worker: Worker,
    handler: Arc<Recorder>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), bus::worker::WorkerError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(handler.as_ref(), async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}

#[tokio::test]
async fn every_message_is_handled_once_and_acknowledged() {
    let setup = setup("w1", Duration::from_secs(30)).await;
    for run_id in ["a", "b", "c"] {
        setup.publish(run_id).await;
    }
    let handler = Arc::new(Recorder::default());
    let (stop, task) = spawn(setup.worker().await, Arc::clone(&handler));
    handler.wait_for("c").await;
    let _ = stop.send(());
    task.await.expect("joins").expect("runs");
    assert_eq!(handler.handled(), ["a", "b", "c"]);
    let info = setup.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0_usize));
}

#[tokio::test]
async fn a_failed_message_comes_again_and_one_that_does_not_decode_is_dead_lettered() {
    let setup = setup("w2", Duration::from_secs(30)).await;
    setup
        .bus
        .jetstream()
        .publish(
            setup.bus.topology().run_requested(),
            "\u{ff} garbage".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    setup.publish("a").await;
    let handler = Arc::new(Recorder {
        fail_first: 1,
        ..Recorder::default()
    });
    let worker = setup
        .worker()
        .await
        .with_retry_delay(Duration::from_millis(50));
    let (stop, task) = spawn(worker, Arc::clone(&handler));
    handler.wait_for("a").await;
    let _ = stop.send(());
    task.await.expect("joins").expect("runs");
    assert_eq!(handler.handled(), ["a"]);
    assert_eq!(handler.attempts.lock().expect("lock")["a"], 2);
    let dead = setup
        .bus
        .jetstream()
        .get_stream(setup.bus.topology().dead_stream())
        .await
        .expect("dead stream")
        .info()
        .await
        .expect("info")
        .state
        .messages;
    assert_eq!(dead, 1);
    let info = setup.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0_usize));
}

#[tokio::test]
async fn a_message_in_hand_longer_than_the_ack_wait_is_not_handed_to_another() {
    let setup = setup("w3", Duration::from_secs(1)).await;
    setup.publish("slow").await;
    let handler = Arc::new(Recorder {
        slow: Duration::from_millis(2500),
        ..Recorder::default()
    });
    let (stop, task) = spawn(setup.worker().await, Arc::clone(&handler));
    handler.wait_for("slow").await;
    let _ = stop.send(());
    task.await.expect("joins").expect("runs");
    assert_eq!(handler.attempts.lock().expect("lock")["slow"], 1);
    let info = setup.consumer_info().await;
    assert_eq!(info.delivered.consumer_sequence, 1, "delivered once");
    assert_eq!(info.num_ack_pending, 0);
}

#[tokio::test]
async fn shutdown_finishes_the_message_in_hand_and_takes_no_other() {
    let setup = setup("w4", Duration::from_secs(30)).await;
    setup.publish("hold").await;
    let handler = Arc::new(Recorder::default());
    let (stop, task) = spawn(setup.worker().await, Arc::clone(&handler));
    handler.holding.notified().await;
    setup.publish("after").await;
    let _ = stop.send(());
    handler.release.notify_one();
    task.await.expect("joins").expect("runs");
    assert_eq!(handler.handled(), ["hold"]);
    let info = setup.consumer_info().await;
    assert_eq!(
        info.num_ack_pending as u64 + info.num_pending,
        1,
        "`after` waits"
    );
    assert_eq!(
        info.ack_floor.consumer_sequence, 1,
        "`hold` was acknowledged"
    );
}

/// Runs a worker, has it handle `a`, breaks its consumer with `break_it`, waits until the
/// worker went unready and bound again, has it handle `b`, and stops it. Answers the setup
/// and what was handled.
async fn across(prefix: &str, break_it: impl AsyncFnOnce(&Setup)) -> (Setup, Vec<String>) {
    let setup = setup(prefix, Duration::from_secs(30)).await;
    let handler = Arc::new(Recorder::default());
    let worker = setup.worker().await;
    let health = worker.health().clone();
    let (stop, task) = spawn(worker, Arc::clone(&handler));
    setup.publish("a").await;
    handler.wait_for("a").await;
    let seen = health.transitions().len();
    break_it(&setup).await;
    test_support::rebind::wait_for_rebind(
        &setup.spec.name,
        seen,
        || health.transitions(),
        || health.readiness().is_ok(),
    )
    .await
    .expect("bound again");
    setup.publish("b").await;
    handler.wait_for("b").await;
    let _ = stop.send(());
    task.await.expect("joins").expect("runs");
    let handled = handler.handled();
    (setup, handled)
}

impl Setup {
    async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        self.bus
            .jetstream()
            .get_stream(&self.spec.stream)
            .await
            .expect("stream")
    }
}

#[tokio::test]
async fn a_deleted_consumer_is_made_again_and_nothing_is_lost_or_handled_twice() {
    let (setup, handled) = across("w5", async |setup: &Setup| {
        let stream = setup.stream().await;
        stream
            .delete_consumer(&setup.spec.name)
            .await
            .expect("deleted");
    })
    .await;
    assert_eq!(handled, ["a", "b"]);
    let info = setup.consumer_info().await;
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "the consumer made again delivered only `b`"
    );
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0_usize));
}

#[tokio::test]
async fn a_deleted_stream_is_made_again_and_the_worker_goes_on() {
    let (_, handled) = across("w6", async |setup: &Setup| {
        let jetstream = setup.bus.jetstream();
        jetstream
            .delete_stream(&setup.spec.stream)
            .await
            .expect("deleted");
    })
    .await;
    assert_eq!(handled, ["a", "b"]);
}

#[tokio::test]
async fn a_consumer_made_again_by_someone_else_is_bound_as_it_is() {
    let (_, handled) = across("w7", async |setup: &Setup| {
        let stream = setup.stream().await;
        stream
            .delete_consumer(&setup.spec.name)
            .await
            .expect("deleted");
        // An operator makes it again, from new messages on.
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(setup.spec.name.clone()),
                filter_subject: setup.bus.topology().run_requested(),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .expect("created");
    })
    .await;
    assert_eq!(handled, ["a", "b"]);
}

#[tokio::test]
async fn a_consumer_made_by_an_older_release_follows_the_subjects_this_one_names() {
    let setup = setup("w8", Duration::from_secs(30)).await;
    // An older release made the consumer with one subject of the two this one follows.
    let older = setup.worker().await;
    drop(older);
    let mut spec = setup.spec.clone();
    let events = setup.bus.topology().events_observed();
    spec.filter_subjects.push(events.clone());
    let observed = v1::EventsObserved {
        schema_version: v1::SCHEMA_VERSION,
        connector: "corp".to_owned(),
        ..v1::EventsObserved::default()
    };
    setup
        .bus
        .publish(&events, &observed, "observed-1")
        .await
        .expect("publish");
    let worker = Worker::bind(
        &setup.bus,
        "test",
        vec![spec],
        &HealthSettings {
            listen: Some("127.0.0.1:0".parse().expect("address")),
        },
    )
    .await
    .expect("binds");
    let mut filters = setup.consumer_info().await.config.filter_subjects;
    filters.sort();
    let mut wanted = vec![setup.bus.topology().run_requested(), events.clone()];
    wanted.sort();
    assert_eq!(filters, wanted);
    // The message on the new subject reaches the handler (which dead-letters what is not
    // a RunRequested: proof enough that it was delivered).
    let handler = Arc::new(Recorder::default());
    setup.publish("after").await;
    let (stop, task) = spawn(worker, Arc::clone(&handler));
    handler.wait_for("after").await;
    let _ = stop.send(());
    task.await.expect("joins").expect("runs");
    let info = setup.consumer_info().await;
    assert_eq!(info.delivered.stream_sequence, 2, "{info:?}");
}

/// A message in hand for longer than async-nats's pull stream re-pulls on its own (every
/// `expires + 5 s` when the expiry was 10 s) left that stream counting a pull the server
/// had let expire: the messages after it waited for two missed heartbeats and a rebind.
#[tokio::test]
async fn a_long_message_leaves_the_stream_whole() {
    let setup = setup("w9", Duration::from_secs(60)).await;
    setup.publish("slow").await;
    let handler = Arc::new(Recorder {
        slow: Duration::from_secs(40),
        ..Recorder::default()
    });
    let worker = setup.worker().await;
    let rebinds = worker.rebinds();
    let (stop, task) = spawn(worker, Arc::clone(&handler));
    handler
        .wait_for_within("slow", Duration::from_secs(40) + WAIT)
        .await;
    // One at once, then others after the stream has had time to go wrong.
    for (round, pause_ms) in [0, 300, 1000, 2500].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let name = format!("after{round}");
        setup.publish(&name).await;
        handler.wait_for(&name).await;
    }
    let _ = stop.send(());
    task.await.expect("joins").expect("runs");
    assert_eq!(rebinds.count(), 0, "the stream was bound again");
}
