//! enviromon: the environmental monitoring daemon of Jianxi District (涧西区), Luoyang.
//!
//! # Layout
//! The folders follow the data path (see `ARCHITECTURE.md`):
//!
//! - [`ingest`]: sources. [`ingest::mqtt`] subscribes with manual QoS 1 acks.
//! - [`pipeline`]: payload decoding ([`pipeline::payload`]), validation and unit normalisation
//!   ([`pipeline::validate`]), the dead-letter file ([`pipeline::deadletter`]), the spooler that
//!   acknowledges a message once its readings are durable in the spool ([`pipeline::spooler`]) and
//!   the batching store writer that commits the spool only after the store has them
//!   ([`pipeline::writer`]).
//! - [`store`]: the spool, the embedded SQLite store, InfluxDB (v2 write API) and InfluxDB 1.x; the
//!   three stores are idempotent.
//! - [`alerts`]: alert rules, lifecycle, persistence, Alertmanager/webhook/robot delivery.
//! - [`api`]: the HTTP API (`fn app(state) -> Router`), health and `/metrics`.
//! - [`registry`]: sites, units, sensors and plan targets, seeded from `seeds/`.
//! - [`registration`]: registering and changing sensors at run time: validation, audit, apply.
//! - [`catalogue`]: quantities, units, HJ 212 codes and conversions.
//! - [`reading`]: the one `Reading` type every stage passes on.
//! - [`config`]: layered configuration with validation that reports every error.
//! - [`daemon`]: wiring, start-up and the signal → drain → deadline shutdown.
//! - [`demo`]: embedded broker and simulators for `enviromon demo`.
//! - [`metrics`]: the daemon's Prometheus metrics.
//! - [`report`]: `enviromon report`, the daily briefing as text and a PNG.
//! - [`tables`]: the report tables operators hand in (CEMS, air, water) as CSV and XLSX.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod backoff;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod import;
pub mod ingest;
pub mod integrity;
pub mod metrics;
pub mod pipeline;
pub mod reading;
pub mod registration;
pub mod registry;
pub mod report;
pub mod standards;
pub mod store;
pub mod sync;
pub mod tables;
