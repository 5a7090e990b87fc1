//! The control plane's sections of the shared configuration file: `[bus]`,
//! `[control_plane]` (the API and the schedule), `[health]`, and for `TestConnection`
//! `[keycloak.*]` and `[products.*]`. The types and their checks live in the light
//! `settings` crate, so `keysync config check` checks them without linking the control
//! plane.

pub use ::settings::control_plane::{
    ApiRole, ControlPlaneSettings, ScheduleSettings, Settings, parse_cron,
};
pub use bus::{BusSettings, health::HealthSettings};
