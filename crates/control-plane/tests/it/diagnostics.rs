//! `ListDiagnostics`: the conflicts and diagnostics a run's plan stored, filtered by
//! product, kind and user, in pages; an operator's call only.

use proto::v1::{self, DiagnosticKind, Product, RunMode, RunState};

use crate::helpers::{SERVICE_TOKEN, connect, fixture_changes, plan, spawn_app};

fn diagnostic(
    product: Product,
    kind: DiagnosticKind,
    username: &str,
    subject: &str,
    message: &str,
) -> v1::Diagnostic {
    let mut diagnostic = v1::Diagnostic {
        subject: subject.to_owned(),
        message: message.to_owned(),
        keycloak_user_id: if username.is_empty() {
            String::new()
        } else {
            format!("kc-{username}")
        },
        username: username.to_owned(),
        ..v1::Diagnostic::default()
    };
    diagnostic.set_product(product);
    diagnostic.set_kind(kind);
    diagnostic
}

/// A conflict in Jira about `dave`, and four diagnostics: bob has no email (Jira and
/// Confluence), carol is out of scope (Jira), and a group is merged (Jira, no user).
fn findings() -> (Vec<v1::Conflict>, Vec<v1::Diagnostic>) {
    let conflict = v1::Conflict {
        product: Product::Jira as i32,
        login: "dave".to_owned(),
        keycloak_user_ids: vec!["kc-dave".to_owned()],
        reason: "this login belongs to account J9, which keysync does not manage".to_owned(),
        usernames: vec!["Dave".to_owned()],
    };
    let diagnostics = vec![
        diagnostic(
            Product::Jira,
            DiagnosticKind::MissingData,
            "bob",
            "bob",
            "no usable email, which a new account needs; not created",
        ),
        diagnostic(
            Product::Jira,
            DiagnosticKind::OutOfScope,
            "carol",
            "carol",
            "not in scope.required_groups (/staff, or a subgroup); not synced",
        ),
        diagnostic(
            Product::Jira,
            DiagnosticKind::MergedGroups,
            "",
            "staff",
            "2 Keycloak groups map to this product group",
        ),
        diagnostic(
            Product::Confluence,
            DiagnosticKind::MissingData,
            "bob",
            "bob",
            "no usable email, which a new account needs; not created",
        ),
    ];
    (vec![conflict], diagnostics)
}

/// "conflict:dave" and "missing_data:bob"-like keys of a page, in order.
fn keys(page: &v1::ListDiagnosticsResponse) -> Vec<String> {
    page.conflicts
        .iter()
        .map(|conflict| format!("conflict:{}", conflict.login))
        .chain(page.diagnostics.iter().map(|diagnostic| {
            format!(
                "{}:{}:{}",
                diagnostic.kind().as_str_name(),
                diagnostic.product().as_str_name(),
                diagnostic.subject
            )
        }))
        .collect()
}

#[tokio::test]
async fn list_diagnostics_serves_the_stored_conflicts_and_diagnostics_with_filters_and_pages() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Simulate, &[]).await;
    app.snapshot_ready(&run).await;
    let mut stored = plan(&run, fixture_changes(), None);
    (stored.conflicts, stored.diagnostics) = findings();
    app.plan_ready(&stored).await;
    app.wait_for_state(&run.run_id, RunState::Succeeded).await;

    let list = |request: v1::ListDiagnosticsRequest| {
        let mut client = app.client.clone();
        async move {
            client
                .list_diagnostics(request)
                .await
                .expect("ListDiagnostics")
                .into_inner()
        }
    };
    let all = list(v1::ListDiagnosticsRequest {
        run_id: run.run_id.clone(),
        ..v1::ListDiagnosticsRequest::default()
    })
    .await;
    assert_eq!(
        keys(&all),
        [
            "conflict:dave",
            "DIAGNOSTIC_KIND_MISSING_DATA:PRODUCT_JIRA:bob",
            "DIAGNOSTIC_KIND_OUT_OF_SCOPE:PRODUCT_JIRA:carol",
            "DIAGNOSTIC_KIND_MERGED_GROUPS:PRODUCT_JIRA:staff",
            "DIAGNOSTIC_KIND_MISSING_DATA:PRODUCT_CONFLUENCE:bob",
        ]
    );
    assert_eq!(all.total, 5);
    assert!(all.next_page_token.is_empty());

    // A user matches by username, Keycloak id or subject, without case; a conflict by its
    // login and usernames too.
    for user in ["BOB", "kc-bob"] {
        let bob = list(v1::ListDiagnosticsRequest {
            run_id: run.run_id.clone(),
            user: user.to_owned(),
            ..v1::ListDiagnosticsRequest::default()
        })
        .await;
        assert_eq!(
            keys(&bob),
            [
                "DIAGNOSTIC_KIND_MISSING_DATA:PRODUCT_JIRA:bob",
                "DIAGNOSTIC_KIND_MISSING_DATA:PRODUCT_CONFLUENCE:bob",
            ],
            "{user}"
        );
    }
    let dave = list(v1::ListDiagnosticsRequest {
        run_id: run.run_id.clone(),
        user: "dave".to_owned(),
        ..v1::ListDiagnosticsRequest::default()
    })
    .await;
    assert_eq!(keys(&dave), ["conflict:dave"]);
    assert_eq!(dave.conflicts[0].usernames, ["Dave"]);

    let mut confluence = v1::ListDiagnosticsRequest {
        run_id: run.run_id.clone(),
        ..v1::ListDiagnosticsRequest::default()
    };
    confluence.set_product(Product::Confluence);
    assert_eq!(
        keys(&list(confluence).await),
        ["DIAGNOSTIC_KIND_MISSING_DATA:PRODUCT_CONFLUENCE:bob"]
    );
    let mut out_of_scope = v1::ListDiagnosticsRequest {
        run_id: run.run_id.clone(),
        ..v1::ListDiagnosticsRequest::default()
    };
    out_of_scope.set_kind(DiagnosticKind::OutOfScope);
    assert_eq!(
        keys(&list(out_of_scope).await),
        ["DIAGNOSTIC_KIND_OUT_OF_SCOPE:PRODUCT_JIRA:carol"],
        "a kind leaves the conflicts out"
    );

    let first = list(v1::ListDiagnosticsRequest {
        run_id: run.run_id.clone(),
        page_size: 2,
        ..v1::ListDiagnosticsRequest::default()
    })
    .await;
    assert_eq!(
        keys(&first),
        [
            "conflict:dave",
            "DIAGNOSTIC_KIND_MISSING_DATA:PRODUCT_JIRA:bob"
        ]
    );
    let mut seen = keys(&first);
    let mut token = first.next_page_token.clone();
    while !token.is_empty() {
        let page = list(v1::ListDiagnosticsRequest {
            run_id: run.run_id.clone(),
            page_size: 2,
            page_token: token,
            ..v1::ListDiagnosticsRequest::default()
        })
        .await;
        assert!(keys(&page).len() <= 2);
        seen.extend(keys(&page));
        token = page.next_page_token;
    }
    assert_eq!(seen, keys(&all), "the pages add up to the whole list");
}

#[tokio::test]
async fn list_diagnostics_refuses_bad_filters_unknown_runs_and_the_service_token() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Simulate, &[]).await;
    let mut client = app.client.clone();

    let no_plan_yet = client
        .list_diagnostics(v1::ListDiagnosticsRequest {
            run_id: run.run_id.clone(),
            ..v1::ListDiagnosticsRequest::default()
        })
        .await
        .expect("a run with no plan has no diagnostics")
        .into_inner();
    assert_eq!(no_plan_yet.total, 0);

    let bad_kind = client
        .list_diagnostics(v1::ListDiagnosticsRequest {
            run_id: run.run_id.clone(),
            kind: 99,
            ..v1::ListDiagnosticsRequest::default()
        })
        .await
        .expect_err("no such kind");
    assert_eq!(bad_kind.code(), tonic::Code::InvalidArgument);
    let bad_token = client
        .list_diagnostics(v1::ListDiagnosticsRequest {
            run_id: run.run_id.clone(),
            page_token: "not-a-number".to_owned(),
            ..v1::ListDiagnosticsRequest::default()
        })
        .await
        .expect_err("not a token this API gave out");
    assert_eq!(bad_token.code(), tonic::Code::InvalidArgument);
    let unknown = client
        .list_diagnostics(v1::ListDiagnosticsRequest {
            run_id: ulid::Ulid::new().to_string(),
            ..v1::ListDiagnosticsRequest::default()
        })
        .await
        .expect_err("no such run");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut service = connect(app.address, Some(SERVICE_TOKEN)).await;
    let denied = service
        .list_diagnostics(v1::ListDiagnosticsRequest {
            run_id: run.run_id.clone(),
            ..v1::ListDiagnosticsRequest::default()
        })
        .await
        .expect_err("an operator's call");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}
