//! The reliability suite (`make reliability`): fault scenarios against the real services,
//! each a process, real NATS and Keycloak and the emulators. `make test` runs a fast subset.
//!
//! Each scenario is one test that repeats its run `KEYSYNC_RELIABILITY_RUNS` times (default
//! 1), each time on a fresh stack, and prints one line
//!
//! ```text
//! RELIABILITY <scenario> runs=N succeeded=N expected_state=N lost=0 duplicated=0 seconds=S
//! ```
//!
//! then asserts it (see [`tally::Tally`]). Scenarios that are not in the fast subset run only
//! with `KEYSYNC_RELIABILITY_FULL=1`; without it they print `RELIABILITY <scenario> skipped
//! reason=...` and pass.
//!
//! - R1 ([`kills`]): `kill -9` of a service in the middle of a run, then a restart.
//! - R2 ([`nats`]): nats-server restarted (same port, same store) in the middle of a run;
//!   a three-node cluster (streams with three replicas) loses a node mid-run (full suite).
//! - R3 ([`throttle`]): the products answer 503 to a quarter or a third of their calls (429
//!   with Retry-After past Confluence's rate limit, which the appliers' pacer mostly avoids).
//! - R4 ([`keycloak_faults`]): Keycloak fails after the first page of users: the run fails
//!   and the products are not written to.
//! - R5 ([`holds`]): an empty realm, a realm that lost 60% of its users: the run is held and
//!   the products are not written to.
//! - R7 ([`replicas`]): two replicas of every applier and of the control plane through a run
//!   of ~20,000 changes, one of each killed.

mod holds;
mod keycloak_faults;
mod kills;
mod nats;
mod replicas;
mod tally;
mod throttle;

use e2e::directory;
