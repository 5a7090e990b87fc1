//! A streamed first sync (#16): the fetcher announces the users a part at a time, and the
//! appliers create accounts before the complete snapshot is planned. The products end
//! exactly where a first sync that streams nothing leaves them, every change has one
//! result, nothing keysync does not manage is touched, and the next sync writes nothing.

use e2e::{PRODUCTS, Stack, StackOptions};
use proto::v1::{ChangeOutcome, Product, RunMode, RunState};

use crate::directory;
use crate::sync::{assert_no_changes, holdings, untouched};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_first_sync_ends_where_a_complete_one_does() {
    let people = directory::people(30);
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        seeds: [(Product::Jira, directory::jira_seed())].into(),
        service_env: vec![(
            "KEYSYNC_FETCHER__FIRST_SYNC_PART_USERS".to_owned(),
            "4".to_owned(),
        )],
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let kept = untouched(&stack.emulator_state(Product::Jira).await.unwrap());

    let applied = stack.sync(RunMode::Apply).await.unwrap();
    assert_eq!(applied.state(), RunState::Succeeded, "{}", applied.reason);
    for product in PRODUCTS {
        assert_eq!(
            holdings(&stack, product, &people).await,
            directory::expected(&people),
            "{product:?} after the streamed first sync"
        );
        let changes = stack.changes(&applied.run_id, product).await.unwrap();
        let not_applied: Vec<_> = changes
            .iter()
            .filter(|record| record.outcome() != ChangeOutcome::Applied)
            .collect();
        assert!(not_applied.is_empty(), "{product:?}: {not_applied:?}");
        let streamed = changes
            .iter()
            .filter(|record| {
                record
                    .change
                    .as_ref()
                    .is_some_and(|change| change.streamed_part > 0)
            })
            .count();
        assert!(
            streamed > 0 && streamed < changes.len(),
            "{product:?}: {streamed} of {} changes came from a part",
            changes.len()
        );
        let progress = applied
            .progress
            .iter()
            .find(|progress| progress.product == product as i32)
            .expect("the product's progress");
        assert_eq!(progress.planned, changes.len() as u64, "{product:?}");
        assert_eq!(progress.applied, progress.planned, "{product:?}");
    }
    // Alice's Jira account is linked by the complete plan, never created by a part; the
    // accounts keysync does not manage are as they were.
    let jira = stack.emulator_state(Product::Jira).await.unwrap();
    assert_eq!(jira["counters"]["writes"]["create_account"], 27);
    assert_eq!(untouched(&jira), kept);
    let fetcher_log = std::fs::read_to_string(&stack.service_logs()["fetcher"]).unwrap();
    let parts = fetcher_log
        .matches("Announced a part of the streamed first sync.")
        .count();
    assert!(parts >= 5, "{parts} parts announced");

    // The connector has a full snapshot now: the next sync streams nothing, and writes nothing.
    let again = stack.sync(RunMode::Apply).await.unwrap();
    assert_no_changes(&stack, &again.run_id).await;
    let fetcher_log = std::fs::read_to_string(&stack.service_logs()["fetcher"]).unwrap();
    assert_eq!(
        fetcher_log
            .matches("Announced a part of the streamed first sync.")
            .count(),
        parts
    );
}
