//! Plain HTTP health endpoints for orchestrators' probes, served when `[health] listen` is
//! set: `GET /healthz` answers 200 while the process runs; `GET /readyz` answers 200 while
//! the connection to NATS is up, else 503. (gRPC clients use the standard
//! `grpc.health.v1.Health` service on the API port instead.)

use axum::{Router, http::StatusCode, routing::get};
use tokio::{net::TcpListener, sync::watch};

/// Serves the endpoints on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    client: async_nats::Client,
    mut stop: watch::Receiver<bool>,
) -> Result<(), crate::Error> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let connected =
                    client.connection_state() == async_nats::connection::State::Connected;
                async move {
                    if connected {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS\n")
                    }
                }
            }),
        );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await
        .map_err(crate::Error::Health)
}
