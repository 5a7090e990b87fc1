//! The command line: global options and one subcommand per action.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use proto::v1::{ChangeOp, ChangeOutcome, DiagnosticKind, Product, RunState, RunTrigger};

/// keysync: sync Keycloak users and groups into Jira, Confluence and Bitbucket.
#[derive(Debug, Parser)]
#[command(name = "keysync", version)]
pub struct Args {
    /// The control plane's gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "KEYSYNC_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// A file that holds the control API's bearer token (the operator token).
    #[arg(long, global = true, env = "KEYSYNC_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM file of the CA to trust for an https:// endpoint; default: the system's
    /// roots.
    #[arg(long, global = true, env = "KEYSYNC_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// A PEM certificate to present when the control plane asks for one (mutual TLS:
    /// `[control_plane] tls_client_ca_file`); needs --client-key.
    #[arg(
        long,
        global = true,
        env = "KEYSYNC_CLIENT_CERT_FILE",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(
        long,
        global = true,
        env = "KEYSYNC_CLIENT_KEY_FILE",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a sync and follow it until it ends (or is held for approval).
    Sync {
        /// Fetch and plan, then stop before any write.
        #[arg(long)]
        simulate: bool,
        /// Only this product (repeat for several); default: every configured product.
        #[arg(long = "product", value_name = "PRODUCT")]
        products: Vec<ProductArg>,
        /// The Keycloak connector (realm) to read; default: the only one configured.
        #[arg(long)]
        connector: Option<String>,
    },
    /// List runs, newest first.
    Runs {
        /// Only runs in this state (repeat, or separate with commas, for several).
        #[arg(long = "state", value_name = "STATE", value_delimiter = ',')]
        states: Vec<StateArg>,
        /// Only runs started this way (repeat, or separate with commas, for several): by
        /// Keycloak's events, by the schedule, or through the API (`keysync sync`).
        #[arg(long = "kind", value_name = "KIND", value_delimiter = ',')]
        kinds: Vec<TriggerArg>,
        /// How many runs to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one run, and with --changes its changes and what became of them, or with
    /// --skipped the users its plan left out and why.
    Run {
        /// The run id.
        id: String,
        /// List the run's changes (implied by any filter below but --kind).
        #[arg(long)]
        changes: bool,
        /// List the conflicts and diagnostics of the run's plan instead: who was left out
        /// (no usable email, out of scope, login clash, protected...) and why. Takes
        /// --product, --user and --kind.
        #[arg(long, conflicts_with_all = ["changes", "op", "outcome"])]
        skipped: bool,
        /// With --skipped: only diagnostics of this kind (no conflicts).
        #[arg(long, requires = "skipped")]
        kind: Option<KindArg>,
        /// Only changes to this product.
        #[arg(long)]
        product: Option<ProductArg>,
        /// Only changes of this kind.
        #[arg(long)]
        op: Option<OpArg>,
        /// Only changes with this outcome.
        #[arg(long)]
        outcome: Option<OutcomeArg>,
        /// Only changes for this user: a login, email or Keycloak user id.
        #[arg(long)]
        user: Option<String>,
    },
    /// Print every decision a run's plan made about one user, for every product: the
    /// changes planned (with what became of them), and the conflicts and diagnostics that
    /// name the user, each with the rule and the data behind it.
    Explain {
        /// The run id.
        run: String,
        /// The user: a Keycloak username or user id, a product login, or an email.
        user: String,
    },
    /// Approve a run the safety limit holds, so it is applied. Refused once the hold has
    /// expired, or once a product changed since the plan was made: start a new run then.
    Approve {
        /// The run id.
        id: String,
        /// Why the held changes may go ahead; required, and recorded on the run with who
        /// approved it and when.
        #[arg(long, visible_alias = "comment", value_name = "WHY")]
        reason: String,
    },
    /// Cancel a run that has not ended; what is not applied yet is skipped.
    Cancel {
        /// The run id.
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Check that Keycloak and the products answer, with the configured credentials.
    TestConnection {
        /// Only these targets ("keycloak:<connector>" or a product name); default: all.
        targets: Vec<String>,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load FILE (and the KEYSYNC_* environment) as every service does, and report the
    /// first bad key.
    Check {
        /// The keysync configuration file (TOML).
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ProductArg {
    Jira,
    Confluence,
    Bitbucket,
}

impl From<ProductArg> for Product {
    fn from(product: ProductArg) -> Product {
        match product {
            ProductArg::Jira => Product::Jira,
            ProductArg::Confluence => Product::Confluence,
            ProductArg::Bitbucket => Product::Bitbucket,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum StateArg {
    Requested,
    Fetching,
    Planning,
    Held,
    Applying,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<StateArg> for RunState {
    fn from(state: StateArg) -> RunState {
        match state {
            StateArg::Requested => RunState::Requested,
            StateArg::Fetching => RunState::Fetching,
            StateArg::Planning => RunState::Planning,
            StateArg::Held => RunState::Held,
            StateArg::Applying => RunState::Applying,
            StateArg::Succeeded => RunState::Succeeded,
            StateArg::Failed => RunState::Failed,
            StateArg::Cancelled => RunState::Cancelled,
        }
    }
}

/// How a run was started, as `keysync runs --kind` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum TriggerArg {
    Event,
    Schedule,
    Api,
}

impl From<TriggerArg> for RunTrigger {
    fn from(trigger: TriggerArg) -> RunTrigger {
        match trigger {
            TriggerArg::Event => RunTrigger::Event,
            TriggerArg::Schedule => RunTrigger::Schedule,
            TriggerArg::Api => RunTrigger::Api,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum OpArg {
    CreateGroup,
    CreateUser,
    LinkUser,
    UpdateUser,
    ReactivateUser,
    AddMembership,
    RemoveMembership,
    DeactivateUser,
    DeleteUser,
    RemoveGroup,
}

impl From<OpArg> for ChangeOp {
    fn from(op: OpArg) -> ChangeOp {
        match op {
            OpArg::CreateGroup => ChangeOp::CreateGroup,
            OpArg::CreateUser => ChangeOp::CreateUser,
            OpArg::LinkUser => ChangeOp::LinkUser,
            OpArg::UpdateUser => ChangeOp::UpdateUser,
            OpArg::ReactivateUser => ChangeOp::ReactivateUser,
            OpArg::AddMembership => ChangeOp::AddMembership,
            OpArg::RemoveMembership => ChangeOp::RemoveMembership,
            OpArg::DeactivateUser => ChangeOp::DeactivateUser,
            OpArg::DeleteUser => ChangeOp::DeleteUser,
            OpArg::RemoveGroup => ChangeOp::RemoveGroup,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum OutcomeArg {
    Planned,
    Applied,
    AlreadyDone,
    Skipped,
    Failed,
}

impl From<OutcomeArg> for ChangeOutcome {
    fn from(outcome: OutcomeArg) -> ChangeOutcome {
        match outcome {
            OutcomeArg::Planned => ChangeOutcome::Planned,
            OutcomeArg::Applied => ChangeOutcome::Applied,
            OutcomeArg::AlreadyDone => ChangeOutcome::AlreadyDone,
            OutcomeArg::Skipped => ChangeOutcome::Skipped,
            OutcomeArg::Failed => ChangeOutcome::Failed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum KindArg {
    InvalidInput,
    MissingData,
    Protected,
    Unsupported,
    Deferred,
    MergedGroups,
    Disabled,
    Recreated,
    OutOfScope,
    NotSyncable,
    Lead,
    NoSeat,
}

impl From<KindArg> for DiagnosticKind {
    fn from(kind: KindArg) -> DiagnosticKind {
        match kind {
            KindArg::InvalidInput => DiagnosticKind::InvalidInput,
            KindArg::MissingData => DiagnosticKind::MissingData,
            KindArg::Protected => DiagnosticKind::Protected,
            KindArg::Unsupported => DiagnosticKind::Unsupported,
            KindArg::Deferred => DiagnosticKind::Deferred,
            KindArg::MergedGroups => DiagnosticKind::MergedGroups,
            KindArg::Disabled => DiagnosticKind::Disabled,
            KindArg::Recreated => DiagnosticKind::Recreated,
            KindArg::OutOfScope => DiagnosticKind::OutOfScope,
            KindArg::NotSyncable => DiagnosticKind::NotSyncable,
            KindArg::Lead => DiagnosticKind::Lead,
            KindArg::NoSeat => DiagnosticKind::NoSeat,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn filters_take_the_names_the_json_output_uses() {
        let args = Args::parse_from([
            "keysync",
            "run",
            "01JD000000000000000000000",
            "--outcome",
            "already_done",
            "--op",
            "add_membership",
            "--product",
            "bitbucket",
        ]);
        let Command::Run {
            outcome,
            op,
            product,
            ..
        } = args.command
        else {
            panic!("not `run`: {args:?}");
        };
        assert_eq!(outcome, Some(OutcomeArg::AlreadyDone));
        assert_eq!(op, Some(OpArg::AddMembership));
        assert_eq!(product, Some(ProductArg::Bitbucket));
    }

    #[test]
    fn runs_takes_kinds_and_states_repeated_or_separated_by_commas() {
        let args = Args::parse_from([
            "keysync",
            "runs",
            "--kind",
            "event,schedule",
            "--kind",
            "api",
            "--state",
            "held,failed",
        ]);
        let Command::Runs { kinds, states, .. } = args.command else {
            panic!("not `runs`: {args:?}");
        };
        assert_eq!(
            kinds,
            [TriggerArg::Event, TriggerArg::Schedule, TriggerArg::Api]
        );
        assert_eq!(states, [StateArg::Held, StateArg::Failed]);
        assert_eq!(RunTrigger::from(TriggerArg::Event), RunTrigger::Event);
        assert!(Args::try_parse_from(["keysync", "runs", "--kind", "cron"]).is_err());
    }

    #[test]
    fn skipped_takes_a_kind_and_refuses_the_change_filters() {
        let id = "01JD000000000000000000000";
        let args = Args::parse_from(["keysync", "run", id, "--skipped", "--kind", "out_of_scope"]);
        let Command::Run { skipped, kind, .. } = args.command else {
            panic!("not `run`: {args:?}");
        };
        assert!(skipped);
        assert_eq!(kind, Some(KindArg::OutOfScope));
        assert!(Args::try_parse_from(["keysync", "run", id, "--skipped", "--changes"]).is_err());
        assert!(Args::try_parse_from(["keysync", "run", id, "--kind", "protected"]).is_err());
    }

    #[test]
    fn approve_needs_a_reason_and_takes_comment_as_its_old_name() {
        let id = "01JD000000000000000000000";
        for flag in ["--reason", "--comment"] {
            let args = Args::parse_from(["keysync", "approve", id, flag, "checked with HR"]);
            let Command::Approve { reason, .. } = args.command else {
                panic!("not `approve`: {args:?}");
            };
            assert_eq!(reason, "checked with HR");
        }
        let error = Args::try_parse_from(["keysync", "approve", id]).expect_err("no reason");
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(error.to_string().contains("--reason"), "{error}");
    }
}
