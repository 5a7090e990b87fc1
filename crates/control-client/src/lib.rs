//! The services' side of the control API: `GetRun` (the planner: is the run approved?
//! the appliers: may this change set be applied, is the run cancelled?) and
//! `ReportResults` (the appliers: every result, in batches), each retried with exponential
//! backoff while the control plane is unreachable or busy. Calls carry the bearer token
//! (the service token: `[control_plane] service_token`, else `token`) and the current
//! span's trace context. An `https://` endpoint is verified against the CA given
//! (`[control_plane] ca_file`), else the system's roots (which honour `SSL_CERT_FILE`);
//! with `client_cert_file` and `client_key_file` the client presents that certificate
//! (mutual TLS). The settings are `settings::control_client::ControlPlaneSettings`.

use std::time::Duration;

use config::Secret;
use proto::v1::{self, control_service_client::ControlServiceClient};
use settings::control_client::ControlPlaneSettings;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Attempts of one call before it fails: about 25 s of backoff in all.
const MAX_ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the control plane endpoint {endpoint} is not a valid URI")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the control plane token cannot be sent in a header")]
    Token,
    #[error("the TLS settings for the control plane endpoint {endpoint}")]
    Tls {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{call} answered {code:?} after {attempts} attempts: {message}")]
    Status {
        call: &'static str,
        code: tonic::Code,
        message: String,
        attempts: u32,
    },
}

impl ControlError {
    /// Whether the control plane refused the request for what it holds (an invalid
    /// result, a run it does not know, a state that forbids it): making it again cannot
    /// succeed. An unauthenticated or forbidden call is not a refusal of the request (an
    /// operator may fix the credential), nor is anything [`Control`] would retry.
    pub fn is_refused(&self) -> bool {
        match self {
            ControlError::Status { code, .. } => {
                !matches!(
                    code,
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::Ok
                ) && !retriable(*code)
            }
            _ => false,
        }
    }

    /// Whether the control plane refused the request itself for good: it does not know
    /// the run, or the run id is not one (a message made by hand). Asking again cannot
    /// help; the message that named the run is dead-lettered.
    pub fn is_unknown_run(&self) -> bool {
        matches!(
            self,
            ControlError::Status {
                code: tonic::Code::NotFound | tonic::Code::InvalidArgument,
                ..
            }
        )
    }
}

/// Adds `authorization: Bearer …` and the trace context to every call. Its `Debug` shows
/// no part of the token.
#[derive(Clone)]
struct Auth {
    header: MetadataValue<Ascii>,
}

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        telemetry::grpc_client_interceptor(request)
    }
}

/// A client of the control plane.
#[derive(Clone)]
pub struct Control {
    client: ControlServiceClient<InterceptedService<Channel, Auth>>,
}

impl Control {
    /// The client `[control_plane]` describes: endpoint, token, CA and client certificate.
    /// It connects on first use, so a service starts while the control plane does.
    pub fn from_settings(settings: &ControlPlaneSettings) -> Result<Control, ControlError> {
        let identity = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_str(), key)),
            _ => None,
        };
        Control::with_tls(
            &settings.endpoint,
            &settings.token,
            settings.ca.as_deref(),
            identity,
        )
    }

    /// A client of `endpoint` sending `token`, trusting `ca` (PEM) for an `https://`
    /// endpoint instead of the system's roots, and presenting `identity` (PEM certificate
    /// and key) when the control plane asks for a client certificate.
    fn with_tls(
        endpoint: &str,
        token: &Secret,
        ca: Option<&str>,
        identity: Option<(&str, &Secret)>,
    ) -> Result<Control, ControlError> {
        let mut channel = Endpoint::from_shared(endpoint.to_owned()).map_err(|source| {
            ControlError::Endpoint {
                endpoint: endpoint.to_owned(),
                source,
            }
        })?;
        if endpoint.trim().starts_with("https://") {
            let mut tls = match ca {
                Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
                None => ClientTlsConfig::new().with_enabled_roots(),
            };
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(cert, key.expose()));
            }
            channel = channel
                .tls_config(tls)
                .map_err(|source| ControlError::Tls {
                    endpoint: endpoint.to_owned(),
                    source,
                })?;
        }
        let channel = channel
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        let mut header: MetadataValue<Ascii> = format!("Bearer {}", token.expose())
            .parse()
            .map_err(|_| ControlError::Token)?;
        header.set_sensitive(true);
        Ok(Control {
            client: ControlServiceClient::with_interceptor(channel, Auth { header }),
        })
    }

    pub async fn get_run(&self, run_id: &str) -> Result<v1::Run, ControlError> {
        let request = v1::GetRunRequest {
            run_id: run_id.to_owned(),
        };
        let response = retry("GetRun", || {
            let mut client = self.client.clone();
            let request = request.clone();
            async move { client.get_run(request).await }
        })
        .await?;
        Ok(response.into_inner())
    }

    /// Reports `results` in batches of `batch_size`; answers how many the control plane
    /// recorded as new (repeats of recorded results are not counted) and how many
    /// attempts beyond the first it took.
    pub async fn report(
        &self,
        run_id: &str,
        product: v1::Product,
        results: &[v1::ChangeResult],
        batch_size: usize,
    ) -> Result<Reported, ControlError> {
        let mut reported = Reported::default();
        for batch in results.chunks(batch_size.max(1)) {
            let request = v1::ReportResultsRequest {
                run_id: run_id.to_owned(),
                product: product as i32,
                results: batch.to_vec(),
            };
            let mut attempts: u32 = 0;
            let response = retry("ReportResults", || {
                attempts += 1;
                let mut client = self.client.clone();
                let request = request.clone();
                async move { client.report_results(request).await }
            })
            .await?;
            reported.recorded += u64::from(response.into_inner().recorded);
            reported.retries += u64::from(attempts.saturating_sub(1));
        }
        Ok(reported)
    }
}

/// What [`Control::report`] achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    pub recorded: u64,
    pub retries: u64,
}

/// Whether a call that failed with `code` may succeed if made again.
fn retriable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Internal
            | tonic::Code::Unknown
    )
}

/// Calls `call` until it succeeds, fails for good, or [`MAX_ATTEMPTS`] are spent.
async fn retry<T, F, Fut>(
    name: &'static str,
    mut call: F,
) -> Result<tonic::Response<T>, ControlError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let status = match call().await {
            Ok(response) => return Ok(response),
            Err(status) => status,
        };
        if !retriable(status.code()) || attempt >= MAX_ATTEMPTS {
            return Err(ControlError::Status {
                call: name,
                code: status.code(),
                message: status.message().to_owned(),
                attempts: attempt,
            });
        }
        tracing::debug!(call = name, attempt, code = ?status.code(), "Retrying a call to the control plane.");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
