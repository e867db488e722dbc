//! The model catalog: price, context window, capabilities, hosting and
//! benchmark scores per model, from `config/catalog.yaml` (built in) and the
//! operator's own file (`routing.catalog`), whose entries replace built-in
//! ones of the same id. Routes refer to benchmarks by name.

use std::collections::HashMap;

use serde::Deserialize;

/// The catalog shipped with tollgate.
pub const BUILT_IN: &str = include_str!("../../config/catalog.yaml");

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million input tokens.
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// USD per request, on top of the tokens.
    #[serde(default)]
    pub per_request: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hosting {
    #[default]
    Api,
    SelfHosted,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub price: Option<Price>,
    /// Self-hosted: what the machine costs per hour, spread over its busy time.
    #[serde(default)]
    pub hourly_cost: Option<f64>,
    #[serde(default)]
    pub context_window: Option<u64>,
    #[serde(default)]
    pub max_output: Option<u64>,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    pub hosting: Hosting,
    /// Benchmark name → score (percent).
    #[serde(default)]
    pub scores: HashMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Tools,
    Vision,
    Json,
    Embeddings,
}

impl ModelInfo {
    pub fn can(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    models: HashMap<String, ModelInfo>,
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    models: HashMap<String, ModelInfo>,
}

impl Catalog {
    /// The built-in catalog, with `extra` (YAML in the same format) on top.
    pub fn load(extra: Option<&str>) -> Result<Self, String> {
        let mut built_in: CatalogFile =
            serde_yaml_ng::from_str(BUILT_IN).map_err(|e| format!("the built-in catalog: {e}"))?;
        if let Some(text) = extra {
            let own: CatalogFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
            built_in.models.extend(own.models);
        }
        Ok(Catalog {
            models: built_in.models,
        })
    }

    pub fn get(&self, id: &str) -> Option<&ModelInfo> {
        self.models.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_loads_and_names_its_sources() {
        let c = Catalog::load(None).unwrap();
        let gpt = c.get("gpt-4o").expect("gpt-4o is in the catalog");
        assert!(gpt.price.unwrap().input > 0.0);
        assert!(gpt.context_window.unwrap() >= 128_000);
        assert!(gpt.can(Capability::Tools));
        for (id, m) in &c.models {
            assert!(!m.sources.is_empty(), "{id} names no source");
        }
        let own = "models:\n  gpt-4o: {sources: [mine], price: {input: 1, output: 2}, context_window: 1000}\n";
        let c = Catalog::load(Some(own)).unwrap();
        assert_eq!(c.get("gpt-4o").unwrap().context_window, Some(1000));
    }
}
