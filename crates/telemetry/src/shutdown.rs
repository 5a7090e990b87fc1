//! The one shutdown signal every service binary waits for.

/// Completes on SIGTERM (what Kubernetes sends a pod it stops) or Ctrl-C, and logs which.
/// Where a signal cannot be listened for, a warning says so and only the other one stops
/// the process.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %error, "Cannot listen for Ctrl-C; only SIGTERM stops the service.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "Cannot listen for SIGTERM; only Ctrl-C stops the service.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Received Ctrl-C; shutting down."),
        () = terminate => tracing::info!("Received SIGTERM; shutting down."),
    }
}
