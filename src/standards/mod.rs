//! The standards engine: each standard's rules as pure functions, one file per standard, and the
//! engine that applies them to stored readings.
//!
//! - [`hj633`]: AQI (HJ 633-2012 and HJ 633-2026).

pub mod hj633;
