//! Configuration: the YAML schema, `${VAR}` interpolation, validation with
//! line numbers, and the resolved `Config` the rest of tollgate reads.

pub mod env;
mod locate;
pub mod schema;
pub mod secret;
pub mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

pub use schema::{HuggingFaceApi, LogFormat, SimulatedSection};
pub use secret::Secret;

use env::Interpolated;
use schema::{FileConfig, HttpFields, ProviderSection, TimeoutSection};

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub auth_keys: Vec<Secret>,
    pub admin_keys: Vec<Secret>,
    /// `auth.open`: serving without keys was chosen on purpose.
    pub auth_open: bool,
    pub logging: schema::LoggingSection,
    pub providers: Vec<ProviderSpec>,
    pub models: Vec<ModelSpec>,
    pub routing: schema::RoutingSection,
    /// The text of `routing.catalog`, read at load.
    pub catalog_text: Option<String>,
    /// Validated: names unique, targets and weights name configured models.
    pub routes: Vec<schema::RouteSection>,
    pub ledger: Option<crate::metering::ledger::LedgerSettings>,
    /// `auth.managed_keys`: keys from the ledger's database are accepted (and required).
    pub managed_keys: bool,
    pub key_refresh: Duration,
    pub cut_streams_over_budget: bool,
    pub teams: Vec<crate::keys::registry::TeamSpec>,
    /// `metrics.key_labels`.
    pub key_labels: bool,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body: usize,
    pub max_header_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub body_timeout: Duration,
    pub max_concurrent_requests: usize,
}

#[derive(Debug)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: ProviderKind,
}

#[derive(Debug)]
pub enum ProviderKind {
    OpenAi(HttpSpec),
    Azure {
        http: HttpSpec,
        api_version: String,
    },
    Anthropic {
        http: HttpSpec,
        version: String,
        max_tokens: u32,
    },
    Ollama {
        http: HttpSpec,
        keep_alive: Option<String>,
        num_ctx: Option<u32>,
        discover_models: bool,
    },
    Gemini(HttpSpec),
    HuggingFace {
        http: HttpSpec,
        api: schema::HuggingFaceApi,
        template: crate::providers::huggingface::ChatTemplate,
    },
    Simulated(SimulatedSection),
}

impl ProviderKind {
    /// OpenTelemetry's `gen_ai.provider.name` for this kind of upstream.
    pub fn system(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi(_) => "openai",
            ProviderKind::Azure { .. } => "azure.ai.openai",
            ProviderKind::Anthropic { .. } => "anthropic",
            ProviderKind::Ollama { .. } => "ollama",
            ProviderKind::Gemini(_) => "gcp.gemini",
            ProviderKind::HuggingFace { .. } => "huggingface",
            ProviderKind::Simulated(_) => "tollgate.simulated",
        }
    }

    /// Whether the upstream's own model list is discovered at run time.
    pub fn discovers_models(&self) -> bool {
        matches!(
            self,
            ProviderKind::Ollama {
                discover_models: true,
                ..
            }
        )
    }

    /// How to reach the upstream, for every kind that has one.
    pub fn http(&self) -> Option<&HttpSpec> {
        match self {
            ProviderKind::OpenAi(h)
            | ProviderKind::Azure { http: h, .. }
            | ProviderKind::Anthropic { http: h, .. }
            | ProviderKind::Ollama { http: h, .. }
            | ProviderKind::Gemini(h)
            | ProviderKind::HuggingFace { http: h, .. } => Some(h),
            ProviderKind::Simulated(_) => None,
        }
    }
}

/// How to reach an HTTP upstream.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// Without a trailing slash.
    pub base_url: String,
    pub key: KeyState,
    pub auth_header: HeaderName,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeouts: Timeouts,
    /// Ask streams for `include_usage`.
    pub stream_usage: bool,
    /// Extra CA certificates to trust, from `ca_file`.
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

#[derive(Debug, Clone)]
pub enum KeyState {
    /// The provider needs no key (a local server).
    NotNeeded,
    Set(Secret),
    /// The key's environment variables are unset: the provider answers a clear error.
    Missing(Vec<String>),
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub provider: String,
    pub upstream_model: String,
    pub aliases: Vec<String>,
    /// The catalog id describing this model.
    pub catalog: String,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    /// `models[].budget`.
    pub budget: crate::keys::Budget,
}

impl Config {
    /// Providers whose key variables are unset, with those variables.
    pub fn providers_without_keys(&self) -> Vec<(&str, &[String])> {
        self.providers
            .iter()
            .filter_map(|p| match p.kind.http().map(|h| &h.key) {
                Some(KeyState::Missing(vars)) => Some((p.name.as_str(), vars.as_slice())),
                _ => None,
            })
            .collect()
    }

    /// Why this config must not serve: no gateway keys, reachable beyond
    /// this machine, while some provider holds a paid key. `auth.open: true`
    /// accepts the risk.
    pub fn exposure_problem(&self) -> Option<String> {
        if !self.auth_keys.is_empty() || self.managed_keys || self.auth_open || self.server.listen.ip().is_loopback() {
            return None;
        }
        let keyed: Vec<&str> = self
            .providers
            .iter()
            .filter(|p| p.kind.http().is_some_and(|h| matches!(h.key, KeyState::Set(_))))
            .map(|p| p.name.as_str())
            .collect();
        (!keyed.is_empty()).then(|| {
            format!(
                "auth.keys is empty and the gateway listens on {}: anyone who reaches it would spend the API keys of {}. Set auth.keys (e.g. TOLLGATE_API_KEY for the default config), listen on 127.0.0.1, or set auth.open: true",
                self.server.listen,
                keyed.join(", ")
            )
        })
    }
}

/// One mistake in a config file, with its place when it can be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Where in the document, e.g. `models[1].provider`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// All the mistakes found in one file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A report window: a duration as in the config, or days (`7d`).
pub fn parse_window(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix('d').map(|n| n.trim().parse::<f64>()) {
        Some(Ok(days)) if days >= 0.0 => {
            Duration::try_from_secs_f64(days * 86_400.0).map_err(|_| format!("`{text}` is too long"))
        }
        Some(_) => Err(format!("`{text}` is not a number of days")),
        None => units::parse_duration(text),
    }
}

/// Reads and validates a config file with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError {
            line: None,
            column: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(&text, &|name| std::env::var(name).ok()).map_err(|errors| ConfigErrors { file, errors })
}

/// Parses and validates config text; `lookup` resolves `${VAR}`.
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
    let raw: FileConfig = serde_yaml_ng::from_str(text).map_err(|e| {
        let loc = e.location();
        vec![ConfigError {
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            path: String::new(),
            message: strip_location(&e.to_string()),
        }]
    })?;
    Validator {
        text,
        lookup,
        errors: Vec::new(),
    }
    .run(raw)
}

/// A secret must be exactly `${NAME}` or `${NAME:-}`: nothing literal, not even a default.
fn is_env_reference(value: &str) -> bool {
    let Some(inner) = value.trim().strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        return false;
    };
    let name = inner.strip_suffix(":-").unwrap_or(inner);
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

struct Validator<'a> {
    text: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, line: Option<usize>, path: String, message: impl Into<String>) {
        self.errors.push(ConfigError {
            line,
            column: None,
            path,
            message: message.into(),
        });
    }

    /// Interpolates a non-secret string; an unset variable is an error.
    fn plain(&mut self, value: &str, line: Option<usize>, path: &str) -> Option<String> {
        match env::interpolate(value, self.lookup) {
            Ok(Interpolated::Value(v)) => Some(v),
            Ok(Interpolated::Missing(vars)) => {
                self.error(
                    line,
                    path.into(),
                    format!(
                        "environment variable {} is not set (use ${{VAR:-default}} for a default)",
                        vars.join(", ")
                    ),
                );
                None
            }
            Err(e) => {
                self.error(line, path.into(), e);
                None
            }
        }
    }

    /// Interpolates a secret, which must come from the environment.
    fn secret(&mut self, value: &str, line: Option<usize>, path: &str) -> Option<KeyState> {
        let literal = !is_env_reference(value);
        if literal {
            self.error(line, path.into(), "secrets never live in the config file: reference an environment variable, e.g. ${OPENAI_API_KEY} (an empty default, ${VAR:-}, makes it optional)");
            return None;
        }
        match env::interpolate(value, self.lookup) {
            Ok(Interpolated::Value(v)) if v.trim().is_empty() => Some(KeyState::NotNeeded),
            Ok(Interpolated::Value(v)) => {
                // A trailing newline is the classic mistake of secrets mounted from files.
                let v = v.trim().to_owned();
                if HeaderValue::from_str(&v).is_err() {
                    self.error(
                        line,
                        path.into(),
                        "the value of this secret has characters an HTTP header cannot carry",
                    );
                    return None;
                }
                Some(KeyState::Set(Secret::new(v)))
            }
            Ok(Interpolated::Missing(vars)) => Some(KeyState::Missing(vars)),
            Err(e) => {
                self.error(line, path.into(), e);
                None
            }
        }
    }

    fn run(mut self, raw: FileConfig) -> Result<Config, Vec<ConfigError>> {
        let server = self.server(&raw.server);
        let mut auth_keys = Vec::new();
        for (i, key) in raw.auth.keys.iter().enumerate() {
            let line = locate::section(self.text, "auth");
            match self.secret(key, line, &format!("auth.keys[{i}]")) {
                Some(KeyState::Set(s)) => auth_keys.push(s),
                Some(KeyState::Missing(vars)) => self.error(line, format!("auth.keys[{i}]"), format!("environment variable {} is not set; a gateway key must not silently disappear (use ${{VAR:-}} to make it optional)", vars.join(", "))),
                _ => {}
            }
        }
        let mut admin_keys = Vec::new();
        for (i, key) in raw.auth.admin_keys.iter().enumerate() {
            let line = locate::section(self.text, "auth");
            match self.secret(key, line, &format!("auth.admin_keys[{i}]")) {
                Some(KeyState::Set(s)) => admin_keys.push(s),
                Some(KeyState::Missing(vars)) => self.error(
                    line,
                    format!("auth.admin_keys[{i}]"),
                    format!(
                        "environment variable {} is not set (use ${{VAR:-}} to make it optional)",
                        vars.join(", ")
                    ),
                ),
                _ => {}
            }
        }
        let mut providers = Vec::new();
        for (name, section) in &raw.providers {
            if let Some(spec) = self.provider(name, section) {
                providers.push(spec);
            }
        }
        let models = self.models(&raw);
        if raw.models.is_empty() {
            self.error(
                locate::section(self.text, "models"),
                "models".into(),
                "no models are configured: the gateway would answer nothing",
            );
        }
        if let Some(level) = &raw.logging.level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            self.error(
                locate::section(self.text, "logging"),
                "logging.level".into(),
                format!("`{level}` is not a log filter: {e}"),
            );
        }
        let catalog_text = self.routing(&raw);
        let ledger = raw.ledger.as_ref().and_then(|l| {
            let line = locate::section(self.text, "ledger");
            let url = self.plain(&l.url, line, "ledger.url")?;
            if !(url.starts_with("sqlite://") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                self.error(line, "ledger.url".into(), "must start with sqlite:// or postgres://");
                return None;
            }
            Some(crate::metering::ledger::LedgerSettings {
                url,
                queue: l.queue,
                batch: l.batch,
                flush_interval: l.flush_interval.0,
            })
        });
        let teams = self.teams(&raw);
        if raw.auth.key_refresh.0 < Duration::from_millis(100) {
            self.error(
                locate::section(self.text, "auth"),
                "auth.key_refresh".into(),
                "must be at least 100ms (each refresh reads the key table)",
            );
        }
        if raw.auth.managed_keys && raw.ledger.is_none() {
            self.error(
                locate::section(self.text, "auth"),
                "auth.managed_keys".into(),
                "managed keys are stored in the ledger's database: configure `ledger` too",
            );
        }
        if self.errors.is_empty() {
            Ok(Config {
                server: server.expect("no errors"),
                auth_keys,
                admin_keys,
                auth_open: raw.auth.open,
                logging: raw.logging,
                providers,
                models,
                routing: raw.routing,
                catalog_text,
                routes: raw.routes,
                ledger,
                managed_keys: raw.auth.managed_keys,
                key_refresh: raw.auth.key_refresh.0,
                cut_streams_over_budget: raw.auth.cut_streams_over_budget,
                teams,
                key_labels: raw.metrics.key_labels,
            })
        } else {
            Err(self.errors)
        }
    }

    /// `teams`: limits must be positive, budgets amounts of USD.
    fn teams(&mut self, raw: &FileConfig) -> Vec<crate::keys::registry::TeamSpec> {
        let line = locate::section(self.text, "teams");
        let mut specs = Vec::new();
        for (name, t) in &raw.teams {
            for (value, field) in [(t.rpm, "rpm"), (t.tpm, "tpm")] {
                if value == Some(0) {
                    self.error(
                        line,
                        format!("teams.{name}.{field}"),
                        "must be at least 1 (leave it out for no limit)",
                    );
                }
            }
            let budget = Self::budget(&t.budget);
            specs.push(crate::keys::registry::TeamSpec {
                name: name.clone(),
                rpm: t.rpm,
                tpm: t.tpm,
                budget,
            });
        }
        specs
    }

    fn server(&mut self, s: &schema::ServerSection) -> Option<ServerSettings> {
        let line = locate::section(self.text, "server");
        let listen = self.plain(&s.listen, line, "server.listen")?;
        let listen = match listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    line,
                    "server.listen".into(),
                    format!("`{listen}` is not an address like 0.0.0.0:4000"),
                );
                return None;
            }
        };
        let mut check = |ok: bool, key: &str, rule: &str| {
            if !ok {
                self.error(line, format!("server.{key}"), rule.to_owned());
            }
        };
        check(
            (1..=1 << 30).contains(&s.max_body.0),
            "max_body",
            "must be between 1 byte and 1GiB",
        );
        check(
            (1 << 10..=1 << 20).contains(&s.max_header_bytes.0),
            "max_header_bytes",
            "must be between 1KiB and 1MiB",
        );
        let day = Duration::from_secs(86_400);
        check(
            !s.request_timeout.0.is_zero() && s.request_timeout.0 <= 7 * day,
            "request_timeout",
            "must be more than 0 and at most 7 days",
        );
        check(
            !s.body_timeout.0.is_zero() && s.body_timeout.0 <= day,
            "body_timeout",
            "must be more than 0 and at most a day",
        );
        check(
            s.shutdown_grace.0 <= day && s.shutdown_delay.0 <= day,
            "shutdown_grace",
            "shutdown_grace and shutdown_delay must be at most a day",
        );
        check(
            s.max_concurrent_requests >= 1,
            "max_concurrent_requests",
            "must be at least 1",
        );
        Some(ServerSettings {
            listen,
            max_body: s.max_body.0 as usize,
            max_header_bytes: s.max_header_bytes.0 as usize,
            request_timeout: s.request_timeout.0,
            shutdown_grace: s.shutdown_grace.0,
            shutdown_delay: s.shutdown_delay.0,
            body_timeout: s.body_timeout.0,
            max_concurrent_requests: s.max_concurrent_requests,
        })
    }

    fn provider(&mut self, name: &str, section: &ProviderSection) -> Option<ProviderSpec> {
        let kind = match section {
            ProviderSection::Openai(p) => {
                let mut http = self.connection(name, p, p.auth_header.as_deref().unwrap_or("authorization"))?;
                http.stream_usage = p.stream_usage;
                ProviderKind::OpenAi(http)
            }
            ProviderSection::Azure(p) => {
                let mut http = self.connection(name, p, "api-key")?;
                http.stream_usage = p.stream_usage;
                let line = locate::map_entry_key(self.text, "providers", name, Some("api_version"));
                let api_version = self.plain(&p.api_version, line, &format!("providers.{name}.api_version"))?;
                if api_version.is_empty() || !api_version.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    self.error(
                        line,
                        format!("providers.{name}.api_version"),
                        format!("`{api_version}` is not an API version like 2024-10-21"),
                    );
                    return None;
                }
                ProviderKind::Azure { http, api_version }
            }
            ProviderSection::Anthropic(p) => {
                let http = self.connection(name, p, "x-api-key")?;
                let line = locate::map_entry_key(self.text, "providers", name, Some("max_tokens"));
                if p.max_tokens == 0 {
                    self.error(line, format!("providers.{name}.max_tokens"), "must be at least 1");
                    return None;
                }
                let version = self.plain(&p.version, line, &format!("providers.{name}.version"))?;
                ProviderKind::Anthropic {
                    http,
                    version,
                    max_tokens: p.max_tokens,
                }
            }
            ProviderSection::Ollama(p) => {
                let http = self.connection(name, p, "authorization")?;
                ProviderKind::Ollama {
                    http,
                    keep_alive: p.keep_alive.clone(),
                    num_ctx: p.num_ctx,
                    discover_models: p.discover_models,
                }
            }
            ProviderSection::Gemini(p) => {
                let http = self.connection(name, p, "x-goog-api-key")?;
                ProviderKind::Gemini(http)
            }
            ProviderSection::Huggingface(p) => {
                let mut http = self.connection(name, p, "authorization")?;
                // TGI's Messages API sends the usage chunk when asked.
                http.stream_usage = true;
                ProviderKind::HuggingFace {
                    http,
                    api: p.api,
                    template: p.chat_template,
                }
            }
            ProviderSection::Simulated(s) => {
                let usable = s.tokens_per_second == 0.0
                    || (s.tokens_per_second > 0.0
                        && Duration::try_from_secs_f64(1.0 / s.tokens_per_second)
                            .is_ok_and(|gap| gap <= Duration::from_secs(3600)));
                if !usable {
                    let line = locate::map_entry_key(self.text, "providers", name, Some("tokens_per_second"));
                    self.error(
                        line,
                        format!("providers.{name}.tokens_per_second"),
                        "must be 0 (instant) or a positive number of at least one token per hour",
                    );
                    return None;
                }
                ProviderKind::Simulated(s.clone())
            }
        };
        Some(ProviderSpec {
            name: name.to_owned(),
            kind,
        })
    }

    fn http(
        &mut self,
        name: &str,
        base_url: &str,
        api_key: Option<&str>,
        auth_header: &str,
        headers: &std::collections::BTreeMap<String, String>,
        timeouts: &TimeoutSection,
    ) -> Option<HttpSpec> {
        let at = |key: &str| locate::map_entry_key(self.text, "providers", name, Some(key));
        let path = |key: &str| format!("providers.{name}.{key}");
        let url_line = at("base_url");
        let base_url = self.plain(base_url, url_line, &path("base_url"))?;
        let ok_url = base_url
            .parse::<Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
        if ok_url.is_none() {
            self.error(
                url_line,
                path("base_url"),
                format!("`{base_url}` is not an http:// or https:// URL"),
            );
            return None;
        }
        let key = match api_key {
            Some(k) => self.secret(k, at("api_key"), &path("api_key"))?,
            None => KeyState::NotNeeded,
        };
        for (which, d) in [
            ("connect", timeouts.connect),
            ("first_byte", timeouts.first_byte),
            ("idle", timeouts.idle),
            ("total", timeouts.total),
        ] {
            if d.0.is_zero() || d.0 > Duration::from_secs(7 * 86_400) {
                self.error(
                    at("timeouts"),
                    format!("providers.{name}.timeouts.{which}"),
                    "must be more than 0 and at most 7 days",
                );
            }
        }
        let Ok(auth_header) = HeaderName::from_bytes(auth_header.as_bytes()) else {
            self.error(
                at("auth_header"),
                path("auth_header"),
                format!("`{auth_header}` is not a valid header name"),
            );
            return None;
        };
        let mut parsed = Vec::new();
        for (k, v) in headers {
            let v = self.plain(v, at("headers"), &path("headers"))?;
            match (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                (Ok(n), Ok(v)) => parsed.push((n, v)),
                _ => self.error(
                    at("headers"),
                    format!("providers.{name}.headers.{k}"),
                    "is not a valid HTTP header",
                ),
            }
        }
        Some(HttpSpec {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            auth_header,
            headers: parsed,
            timeouts: Timeouts {
                connect: timeouts.connect.0,
                first_byte: timeouts.first_byte.0,
                idle: timeouts.idle.0,
                total: timeouts.total.0,
            },
            stream_usage: true,
            extra_roots: Vec::new(),
        })
    }

    /// Reads a provider's `ca_file`: PEM certificates, at least one.
    /// An HTTP provider's connection: its URL, key, headers, timeouts and extra CA roots.
    fn connection(&mut self, name: &str, section: &impl HttpFields, auth_header: &str) -> Option<HttpSpec> {
        let mut http = self.http(
            name,
            section.base_url(),
            section.api_key(),
            auth_header,
            section.headers(),
            section.timeouts(),
        )?;
        http.extra_roots = self.ca_file(name, section.ca_file())?;
        Some(http)
    }

    fn ca_file(&mut self, name: &str, file: Option<&str>) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        use rustls_pki_types::pem::PemObject;
        let Some(file) = file else { return Some(Vec::new()) };
        let line = locate::map_entry_key(self.text, "providers", name, Some("ca_file"));
        let path = format!("providers.{name}.ca_file");
        let file = self.plain(file, line, &path)?;
        match rustls_pki_types::CertificateDer::pem_file_iter(&file).map(|certs| certs.collect::<Result<Vec<_>, _>>()) {
            Ok(Ok(certs)) if !certs.is_empty() => Some(certs),
            Ok(Ok(_)) => {
                self.error(line, path, format!("`{file}` holds no PEM certificate"));
                None
            }
            Ok(Err(e)) | Err(e) => {
                self.error(line, path, format!("cannot read certificates from `{file}`: {e}"));
                None
            }
        }
    }

    /// Checks `routing` and `routes`; answers the operator's catalog text.
    fn routing(&mut self, raw: &FileConfig) -> Option<String> {
        use crate::routing::classify::Domain;
        let section = locate::section(self.text, "routing");
        let b = &raw.routing.breaker;
        if b.failures == 0 || !(1..=64).contains(&b.window) || !(b.error_rate > 0.0 && b.error_rate <= 1.0) {
            self.error(
                section,
                "routing.breaker".into(),
                "needs failures ≥ 1, window between 1 and 64, and error_rate in (0, 1]",
            );
        }
        if let Some(h) = &raw.routing.health_checks {
            if h.interval.0 < std::time::Duration::from_millis(50) || h.timeout.0.is_zero() {
                self.error(
                    section,
                    "routing.health_checks".into(),
                    "needs an interval of at least 50ms and a timeout above 0",
                );
            }
            for p in &h.providers {
                if !raw.providers.contains_key(p) {
                    self.error(
                        section,
                        "routing.health_checks.providers".into(),
                        format!("`{p}` is not a configured provider"),
                    );
                }
            }
        }
        let catalog_text = raw.routing.catalog.as_ref().and_then(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| self.error(section, "routing.catalog".into(), format!("cannot read `{path}`: {e}")))
                .ok()?;
            crate::routing::catalog::Catalog::load(Some(&text))
                .map_err(|e| self.error(section, "routing.catalog".into(), format!("`{path}`: {e}")))
                .ok()?;
            Some(text)
        });
        let mut known: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for m in &raw.models {
            known.insert(&m.name);
            known.extend(m.aliases.iter().map(String::as_str));
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let at = |key: &str| locate::list_item_key(self.text, "routes", i, key);
            let path = |key: &str| format!("routes[{i}].{key}");
            if r.name.trim().is_empty() || !names.insert(r.name.as_str()) {
                self.error(at("name"), path("name"), "must be a name no other route has");
            }
            for t in &r.targets {
                if !known.contains(t.as_str()) {
                    self.error(
                        at("targets"),
                        path("targets"),
                        format!("`{t}` is not a configured model"),
                    );
                }
            }
            for w in r.weights.keys() {
                if !r.targets.contains(w) {
                    self.error(
                        at("weights"),
                        path("weights"),
                        format!("`{w}` is not one of the route's targets"),
                    );
                }
            }
            for m in &r.when.model.0 {
                if let Some(domain) = m.strip_prefix("auto:")
                    && Domain::parse(domain).is_none()
                {
                    self.error(
                        at("match"),
                        path("match.model"),
                        format!("`{domain}` is not a domain (code, math, general)"),
                    );
                }
                if (m == "auto" || m.starts_with("auto:")) && r.targets.is_empty() {
                    self.error(
                        at("targets"),
                        path("targets"),
                        "a route for `auto` must list its targets",
                    );
                }
            }
            for d in &r.when.domain.0 {
                if Domain::parse(d).is_none() {
                    self.error(
                        at("match"),
                        path("match.domain"),
                        format!("`{d}` is not a domain (code, math, general)"),
                    );
                }
            }
            for e in &r.when.endpoint.0 {
                if !matches!(e.as_str(), "chat" | "completions" | "embeddings") {
                    self.error(
                        at("match"),
                        path("match.endpoint"),
                        format!("`{e}` is not chat, completions or embeddings"),
                    );
                }
            }
            for k in &r.when.keys.0 {
                let hex = k.strip_prefix("k-").unwrap_or_default();
                if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    self.error(
                        at("match"),
                        path("match.keys"),
                        format!("`{k}` is not a key id (k- and 12 lowercase hex digits, as the ledger shows)"),
                    );
                }
            }
            for h in r.when.headers.keys() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    self.error(
                        at("match"),
                        path("match.headers"),
                        format!("`{h}` is not a header name"),
                    );
                }
            }
            if r.retry.attempts == Some(0) {
                self.error(at("retry"), path("retry.attempts"), "must be at least 1");
            }
            if let Some(m) = &r.mirror {
                if !known.contains(m.to.as_str()) {
                    self.error(
                        at("mirror"),
                        path("mirror.to"),
                        format!("`{}` is not a configured model", m.to),
                    );
                }
                if !(m.percent > 0.0 && m.percent <= 100.0) {
                    self.error(
                        at("mirror"),
                        path("mirror.percent"),
                        "must be more than 0 and at most 100",
                    );
                }
            }
        }
        catalog_text
    }

    fn models(&mut self, raw: &FileConfig) -> Vec<ModelSpec> {
        let mut names = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, m) in raw.models.iter().enumerate() {
            let at = |key: &str| locate::list_item_key(self.text, "models", i, key);
            if m.name.trim().is_empty() {
                self.error(at("name"), format!("models[{i}].name"), "must not be empty");
            }
            if !raw.providers.contains_key(&m.provider) {
                let known: Vec<&str> = raw.providers.keys().map(String::as_str).collect();
                self.error(
                    at("provider"),
                    format!("models[{i}].provider"),
                    format!("unknown provider `{}` (configured: {})", m.provider, known.join(", ")),
                );
            }
            for (value, field) in [(m.rpm, "rpm"), (m.tpm, "tpm")] {
                if value == Some(0) {
                    // 0 would read as "no limit" to the limiter: say so rather than guess.
                    self.error(
                        at(field),
                        format!("models[{i}].{field}"),
                        "must be at least 1 (leave it out for no limit)",
                    );
                }
            }
            for n in std::iter::once(&m.name).chain(&m.aliases) {
                if !names.insert(n.clone()) {
                    self.error(
                        at("name"),
                        format!("models[{i}]"),
                        format!("the name `{n}` is used twice"),
                    );
                }
            }
            out.push(ModelSpec {
                name: m.name.clone(),
                provider: m.provider.clone(),
                upstream_model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
                aliases: m.aliases.clone(),
                catalog: m
                    .catalog
                    .clone()
                    .or_else(|| m.upstream_model.clone())
                    .unwrap_or_else(|| m.name.clone()),
                rpm: m.rpm,
                tpm: m.tpm,
                budget: Self::budget(&m.budget),
            });
        }
        out
    }

    /// A budget's amounts (parsed exactly when the file was read).
    fn budget(b: &schema::BudgetSection) -> crate::keys::Budget {
        crate::keys::Budget {
            daily: b.daily.map(|u| u.0),
            monthly: b.monthly.map(|u| u.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned())
    }

    const GOOD: &str = r#"
server:
  listen: 127.0.0.1:0
  max_body: 1MiB
providers:
  sim: { kind: simulated, completion_tokens: 4 }
  openai:
    kind: openai
    api_key: ${OPENAI_API_KEY}
  anthropic:
    kind: openai
    base_url: https://api.anthropic.com/v1
    api_key: ${ANTHROPIC_API_KEY}
models:
  - name: sim-small
    provider: sim
    aliases: [default]
  - name: gpt-4o
    provider: openai
  - name: claude
    provider: anthropic
    upstream_model: claude-sonnet-4-5
"#;

    #[test]
    fn good_config_resolves_keys_and_defaults() {
        let cfg = parse(GOOD, &env).unwrap();
        assert_eq!(cfg.server.max_body, 1 << 20);
        assert_eq!(cfg.models.len(), 3);
        assert_eq!(cfg.models[2].upstream_model, "claude-sonnet-4-5");
        let by_name = |n: &str| cfg.providers.iter().find(|p| p.name == n).unwrap();
        match &by_name("openai").kind {
            ProviderKind::OpenAi(h) => {
                assert!(matches!(&h.key, KeyState::Set(s) if s.expose() == "sk-test"));
                assert_eq!(h.base_url, "https://api.openai.com/v1");
            }
            other => panic!("{other:?}"),
        }
        match &by_name("anthropic").kind {
            ProviderKind::OpenAi(h) => {
                assert!(matches!(&h.key, KeyState::Missing(v) if v == &["ANTHROPIC_API_KEY"]))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_provider_points_at_its_line() {
        let text = GOOD.replace("provider: anthropic", "provider: antropic");
        let errs = parse(&text, &env).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "models[2].provider");
        let expected = text.lines().position(|l| l.contains("antropic")).unwrap() + 1;
        assert_eq!(errs[0].line, Some(expected));
        assert!(errs[0].message.contains("antropic"));
    }

    #[test]
    fn route_mistakes_are_all_reported_with_their_paths() {
        let text = format!(
            "{GOOD}routes:\n  - {{ name: a, match: {{ model: auto:poetry, domain: legal, keys: [sk-raw-key] }}, targets: [gpt-9], weights: {{ other: 2 }} }}\n  - {{ name: a, match: {{ model: auto, endpoint: images }}, retry: {{ attempts: 0 }} }}\n"
        );
        let errs = parse(&text, &env).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "routes[0].targets",
            "routes[0].weights",
            "routes[0].match.model",
            "routes[0].match.domain",
            "routes[0].match.keys",
            "routes[1].name",
            "routes[1].targets",
            "routes[1].match.endpoint",
            "routes[1].retry.attempts",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
    }

    #[test]
    fn typo_in_a_key_is_reported_with_line_and_column() {
        let text = GOOD.replace("max_body:", "max_bdy:");
        let errs = parse(&text, &env).unwrap_err();
        assert_eq!(errs[0].line, Some(4), "{errs:?}");
        assert!(errs[0].message.contains("max_bdy"), "{}", errs[0].message);
    }

    #[test]
    fn literal_secret_is_rejected() {
        let text = GOOD.replace("${OPENAI_API_KEY}", "sk-live-123");
        let errs = parse(&text, &env).unwrap_err();
        assert_eq!(errs[0].path, "providers.openai.api_key");
        assert!(!errs[0].to_string().contains("sk-live-123"));
    }

    #[test]
    fn several_mistakes_are_all_reported() {
        let text = GOOD
            .replace("listen: 127.0.0.1:0", "listen: nowhere")
            .replace("provider: sim", "provider: nope")
            .replace("https://api.anthropic.com/v1", "ftp://x");
        let errs = parse(&text, &env).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"server.listen"), "{paths:?}");
        assert!(paths.contains(&"models[0].provider"), "{paths:?}");
        assert!(paths.contains(&"providers.anthropic.base_url"), "{paths:?}");
    }

    #[test]
    fn secrets_must_be_pure_references() {
        for bad in [
            "sk-live-123",
            "${OPENAI_API_KEY:-sk-fallback}",
            "Bearer ${OPENAI_API_KEY}",
            "${OPENAI_API_KEY}x",
        ] {
            let text = GOOD.replace("${OPENAI_API_KEY}", bad);
            let errs = parse(&text, &env).unwrap_err();
            assert_eq!(errs[0].path, "providers.openai.api_key", "{bad}");
        }
        let optional = GOOD.replace("${OPENAI_API_KEY}", "${UNSET_KEY:-}");
        assert!(parse(&optional, &env).is_ok());
    }

    #[test]
    fn a_key_with_a_trailing_newline_is_trimmed_and_a_broken_one_rejected() {
        let cfg = parse(GOOD, &|n: &str| (n == "OPENAI_API_KEY").then(|| "sk-abc\n".to_owned())).unwrap();
        let key = cfg.providers.iter().find_map(|p| match &p.kind {
            ProviderKind::OpenAi(h) if p.name == "openai" => Some(h.key.clone()),
            _ => None,
        });
        assert!(matches!(key, Some(KeyState::Set(s)) if s.expose() == "sk-abc"));
        let errs = parse(GOOD, &|n: &str| (n == "OPENAI_API_KEY").then(|| "sk-a\nbc".to_owned())).unwrap_err();
        assert_eq!(errs[0].path, "providers.openai.api_key");
    }

    #[test]
    fn ranges_are_enforced() {
        let text = GOOD.replace(
            "max_body: 1MiB",
            "max_body: 1MiB\n  max_header_bytes: 10\n  request_timeout: 0s",
        );
        let errs = parse(&text, &env).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["server.max_header_bytes", "server.request_timeout"]);
        let text = GOOD.replace(
            "completion_tokens: 4",
            "completion_tokens: 4, tokens_per_second: 0.0000001",
        );
        assert_eq!(
            parse(&text, &env).unwrap_err()[0].path,
            "providers.sim.tokens_per_second"
        );
        let text = GOOD.replace("  max_body: 1MiB", "  max_body: 1MiB\nlogging:\n  level: \"info,=[\"");
        assert_eq!(parse(&text, &env).unwrap_err()[0].path, "logging.level");
    }

    #[test]
    fn an_open_gateway_with_paid_keys_on_a_public_address_is_refused() {
        let public = GOOD.replace("listen: 127.0.0.1:0", "listen: 0.0.0.0:4000");
        let cfg = parse(&public, &env).unwrap();
        let problem = cfg.exposure_problem().expect("refused");
        assert!(problem.contains("openai") && !problem.contains("sk-test"), "{problem}");
        assert!(
            parse(GOOD, &env).unwrap().exposure_problem().is_none(),
            "loopback is fine"
        );
        assert!(
            parse(&public, &|_| None).unwrap().exposure_problem().is_none(),
            "no paid keys, nothing to spend"
        );
        let open = public.replace("providers:", "auth:\n  open: true\nproviders:");
        assert!(parse(&open, &env).unwrap().exposure_problem().is_none());
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let text = GOOD.replace("aliases: [default]", "aliases: [gpt-4o]");
        let errs = parse(&text, &env).unwrap_err();
        assert!(errs[0].message.contains("gpt-4o"));
    }

    #[test]
    fn unknown_provider_kind_is_a_clear_error() {
        let text = GOOD.replace("kind: simulated", "kind: telepathy");
        let errs = parse(&text, &env).unwrap_err();
        assert!(errs[0].message.contains("telepathy"), "{}", errs[0].message);
        assert!(errs[0].line.is_some());
    }

    #[test]
    fn shipped_default_config_is_valid_without_any_keys() {
        let text = include_str!("../../config/tollgate.yaml");
        let cfg = parse(text, &|_| None).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(cfg.models.iter().any(|m| m.provider == "sim"));
    }

    #[test]
    fn budgets_parse_exactly_and_bad_amounts_name_their_place() {
        let text = "providers:\n  sim: {kind: simulated}\nmodels:\n  - {name: a, provider: sim, budget: {daily: 12.5, monthly: \"0.1\"}}\nteams:\n  t: {budget: {monthly: 3}}\n";
        let cfg = parse(text, &|_| None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(cfg.models[0].budget.daily, Some(12_500_000_000_000));
        assert_eq!(cfg.models[0].budget.monthly, Some(100_000_000_000));
        assert_eq!(cfg.teams[0].budget.monthly, Some(3_000_000_000_000));
        let errs = parse(&text.replace("12.5", "lots"), &|_| None).unwrap_err();
        assert!(
            errs[0].message.contains("`lots`") && errs[0].line == Some(4),
            "{errs:?}"
        );
        let errs = parse(&format!("{text}auth:\n  key_refresh: 10ms\n"), &|_| None).unwrap_err();
        assert_eq!(errs[0].path, "auth.key_refresh");
    }

    #[test]
    fn a_zero_rate_limit_is_an_error_not_no_limit() {
        let text = "providers:\n  sim: {kind: simulated}\nmodels:\n  - name: a\n    provider: sim\n    rpm: 0\n    tpm: 0\nteams:\n  t: {rpm: 0}\n";
        let errs = parse(text, &|_| None).unwrap_err();
        let paths: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert!(paths.contains(&("models[0].rpm", Some(6))), "{errs:?}");
        assert!(paths.contains(&("models[0].tpm", Some(7))), "{errs:?}");
        assert!(paths.contains(&("teams.t.rpm", Some(8))), "{errs:?}");
        let ok = text.replace("rpm: 0", "rpm: 5").replace("tpm: 0", "tpm: 50");
        let cfg = parse(&ok, &|_| None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((cfg.models[0].rpm, cfg.models[0].tpm), (Some(5), Some(50)));
    }
}
