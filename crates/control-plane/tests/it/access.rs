//! Who may call what: the token guards the control API and its role limits the calls
//! (`control_plane::auth::ACCESS`); health and reflection answer without it, and the
//! HTTP probes answer when configured.

use std::time::Duration;

use futures::StreamExt;
use proto::v1::{self, Product, RunMode};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1 as reflection_v1, v1alpha as reflection_v1alpha};

use crate::helpers::{Options, SERVICE_TOKEN, connect, spawn_app, spawn_app_with};

async fn channel(address: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connects")
}

#[tokio::test]
async fn calls_without_a_token_or_with_a_wrong_one_are_unauthenticated_while_health_answers() {
    let app = spawn_app().await;

    for token in [None, Some("not-the-token")] {
        let mut client = connect(app.address, token).await;
        let status = client
            .list_runs(v1::ListRunsRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}");
        assert!(
            !status.message().contains(crate::helpers::TOKEN),
            "the answer shows the token"
        );
    }
    let mut client = connect(app.address, Some(crate::helpers::TOKEN)).await;
    client
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect("the token is accepted");

    let mut health = HealthClient::new(channel(app.address).await);
    let answer = health
        .check(HealthCheckRequest {
            service: "keysync.v1.ControlService".to_owned(),
        })
        .await
        .expect("health answers without a token")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn the_service_token_may_read_a_run_and_report_results_and_nothing_else() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[Product::Jira]).await;
    let mut service = connect(app.address, Some(SERVICE_TOKEN)).await;

    let read = service
        .get_run(v1::GetRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .expect("GetRun is a service's call")
        .into_inner();
    assert_eq!(read.run_id, run.run_id);
    let mut report = v1::ReportResultsRequest {
        run_id: run.run_id.clone(),
        ..v1::ReportResultsRequest::default()
    };
    report.set_product(Product::Jira);
    service
        .report_results(report)
        .await
        .expect("ReportResults is a service's call");

    let denied = |status: tonic::Status, call: &str| {
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{call}: {status:?}"
        );
        assert!(status.message().contains(call), "{call}: {status:?}");
    };
    let approve = service
        .approve_run(v1::ApproveRunRequest {
            run_id: run.run_id.clone(),
            comment: "a compromised pod".to_owned(),
        })
        .await
        .expect_err("a service may not approve");
    denied(approve, "ApproveRun");
    let cancel = service
        .cancel_run(v1::CancelRunRequest {
            run_id: run.run_id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("a service may not cancel");
    denied(cancel, "CancelRun");
    let start = service
        .start_sync(v1::StartSyncRequest::default())
        .await
        .expect_err("a service may not start a sync");
    denied(start, "StartSync");
    let list = service
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect_err("a service may not list runs");
    denied(list, "ListRuns");
    assert_eq!(
        app.get_run(&run.run_id).await.state,
        run.state,
        "the refused calls changed the run"
    );
}

#[tokio::test]
async fn reflection_lists_the_control_service_in_v1alpha_and_v1() {
    let app = spawn_app().await;

    let mut alpha = reflection_v1alpha::server_reflection_client::ServerReflectionClient::new(
        channel(app.address).await,
    );
    let request = reflection_v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection_v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1alpha reflection answers without a token")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("an answer")
        .expect("not an error");
    let Some(
        reflection_v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(
            services,
        ),
    ) = answer.message_response
    else {
        panic!("not a list of services: {answer:?}");
    };
    let names: Vec<String> = services
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(
        names.iter().any(|name| name == "keysync.v1.ControlService"),
        "{names:?}"
    );

    let mut current = reflection_v1::server_reflection_client::ServerReflectionClient::new(
        channel(app.address).await,
    );
    let request = reflection_v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection_v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "keysync.v1.ControlService".to_owned(),
            ),
        ),
    };
    let mut answers = current
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1 reflection answers")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("an answer")
        .expect("not an error");
    assert!(
        matches!(
            answer.message_response,
            Some(
                reflection_v1::server_reflection_response::MessageResponse::FileDescriptorResponse(
                    _
                )
            )
        ),
        "{answer:?}"
    );
}

#[tokio::test]
async fn the_http_probes_answer_when_configured_and_stop_with_the_app() {
    let app = spawn_app_with(Options {
        health: true,
        ..Options::default()
    })
    .await;
    let address = app.health_address.expect("the probes are served");
    // Ready once the event consumer is pulled from.
    let ready =
        test_support::http::wait_for_status(address, "/readyz", 200, Duration::from_secs(10))
            .await
            .expect("ready");
    assert_eq!(ready, "ready\n");
    let live = test_support::http::get(address, "/healthz")
        .await
        .expect("answers");
    assert_eq!(live, (200, "ok\n".to_owned()));

    app.stop().await;
    assert!(
        test_support::http::get(address, "/healthz").await.is_err(),
        "the probes still answer after the app stopped"
    );
}
