//! `make bench-cache`: what one delta costs the product state cache at 100,000 accounts
//! (#16: "a delta of one user must not rewrite (or re-read) the whole of it").
//!
//! A real nats-server is started and a base of 100,000 accounts, 2,000 groups and 300,000
//! memberships is stored. The baseline is the layout before the journal: a change set read
//! the whole state and wrote it back, so it is timed as one whole load by a fresh cache
//! plus one whole store. Then 200 deltas of one user each (a created account and its
//! membership) go through the cache as an applier does them: take the newest state (the
//! process already follows the journal), record the set's changes in it, append them and
//! give the state back, fold when due. A second cache, the planner's, loads after each
//! delta (a whole copy of the state for its plan, but no read of the base).
//!
//! Prints `BENCH cache-delta accounts=100000 deltas=200 write_p50_ms=.. write_p95_ms=..
//! read_p50_ms=.. read_p95_ms=.. bytes_per_delta=.. whole_ms=.. whole_bytes=.. folds=..
//! base_reads=.. fingerprint_ms=..`. The write (the applier's: take, record, append, give
//! back) is the delta's cost to the cache; the read is the planner's load, which copies the
//! whole state for its plan but reads only the new entries. Fails when a write's median
//! costs more than a twentieth of the whole rewrite, a read's more than a quarter, when the
//! bytes a delta writes (folds aside) are more than 1 % of the stored base, or when the
//! planner's cache read the base whole more than once per fold. `fingerprint_ms` is the
//! median time of `cache::fingerprint` of the whole state, which the planner computes for
//! every plan.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bus::{Bus, Topology};
use cache::Cache;
use model::state::Product;
use proto::v1;
use test_support::nats::NatsServer;

const ACCOUNTS: usize = 100_000;
const GROUPS: usize = 2_000;
const MEMBERSHIPS_PER_ACCOUNT: usize = 3;
const DELTAS: usize = 200;
const PREFIX: &str = "benchcache";

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let nats = NatsServer::start().context("starting nats-server")?;
    let connect = || async {
        Bus::connect(&nats.url(), Topology::new(PREFIX))
            .await
            .context("connecting to NATS")
    };
    let applier = Cache::new(connect().await?);
    let planner = Cache::new(connect().await?);
    let base = base();
    let base_ref = applier
        .store(Product::Jira, &base)
        .await
        .context("storing the base")?;
    drop(base);

    // The baseline: a whole read by a process that follows nothing, and a whole write.
    let started = Instant::now();
    let (whole, _) = Cache::new(connect().await?)
        .load(Product::Jira)
        .await?
        .context("the base")?;
    applier.store(Product::Jira, &whole).await?;
    let whole_time = started.elapsed();
    drop(whole);
    eprintln!(
        "bench-cache: whole load and store of {ACCOUNTS} accounts ({} bytes stored): {:.0} ms",
        base_ref.size,
        whole_time.as_secs_f64() * 1e3
    );

    applier.load(Product::Jira).await?.context("the base")?;
    planner.load(Product::Jira).await?.context("the base")?;
    let reads_before = planner.base_reads();
    let mut writes = Vec::with_capacity(DELTAS);
    let mut reads = Vec::with_capacity(DELTAS);
    let mut folds = 0;
    let mut delta_bytes = 0;
    for n in 0..DELTAS {
        let journal_before = journal_bytes(&nats).await?;
        let started = Instant::now();
        let (mut working, lease) = applier
            .take_working(Product::Jira, "")
            .await?
            .context("the state")?;
        for record in records(n) {
            let change = record.change.as_ref().context("a change")?;
            working.record(
                change,
                record.account_id.as_deref(),
                record.created_id.as_deref(),
            );
        }
        let fold_due = applier
            .record_set(
                Product::Jira,
                &format!("delta-{n}"),
                "",
                working,
                Some(lease),
            )
            .await?;
        let appended = started.elapsed();
        delta_bytes += journal_bytes(&nats).await?.saturating_sub(journal_before);
        if fold_due {
            applier.fold(Product::Jira).await?;
            folds += 1;
        }
        writes.push(appended);
        let started = Instant::now();
        let (seen, _) = planner.load(Product::Jira).await?.context("the state")?;
        reads.push(started.elapsed());
        ensure!(
            seen.accounts.len() == ACCOUNTS + n + 1,
            "the planner sees {} accounts after delta {n}",
            seen.accounts.len()
        );
    }
    let base_reads = planner.base_reads() - reads_before;
    writes.sort_unstable();
    reads.sort_unstable();
    let millis = |time: Duration| time.as_secs_f64() * 1e3;
    let (p50, p95) = (DELTAS / 2, DELTAS * 95 / 100);
    let bytes_per_delta = delta_bytes / DELTAS as u64;
    // The planner fingerprints each product's state for every plan, deltas included.
    let whole = crate::base();
    let mut fingerprints: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(cache::fingerprint(&whole));
            started.elapsed()
        })
        .collect();
    fingerprints.sort_unstable();
    println!(
        "BENCH cache-delta accounts={ACCOUNTS} deltas={DELTAS} write_p50_ms={:.1} \
         write_p95_ms={:.1} read_p50_ms={:.1} read_p95_ms={:.1} bytes_per_delta={bytes_per_delta} \
         whole_ms={:.0} whole_bytes={} folds={folds} base_reads={base_reads} \
         fingerprint_ms={:.1}",
        millis(writes[p50]),
        millis(writes[p95]),
        millis(reads[p50]),
        millis(reads[p95]),
        millis(whole_time),
        base_ref.size,
        millis(fingerprints[2]),
    );
    ensure!(
        writes[p50] * 20 <= whole_time,
        "a delta's write ({:.1} ms at the median) is more than a twentieth of the whole \
         rewrite ({:.0} ms)",
        millis(writes[p50]),
        millis(whole_time)
    );
    ensure!(
        reads[p50] * 4 <= whole_time,
        "a delta's read ({:.1} ms at the median) is more than a quarter of the whole \
         rewrite ({:.0} ms)",
        millis(reads[p50]),
        millis(whole_time)
    );
    ensure!(
        bytes_per_delta * 100 <= base_ref.size,
        "a delta writes {bytes_per_delta} bytes, more than 1 % of the base ({})",
        base_ref.size
    );
    ensure!(
        base_reads <= folds,
        "the planner read the base whole {base_reads} times over {folds} folds"
    );
    Ok(())
}

/// 100,000 managed accounts, each in three of 2,000 groups.
fn base() -> v1::ProductState {
    v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        product: v1::Product::Jira as i32,
        accounts: (0..ACCOUNTS)
            .map(|n| v1::CachedAccount {
                id: format!("JIRAUSER{}", 10_000 + n),
                login: format!("user{n:06}"),
                display_name: format!("User {n:06}"),
                email: format!("user{n:06}@example.com"),
                active: true,
                managed: true,
                keycloak_user_id: format!("{n:08x}-0000-4000-8000-000000000000"),
                ..Default::default()
            })
            .collect(),
        groups: (0..GROUPS)
            .map(|n| v1::CachedGroup {
                name: format!("group-{n:04}"),
                managed: true,
                connector: String::new(),
            })
            .collect(),
        memberships: (0..ACCOUNTS)
            .flat_map(|n| {
                (0..MEMBERSHIPS_PER_ACCOUNT).map(move |k| v1::CachedMembership {
                    account_id: format!("JIRAUSER{}", 10_000 + n),
                    group: format!("group-{:04}", (n * 7 + k * 131) % GROUPS),
                })
            })
            .collect(),
        run_id: "full".to_owned(),
        ..Default::default()
    }
}

/// Delta `n`: one new account and its membership.
fn records(n: usize) -> Vec<v1::StateRecord> {
    let login = format!("joiner{n:03}");
    let change = |op: v1::ChangeOp, kind: usize| v1::Change {
        id: format!("{:016x}", n * 2 + kind),
        product: v1::Product::Jira as i32,
        op: op as i32,
        keycloak_user_id: format!("joiner-{n}"),
        reason: "a bench".to_owned(),
        ..Default::default()
    };
    let id = format!("JIRAUSER-joiner-{n}");
    vec![
        v1::StateRecord {
            change: Some(v1::Change {
                fields: Some(v1::AccountFields {
                    login: login.clone(),
                    display_name: login.clone(),
                    email: format!("{login}@example.com"),
                    ..Default::default()
                }),
                ..change(v1::ChangeOp::CreateUser, 0)
            }),
            account_id: None,
            created_id: Some(id.clone()),
        },
        v1::StateRecord {
            change: Some(v1::Change {
                group: "group-0001".to_owned(),
                ..change(v1::ChangeOp::AddMembership, 1)
            }),
            account_id: Some(id),
            created_id: None,
        },
    ]
}

/// The bytes the state journal's stream holds.
async fn journal_bytes(nats: &NatsServer) -> anyhow::Result<u64> {
    let client = async_nats::connect(nats.url()).await?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream
        .get_stream(format!("KV_{PREFIX}-state-journal"))
        .await?;
    Ok(stream.info().await?.state.bytes)
}
