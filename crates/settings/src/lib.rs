//! keysync's configuration: one TOML file shared by every service (plus `KEYSYNC_*`
//! variables and `*_file` secrets, loaded by the `config` crate), and here each service's
//! view of it — the sections it reads, their documented defaults, and their checks, with
//! no IO.
//!
//! | section | read by | type |
//! |---|---|---|
//! | `[bus]` | every service | `bus::BusSettings` |
//! | `[health]` | every service | `bus::health::HealthSettings` |
//! | `[keycloak.<connector>]` | fetcher, control plane | `keycloak::config::KeycloakSettings` |
//! | `[products.<product>]` | planner, appliers, control plane | [`products::ProductsSettings`] |
//! | `[fetcher]` | fetcher | [`fetcher::Settings`] |
//! | `[planner]` | planner | [`planner::Settings`] |
//! | `[applier]` | appliers | [`applier::Settings`] |
//! | `[control_plane]` endpoint, token, TLS | appliers, planner | [`control_client::ControlPlaneSettings`] |
//! | `[control_plane]` | control plane | [`control_plane::Settings`] |
//! | `[control_plane.schedule]` | control plane | [`schedule::ScheduleSettings`] |
//!
//! The services take their settings from here, and so does `keysync config check`, which
//! checks a file exactly as each service would without linking any service.
//!
//! **Architecture invariant:** types and checks only: no network, no runtime, no service.

pub mod applier;
pub mod control_client;
pub mod control_plane;
pub mod fetcher;
pub mod planner;
pub mod products;
pub mod schedule;
