//! The shared health endpoints: `/healthz` while served, `/readyz` only while NATS is
//! connected, every expected consumer is ready and the service is not stopping.

use std::time::Duration;

use bus::health::{Health, HealthServer, HealthSettings};
use test_support::{http, nats::NatsServer};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn readyz_follows_the_connection_the_consumers_and_the_shutdown() {
    let mut nats = NatsServer::start().expect("nats-server starts");
    let client = nats.connect().await.expect("connects");
    let health = Health::new(client);
    health.expect("worker");
    assert_eq!(
        health.readiness(),
        Err("consumer `worker` not bound yet".to_owned())
    );

    let settings = HealthSettings {
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
    };
    let server = HealthServer::bind(&settings)
        .await
        .expect("binds")
        .expect("configured");
    let address = server.local_addr();
    let running = server.spawn(health.clone());

    let (status, body) = http::get(address, "/readyz").await.expect("answers");
    assert_eq!(
        (status, body.as_str()),
        (503, "consumer `worker` not bound yet\n")
    );
    assert_eq!(
        http::get(address, "/healthz").await.expect("answers"),
        (200, "ok\n".to_owned())
    );

    health.set_ready("worker", true);
    assert_eq!(
        http::get(address, "/readyz").await.expect("answers"),
        (200, "ready\n".to_owned())
    );

    nats.kill();
    let body = http::wait_for_status(address, "/readyz", 503, WAIT)
        .await
        .expect("not ready without NATS");
    assert_eq!(body, "not connected to NATS\n");
    assert_eq!(
        http::get(address, "/healthz").await.expect("answers"),
        (200, "ok\n".to_owned()),
        "alive without NATS"
    );

    health.set_stopping();
    assert_eq!(
        http::get(address, "/readyz").await.expect("answers"),
        (503, "shutting down\n".to_owned())
    );
    running.stop().await.expect("stops cleanly");
    assert!(
        http::get(address, "/healthz").await.is_err(),
        "still served"
    );
}

#[tokio::test]
async fn nothing_is_bound_without_listen_and_a_taken_port_is_an_error() {
    assert!(
        HealthServer::bind(&HealthSettings::default())
            .await
            .expect("nothing to bind")
            .is_none()
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let settings = HealthSettings {
        listen: Some(taken.local_addr().expect("an address")),
    };
    let error = HealthServer::bind(&settings)
        .await
        .expect_err("the port is taken");
    assert!(
        error
            .to_string()
            .contains("listening for the health endpoints"),
        "{error}"
    );
}
