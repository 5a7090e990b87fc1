//! What can go wrong, in words a person can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no API token: pass --token-file FILE or set KEYSYNC_TOKEN_FILE")]
    NoToken,
    #[error("reading the API token from {}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {} is empty or not one line of text", path.display())]
    BadToken { path: PathBuf },
    #[error("`{endpoint}` is not an endpoint URL such as http://127.0.0.1:50051")]
    Endpoint { endpoint: String },
    #[error("reading the PEM file {}", path.display())]
    PemFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca-file and --client-cert are for an https:// endpoint, not {endpoint}")]
    CaWithoutTls { endpoint: String },
    #[error(
        "the TLS settings for {endpoint} (are --ca-file and --client-cert PEM certificates, \
         --client-key a PEM key?)"
    )]
    Tls {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot reach the control plane at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the control plane refused the token ({message}); check --token-file")]
    Unauthenticated { message: String },
    #[error(
        "the control plane refused the call ({message}); --token-file must hold the \
         operator token ([control_plane] token), not the services' token"
    )]
    PermissionDenied { message: String },
    #[error("the control plane at {endpoint} is unavailable: {message}")]
    Unavailable { endpoint: String, message: String },
    #[error("{message} ({code:?})")]
    Rpc { code: tonic::Code, message: String },
    #[error("the run's progress stream ended before the run did")]
    WatchEnded,
    #[error("writing JSON")]
    Json(#[from] serde_json::Error),
}
