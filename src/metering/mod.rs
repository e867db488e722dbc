//! Metering: Prometheus metrics now; usage ledger, prices and tokenizer
//! fallback arrive with the metering work.

pub mod cost;
pub mod estimate;
pub mod exact;
pub mod ledger;
pub mod metrics;
pub mod report;

pub use metrics::{Endpoint, Labels, Metrics, Series};
