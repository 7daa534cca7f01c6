//! Unit tests of configuration loading: defaults, errors naming their key, loopback rule, tenant keys.
use super::*;

fn check(text: &str, expect: impl FnOnce(Result<Config, ConfigError>)) {
    expect(Ini::parse(text).and_then(Config::from_ini));
}

#[test]
fn defaults_are_embedded_on_loopback() {
    check("", |c| {
        let c = c.unwrap();
        assert_eq!(c.store.backend, Backend::Embedded);
        assert_eq!(c.web.bind, "127.0.0.1:8000");
        assert_eq!(c.spawner.host_queues, vec!["default"]);
    });
}

#[test]
fn bad_values_name_their_key() {
    check("[workers]\nmax_run_time = soon\n", |c| {
        let msg = c.unwrap_err().to_string();
        assert!(msg.contains("[workers] max_run_time"), "{msg}");
    });
    check("[store]\nbackend = mongo\n", |c| {
        let msg = c.unwrap_err().to_string();
        assert!(msg.contains("[store] backend"), "{msg}");
    });
    check("[web]\nbindd = 1\n", |c| {
        let msg = c.unwrap_err().to_string();
        assert!(msg.contains("[web] bindd"), "{msg}");
    });
}

#[test]
fn open_bind_needs_explicit_consent_without_auth() {
    check("[web]\nbind = 0.0.0.0:8000\n", |c| {
        assert!(c.unwrap_err().to_string().contains("loopback"));
    });
    check(
        "[web]\nbind = 0.0.0.0:8000\nallow_insecure_bind = true\n",
        |c| {
            assert!(c.is_ok());
        },
    );
}

#[test]
fn tenant_keys_are_accepted_and_found() {
    check(
        "[web]\ndefault_token = false\ndev_default_token = true\n",
        |c| {
            let c = c.unwrap();
            assert_eq!(
                c.tenant_value("web", "DEV", "default_token").as_deref(),
                Some("true")
            );
            assert_eq!(
                c.tenant_value("web", "SD2E", "default_token").as_deref(),
                Some("false")
            );
        },
    );
}
