//! The control plane, in process on the test's bus, for the tests whose runs it must know:
//! an approval is published only when the control plane confirms it.

use proto::v1::{self, control_service_client::ControlServiceClient};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const TOKEN: &str = "planner-test-token-0123456789abcdef";

/// The control plane running in the background, and a client of it.
pub struct ControlPlane {
    pub client: ControlServiceClient<Channel>,
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), control_plane::Error>>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl ControlPlane {
    /// A control plane on `nats_url` with `prefix`, loaded from a file as in production.
    pub async fn spawn(nats_url: &str, prefix: &str) -> ControlPlane {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("control-plane.toml");
        let toml = format!(
            "[bus]\nnats_url = \"{nats_url}\"\nprefix = \"{prefix}\"\n\n\
             [control_plane]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
        );
        std::fs::write(&file, toml).expect("writes the control plane's settings");
        let settings =
            control_plane::Settings::load(Some(&file)).expect("valid control plane settings");
        let app = control_plane::App::build(settings)
            .await
            .expect("the control plane starts");
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let client = ControlServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connects to the control plane");
        ControlPlane {
            client,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts an APPLY run of `products`; answers its id.
    pub async fn start_run(&self, products: &[v1::Product]) -> String {
        let request = v1::StartSyncRequest {
            mode: v1::RunMode::Apply as i32,
            products: products.iter().map(|&product| product as i32).collect(),
            connector: String::new(),
        };
        self.client
            .clone()
            .start_sync(authorized(request))
            .await
            .expect("StartSync")
            .into_inner()
            .run_id
    }

    pub async fn approve_run(&self, run_id: &str) -> v1::Run {
        let request = v1::ApproveRunRequest {
            run_id: run_id.to_owned(),
            comment: "reviewed by a test".to_owned(),
        };
        self.client
            .clone()
            .approve_run(authorized(request))
            .await
            .expect("ApproveRun")
            .into_inner()
    }

    pub async fn get_run(&self, run_id: &str) -> v1::Run {
        let request = v1::GetRunRequest {
            run_id: run_id.to_owned(),
        };
        self.client
            .clone()
            .get_run(authorized(request))
            .await
            .expect("GetRun")
            .into_inner()
    }

    /// The run once it is in `state`, within twenty seconds.
    pub async fn wait_for(&self, run_id: &str, state: v1::RunState) -> v1::Run {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let run = self.get_run(run_id).await;
            if run.state() == state {
                return run;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run {run_id} is {:?}, not {state:?}",
                run.state()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A request with the control API's bearer token.
fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("a header value"),
    );
    request
}
