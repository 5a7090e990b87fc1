//! The planner's HTTP probes: alive and ready while it runs, and closed once it stopped.

use std::time::Duration;

use test_support::{http, nats::NatsServer};

use crate::helpers::settings;

#[tokio::test]
async fn healthz_and_readyz_answer_while_the_planner_runs_and_stop_with_it() {
    let nats = NatsServer::start().expect("nats-server starts");
    let mut settings = settings(&nats, 500, 600);
    settings.health.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = planner::App::build(settings)
        .await
        .expect("the planner starts");
    let address = app.health_addr().expect("the probes are configured");
    assert_eq!(
        app.health().readiness(),
        Err("consumer `planner` not bound yet".to_owned()),
        "not ready before it runs"
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let ready = http::wait_for_status(address, "/readyz", 200, Duration::from_secs(10))
        .await
        .expect("ready");
    assert_eq!(ready, "ready\n");
    let live = http::get(address, "/healthz").await.expect("answers");
    assert_eq!(live, (200, "ok\n".to_owned()));

    let _ = stop.send(());
    running
        .await
        .expect("the planner task ends")
        .expect("the planner stops cleanly");
    assert!(
        http::get(address, "/healthz").await.is_err(),
        "the probes still answer after the planner stopped"
    );
}
