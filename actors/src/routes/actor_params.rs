//! The actor fields a client may set (spec §3.1, §4.2), their help texts and validation rules,
//! read from request parameters into an `ActorInput`.

use abaco_core::model::parse_mem_limit;

/// Docker's smallest memory limit for a container (6 MiB).
const MIN_MEMORY: i64 = 6 << 20;
/// Docker's smallest CPU limit (0.01 CPU).
const MIN_NANO_CPUS: i64 = 10_000_000;
use serde_json::{Map, Value};

use crate::identity::Identity;
use crate::params::{Param, Params};
use crate::reply::ApiError;
use crate::Api;

pub const PREFIX: &str = "Invalid actor description";

macro_rules! param {
    ($id:ident, $name:literal, $help:literal) => {
        pub const $id: Param = Param {
            name: $name,
            help: $help,
        };
    };
}

param!(NAME, "name", "User defined name for this actor.");
param!(
    IMAGE,
    "image",
    "Reference to image on docker hub for this actor."
);
param!(
    STATELESS,
    "stateless",
    "Whether the actor stores private state."
);
param!(
    TYPE,
    "type",
    "Return type (none, bin, json) for this actor. Default is none."
);
param!(LINK, "link", "Actor identifier of actor to link this actor's events too. May be an actor id or an alias. Cycles not permitted.");
param!(
    TOKEN,
    "token",
    "Whether this actor requires an OAuth access token."
);
param!(WEBHOOK, "webhook", "URL to publish this actor's events to.");
param!(
    HINTS,
    "hints",
    "Hints for personal tagging or Abaco special hints"
);
param!(DESCRIPTION, "description", "Description of this actor");
param!(
    PRIVILEGED,
    "privileged",
    "Whether this actor runs in privileged mode."
);
param!(
    MAX_WORKERS,
    "max_workers",
    "How many workers this actor is allowed at the same time."
);
param!(
    MEM_LIMIT,
    "mem_limit",
    "maximum amount of memory this actor can use."
);
param!(
    MAX_CPUS,
    "max_cpus",
    "Maximum number of CPUs (nanoCPUs) this actor will have available to it."
);
param!(
    USE_CONTAINER_UID,
    "use_container_uid",
    "Whether this actor runs as the UID set in the container image."
);
param!(
    DEFAULT_ENVIRONMENT,
    "default_environment",
    "A dictionary of default environmental variables and values."
);
param!(STATE, "state", "Current state for this actor.");
param!(QUEUE, "queue", "The command channel that this actor uses.");
param!(
    LOG_EX,
    "log_ex",
    "Amount of time, in seconds, after which logs will expire"
);
param!(
    CRON_SCHEDULE,
    "cron_schedule",
    "yyyy-mm-dd hh + <number> <unit of time>"
);
param!(CRON_ON, "cron_on", "Whether cron is on or off");
param!(
    FORCE,
    "force",
    "Whether to force an update of the actor image (re-pull and restart workers)."
);

/// What the client sent; `None` means "not sent".
#[derive(Debug, Default)]
pub struct ActorInput {
    pub name: Option<String>,
    pub image: String,
    pub stateless: Option<bool>,
    pub kind: Option<String>,
    pub link: Option<String>,
    pub token: Option<bool>,
    pub webhook: Option<String>,
    pub hints: Option<Vec<String>>,
    pub description: Option<String>,
    pub privileged: Option<bool>,
    pub max_workers: Option<i64>,
    pub mem_limit: Option<String>,
    pub max_cpus: Option<i64>,
    pub use_container_uid: Option<bool>,
    pub default_environment: Option<Map<String, Value>>,
    pub state: Option<Value>,
    pub queue: Option<String>,
    pub log_ex: Option<i64>,
    pub cron_schedule: Option<String>,
    pub cron_on: Option<bool>,
    pub force: bool,
}

impl ActorInput {
    pub fn read(api: &Api, p: &Params) -> Result<ActorInput, ApiError> {
        let input = ActorInput {
            name: p.string(&NAME, PREFIX)?,
            image: p.required_string(&IMAGE, PREFIX)?.trim().to_string(),
            stateless: p.boolean(&STATELESS, PREFIX)?,
            kind: p.string(&TYPE, PREFIX)?,
            link: p.string(&LINK, PREFIX)?,
            token: p.boolean(&TOKEN, PREFIX)?,
            webhook: p.string(&WEBHOOK, PREFIX)?,
            hints: read_hints(p)?,
            description: p.string(&DESCRIPTION, PREFIX)?,
            privileged: p.boolean(&PRIVILEGED, PREFIX)?,
            max_workers: p.int(&MAX_WORKERS, PREFIX)?,
            mem_limit: p.string(&MEM_LIMIT, PREFIX)?,
            max_cpus: p.int(&MAX_CPUS, PREFIX)?,
            use_container_uid: p.boolean(&USE_CONTAINER_UID, PREFIX)?,
            default_environment: p.dict(&DEFAULT_ENVIRONMENT, PREFIX)?,
            state: match p.raw(STATE.name) {
                None => None,
                Some(Value::Object(m)) => Some(Value::Object(m)),
                Some(_) => return Err(p.invalid(&STATE, PREFIX)),
            },
            queue: p.string(&QUEUE, PREFIX)?,
            // Abaco reads `logEx` in both cases.
            log_ex: match p.int(&LOG_EX, PREFIX)? {
                Some(v) => Some(v),
                None => p.int(
                    &Param {
                        name: "logEx",
                        help: LOG_EX.help,
                    },
                    PREFIX,
                )?,
            },
            cron_schedule: p
                .string(&CRON_SCHEDULE, PREFIX)?
                .filter(|s| !s.trim().is_empty()),
            cron_on: p.boolean(&CRON_ON, PREFIX)?,
            force: p.boolean(&FORCE, PREFIX)?.unwrap_or(false),
        };
        input.validate(api)?;
        Ok(input)
    }

    fn validate(&self, api: &Api) -> Result<(), ApiError> {
        if self.image.chars().any(char::is_whitespace) {
            return Err(ApiError::bad(format!(
                "{PREFIX}: the image reference {:?} contains whitespace.",
                self.image
            )));
        }
        if let Some(queue) = self.queue.as_deref().filter(|q| !q.is_empty()) {
            if !api.config.spawner.host_queues.iter().any(|q| q == queue) {
                return Err(ApiError::bad(format!(
                    "{PREFIX}: Unable to process the JSON description.: 400 Bad Request: Invalid queue name. Valid queues: {}.",
                    api.config.spawner.host_queues.join(", ")
                )));
            }
        }
        if let Some(hints) = &self.hints {
            for hint in hints {
                if let Some(c) = hint.chars().find(|c| "\"'{}[]".contains(*c)) {
                    return Err(ApiError::bad(format!(
                        "{PREFIX}: Unable to process the JSON description.: 400 Bad Request: Hints must be simple stings or numbers, no lists or dicts. Error character: {c}"
                    )));
                }
            }
        }
        if let Some(mem) = &self.mem_limit {
            match parse_mem_limit(mem) {
                None => {
                    return Err(ApiError::bad(format!(
                        "{PREFIX}: mem_limit {mem:?} is not a memory size; use bytes or a number with b, k, m or g (e.g. \"512m\"), or -1 for unlimited."
                    )))
                }
                // Docker refuses to create a container with less (every execution would fail).
                Some(bytes) if bytes != -1 && bytes < MIN_MEMORY => {
                    return Err(ApiError::bad(format!(
                        "{PREFIX}: mem_limit {mem:?} is below the 6m a container needs; use at least \"6m\", or -1 for unlimited."
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(hook) = self
            .webhook
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
        {
            let usable = url::Url::parse(hook)
                .map_err(|e| e.to_string())
                .and_then(|u| match (u.scheme(), u.host_str()) {
                    ("http" | "https", Some(host)) if !host.is_empty() => Ok(()),
                    _ => Err("events are POSTed to http or https URLs with a host".to_string()),
                });
            if let Err(why) = usable {
                return Err(ApiError::bad(format!(
                    "{PREFIX}: webhook {hook:?} is not a usable URL ({why})."
                )));
            }
        }
        if let Some(cpus) = self.max_cpus {
            if cpus != -1 && cpus < MIN_NANO_CPUS {
                return Err(ApiError::bad(format!(
                    "{PREFIX}: max_cpus must be at least 10000000 nanoCPUs (0.01 CPU, Docker's minimum; 1000000000 = 1 CPU), or -1."
                )));
            }
        }
        if let Some(n) = self.max_workers {
            if n < 1 {
                return Err(ApiError::bad(format!(
                    "{PREFIX}: max_workers must be at least 1."
                )));
            }
        }
        if let Some(log_ex) = self.log_ex {
            if log_ex < 1 && log_ex != -1 {
                return Err(ApiError::bad(format!(
                    "{PREFIX}: log_ex must be a positive number of seconds."
                )));
            }
        }
        if let Some(schedule) = &self.cron_schedule {
            abaco_core::cron::parse(schedule, abaco_core::time::now())
                .map_err(|e| ApiError::bad(e.to_string()))?;
        }
        if self.privileged == Some(true) && !api.config.workers.allow_privileged {
            return Err(ApiError::bad(
                "Not authorized -- privileged actors are disabled on this server ([workers] allow_privileged).",
            ));
        }
        for key in self.default_environment.iter().flat_map(|m| m.keys()) {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(ApiError::bad(format!(
                    "{PREFIX}: default_environment key {key:?} is not a valid environment variable name."
                )));
            }
        }
        Ok(())
    }
}

impl ActorInput {
    /// Spec §2.7: only admins and privileged users may set these fields. Checked on the actor
    /// description only — never inside message or state bodies (unlike Abaco).
    pub fn check_privileged(&self, who: &Identity) -> Result<(), ApiError> {
        if who.is_privileged() {
            return Ok(());
        }
        let checks = [
            (self.privileged == Some(true), "make privileged actors"),
            (self.max_workers.is_some(), "set max workers"),
            (self.max_cpus.is_some(), "set max CPUs"),
            (self.mem_limit.is_some(), "set mem limit"),
            (
                self.queue.as_deref().is_some_and(|q| !q.is_empty()),
                "set queue",
            ),
            (self.use_container_uid == Some(true), "use container uid"),
        ];
        match checks.iter().find(|(set, _)| *set) {
            Some((_, what)) => Err(ApiError::bad(format!(
                "Not authorized -- only admins and privileged users can {what}."
            ))),
            None => Ok(()),
        }
    }
}

fn read_hints(p: &Params) -> Result<Option<Vec<String>>, ApiError> {
    if !p.has(HINTS.name) {
        return Ok(None);
    }
    let mut hints = Vec::new();
    for v in p.all(HINTS.name) {
        match v {
            Value::String(s) => hints.push(s),
            Value::Number(n) => hints.push(n.to_string()),
            Value::Bool(b) => hints.push(b.to_string()),
            _ => {
                return Err(ApiError::bad(format!(
                    "{PREFIX}: Unable to process the JSON description.: 400 Bad Request: Hints must be simple stings or numbers, no lists or dicts."
                )))
            }
        }
    }
    Ok(Some(hints))
}
