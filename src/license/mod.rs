//! The license domain: license files, signatures, and the replicated license state.
//!
//! Pure code: no tokio, no sled, no tonic, no clock. Time enters as
//! milliseconds passed in by the caller.

pub mod command;
pub mod counters;
pub mod feature;
pub mod file;
pub mod formats;
pub mod host;
pub mod identity;
pub mod ids;
pub mod pool;
pub mod removal;
pub mod secret;
pub mod signature;
pub mod state;
pub mod trust;

pub use feature::{Date, Expiry, FeatureLine, LineKind};
pub use host::HostId;
pub use identity::ClusterId;
