//! The applier's HTTP probes: alive, and ready once it pulls from both its consumers, while
//! it runs; closed once it stopped.

use std::time::Duration;

use model::state::Product;
use test_support::http;

use crate::helpers::TestEnv;

#[tokio::test]
async fn healthz_and_readyz_answer_while_the_applier_runs_and_stop_with_it() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let mut settings = env.applier_settings.clone();
    settings.health.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = applier::App::build(settings, Product::Jira)
        .await
        .expect("an applier replica");
    let address = app.health_addr().expect("the probes are configured");
    let not_ready = app
        .health()
        .readiness()
        .expect_err("not ready before it runs");
    assert!(
        not_ready.contains("`applier-jira-state`") && not_ready.contains("`applier-jira`"),
        "{not_ready}"
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
        .expect("the applier task ends")
        .expect("the applier stops cleanly");
    assert!(
        http::get(address, "/healthz").await.is_err(),
        "the probes still answer after the applier stopped"
    );
}
