//! The standards engine: each standard's rules as pure functions, one file per standard, and the
//! engine that applies them to the readings as they are stored.
//!
//! - [`hj633`]: AQI, IAQI, grade, primary pollutant (HJ 633-2012 and HJ 633-2026).
//! - [`hj663`]: air data validity and aggregation (GB 3095 Table 4, HJ 663): hourly, daily, O3 8h.
//! - [`hj75`]: flue-gas CEMS (HJ 75/76-2017): conversions, O2 correction, hourly validity, exceedance.
//! - [`gb18918`]: wastewater plant effluent, Class 1A.
//! - [`gb3838`]: surface water class of river sections.
//! - [`plan`]: the district plan's indicators: good-days rate and budget, sewage treatment rate.
//! - [`time`]: CST days, hours labelled by their end.
//! - [`input`]: one hour of input as minute buckets, each with its own channel's flag.
//! - [`cems`]: a unit's hours and days (per-parameter validity, corrections, hourly-record policy).
//! - [`air`]: stations' and the district's hours and days, the monitoring plan (§5.3.2).
//! - [`compare`]: the AQI editions side by side over a window (the plan's period and today's).
//! - [`results`]: the typed results the API, alerts and report read.
//! - [`export`]: results as InfluxDB line protocol.
//! - [`engine`]: the stateful part: input, changed-set, recomputation, persistence, compliance.
//! - [`runner`]: the engine's periodic task and result export.

pub mod air;
pub mod cems;
pub mod compare;
pub mod engine;
pub mod export;
pub mod gb18918;
pub mod gb3838;
pub mod hj633;
pub mod hj663;
pub mod hj75;
pub mod input;
pub mod plan;
pub mod results;
pub mod runner;
pub mod time;
