//! Configuration: `abaco.conf` (INI, Abaco's sections), overridden by `{section}_{option}`
//! environment variables, validated once. Each layer receives only its own section.
//!
//! The file is over 600 lines because every section's struct, its documented defaults and the
//! table of known keys belong together; the tests live in `config/tests.rs`.
//!
//! Every key has a default written next to its field; a key that does not parse, or a key this
//! version does not know, fails start-up with a message naming `[section] key`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors from loading the configuration; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("config line {line}: {problem}")]
    Syntax { line: usize, problem: String },
    #[error("config key [{section}] {key} = {value:?} is invalid: {problem}")]
    Invalid {
        section: String,
        key: String,
        value: String,
        problem: String,
    },
    #[error("config key [{section}] {key} is not known to this version of abaco (typo?)")]
    Unknown { section: String, key: String },
    #[error("config key [{section}] {key} is required: {why}")]
    Missing {
        section: String,
        key: String,
        why: String,
    },
}

/// Which set of backends to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One process, SQLite file and in-process durable channels under `data_dir`.
    Embedded,
    /// Redis (live state) + PostgreSQL (records) + RabbitMQ (channels).
    Distributed,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub general: GeneralConfig,
    pub store: StoreConfig,
    pub rabbit: RabbitConfig,
    pub spawner: SpawnerConfig,
    pub docker: DockerConfig,
    pub workers: WorkersConfig,
    pub web: WebConfig,
    pub logs: LogsConfig,
    /// The raw file, for tenant-specific keys (`{tenant}_default_token`, ...).
    pub raw: Ini,
}

#[derive(Clone, Debug)]
pub struct GeneralConfig {
    /// `version` in every response envelope. Default `dev`.
    pub tag: String,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `embedded` (default) or `distributed`. Also selects the channels backend.
    pub backend: Backend,
    /// Where the embedded store keeps its files. Default `./abaco-data`.
    pub data_dir: PathBuf,
    /// Redis for live state (distributed). Default `redis://127.0.0.1:6379/`.
    pub redis_url: String,
    /// PostgreSQL for records (distributed). Default `postgres://abaco:abaco@127.0.0.1:5432/abaco`.
    pub postgres_url: String,
    /// Connections in the PostgreSQL pool. Default 16.
    pub postgres_pool_size: usize,
}

#[derive(Clone, Debug)]
pub struct RabbitConfig {
    /// AMQP URI (distributed). Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub uri: String,
    /// Unacknowledged deliveries per consumer. Default 1 (Abaco's prefetch).
    pub prefetch: u16,
}

#[derive(Clone, Debug)]
pub struct SpawnerConfig {
    /// Identity of this compute host. Default `0`; env `SPAWNER_HOST_ID` also overrides it.
    pub host_id: String,
    /// Stored on workers. Default `127.0.0.1`.
    pub host_ip: String,
    /// Command queues served by spawners on this host, and the valid actor `queue` values. Default `default`.
    pub host_queues: Vec<String>,
    /// The spawner pauses while this many workers live on its host. Default 20.
    pub max_workers_per_host: usize,
    /// Autoscaler cap when an actor sets no `max_workers`. Default 5.
    pub max_workers_per_actor: usize,
    /// The autoscaler skips scale-up while the command queue is longer. Default 10.
    pub max_cmd_length: u64,
    /// Cap on workers across all hosts, enforced by the autoscaler. Default 100.
    pub max_workers_total: usize,
}

#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// Docker daemon. Default `unix:///var/run/docker.sock`.
    pub dd: String,
    /// Network mode of actor containers (`bridge`, `none`, a network name). Default `bridge`.
    pub network: String,
}

#[derive(Clone, Debug)]
pub struct WorkersConfig {
    /// If > 0, registering an actor requests one worker. Default 1.
    pub init_count: u32,
    /// Autoscaler on/off. Default true.
    pub autoscaling: bool,
    /// Seconds before an actor container is stopped; -1 unlimited. Default -1.
    pub max_run_time: i64,
    /// Default container memory limit (`512m`, `1g`); `-1` unlimited. Default `-1`.
    pub mem_limit: String,
    /// Default NanoCpus; -1 unlimited. Default -1.
    pub max_cpus: i64,
    /// Idle seconds before health stops a worker; -1 never. Default -1.
    pub worker_ttl: i64,
    /// Idle seconds a `sync`-hinted actor keeps its last worker. Default 600.
    pub sync_max_idle_time: i64,
    /// Idle seconds before the autoscaler stops a READY worker of an actor with an empty mailbox. Default 10.
    pub autoscale_idle_time: i64,
    /// Seconds between autoscaler passes. Default 1.
    pub autoscale_period: u64,
    /// Seconds between health passes (dead workers, orphaned containers). Default 10.
    pub health_period: u64,
    /// Keep actor containers after they exit (debugging). Default false.
    pub leave_containers: bool,
    /// Directory for results sockets (one sub-directory per worker). Default `{data_dir}/sockets`.
    pub socket_host_path_dir: Option<PathBuf>,
    /// Directory for binary-message FIFOs. Default `{data_dir}/fifos`.
    pub fifo_host_path_dir: Option<PathBuf>,
    /// Allow privileged actors at all. Default true.
    pub allow_privileged: bool,
    /// Give each worker of an actor with `token` on an OAuth client and its containers an access
    /// token (`{tenant}_generate_clients` per tenant). Default true.
    pub generate_clients: bool,
}

#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Listen address. Default `127.0.0.1:8000`.
    pub bind: String,
    /// Allow `access_control = none` on a non-loopback address. Default false.
    pub allow_insecure_bind: bool,
    /// `none` or `jwt`. Default `none`.
    pub access_control: String,
    /// Tenants accepted in `jwt` mode (comma-separated). Default: `tenant_name` only.
    pub tenants: Vec<String>,
    /// Accept `?x-nonce=` authentication. Default true.
    pub accept_nonce: bool,
    /// Key for secret configs (base64 of 32 bytes, or a Fernet key). Default: secrets refused.
    pub encryption_key: Option<String>,
    /// Lifetime of access tokens issued by the platform's token endpoint, seconds. Default 900.
    pub token_ttl: i64,
    /// Tenant when `access_control = none` and no `tenant` header is sent. Default `DEV-DEVELOP`.
    pub tenant_name: String,
    /// Base URL put in `_links` and `_abaco_api_server`. Default `http://{bind}`.
    pub api_server: Option<String>,
    /// `snake` or `camel`. Default `snake`.
    pub case: String,
    /// Max binary message bytes. Default 500000000.
    pub max_content_length: u64,
    /// Logs are truncated to this many characters. Default 1000000.
    pub max_log_length: usize,
    /// Default log expiry in seconds; -1 keeps forever. Default 43200.
    pub log_ex: i64,
    /// Cap for per-actor `log_ex`. Default 86400.
    pub log_ex_limit: i64,
    /// Default actor `token` attribute (raw string as in Abaco). Default `false`.
    pub default_token: String,
    /// Seconds a synchronous message waits for its execution. Default 300.
    pub sync_timeout: u64,
}

#[derive(Clone, Debug)]
pub struct LogsConfig {
    /// tracing filter (`info`, `abaco=debug,info`). Default `info`.
    pub level: String,
}

/// The parsed INI file: sections of lower-cased keys.
#[derive(Clone, Debug, Default)]
pub struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl Ini {
    pub fn parse(text: &str) -> Result<Ini, ConfigError> {
        let mut ini = Ini::default();
        let mut section: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| ConfigError::Syntax {
                    line: n + 1,
                    problem: format!("section header {line:?} lacks a closing ']'"),
                })?;
                let name = name.trim().to_ascii_lowercase();
                ini.sections.entry(name.clone()).or_default();
                section = Some(name);
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .or_else(|| line.split_once(':'))
                .ok_or_else(|| ConfigError::Syntax {
                    line: n + 1,
                    problem: format!("expected `key = value`, found {line:?}"),
                })?;
            let section = section.as_ref().ok_or_else(|| ConfigError::Syntax {
                line: n + 1,
                problem: format!("key {:?} appears before any [section]", key.trim()),
            })?;
            ini.sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        Ok(ini)
    }

    /// The value of `[section] key`, with the environment variable `{section}_{key}` winning.
    pub fn get(&self, section: &str, key: &str) -> Option<String> {
        if let Ok(v) = std::env::var(format!("{section}_{key}")) {
            return Some(v);
        }
        self.sections
            .get(section)
            .and_then(|s| s.get(&key.to_ascii_lowercase()))
            .cloned()
    }

    fn keys(&self, section: &str) -> impl Iterator<Item = &String> {
        self.sections
            .get(section)
            .into_iter()
            .flat_map(|s| s.keys())
    }
}

/// Keys that may carry a tenant prefix (`{tenant}_default_token`).
const TENANT_SUFFIXES: &[&str] = &[
    "_default_token",
    "_log_ex",
    "_log_ex_limit",
    "_global_mounts",
    "_generate_clients",
    "_actor_uid",
    "_actor_gid",
    "_actor_homedir",
    "_use_tas_uid",
    "_apim_public_key",
    "_admin_role",
    "_privileged_role",
    "_limited_role",
    "_user_role",
];

const KNOWN: &[(&str, &[&str])] = &[
    ("general", &["tag"]),
    (
        "store",
        &[
            "backend",
            "data_dir",
            "redis_url",
            "postgres_url",
            "postgres_pool_size",
        ],
    ),
    ("rabbit", &["uri", "prefetch"]),
    (
        "spawner",
        &[
            "host_id",
            "host_ip",
            "host_queues",
            "max_workers_per_host",
            "max_workers_per_actor",
            "max_cmd_length",
            "max_workers_total",
        ],
    ),
    ("docker", &["dd", "network"]),
    (
        "workers",
        &[
            "init_count",
            "autoscaling",
            "max_run_time",
            "mem_limit",
            "max_cpus",
            "worker_ttl",
            "sync_max_idle_time",
            "autoscale_idle_time",
            "autoscale_period",
            "health_period",
            "leave_containers",
            "socket_host_path_dir",
            "fifo_host_path_dir",
            "allow_privileged",
            "global_mounts",
            "privileged_mounts",
            "generate_clients",
            "actor_uid",
            "actor_gid",
            "actor_homedir",
            "use_tas_uid",
        ],
    ),
    (
        "web",
        &[
            "bind",
            "allow_insecure_bind",
            "access_control",
            "tenant_name",
            "api_server",
            "case",
            "max_content_length",
            "max_log_length",
            "log_ex",
            "log_ex_limit",
            "default_token",
            "sync_timeout",
            "accept_nonce",
            "encryption_key",
            "apim_public_key",
            "jwks_file",
            "tenants",
            "token_ttl",
            "admin_role",
            "privileged_role",
            "limited_role",
            "user_role",
            "show_traceback",
            "all_queues",
        ],
    ),
    ("logs", &["level"]),
];

struct Reader<'a> {
    ini: &'a Ini,
}

impl Reader<'_> {
    fn string(&self, section: &str, key: &str, default: &str) -> String {
        self.ini
            .get(section, key)
            .unwrap_or_else(|| default.to_string())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        section: &str,
        key: &str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.ini.get(section, key) {
            None => Ok(default),
            Some(v) => v.trim().parse::<T>().map_err(|e| ConfigError::Invalid {
                section: section.into(),
                key: key.into(),
                value: v.clone(),
                problem: e.to_string(),
            }),
        }
    }

    fn boolean(&self, section: &str, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.ini.get(section, key) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::Invalid {
                    section: section.into(),
                    key: key.into(),
                    value: v,
                    problem: "expected true or false".into(),
                }),
            },
        }
    }

    fn one_of(
        &self,
        section: &str,
        key: &str,
        default: &str,
        allowed: &[&str],
    ) -> Result<String, ConfigError> {
        let v = self
            .string(section, key, default)
            .trim()
            .to_ascii_lowercase();
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(ConfigError::Invalid {
                section: section.into(),
                key: key.into(),
                value: v,
                problem: format!("expected one of {allowed:?}"),
            })
        }
    }
}

impl Config {
    /// Reads `path` (when given), applies environment overrides and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                path: p.to_path_buf(),
                cause: e.to_string(),
            })?,
            None => String::new(),
        };
        Config::from_ini(Ini::parse(&text)?)
    }

    /// Defaults plus environment overrides, no file.
    pub fn defaults() -> Result<Config, ConfigError> {
        Config::from_ini(Ini::default())
    }

    pub fn from_ini(ini: Ini) -> Result<Config, ConfigError> {
        for (section, keys) in KNOWN {
            for key in ini.keys(section) {
                let tenant_key = TENANT_SUFFIXES.iter().any(|s| key.ends_with(s));
                if !keys.contains(&key.as_str()) && !tenant_key {
                    return Err(ConfigError::Unknown {
                        section: section.to_string(),
                        key: key.clone(),
                    });
                }
            }
        }
        let r = Reader { ini: &ini };
        let backend = match r
            .one_of("store", "backend", "embedded", &["embedded", "distributed"])?
            .as_str()
        {
            "distributed" => Backend::Distributed,
            _ => Backend::Embedded,
        };
        let data_dir = PathBuf::from(r.string("store", "data_dir", "./abaco-data"));
        let bind = r.string("web", "bind", "127.0.0.1:8000");
        let host_queues: Vec<String> = r
            .string("spawner", "host_queues", "default")
            .split(',')
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty())
            .collect();
        if host_queues.is_empty() {
            return Err(ConfigError::Invalid {
                section: "spawner".into(),
                key: "host_queues".into(),
                value: String::new(),
                problem: "at least one queue is needed".into(),
            });
        }
        let host_id = std::env::var("SPAWNER_HOST_ID")
            .ok()
            .unwrap_or_else(|| r.string("spawner", "host_id", "0"));
        let config = Config {
            general: GeneralConfig {
                tag: r.string("general", "tag", "dev"),
            },
            store: StoreConfig {
                backend,
                data_dir,
                redis_url: r.string("store", "redis_url", "redis://127.0.0.1:6379/"),
                postgres_url: r.string(
                    "store",
                    "postgres_url",
                    "postgres://abaco:abaco@127.0.0.1:5432/abaco",
                ),
                postgres_pool_size: r.parse("store", "postgres_pool_size", 16usize)?,
            },
            rabbit: RabbitConfig {
                uri: r.string("rabbit", "uri", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                prefetch: r.parse("rabbit", "prefetch", 1u16)?,
            },
            spawner: SpawnerConfig {
                host_id,
                host_ip: r.string("spawner", "host_ip", "127.0.0.1"),
                host_queues,
                max_workers_per_host: r.parse("spawner", "max_workers_per_host", 20usize)?,
                max_workers_per_actor: r.parse("spawner", "max_workers_per_actor", 5usize)?,
                max_cmd_length: r.parse("spawner", "max_cmd_length", 10u64)?,
                max_workers_total: r.parse("spawner", "max_workers_total", 100usize)?,
            },
            docker: DockerConfig {
                dd: r.string("docker", "dd", "unix:///var/run/docker.sock"),
                network: r.string("docker", "network", "bridge"),
            },
            workers: WorkersConfig {
                init_count: r.parse("workers", "init_count", 1u32)?,
                autoscaling: r.boolean("workers", "autoscaling", true)?,
                max_run_time: r.parse("workers", "max_run_time", -1i64)?,
                mem_limit: r.string("workers", "mem_limit", "-1"),
                max_cpus: r.parse("workers", "max_cpus", -1i64)?,
                worker_ttl: r.parse("workers", "worker_ttl", -1i64)?,
                sync_max_idle_time: r.parse("workers", "sync_max_idle_time", 600i64)?,
                autoscale_idle_time: r.parse("workers", "autoscale_idle_time", 10i64)?,
                autoscale_period: r.parse("workers", "autoscale_period", 1u64)?,
                health_period: r.parse("workers", "health_period", 10u64)?.max(1),
                leave_containers: r.boolean("workers", "leave_containers", false)?,
                socket_host_path_dir: r
                    .ini
                    .get("workers", "socket_host_path_dir")
                    .map(PathBuf::from),
                fifo_host_path_dir: r
                    .ini
                    .get("workers", "fifo_host_path_dir")
                    .map(PathBuf::from),
                allow_privileged: r.boolean("workers", "allow_privileged", true)?,
                generate_clients: r.boolean("workers", "generate_clients", true)?,
            },
            web: WebConfig {
                api_server: r.ini.get("web", "api_server"),
                bind,
                allow_insecure_bind: r.boolean("web", "allow_insecure_bind", false)?,
                access_control: r.one_of("web", "access_control", "none", &["none", "jwt"])?,
                tenants: {
                    let default = r.string("web", "tenant_name", "DEV-DEVELOP");
                    r.string("web", "tenants", &default)
                        .split(',')
                        .map(|t| t.trim().to_ascii_uppercase())
                        .filter(|t| !t.is_empty())
                        .collect()
                },
                accept_nonce: r.boolean("web", "accept_nonce", true)?,
                encryption_key: r
                    .ini
                    .get("web", "encryption_key")
                    .filter(|k| !k.trim().is_empty()),
                token_ttl: r.parse("web", "token_ttl", 900i64)?,
                tenant_name: r
                    .string("web", "tenant_name", "DEV-DEVELOP")
                    .to_ascii_uppercase(),
                case: r.one_of("web", "case", "snake", &["snake", "camel"])?,
                max_content_length: r.parse("web", "max_content_length", 500_000_000u64)?,
                max_log_length: r.parse("web", "max_log_length", 1_000_000usize)?,
                log_ex: r.parse("web", "log_ex", 43_200i64)?,
                log_ex_limit: r.parse("web", "log_ex_limit", 86_400i64)?,
                default_token: r.string("web", "default_token", "false"),
                sync_timeout: r.parse("web", "sync_timeout", 300u64)?,
            },
            logs: LogsConfig {
                level: r.string("logs", "level", "info"),
            },
            raw: ini.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Re-validates a configuration whose fields were changed after loading (command-line flags).
    pub fn from_parts(config: Config) -> Result<Config, ConfigError> {
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let addr: std::net::SocketAddr =
            self.web
                .bind
                .parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                    section: "web".into(),
                    key: "bind".into(),
                    value: self.web.bind.clone(),
                    problem: e.to_string(),
                })?;
        if self.web.access_control == "none"
            && !addr.ip().is_loopback()
            && !self.web.allow_insecure_bind
        {
            return Err(ConfigError::Invalid {
                section: "web".into(),
                key: "bind".into(),
                value: self.web.bind.clone(),
                problem: "with access_control = none the API only listens on loopback; \
                          set [web] allow_insecure_bind = true to override"
                    .into(),
            });
        }
        Ok(())
    }

    /// The base URL clients and containers use to reach the API.
    pub fn api_server(&self) -> String {
        self.web
            .api_server
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.web.bind))
    }

    /// The results-socket directory (a default under `data_dir`).
    pub fn socket_dir(&self) -> PathBuf {
        self.workers
            .socket_host_path_dir
            .clone()
            .unwrap_or_else(|| self.store.data_dir.join("sockets"))
    }

    /// The binary-message FIFO directory (a default under `data_dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.workers
            .fifo_host_path_dir
            .clone()
            .unwrap_or_else(|| self.store.data_dir.join("fifos"))
    }

    /// A tenant-specific key (`{tenant}_{key}`, case-insensitive) or the plain key.
    pub fn tenant_value(&self, section: &str, tenant: &str, key: &str) -> Option<String> {
        self.raw
            .get(section, &format!("{}_{key}", tenant.to_ascii_lowercase()))
            .or_else(|| self.raw.get(section, key))
    }
}

#[cfg(test)]
mod tests;
