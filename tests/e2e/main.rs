//! keysync end to end: every service a separate process against a real nats-server, the
//! real Keycloak and the three product emulators (see the `e2e` library for the harness).
//! The scenarios are those of the end-to-end and observability issues; each module says
//! which.

mod connectors;
mod event_script;
mod events;
mod events_off;
mod explain;
mod faults;
mod holds;
mod integrity;
mod leads;
mod rules;
mod safety;
mod security;
mod streamed;
mod sync;
mod telemetry;

use e2e::directory;
