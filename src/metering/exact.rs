//! A Prometheus counter vector that adds integers: cost totals in
//! pico-dollars stay exact however many requests are added, and become USD
//! (a float) only when scraped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};

use super::cost::{Pico, usd};

/// One labelled total.
#[derive(Clone, Default)]
pub struct ExactCounter(Arc<Mutex<Pico>>);

impl ExactCounter {
    pub fn add(&self, pico: Pico) {
        let mut total = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *total = total.saturating_add(pico);
    }

    fn get(&self) -> Pico {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counters by label values, exposed as `<name>` in USD. Clones share the counters.
#[derive(Clone)]
pub struct ExactCounterVec {
    desc: Desc,
    labels: Vec<String>,
    children: Arc<Mutex<HashMap<Vec<String>, ExactCounter>>>,
}

impl ExactCounterVec {
    pub fn new(name: &str, help: &str, labels: &[&str]) -> Self {
        let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        ExactCounterVec {
            desc: Desc::new(name.into(), help.into(), labels.clone(), HashMap::new()).expect("valid metric"),
            labels,
            children: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The counter of these label values (looked up once, then kept by the caller).
    pub fn with(&self, values: &[&str]) -> ExactCounter {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }
}

impl Collector for ExactCounterVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let mut metrics: Vec<Metric> = children
            .iter()
            .map(|(values, counter)| {
                let pairs = self
                    .labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                let mut c = Counter::default();
                c.set_value(usd(counter.get()));
                let mut m = Metric::from_label(pairs);
                m.set_counter(c);
                m
            })
            .collect();
        metrics.sort_by(|a, b| {
            let key = |m: &Metric| m.get_label().iter().map(|p| p.value().to_owned()).collect::<Vec<_>>();
            key(a).cmp(&key(b))
        });
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(metrics);
        vec![family]
    }
}
