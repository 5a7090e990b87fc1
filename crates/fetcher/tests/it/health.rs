//! The fetcher's HTTP probes: alive and ready while it serves run requests, and closed once
//! it stopped.

use std::{sync::Arc, time::Duration};

use config::Secret;
use keycloak::config::KeycloakSettings;
use test_support::http;

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_while_the_service_runs_and_stop_with_it() -> anyhow::Result<()> {
    // The probes need no Keycloak: nothing is fetched.
    let nowhere = KeycloakSettings::new("http://127.0.0.1:9", "corp", "keysync", Secret::new("x"));
    let test = spawn_app(nowhere).await?;
    let app = Arc::into_inner(test.app).expect("the only reference");
    let address = app.health_addr().expect("the probes are configured");
    assert_eq!(
        app.health().readiness(),
        Err("consumer `fetcher` not bound yet".to_owned()),
        "not ready before it runs"
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let ready = http::wait_for_status(address, "/readyz", 200, Duration::from_secs(10)).await?;
    assert_eq!(ready, "ready\n");
    assert_eq!(
        http::get(address, "/healthz").await?,
        (200, "ok\n".to_owned())
    );
    assert_eq!(http::get(address, "/nothing").await?.0, 404);

    let _ = stop.send(());
    service.await??;
    assert!(
        http::get(address, "/healthz").await.is_err(),
        "the probes still answer after the service stopped"
    );
    Ok(())
}
