//! Per-tenant policies computed when an actor is registered or updated (spec §7.11, §7.12): the
//! bind mounts from `[workers] global_mounts` / `{tenant}_global_mounts` / `privileged_mounts`, and
//! the uid/gid/home directory from `[workers] {tenant}_actor_uid` ... or `actor_uid` ...

use crate::model::Mount;
use crate::Config;

/// The mounts an actor gets. Entries are `host_path:container_path:mode` (mode `ro` or `rw`);
/// `{username}`, `{tenant_id}` and `{tasdir}` are substituted; malformed entries are skipped
/// (and logged by the caller through the returned list of problems).
pub fn mounts(
    config: &Config,
    tenant: &str,
    owner: &str,
    tasdir: Option<&str>,
    privileged: bool,
) -> (Vec<Mount>, Vec<String>) {
    let mut specs = Vec::new();
    let tenant_key = format!("{}_global_mounts", tenant.to_ascii_lowercase());
    match config
        .raw
        .get("workers", &tenant_key)
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => specs.push(v),
        None => specs.extend(config.raw.get("workers", "global_mounts")),
    }
    if privileged {
        specs.extend(config.raw.get("workers", "privileged_mounts"));
    }
    let mut mounts = Vec::new();
    let mut problems = Vec::new();
    for entry in specs.iter().flat_map(|s| s.split(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let parts: Vec<&str> = entry.split(':').collect();
        if parts.len() != 3 || !matches!(parts[2], "ro" | "rw") {
            problems.push(format!(
                "mount {entry:?} is not host_path:container_path:ro|rw; skipped"
            ));
            continue;
        }
        if (parts[0].contains("{tasdir}") || parts[1].contains("{tasdir}")) && tasdir.is_none() {
            continue;
        }
        let fill = |p: &str| {
            p.replace("{username}", owner)
                .replace("{tenant_id}", tenant)
                .replace("{tasdir}", tasdir.unwrap_or(""))
        };
        mounts.push(Mount {
            host_path: fill(parts[0]),
            container_path: fill(parts[1]),
            mode: parts[2].to_string(),
        });
    }
    (mounts, problems)
}

/// `(uid, gid, home dir)` for the tenant's actors, from the tenant keys or the global ones.
pub fn uid_gid(config: &Config, tenant: &str) -> (Option<String>, Option<String>, Option<String>) {
    let get = |key: &str| {
        config
            .raw
            .get("workers", &format!("{}_{key}", tenant.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    if let Some(uid) = get("actor_uid") {
        return (Some(uid), get("actor_gid"), get("actor_homedir"));
    }
    let global = |key: &str| {
        config
            .raw
            .get("workers", key)
            .filter(|v| !v.trim().is_empty())
    };
    match global("actor_uid") {
        Some(uid) => (Some(uid), global("actor_gid"), global("actor_homedir")),
        None => (None, None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ini;

    fn config(text: &str) -> Config {
        Config::from_ini(Ini::parse(text).unwrap()).unwrap()
    }

    #[test]
    fn global_mounts_are_substituted_and_tenant_keys_win() {
        let c = config(
            "[workers]\nglobal_mounts = /data/{tenant_id}:/_abaco_data:ro,/home/{username}:/home:rw,bad\n\
             sd2e_global_mounts = /sd2e:/sd2e:ro\nprivileged_mounts = /var/run/x:/x:rw\n",
        );
        let (m, problems) = mounts(&c, "DEV", "jane", None, false);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].host_path, "/data/DEV");
        assert_eq!(m[1].host_path, "/home/jane");
        assert_eq!(m[1].mode, "rw");
        assert_eq!(problems.len(), 1);
        let (m, _) = mounts(&c, "SD2E", "jane", None, true);
        assert_eq!(
            m.iter()
                .map(|m| m.container_path.as_str())
                .collect::<Vec<_>>(),
            ["/sd2e", "/x"]
        );
    }

    #[test]
    fn uid_gid_from_tenant_or_global_keys() {
        let c = config("[workers]\nactor_uid = 1000\nactor_gid = 100\ndev_actor_uid = 5000\n");
        assert_eq!(uid_gid(&c, "DEV"), (Some("5000".into()), None, None));
        assert_eq!(
            uid_gid(&c, "OTHER"),
            (Some("1000".into()), Some("100".into()), None)
        );
        let c = config("");
        assert_eq!(uid_gid(&c, "DEV"), (None, None, None));
    }
}
