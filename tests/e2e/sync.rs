//! The end-to-end issue's scenarios 1 to 5 on one deployment, in order: simulate, apply,
//! sync again, change Keycloak, and throughout, existing and unmanaged accounts.

use std::collections::{BTreeMap, BTreeSet};

use e2e::{PRODUCTS, Stack, StackOptions};
use proto::v1::{ChangeOp, ChangeOutcome, ChangeRecord, Product, RunMode, RunState, account_ref};
use reqwest::Method;
use serde_json::{Value, json};

use crate::directory::{self, Holdings};

/// `(op, login, group)` of every change, the account named by its login.
pub fn change_set(changes: &[ChangeRecord], state: &Value) -> BTreeSet<(ChangeOp, String, String)> {
    let login_of: BTreeMap<&str, &str> = state["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|account| Some((account["key"].as_str()?, account["login"].as_str()?)))
        .collect();
    changes
        .iter()
        .filter_map(|record| record.change.as_ref())
        .map(|change| {
            let login = match change
                .account
                .as_ref()
                .and_then(|account| account.r#ref.as_ref())
            {
                Some(account_ref::Ref::AccountId(key)) => login_of
                    .get(key.as_str())
                    .copied()
                    .unwrap_or(key)
                    .to_owned(),
                Some(account_ref::Ref::NewLogin(login)) => login.clone(),
                None => String::new(),
            };
            (change.op(), login, change.group.clone())
        })
        .collect()
}

fn op(op: ChangeOp, login: &str, group: &str) -> (ChangeOp, String, String) {
    (op, login.to_owned(), group.to_owned())
}

pub(crate) async fn holdings(
    stack: &Stack,
    product: Product,
    people: &[directory::Person],
) -> Holdings {
    let state = stack.emulator_state(product).await.expect("emulator state");
    directory::holdings(
        &state,
        &directory::logins(people),
        &directory::group_names(),
    )
    .expect("a well-formed emulator state")
}

/// Asserts that run `run_id` planned no change for any product.
pub(crate) async fn assert_no_changes(stack: &Stack, run_id: &str) {
    for product in PRODUCTS {
        assert!(
            stack.changes(run_id, product).await.unwrap().is_empty(),
            "{product:?} changes on a second sync"
        );
    }
}

/// The seeded Jira accounts keysync must leave alone, as the emulator shows them.
pub(crate) fn untouched(state: &Value) -> Vec<Value> {
    let mut kept: Vec<Value> = state["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|account| matches!(account["login"].as_str(), Some("admin" | "build-bot")))
        .cloned()
        .collect();
    kept.extend(
        state["memberships"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|membership| membership["group"] == "jira-software-users")
            .cloned(),
    );
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_apply_resync_then_follow_keycloak() {
    let mut people = directory::people(30);
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        seeds: [(Product::Jira, directory::jira_seed())].into(),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let jira_before = stack.emulator_state(Product::Jira).await.unwrap();
    let alice_key = jira_before["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["login"] == "alice")
        .map(|account| account["key"].clone())
        .unwrap();
    let kept = untouched(&jira_before);

    // 1. Simulate: the whole plan is listed, nothing is written.
    let simulated = stack.sync(RunMode::Simulate).await.unwrap();
    for product in PRODUCTS {
        let changes = stack.changes(&simulated.run_id, product).await.unwrap();
        let creates = changes
            .iter()
            .filter(|record| {
                record.change.as_ref().map(|change| change.op()) == Some(ChangeOp::CreateUser)
            })
            .count();
        // Alice exists in Jira already; the disabled user and the one without email are
        // not created anywhere.
        let expected_creates = if product == Product::Jira { 27 } else { 28 };
        assert_eq!(
            creates, expected_creates,
            "{product:?} creates in the simulated plan"
        );
        assert!(
            changes
                .iter()
                .all(|record| record.outcome() == ChangeOutcome::Planned),
            "a simulated run only plans"
        );
        assert_eq!(
            stack.writes(product).await.unwrap(),
            0,
            "{product:?} was written to by a simulation"
        );
    }
    let jira_simulated = stack
        .changes(&simulated.run_id, Product::Jira)
        .await
        .unwrap();
    let jira_ops = change_set(&jira_simulated, &jira_before);
    assert!(
        jira_ops.contains(&op(ChangeOp::LinkUser, "alice", "")),
        "alice is linked: {jira_ops:?}"
    );
    assert!(
        !jira_ops
            .iter()
            .any(|(_, login, _)| login == "admin" || login == "build-bot"),
        "unmanaged and protected accounts are not in the plan: {jira_ops:?}"
    );

    // 2. Apply: every product holds exactly what the directory says.
    let applied = stack.sync(RunMode::Apply).await.unwrap();
    for product in PRODUCTS {
        assert_eq!(
            holdings(&stack, product, &people).await,
            directory::expected(&people),
            "{product:?} after the first sync"
        );
        let changes = stack.changes(&applied.run_id, product).await.unwrap();
        assert!(
            changes
                .iter()
                .all(|record| record.outcome() == ChangeOutcome::Applied),
            "{product:?}: not every change applied: {:?}",
            changes
                .iter()
                .filter(|record| record.outcome() != ChangeOutcome::Applied)
                .collect::<Vec<_>>()
        );
    }
    let jira_after = stack.emulator_state(Product::Jira).await.unwrap();
    // 5. Alice's account was linked (same key), not created again; admin and build-bot
    //    and their groups are as they were.
    let alice_after = jira_after["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|account| account["login"] == "alice")
        .collect::<Vec<_>>();
    assert_eq!(alice_after.len(), 1);
    assert_eq!(alice_after[0]["key"], alice_key);
    assert_eq!(
        jira_after["counters"]["writes"]["create_account"],
        json!(27)
    );
    assert_eq!(untouched(&jira_after), kept);

    // 3. Sync again: nothing to do, nothing written.
    let writes: Vec<u64> = futures_writes(&stack).await;
    let again = stack.sync(RunMode::Apply).await.unwrap();
    assert_no_changes(&stack, &again.run_id).await;
    assert_eq!(futures_writes(&stack).await, writes, "a second sync wrote");

    // 4. In Keycloak: an email changes, a user leaves a group, one is disabled, one deleted.
    let realm = &stack.realm;
    let id = |name: &str| {
        let name = name.to_owned();
        async move { realm.user_id(&name).await.unwrap() }
    };
    let (changed, left, disabled, deleted) = (
        id("user001").await,
        id("user002").await,
        id("user003").await,
        id("user004").await,
    );
    let mut user = realm
        .admin(Method::GET, &format!("users/{changed}"), None)
        .await
        .unwrap();
    user["email"] = json!("user001.new@example.org");
    realm
        .admin(Method::PUT, &format!("users/{changed}"), Some(&user))
        .await
        .unwrap();
    let sales = realm.group_id("/staff/sales").await.unwrap();
    realm
        .admin(
            Method::DELETE,
            &format!("users/{left}/groups/{sales}"),
            None,
        )
        .await
        .unwrap();
    let mut user = realm
        .admin(Method::GET, &format!("users/{disabled}"), None)
        .await
        .unwrap();
    user["enabled"] = json!(false);
    realm
        .admin(Method::PUT, &format!("users/{disabled}"), Some(&user))
        .await
        .unwrap();
    realm
        .admin(Method::DELETE, &format!("users/{deleted}"), None)
        .await
        .unwrap();

    let before: BTreeMap<Product, Value> = {
        let mut states = BTreeMap::new();
        for product in PRODUCTS {
            states.insert(product, stack.emulator_state(product).await.unwrap());
        }
        states
    };
    let followed = stack.sync(RunMode::Apply).await.unwrap();
    for product in PRODUCTS {
        let changes = stack.changes(&followed.run_id, product).await.unwrap();
        let mut expected: BTreeSet<_> = [
            op(ChangeOp::UpdateUser, "user001", ""),
            op(ChangeOp::RemoveMembership, "user002", "sales"),
        ]
        .into();
        if product == Product::Bitbucket {
            // Bitbucket cannot deactivate: `when_cannot_deactivate = "remove_groups"`.
            expected.insert(op(ChangeOp::RemoveMembership, "user003", "contractors"));
            expected.insert(op(ChangeOp::RemoveMembership, "user004", "engineering"));
        } else {
            expected.insert(op(ChangeOp::DeactivateUser, "user003", ""));
            expected.insert(op(ChangeOp::DeactivateUser, "user004", ""));
        }
        assert_eq!(
            change_set(&changes, &before[&product]),
            expected,
            "{product:?} changes"
        );
        assert!(
            changes
                .iter()
                .all(|record| record.outcome() == ChangeOutcome::Applied)
        );
    }
    people[1].email = Some("user001.new@example.org".to_owned());
    people[2].groups.clear();
    let mut expected = directory::expected(&people);
    expected
        .memberships
        .retain(|(_, login)| login != "user003" && login != "user004");
    for product in [Product::Jira, Product::Confluence] {
        let mut expected = Holdings {
            accounts: expected.accounts.clone(),
            memberships: expected.memberships.clone(),
            groups: expected.groups.clone(),
        };
        for login in ["user003", "user004"] {
            if let Some(account) = expected.accounts.get_mut(login) {
                account.2 = false;
            }
        }
        let holds = holdings(&stack, product, &people).await;
        assert_eq!(holds.accounts, expected.accounts, "{product:?} accounts");
    }
    // Bitbucket keeps both accounts active, in no group.
    let bitbucket = holdings(&stack, Product::Bitbucket, &people).await;
    assert_eq!(
        bitbucket.accounts, expected.accounts,
        "Bitbucket keeps the accounts active"
    );
    assert_eq!(
        bitbucket.memberships, expected.memberships,
        "Bitbucket memberships"
    );
    assert_eq!(
        untouched(&stack.emulator_state(Product::Jira).await.unwrap()),
        kept
    );
    assert_eq!(followed.state(), RunState::Succeeded);
}

async fn futures_writes(stack: &Stack) -> Vec<u64> {
    let mut writes = Vec::new();
    for product in PRODUCTS {
        writes.push(stack.writes(product).await.unwrap());
    }
    writes
}
