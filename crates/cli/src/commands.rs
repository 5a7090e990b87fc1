//! One function per subcommand: call the control API, print for people or for scripts,
//! and answer the exit code.

use std::{process::ExitCode, time::Duration};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use proto::v1::{self, Product, RunMode, RunState, RunTrigger};

use crate::{
    args::{Args, Command, ConfigCommand},
    client::{Connection, TlsFiles},
    config_check,
    error::Error,
    explain,
    output::{self, ChangeJson, ConnectionCheckJson, RunDetailsJson, RunJson},
};

/// Exit code of a followed run that is held for approval.
const HELD: u8 = 2;

/// Runs the command of `args`.
pub async fn run(args: Args) -> Result<ExitCode, Error> {
    if let Command::Config {
        command: ConfigCommand::Check { file },
    } = &args.command
    {
        return config_check::check(file, args.json);
    }
    let tls = TlsFiles {
        ca: args.ca_file.as_deref(),
        client_cert: args.client_cert.as_deref(),
        client_key: args.client_key.as_deref(),
    };
    let connection = Connection::open(&args.endpoint, args.token_file.as_deref(), &tls).await?;
    match args.command {
        Command::Sync {
            simulate,
            products,
            connector,
        } => {
            let mode = if simulate {
                RunMode::Simulate
            } else {
                RunMode::Apply
            };
            let products: Vec<Product> = products.into_iter().map(Product::from).collect();
            sync(&connection, mode, &products, connector, args.json).await
        }
        Command::Runs {
            states,
            kinds,
            limit,
        } => {
            let states: Vec<RunState> = states.into_iter().map(RunState::from).collect();
            let triggers: Vec<RunTrigger> = kinds.into_iter().map(RunTrigger::from).collect();
            runs(&connection, &states, &triggers, limit, args.json).await
        }
        Command::Run {
            id,
            skipped: true,
            kind,
            product,
            user,
            ..
        } => {
            let mut request = v1::ListDiagnosticsRequest {
                run_id: id,
                user: user.unwrap_or_default(),
                ..v1::ListDiagnosticsRequest::default()
            };
            if let Some(product) = product {
                request.set_product(product.into());
            }
            if let Some(kind) = kind {
                request.set_kind(kind.into());
            }
            explain::skipped(&connection, request, args.json).await
        }
        Command::Run {
            id,
            changes,
            product,
            op,
            outcome,
            user,
            ..
        } => {
            let mut request = v1::ListChangesRequest {
                run_id: id.clone(),
                user: user.clone().unwrap_or_default(),
                ..v1::ListChangesRequest::default()
            };
            if let Some(product) = product {
                request.set_product(product.into());
            }
            if let Some(op) = op {
                request.set_op(op.into());
            }
            if let Some(outcome) = outcome {
                request.set_outcome(outcome.into());
            }
            let filtered = product.is_some() || op.is_some() || outcome.is_some() || user.is_some();
            let changes = (changes || filtered).then_some(request);
            show_run(&connection, &id, changes, args.json).await
        }
        Command::Explain { run, user } => {
            explain::explain(&connection, &run, &user, args.json).await
        }
        Command::Approve { id, reason } => {
            let run = connection
                .client()
                .approve_run(v1::ApproveRunRequest {
                    run_id: id,
                    comment: reason,
                })
                .await
                .map_err(|status| connection.error(status))?
                .into_inner();
            print_changed_run(&run, "approved", args.json)
        }
        Command::Cancel { id, reason } => {
            let run = connection
                .client()
                .cancel_run(v1::CancelRunRequest { run_id: id, reason })
                .await
                .map_err(|status| connection.error(status))?
                .into_inner();
            print_changed_run(&run, "cancelled", args.json)
        }
        Command::TestConnection { targets } => {
            test_connection(&connection, targets, args.json).await
        }
        Command::Config { .. } => unreachable!("handled above, before connecting"),
    }
}

/// Starts a run and follows it with a progress bar per product until it ends or is held.
async fn sync(
    connection: &Connection,
    mode: RunMode,
    products: &[Product],
    connector: Option<String>,
    json: bool,
) -> Result<ExitCode, Error> {
    let mut request = v1::StartSyncRequest {
        products: products.iter().map(|product| *product as i32).collect(),
        connector: connector.unwrap_or_default(),
        ..v1::StartSyncRequest::default()
    };
    request.set_mode(mode);
    let started = connection
        .client()
        .start_sync(request)
        .await
        .map_err(|status| connection.error(status))?
        .into_inner();
    let id = started.run_id.clone();
    if !json {
        let products = if products.is_empty() {
            "every configured product".to_owned()
        } else {
            products
                .iter()
                .map(|product| output::product_name(*product))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out!("Run {id} started: {}, {products}.", output::mode_name(mode));
    }

    let mut updates = connection
        .client()
        .watch_run(v1::WatchRunRequest { run_id: id.clone() })
        .await
        .map_err(|status| connection.error(status))?
        .into_inner();
    let mut progress = Progress::new(json);
    let mut last = started;
    while let Some(update) = updates.next().await {
        let run = update.map_err(|status| connection.error(status))?;
        progress.show(&run);
        last = run;
        if is_terminal(last.state()) || last.state() == RunState::Held {
            break;
        }
    }
    progress.finish();
    if !(is_terminal(last.state()) || last.state() == RunState::Held) {
        return Err(Error::WatchEnded);
    }

    if json {
        output::print_json(&RunJson::from(&last))?;
    } else {
        print_summary(&last);
    }
    Ok(match last.state() {
        RunState::Succeeded => ExitCode::SUCCESS,
        RunState::Held => ExitCode::from(HELD),
        _ => ExitCode::FAILURE,
    })
}

/// The live view of a followed run: one line for the state, one bar per product.
struct Progress {
    multi: MultiProgress,
    state: ProgressBar,
    products: Vec<(i32, ProgressBar)>,
    last_state: Option<RunState>,
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let multi = MultiProgress::new();
        if quiet {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let state = multi.add(ProgressBar::new_spinner());
        state.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        state.enable_steady_tick(Duration::from_millis(120));
        Progress {
            multi,
            state,
            products: Vec::new(),
            last_state: None,
            quiet,
        }
    }

    fn show(&mut self, run: &v1::Run) {
        let state = run.state();
        if self.last_state != Some(state) {
            self.last_state = Some(state);
            let line = format!("Run {} is {}.", run.run_id, output::state_name(state));
            self.state.set_message(line.clone());
            // Without a terminal the bars are hidden; the states still go to stderr.
            if self.multi.is_hidden() && !self.quiet {
                eprintln!("{line}");
            }
        }
        for progress in &run.progress {
            let index = match self
                .products
                .iter()
                .position(|(product, _)| *product == progress.product)
            {
                Some(index) => index,
                None => {
                    let bar = self.multi.add(ProgressBar::new(progress.planned));
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:>11} [{bar:40}] {pos}/{len} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(output::product_name(progress.product()));
                    self.products.push((progress.product, bar));
                    self.products.len() - 1
                }
            };
            let bar = &self.products[index].1;
            bar.set_length(progress.planned);
            bar.set_position(
                progress.applied + progress.already_done + progress.skipped + progress.failed,
            );
            if progress.failed > 0 {
                bar.set_message(format!("{} failed", progress.failed));
            }
        }
    }

    fn finish(&self) {
        self.state.finish_and_clear();
        for (_, bar) in &self.products {
            bar.finish();
        }
    }
}

fn print_summary(run: &v1::Run) {
    let id = &run.run_id;
    let state = output::state_name(run.state());
    let elapsed = match (run.created_at, run.finished_at.or(run.updated_at)) {
        (Some(start), Some(end)) => format!(" after {}s", (end.seconds - start.seconds).max(0)),
        _ => String::new(),
    };
    out!();
    match run.state() {
        RunState::Held => {
            out!("Run {id} is held: {}.", run.reason);
            print_plan(run);
            print_hold(run);
            out!();
            out!("Review the changes: keysync run {id} --changes");
            out!("Apply them:         keysync approve {id} --reason \"why\"");
            out!("Or drop the run:    keysync cancel {id} --reason \"why\"");
            return;
        }
        RunState::Succeeded if run.mode() == RunMode::Simulate => {
            out!("Run {id} {state}{elapsed}; simulated, so nothing was written.");
            if !run.reason.is_empty() {
                out!("Note: {}.", run.reason);
            }
            print_plan(run);
            out!();
            out!("See every change: keysync run {id} --changes");
            return;
        }
        _ => {
            out!("Run {id} {state}{elapsed}.");
            if !run.reason.is_empty() {
                out!("Reason: {}.", run.reason);
            }
        }
    }
    if !run.progress.is_empty() {
        out!();
        out!("{}", output::progress_table(run));
    }
    if run.progress.iter().any(|progress| progress.failed > 0) {
        out!();
        out!("See the failures: keysync run {id} --outcome failed");
    }
}

/// For a HELD run: why each product is held, with what the safety limits counted, and when
/// the hold expires.
fn print_hold(run: &v1::Run) {
    if run.state() != RunState::Held {
        return;
    }
    out!();
    out!("Held:");
    for line in output::hold_lines(run) {
        out!("  {line}");
    }
    if run.hold_expires_at.is_some() {
        out!(
            "The hold expires at {}; approve before, or start a new run.",
            output::short_time(run.hold_expires_at.as_ref())
        );
    }
}

fn print_plan(run: &v1::Run) {
    let lines = output::plan_lines(run);
    if lines.is_empty() {
        return;
    }
    let verb = if run.mode() == RunMode::Simulate {
        "Would change"
    } else {
        "Planned"
    };
    out!();
    out!("{verb}:");
    for line in lines {
        out!("  {line}");
    }
}

/// The newest runs as a table.
async fn runs(
    connection: &Connection,
    states: &[RunState],
    triggers: &[RunTrigger],
    limit: u32,
    json: bool,
) -> Result<ExitCode, Error> {
    let response = connection
        .client()
        .list_runs(v1::ListRunsRequest {
            page_size: limit.max(1),
            page_token: String::new(),
            states: states.iter().map(|state| *state as i32).collect(),
            triggers: triggers.iter().map(|trigger| *trigger as i32).collect(),
        })
        .await
        .map_err(|status| connection.error(status))?
        .into_inner();
    if json {
        let runs: Vec<RunJson> = response.runs.iter().map(RunJson::from).collect();
        output::print_json(&runs)?;
        return Ok(ExitCode::SUCCESS);
    }
    if response.runs.is_empty() {
        out!("No runs.");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = response
        .runs
        .iter()
        .map(|run| {
            let planned: u64 = run.progress.iter().map(|progress| progress.planned).sum();
            let done: u64 = run
                .progress
                .iter()
                .map(|progress| {
                    progress.applied + progress.already_done + progress.skipped + progress.failed
                })
                .sum();
            let changes = if run.progress.is_empty() {
                String::new()
            } else if run.mode() == RunMode::Simulate {
                planned.to_string()
            } else {
                format!("{done}/{planned}")
            };
            vec![
                run.run_id.clone(),
                output::mode_name(run.mode()).to_owned(),
                output::state_name(run.state()).to_owned(),
                output::trigger_cell(run),
                run.connector.clone(),
                output::short_time(run.created_at.as_ref()),
                changes,
            ]
        })
        .collect();
    out!(
        "{}",
        output::table(
            &[
                "ID",
                "MODE",
                "STATE",
                "TRIGGER",
                "CONNECTOR",
                "CREATED",
                "CHANGES"
            ],
            &rows
        )
    );
    if !response.next_page_token.is_empty() {
        out!("(more: --limit {})", limit.saturating_mul(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// One run, and its changes when `changes` asks for them.
async fn show_run(
    connection: &Connection,
    id: &str,
    changes: Option<v1::ListChangesRequest>,
    json: bool,
) -> Result<ExitCode, Error> {
    let run = connection
        .client()
        .get_run(v1::GetRunRequest {
            run_id: id.to_owned(),
        })
        .await
        .map_err(|status| connection.error(status))?
        .into_inner();
    let records = match changes {
        Some(request) => Some(list_changes(connection, request).await?),
        None => None,
    };
    if json {
        output::print_json(&RunDetailsJson {
            run: RunJson::from(&run),
            changes: records
                .as_ref()
                .map(|records| records.iter().map(ChangeJson::from).collect()),
        })?;
        return Ok(ExitCode::SUCCESS);
    }

    let products = if run.products.is_empty() {
        "every configured product".to_owned()
    } else {
        run.products
            .iter()
            .map(|product| output::product_name(Product::try_from(*product).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut details = vec![
        ("Run", run.run_id.clone()),
        ("State", output::state_name(run.state()).to_owned()),
        ("Mode", output::mode_name(run.mode()).to_owned()),
        ("Trigger", output::trigger_name(run.trigger()).to_owned()),
        (
            "Event",
            run.event
                .as_ref()
                .map(output::event_text)
                .unwrap_or_default(),
        ),
        ("Requested by", run.requested_by.clone()),
        ("Connector", run.connector.clone()),
        ("Products", products),
        ("Created", output::short_time(run.created_at.as_ref())),
        ("Updated", output::short_time(run.updated_at.as_ref())),
        ("Finished", output::short_time(run.finished_at.as_ref())),
        ("Reason", run.reason.clone()),
        ("Hold expires", hold_expiry(&run)),
        ("Approved by", run.approved_by.clone()),
        ("Approved at", output::short_time(run.approved_at.as_ref())),
        ("Approved why", run.approval_reason.clone()),
    ];
    details.retain(|(_, value)| !value.is_empty());
    for (label, value) in details {
        out!("{:<13} {value}", format!("{label}:"));
    }
    print_plan(&run);
    print_hold(&run);
    if !run.progress.is_empty() {
        out!();
        out!("{}", output::progress_table(&run));
    }
    if let Some(mut records) = records {
        out!();
        if records.is_empty() {
            out!("No changes match.");
            return Ok(ExitCode::SUCCESS);
        }
        // By user, then in plan order (the sort is stable).
        records.sort_by(|left, right| {
            let login = |record: &v1::ChangeRecord| {
                record
                    .change
                    .as_ref()
                    .map(|change| output::login(change).to_lowercase())
                    .unwrap_or_default()
            };
            login(left).cmp(&login(right))
        });
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|record| {
                let change = ChangeJson::from(record);
                let detail = if !change.group.is_empty() {
                    format!("group {}", change.group)
                } else {
                    change.reason.clone()
                };
                let result = if change.message.is_empty() {
                    String::new()
                } else if change.product_status > 0 {
                    format!("{} ({})", change.message, change.product_status)
                } else {
                    change.message.clone()
                };
                vec![
                    change.login,
                    change.email,
                    change.product,
                    change.op,
                    detail,
                    change.outcome,
                    result,
                ]
            })
            .collect();
        out!(
            "{}",
            output::table(
                &[
                    "USER", "EMAIL", "PRODUCT", "OP", "DETAIL", "OUTCOME", "MESSAGE"
                ],
                &rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// When a HELD run's hold expires; empty for any other run.
fn hold_expiry(run: &v1::Run) -> String {
    if run.state() == RunState::Held {
        output::short_time(run.hold_expires_at.as_ref())
    } else {
        String::new()
    }
}

/// Every page of the changes `request` asks for.
pub(crate) async fn list_changes(
    connection: &Connection,
    mut request: v1::ListChangesRequest,
) -> Result<Vec<v1::ChangeRecord>, Error> {
    request.page_size = 1000;
    let mut records = Vec::new();
    loop {
        let page = connection
            .client()
            .list_changes(request.clone())
            .await
            .map_err(|status| connection.error(status))?
            .into_inner();
        records.extend(page.changes);
        if page.next_page_token.is_empty() {
            return Ok(records);
        }
        request.page_token = page.next_page_token;
    }
}

fn print_changed_run(run: &v1::Run, what: &str, json: bool) -> Result<ExitCode, Error> {
    if json {
        output::print_json(&RunJson::from(run))?;
    } else if run.state() == RunState::Cancelled {
        out!("Run {} is cancelled: {}.", run.run_id, run.reason);
    } else {
        out!(
            "Run {} {what}; it is {} now. Follow it: keysync run {}",
            run.run_id,
            output::state_name(run.state()),
            run.run_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn test_connection(
    connection: &Connection,
    targets: Vec<String>,
    json: bool,
) -> Result<ExitCode, Error> {
    let checks = connection
        .client()
        .test_connection(v1::TestConnectionRequest { targets })
        .await
        .map_err(|status| connection.error(status))?
        .into_inner()
        .checks;
    let all_ok = checks.iter().all(|check| check.ok);
    if json {
        let checks: Vec<ConnectionCheckJson> =
            checks.iter().map(ConnectionCheckJson::from).collect();
        output::print_json(&checks)?;
    } else {
        let mut notes = Vec::new();
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|check| {
                let check = ConnectionCheckJson::from(check);
                let (details, long) = details_cell(&check.target, &check.details);
                notes.extend(long);
                vec![
                    check.target,
                    if check.ok { "ok" } else { "FAILED" }.to_owned(),
                    check.message,
                    details,
                ]
            })
            .collect();
        out!(
            "{}",
            output::table(&["TARGET", "STATUS", "MESSAGE", "DETAILS"], &rows)
        );
        for note in notes {
            out!("{note}");
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The details of a check as a table cell, and the long ones (how to turn a realm's
/// events on) as notes printed below the table, so they do not stretch it.
fn details_cell(
    target: &str,
    details: &std::collections::BTreeMap<String, String>,
) -> (String, Vec<String>) {
    const LONG_DETAIL: usize = 40;
    let mut notes = Vec::new();
    let cell = details
        .iter()
        .map(|(key, value)| {
            if value.chars().count() > LONG_DETAIL {
                notes.push(format!("{target} {key}: {value}"));
                format!("{key}=(below)")
            } else {
                format!("{key}={value}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    (cell, notes)
}

fn is_terminal(state: RunState) -> bool {
    matches!(
        state,
        RunState::Succeeded | RunState::Failed | RunState::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_detail_is_a_note_below_the_table_and_a_short_one_stays_in_its_cell() {
        let long = "not ready: the realm does not save admin events: turn on \"Save events\"";
        let details = [
            ("events".to_owned(), long.to_owned()),
            ("users".to_owned(), "2".to_owned()),
        ]
        .into();
        let (cell, notes) = details_cell("keycloak:corp", &details);
        assert_eq!(cell, "events=(below) users=2");
        assert_eq!(notes, [format!("keycloak:corp events: {long}")]);
    }
}
