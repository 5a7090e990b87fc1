//! The applier's sections of the shared configuration file: `[bus]`, `[products.*]`,
//! `[control_plane]` (`endpoint` and `token`), `[applier]` and `[health]`. The types and
//! their checks live in the light `settings` crate, so `keysync config check` checks them
//! without linking the applier.

pub use ::settings::applier::{ApplierSettings, ControlPlaneSettings, Settings};
pub use bus::{BusSettings, health::HealthSettings};
